"""CURVE on every TCP socket: members get in, others get nothing; malformed
input from a member never brings a head or node down."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
import stat
import subprocess
import sys
import time

import pytest
import zmq

import zray
from zray import _launch, protocol
from zray.cluster_utils import Cluster
from zray.protocol import Msg
from zray.security import create_key_file, load_key_file, secure_client

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def secure_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"max_message_bytes": 16 * 2**20}})
    node = cluster.add_node(num_cpus=1, resources={"member": 1})
    zray.init(address=cluster.address)
    yield cluster, node
    zray.shutdown()
    cluster.shutdown()


@zray.remote
def square(x):
    return x * x


@zray.remote
def where():
    return zray.get_runtime_context().get_node_id()


def _logs(cluster) -> str:
    text = ""
    for path in glob.glob(os.path.join(cluster._session[1], "logs", "*")):
        with open(path, errors="replace") as f:
            text += f.read()
    return text


def _dealer(endpoint, config=None, identity=None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity or b"Q" + os.urandom(8))
    if config is not None:
        secure_client(sock, endpoint, config)
    sock.connect(endpoint)
    return sock


def _query_frames():
    return protocol.encode(Msg.QUERY, [(1, "nodes", None)])


def test_cluster_uses_an_owner_only_key_and_encrypts(secure_cluster):
    cluster, _ = secure_cluster
    key_file = cluster._config.cluster_key_file
    assert key_file and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not cluster._config.insecure
    assert zray.get(square.options(resources={"member": 1}).remote(7)) == 49


def test_raw_client_without_key_gets_nothing_and_head_keeps_working(secure_cluster):
    cluster, _ = secure_cluster
    stranger = _dealer(cluster.address_endpoint)
    try:
        stranger.send_multipart(_query_frames())
        stranger.send_multipart(protocol.encode(Msg.HELLO, [("driver", 1, 0, 1, {})]))
        assert stranger.poll(1500) == 0
    finally:
        stranger.close()
    assert zray.get(square.remote(3)) == 9


def test_wrong_key_and_no_key_nodes_are_refused(secure_cluster, tmp_path):
    cluster, _ = secure_cluster
    wrong_key = str(tmp_path / "wrong.key")
    create_key_file(wrong_key)
    intruders = []
    for name, change in (("wrong", {"cluster_key_file": wrong_key}),
                         ("none", {"insecure": True, "cluster_key_file": ""})):
        config = dataclasses.replace(cluster._config, **change)
        resources = _launch.default_resources(1, 0, {f"intruder_{name}": 1})
        intruders.append(_launch.start_node(config, cluster.address_endpoint, os.urandom(16),
                                            resources, cluster._session[1], "127.0.0.1",
                                            os.getpid()))
    try:
        pending = [square.options(resources={"intruder_wrong": 1}).remote(2),
                   square.options(resources={"intruder_none": 1}).remote(2)]
        time.sleep(2.0)
        ready, _ = zray.wait(pending, num_returns=2, timeout=0.1)
        assert ready == []                                # nothing ever ran on them
        assert len([n for n in zray.nodes() if n["Alive"]]) == 2
        assert "refused a connection from 127.0.0.1" in _logs(cluster)
        for ref in pending:
            zray.cancel(ref)
    finally:
        for process in intruders:
            process.stop(2.0)


def test_fuzzed_messages_from_a_member_do_not_bring_anything_down(secure_cluster):
    cluster, node = secure_cluster
    rng = random.Random(20261125)
    head = _dealer(cluster.address_endpoint, cluster._config)
    [info] = [n for n in zray.nodes() if n["NodeID"] == node.node_id]
    chunk_server = _dealer(info["ObjectTransferEndpoint"], cluster._config)
    valid = _query_frames()[0]
    try:
        for i in range(1000):
            kind = i % 6
            if kind == 0:
                frames = [rng.randbytes(rng.randrange(0, 64))]
            elif kind == 1:
                frames = [valid[:rng.randrange(0, len(valid))]]           # truncated
            elif kind == 2:
                frames = [b"ZR" + bytes([9, 0, 7]) + valid[5:]]           # wrong major
            elif kind == 3:
                frames = [protocol.TAG + bytes([250]) + valid[5:]]        # unknown type
            elif kind == 4:                                               # wrong shapes
                msg_type = rng.choice(list(Msg))
                frames = protocol.encode(msg_type, [tuple(rng.randbytes(3) for _ in
                                                         range(rng.randrange(0, 7)))])
            else:
                frames = [valid[:5] + rng.randbytes(rng.randrange(1, 40)),
                          rng.randbytes(rng.randrange(0, 100))]
            (head if i % 2 else chunk_server).send_multipart(frames)
        too_big = protocol.encode(Msg.QUERY, [(1, "nodes", None)]) + [b"\0" * (17 * 2**20)]
        head.send_multipart(too_big)                   # over max_message_bytes: dropped
    finally:
        head.close()
        chunk_server.close()
    time.sleep(0.5)
    assert cluster.head_process.popen.poll() is None
    assert all(n.alive() for n in cluster.list_all_nodes())
    assert zray.get([square.options(resources={"member": 1}).remote(i) for i in range(20)]) \
        == [i * i for i in range(20)]
    assert len([n for n in zray.nodes() if n["Alive"]]) == 2


def test_version_mismatch_names_both_versions(secure_cluster):
    cluster, _ = secure_cluster
    sock = _dealer(cluster.address_endpoint, cluster._config)
    try:
        sock.send_multipart([b"ZR" + bytes([protocol.PROTOCOL_MAJOR + 1, 0])
                             + bytes([Msg.HELLO.value]) + b"\x80\x05]\x94."])
        assert sock.poll(3000)
        reply = protocol.decode(sock.recv_multipart())
    finally:
        sock.close()
    assert reply.type is Msg.PROTOCOL_ERROR
    text = reply.items[0][0]
    assert f"{protocol.PROTOCOL_MAJOR + 1}.0" in text and f"{protocol.PROTOCOL_MAJOR}." in text


def test_keys_never_appear_in_logs_or_status(secure_cluster):
    cluster, _ = secure_cluster
    keys = load_key_file(cluster._config.cluster_key_file)
    secrets = [keys.server_secret.decode(), keys.member_secret.decode()]
    logs = _logs(cluster)
    assert logs and not any(secret in logs for secret in secrets)
    env = dict(os.environ, ZRAY_CLUSTER_KEY_FILE=cluster._config.cluster_key_file)
    status = subprocess.run([sys.executable, "-m", "zray", "status", "--address",
                             cluster.address], capture_output=True, text=True, env=env,
                            timeout=30)
    assert status.returncode == 0, status.stderr
    assert not any(secret in status.stdout + status.stderr for secret in secrets)
    assert "ClusterKeys(<hidden>)" == repr(keys)


def test_key_file_readable_by_others_is_refused(tmp_path):
    key_file = str(tmp_path / "cluster.key")
    create_key_file(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    os.chmod(key_file, 0o644)
    result = subprocess.run([sys.executable, "-m", "zray", "start", "--address",
                             "127.0.0.1:9", "--key", key_file], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"chmod 600 {key_file}" in result.stderr
    with open(key_file) as f:
        assert json.load(f)                                  # nothing was changed
