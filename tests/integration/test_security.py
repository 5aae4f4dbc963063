"""CURVE on every TCP socket: members get in, others get nothing; malformed
input from a member never brings a head or node down."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pickle
import random
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

import zray
from zray import _launch, protocol
from zray.cluster_utils import Cluster
from zray.protocol import Msg, SPECS
from zray.node.sealing import RequestSeal
from zray.serialization import segment_path
from zray.security import (create_key_file, load_key_file, secure_client,
                           transfer_seal_key)
from zray.task_spec import TaskSpec

from tests.actors import Counter
from tests.conftest import wait_for
from tests.tasks import make_array
from tests.unit.test_protocol_docs import _sample_item

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def secure_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"max_message_bytes": 16 * 2**20,
                                          "max_head_message_bytes": 16 * 2**20}})
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
    for path in glob.glob(os.path.join(cluster.session_dir, "logs", "*")):
        with open(path, errors="replace") as f:
            text += f.read()
    return text


def _dealer(endpoint, config=None, identity=None):
    """A DEALER; with ``config``, a member's (CURVE keys on TCP; ipc needs none)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity or b"Q" + os.urandom(8))
    if config is not None:
        secure_client(sock, endpoint, config)
    sock.connect(endpoint)
    return sock


class _SealedDealer:
    """A member's socket to a chunk server that seals transfers with AES-GCM:
    requests go sealed with the cluster's transfer key, chunks come back opened."""

    def __init__(self, endpoint, key):
        self.sock = _dealer(endpoint)
        self.seal = RequestSeal(key)

    def send_multipart(self, frames):
        self.sock.send_multipart(self.seal.seal_request(frames))

    def poll(self, timeout_ms):
        return self.sock.poll(timeout_ms)

    def recv_multipart(self):
        header, plain = self.seal.open_chunk(self.sock.recv_multipart())
        return [bytes(header[0])] + ([bytes(plain)] if plain is not None else [])

    def close(self):
        self.sock.close()


def _chunk_dealer(endpoint, config):
    """A member's socket to the chunk server at ``endpoint``, however it is secured."""
    key = transfer_seal_key(endpoint, config)
    return _dealer(endpoint, config) if key is None else _SealedDealer(endpoint, key)


def _query_frames():
    return protocol.encode(Msg.QUERY, [(1, "nodes", None)])


def test_cluster_uses_an_owner_only_key_and_encrypts(secure_cluster):
    cluster, _ = secure_cluster
    key_file = cluster.config.cluster_key_file
    assert key_file and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not cluster.config.insecure
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


def test_chunk_server_answers_only_requests_sealed_with_the_cluster_key(secure_cluster):
    """Chunks between hosts are sealed with AES-GCM (no CURVE on that socket): a
    request without a seal, or sealed with another key, is dropped and logged
    and gets no chunk; a member's sealed request gets the object's bytes,
    encrypted on the wire (the frame is not the plaintext) and opened intact."""
    cluster, node = secure_cluster
    ref = make_array.options(resources={"member": 1}).remote(2 * 2**20 // 8, 5.0)
    zray.wait([ref], timeout=60, fetch_local=False)
    [info] = [n for n in zray.nodes() if n["NodeID"] == node.node_id]
    endpoint = info["ObjectTransferEndpoint"]
    key = transfer_seal_key(endpoint, cluster.config)
    assert endpoint.startswith("tcp://") and key is not None
    request = protocol.encode(Msg.CHUNK_REQUEST, [(ref.binary(), 0, 4096)])
    stranger, forger = _dealer(endpoint), _SealedDealer(endpoint, os.urandom(32))
    member = _SealedDealer(endpoint, key)
    try:
        stranger.send_multipart(request)
        forger.send_multipart(request)
        assert wait_for(lambda: _logs(cluster).count("not a sealed request") >= 1
                 and "does not open with the cluster's key" in _logs(cluster), 30)
        member.sock.send_multipart(member.seal.seal_request(request))
        assert member.poll(30_000)
        raw = member.sock.recv_multipart()
        header, plain = member.seal.open_chunk(raw)
        item = protocol.decode([bytes(header[0])]).items[0]
        assert item.error is None and item.offset == 0 and len(plain) == 4096
        assert bytes(raw[-1]) != bytes(plain)           # ciphertext on the wire
        path = segment_path(cluster.config.shm_dir, bytes.fromhex(node.node_id),
                            ref.binary())
        with open(path, "rb") as segment:
            assert bytes(plain) == segment.read(4096)
        assert stranger.poll(0) == 0 and forger.poll(0) == 0
    finally:
        for sock in (stranger, forger, member):
            sock.close()


def test_wrong_key_and_no_key_nodes_are_refused(secure_cluster, tmp_path):
    cluster, _ = secure_cluster
    wrong_key = str(tmp_path / "wrong.key")
    create_key_file(wrong_key)
    intruders = []
    for name, change in (("wrong", {"cluster_key_file": wrong_key}),
                         ("none", {"insecure": True, "cluster_key_file": ""})):
        config = dataclasses.replace(cluster.config, **change)
        resources = _launch.default_resources(1, 0, {f"intruder_{name}": 1})
        intruders.append(_launch.start_node(config, cluster.address_endpoint, os.urandom(16),
                                            resources, cluster.session_dir, "127.0.0.1",
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


def _garbage_envelopes(rng, count: int) -> list:
    """Frames that fail before the items: random, truncated, wrong major, unknown type."""
    valid = _query_frames()[0]
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            frames = [rng.randbytes(rng.randrange(0, 64))]
        elif kind == 1:
            frames = [valid[:rng.randrange(0, len(valid))]]           # truncated
        elif kind == 2:
            frames = [b"ZR" + bytes([9, 0, 7]) + valid[5:]]           # wrong major
        elif kind == 3:
            frames = [protocol.TAG + bytes([250]) + valid[5:]]        # unknown type
        else:
            frames = [valid[:5] + rng.randbytes(rng.randrange(1, 40)),
                      rng.randbytes(rng.randrange(0, 100))]
        out.append(frames)
    return out


# Well-typed items of these types are harmless from a stranger (unknown ids are
# ignored or kept briefly); well-typed HELLO, REGISTER_NODE, SUBMIT_TASKS,
# SHUTDOWN... would legitimately change the cluster, so only malformed ones go.
_HARMLESS = {Msg.HEARTBEAT, Msg.REGISTER_FUNCTIONS, Msg.TASKS_FINISHED, Msg.TASKS_FAILED,
             Msg.WORKER_BLOCKED, Msg.WORKER_UNBLOCKED, Msg.ADD_REFS, Msg.REMOVE_REFS,
             Msg.SUBSCRIBE_OBJECTS, Msg.CANCEL_TASKS, Msg.LOG_LINES, Msg.QUERY,
             Msg.WORKER_DIED, Msg.TASKS_DONE, Msg.ACTOR_READY, Msg.ACTOR_DIED,
             Msg.SUBSCRIBE_ACTOR, Msg.KILL_ACTOR, Msg.ACTOR_TASKS_FINISHED,
             Msg.LEASE_RETURN, Msg.OBJECT_COPIED, Msg.PULL_OBJECT, Msg.CHUNK_REQUEST,
             Msg.OBJECTS_READY, Msg.WARNING, Msg.OBJECT_PULLED}


class Fuzzer:
    """Items of every shape but the right one, from a seeded generator."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def value(self, depth: int = 0):
        rng = self.rng
        kind = rng.randrange(13 if depth < 2 else 7)
        if kind == 0:
            return rng.randrange(-2**70, 2**70)
        if kind == 1:
            return rng.choice([rng.uniform(-1e9, 1e9), float("nan"), float("inf"), -0.0])
        if kind == 2:
            return None
        if kind == 3:
            return rng.randbytes(rng.choice([0, 1, 4, 7, 8, 9, 15, 16, 17, 18, 19, 64]))
        if kind == 4:
            return "".join(rng.choice("ab\u00e9\u4e2d\n\0") for _ in range(rng.randrange(12)))
        if kind == 5:
            return rng.choice([True, False, 0, 1, -1, 2**64])
        if kind == 6:
            return rng.choice([1j, b"ZR", (), [], {}, Ellipsis])
        if kind == 7:
            return tuple(self.value(depth + 1) for _ in range(rng.randrange(6)))
        if kind == 8:
            return [self.value(depth + 1) for _ in range(rng.randrange(6))]
        if kind == 9:
            return {rng.choice(["CPU", "held", 0, b"k", None, 1.5, ("t",)]):
                    self.value(depth + 1) for _ in range(rng.randrange(4))}
        if kind == 10:
            return self.task_spec()
        if kind == 11:      # a huge list, now and then
            return [0] * 50_000 if rng.random() < 0.05 else list(range(rng.randrange(300)))
        return ((self.value(depth + 1),),)              # nested tuples

    def task_spec(self) -> TaskSpec:
        spec = TaskSpec(self.rng.randbytes(16), b"\0\0\0\1", "f", self.rng.randbytes(16), b"")
        name = self.rng.choice(TaskSpec.__slots__)
        setattr(spec, name, self.value(1))
        return spec

    def item(self, msg: Msg):
        rng, fields = self.rng, SPECS[msg].fields
        while True:
            mode = rng.randrange(6)
            if mode == 0:                       # wrong arity
                arity = rng.choice([n for n in range(8) if n != len(fields)])
                item = tuple(self.value() for _ in range(arity))
            elif mode == 1:                     # not a tuple at all
                item = self.value()
            elif mode == 2:                     # right arity, random values
                item = tuple(self.value() for _ in fields)
            elif mode in (3, 4):                # a good item with one field spoiled
                item = list(self.well_typed(msg))
                item[rng.randrange(len(fields))] = self.value()
                item = tuple(item)
            else:                               # well-typed nonsense (harmless types)
                if msg not in _HARMLESS:
                    continue
                return self.well_typed(msg)
            if protocol.why_malformed(msg, item) is not None:
                return item

    def well_typed(self, msg: Msg) -> tuple:
        """A sample item with fresh random ids and counts."""
        rng = self.rng

        def fresh(value):
            if type(value) is bytes:
                return rng.randbytes(len(value))
            if type(value) is int and value > 1:
                return rng.randrange(0, 1 << 20)
            return value
        return tuple(fresh(v) for v in _sample_item(msg))

    def message(self, msg: Msg) -> list:
        items = [self.item(msg) for _ in range(self.rng.randrange(1, 4))]
        return protocol.encode(msg, items)


def _answer(sock, wanted, timeout_s: float = 60.0):
    """The first item ``wanted`` accepts among what the peer sends back (after
    the fuzz, answers to its well-typed items come first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        assert left_ms > 0 and sock.poll(left_ms), "no answer: the peer is gone or stuck"
        message = protocol.decode(sock.recv_multipart())
        for item in message.items:
            if wanted(message.type, item):
                return item


def _small_workload() -> None:
    """Exact results from tasks on both nodes, an actor, and 2 MB objects (one made
    on the member node and pulled in chunks through its chunk server)."""
    refs = [square.options(resources={"member": 1} if i % 2 else {}).remote(i)
            for i in range(50)]
    assert zray.get(refs, timeout=60) == [i * i for i in range(50)]
    counter = Counter.remote(5)
    assert zray.get(counter.increment.remote(2), timeout=60) == 7
    zray.kill(counter)
    value = np.arange(2 * 2**20 // 8, dtype=np.int64)
    assert np.array_equal(zray.get(zray.put(value), timeout=60), value)
    pulled = zray.get(make_array.options(resources={"member": 1}).remote(2 * 2**20 // 8, 3.0),
                      timeout=60)
    assert pulled.shape == value.shape and float(pulled.sum()) == 3.0 * len(value)


def test_fuzzed_messages_from_a_member_do_not_bring_anything_down(secure_cluster):
    """1,000 broken envelopes and 10,200 messages of every type with malformed
    items (wrong arity, wrong types, wrong-length ids, nested tuples, huge
    lists, spoiled task specs) or well-typed nonsense, from members of the
    cluster to the head, to a node's workers' ROUTER (ipc) and to its chunk
    server; then every process is alive and a workload gives exact results."""
    cluster, node = secure_cluster
    rng = random.Random(20261125)
    fuzzer = Fuzzer(seed=20261207)
    [info] = [n for n in zray.nodes() if n["NodeID"] == node.node_id]
    config = cluster.config
    targets = {"head": _dealer(cluster.address_endpoint, config),
               "workers": _dealer(info["NodeManagerEndpoint"], config, os.urandom(8)),
               "chunks": _chunk_dealer(info["ObjectTransferEndpoint"], config)}
    sent = dict.fromkeys(targets, 0)
    types = list(Msg)
    try:
        for i, frames in enumerate(_garbage_envelopes(rng, 1000)):
            (targets["head"] if i % 2 else targets["chunks"]).send_multipart(frames)
        for i in range(10_200):
            name = ("head", "head", "workers", "chunks")[i % 4]
            targets[name].send_multipart(fuzzer.message(types[i % len(types)]))
            sent[name] += 1
        too_big = _query_frames() + [b"\0" * (17 * 2**20)]
        targets["head"].send_multipart(too_big)      # over the head's limit: dropped
        # A good message sent last to each: its answer shows the rest got through.
        last = {"head": (Msg.QUERY, (2**40, "nodes", None), Msg.QUERY_REPLY),
                "workers": (Msg.PULL_OBJECT, (b"p" * 18, 10, ()), Msg.OBJECT_PULLED),
                "chunks": (Msg.CHUNK_REQUEST, (b"c" * 18, 0, 10), Msg.CHUNK)}
        for name, (kind, item, _) in last.items():
            sock = targets[name]
            if name == "head":        # the oversized frame cost the head connection
                sock.close()
                sock = targets[name] = _dealer(cluster.address_endpoint, config)
            sock.send_multipart(protocol.encode(kind, [item]))
        for name, (_, item, answer) in last.items():
            _answer(targets[name], lambda kind, got: kind is answer and got[0] == item[0])
    finally:
        for sock in targets.values():
            sock.close()
    assert sum(sent.values()) >= 10_000
    assert cluster.head_process.popen.poll() is None
    assert all(n.alive() for n in cluster.list_all_nodes())
    assert len([n for n in zray.nodes() if n["Alive"]]) == 2
    _small_workload()
    assert all(n.alive() for n in cluster.list_all_nodes())


def test_fuzz_items_are_all_malformed_or_harmless():
    fuzzer = Fuzzer(seed=1)
    for msg in Msg:
        for _ in range(50):
            item = pickle.loads(pickle.dumps(fuzzer.item(msg), 5))
            assert msg in _HARMLESS or protocol.why_malformed(msg, item) is not None


def test_version_mismatch_names_both_versions(secure_cluster):
    cluster, _ = secure_cluster
    sock = _dealer(cluster.address_endpoint, cluster.config)
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
    keys = load_key_file(cluster.config.cluster_key_file)
    secrets = [keys.server_secret.decode(), keys.member_secret.decode()]
    logs = _logs(cluster)
    assert logs and not any(secret in logs for secret in secrets)
    env = dict(os.environ, ZRAY_CLUSTER_KEY_FILE=cluster.config.cluster_key_file)
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

