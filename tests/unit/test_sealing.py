"""AES-256-GCM seals of the transfer protocol (zray.node.sealing), without sockets."""

from __future__ import annotations

import os

import pytest

from zray import protocol
from zray.config import Config
from zray.node.sealing import (NONCE_BYTES, SALT_BYTES, TAG_BYTES, AesGcm, RequestSeal,
                               SealError, ServerSeal)
from zray.protocol import Msg
from zray.security import ClusterKeys, create_key_file, transfer_seal_key

pytestmark = pytest.mark.timeout(30)

MASTER = os.urandom(32)


def _request(offset=0, length=1 << 20):
    return protocol.encode(Msg.CHUNK_REQUEST, [(b"o" * 18, offset, length)])


def _chunk_frames(server, salt, payload: bytes, offset=0):
    header = protocol.encode(Msg.CHUNK, [(b"o" * 18, offset, 10 << 20, None)])
    frames = server.seal_chunk(salt, header, [payload] if payload else [])
    out = list(frames)
    if hasattr(out[-1], "view"):
        tracked = out[-1]
        tracked.track(None)          # as if sent: its buffer may be reused
        out[-1] = bytes(tracked.view)
    return out


def test_aes_gcm_round_trip_and_tamper_detection():
    cipher = AesGcm(os.urandom(32))
    nonce, data = os.urandom(NONCE_BYTES), os.urandom(100_000)
    out = bytearray(len(data))
    tag = cipher.seal(nonce, b"header", data, out)
    assert bytes(out) != data and len(tag) == TAG_BYTES
    back = bytearray(len(data))
    cipher.open(nonce, tag, b"header", memoryview(bytes(out)), back)
    assert bytes(back) == data
    spoiled = bytearray(out)
    spoiled[5000] ^= 1
    for args in ((nonce, tag, b"header", bytes(spoiled)), (nonce, tag, b"heade!", bytes(out)),
                 (os.urandom(NONCE_BYTES), tag, b"header", bytes(out)),
                 (nonce, bytes(TAG_BYTES), b"header", bytes(out))):
        with pytest.raises(SealError):
            cipher.open(*args, bytearray(len(data)))
    with pytest.raises(SealError):
        AesGcm(os.urandom(32)).open(nonce, tag, b"header", bytes(out), back)


def test_a_request_opens_at_the_server_and_its_chunk_at_the_requester():
    requester, server = RequestSeal(MASTER), ServerSeal(MASTER)
    sealed = requester.seal_request(_request(4096))
    assert len(sealed[0]) == SALT_BYTES + NONCE_BYTES + TAG_BYTES
    salt, body = server.open_request(sealed)
    assert salt == requester.salt
    item = protocol.decode(body).items[0]
    assert (item.offset, item.length) == (4096, 1 << 20)
    payload = os.urandom(1 << 20)
    frames = _chunk_frames(server, salt, payload, offset=4096)
    assert frames[-1] != payload                      # encrypted
    header, plain = requester.open_chunk(frames)
    assert bytes(plain) == payload
    assert protocol.decode([bytes(header[0])]).items[0].offset == 4096
    header, plain = requester.open_chunk(_chunk_frames(server, salt, b""))   # an error reply
    assert plain is None and protocol.decode([bytes(header[0])]).items[0].size == 10 << 20


def test_foreign_altered_or_unsealed_messages_do_not_open():
    requester, server = RequestSeal(MASTER), ServerSeal(MASTER)
    with pytest.raises(SealError):
        server.open_request(_request())                       # no seal at all
    with pytest.raises(SealError):
        server.open_request(RequestSeal(os.urandom(32)).seal_request(_request()))
    sealed = requester.seal_request(_request(0))
    with pytest.raises(SealError):                            # the offset was changed
        server.open_request([sealed[0]] + _request(8192))
    frames = _chunk_frames(server, requester.salt, os.urandom(4096))
    other = RequestSeal(MASTER)                               # another socket's key
    with pytest.raises(SealError):
        other.open_chunk(frames)
    spoiled = frames[:-1] + [bytes([frames[-1][0] ^ 1]) + frames[-1][1:]]
    with pytest.raises(SealError):
        requester.open_chunk(spoiled)
    with pytest.raises(SealError):
        requester.open_chunk([b"short"] + frames[1:])


def test_ciphertext_buffers_are_reused_only_after_they_were_sent():
    requester, server = RequestSeal(MASTER), ServerSeal(MASTER)
    header = protocol.encode(Msg.CHUNK, [(b"o" * 18, 0, 1 << 16, None)])

    class Tracker:
        done = False

    first = server.seal_chunk(requester.salt, header, [os.urandom(1 << 16)])[-1]
    tracker = Tracker()
    first.track(tracker)
    second = server.seal_chunk(requester.salt, header, [os.urandom(1 << 16)])[-1]
    assert second.view.obj is not first.view.obj       # still in flight: not reused
    second.track(None)
    tracker.done = True
    third = server.seal_chunk(requester.salt, header, [os.urandom(1 << 16)])[-1]
    assert third.view.obj in (first.view.obj, second.view.obj)


def test_the_transfer_key_comes_from_the_cluster_secret_and_only_on_tcp(tmp_path):
    path = str(tmp_path / "cluster.key")
    keys = create_key_file(path)
    config = Config(cluster_key_file=path)
    key = transfer_seal_key("tcp://10.0.0.1:5000", config)
    assert len(key) == 32 and key == transfer_seal_key("tcp://10.0.0.2:6000", config)
    assert transfer_seal_key("ipc:///tmp/x", config) is None
    assert transfer_seal_key("tcp://10.0.0.1:5000",
                             Config(cluster_key_file=path, transfer_encryption="curve")) is None
    assert transfer_seal_key("tcp://10.0.0.1:5000", Config(insecure=True)) is None
    assert isinstance(keys, ClusterKeys)
    with pytest.raises(ValueError, match="'aes-gcm' or 'curve'"):
        Config(transfer_encryption="rot13")
