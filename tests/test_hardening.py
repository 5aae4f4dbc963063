"""No message from a peer ends a zray process.

Malformed messages from an authenticated peer (a CURVE member, or the owner of
an ipc socket) are refused at decode and logged; a failing periodic sweep is
logged and the loop goes on; a peer without the key cannot make the head or a
chunk server buffer a large frame.  Integration tests on a real cluster over
TCP with CURVE (``cluster_utils.Cluster``), plus one in-process head loop.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import socket
import struct
import time

import numpy as np
import psutil
import pytest
import zmq

import zray
from zray import protocol
from zray.cluster_utils import Cluster
from zray.config import Config
from zray.head.main import HeadLoop
from zray.protocol import Msg, SPECS
from zray.security import secure_client
from zray.serialization import segment_path
from zray.task_spec import TaskSpec

from tests.actors import Counter
from tests.conftest import SHM_DIR
from tests.tasks import make_array, square

remote_square = zray.remote(square)
from tests.test_protocol_docs import _sample_item

pytestmark = pytest.mark.timeout(120)

TWO_MB = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=1, resources={"second": 1})
    zray.init(address=cluster.address)
    yield cluster, node
    zray.shutdown()
    cluster.shutdown()


def _endpoints(node) -> dict:
    [info] = [n for n in zray.nodes() if n["NodeID"] == node.node_id]
    return {"workers": info["NodeManagerEndpoint"],
            "chunks": info["ObjectTransferEndpoint"]}


def _dealer(endpoint: str, config, identity: bytes | None = None):
    """A member's socket: CURVE keys on TCP, none on ipc (owner-only)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity or b"Q" + os.urandom(8))
    secure_client(sock, endpoint, config)
    sock.connect(endpoint)
    return sock


def _answer(sock, wanted, timeout_s: float = 30.0):
    """The first item ``wanted`` accepts among the messages the peer sends back
    (after the fuzz, other answers come first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        assert left_ms > 0 and sock.poll(left_ms), "no answer: the peer is gone or stuck"
        message = protocol.decode(sock.recv_multipart(), keep_good_items=True)
        for item in message.items:
            if wanted(message.type, item):
                return item


def _everything_alive(cluster) -> None:
    assert cluster.head_process.popen.poll() is None, "the head died"
    assert all(n.alive() for n in cluster.list_all_nodes()), "a node manager died"
    assert len([n for n in zray.nodes() if n["Alive"]]) == 2


def _small_workload() -> None:
    """Exact results from tasks on both nodes, an actor, and 2 MB objects (one made
    on the second node and pulled by chunks through its chunk server)."""
    refs = [remote_square.options(resources={"second": 1} if i % 2 else {}).remote(i)
            for i in range(50)]
    assert zray.get(refs, timeout=60) == [i * i for i in range(50)]
    counter = Counter.remote(5)
    assert zray.get(counter.increment.remote(2), timeout=60) == 7
    value = np.arange(TWO_MB // 8, dtype=np.int64)
    assert np.array_equal(zray.get(zray.put(value), timeout=60), value)
    remote = zray.get(make_array.options(resources={"second": 1}).remote(TWO_MB // 8, 3.0),
                      timeout=60)
    assert remote.shape == (TWO_MB // 8,) and float(remote.sum()) == 3.0 * (TWO_MB // 8)
    zray.kill(counter)


# --- a malformed CHUNK_REQUEST --------------------------------------------------------

def test_malformed_chunk_requests_leave_the_node_its_workers_and_its_segments(cluster):
    """A CHUNK_REQUEST item 1.5 used to end the node manager at once (its error
    handler failed on the item it logged), killing its workers and objects."""
    cluster, node = cluster
    ref = make_array.options(resources={"second": 1}).remote(TWO_MB // 8, 2.0)
    zray.wait([ref], timeout=60)
    segment = segment_path(SHM_DIR, bytes.fromhex(node.node_id), ref.binary())
    assert os.path.exists(segment)
    workers = {p.pid for p in psutil.Process(node.pid).children(recursive=True)}
    chunks = _dealer(_endpoints(node)["chunks"], cluster._config)
    try:
        for items in ([1.5], [(1.5,)], [(ref.binary(), "0", None)], [None, "x", b"y"],
                      [(ref.binary(), -1, 10)], [(ref.binary(), 0, 10, 1)]):
            chunks.send_multipart(protocol.encode(Msg.CHUNK_REQUEST, items))
        chunks.send_multipart(protocol.encode(Msg.CHUNK_REQUEST, [(b"m" * 18, 0, 10)]))
        reply = _answer(chunks, lambda kind, item: kind is Msg.CHUNK)   # it got them all
    finally:
        chunks.close()
    assert reply.object_id == b"m" * 18 and "not in the store" in reply.error
    assert node.alive()
    assert all(psutil.pid_exists(pid) for pid in workers)
    assert os.path.exists(segment)
    assert float(zray.get(ref, timeout=60).sum()) == 2.0 * (TWO_MB // 8)


# --- frames over the limit, before authentication -------------------------------------

def _greet_and_declare(endpoint: str, declared_bytes: int, send_bytes: int) -> int:
    """As a peer with no key: a ZMTP 3.0 greeting asking for CURVE, then a frame
    header declaring ``declared_bytes``, then up to ``send_bytes`` of its body.
    Returns how much of the body the peer took before it hung up."""
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\x00") \
        + b"\x00" + b"\x00" * 31
    header = bytes([0x06]) + struct.pack(">Q", declared_bytes)     # long command frame
    block, sent = b"\x00" * (1 << 20), 0
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            raw.sendall(greeting + header)
            while sent < send_bytes:
                raw.sendall(block)
                sent += len(block)
        except OSError:                  # reset: the peer dropped us
            pass
    return sent


@pytest.mark.parametrize("target", ["head", "chunk server"])
def test_a_large_frame_from_a_peer_without_the_key_is_not_buffered(cluster, target):
    cluster, node = cluster
    if target == "head":
        endpoint, pid = cluster.address_endpoint, cluster.head_process.popen.pid
    else:
        endpoint, pid = _endpoints(node)["chunks"], node.pid
    process = psutil.Process(pid)
    before = process.memory_info().rss
    sent = _greet_and_declare(endpoint, 500 * 2**20, 192 * 2**20)
    grown = process.memory_info().rss - before
    assert grown < 48 * 2**20, f"the {target} grew by {grown >> 20} MiB ({sent >> 20} MiB sent)"
    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE


# --- the head loop's periodic sweeps ---------------------------------------------------

def test_a_failing_sweep_is_logged_and_the_head_loop_goes_on(tmp_path, caplog):
    """The head's tick used to run unguarded: one exception in a sweep ended it."""
    loop = HeadLoop(Config(), [f"ipc://{tmp_path}/head.sock"], "hardening")
    later_sweeps = []

    def broken_sweep(now):
        raise AttributeError("'int' object has no attribute 'hex'")

    def later_sweep(now):
        later_sweeps.append(now)
        if len(later_sweeps) == 2:
            loop.flag["stop"] = True

    loop.state._expire_placeholders = broken_sweep
    loop.state._return_idle_leases = later_sweep
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        loop.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert len(later_sweeps) == 2
    assert caplog.text.count("broken_sweep failed; the loop goes on") == 2


# --- fuzzing every message type ---------------------------------------------------------

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


def test_fuzzed_messages_of_every_type_bring_nothing_down(cluster):
    cluster, node = cluster
    fuzzer = Fuzzer(seed=20261207)
    endpoints = _endpoints(node)
    config = cluster._config
    targets = {"head": _dealer(cluster.address_endpoint, config),
               "workers": _dealer(endpoints["workers"], config, os.urandom(8)),
               "chunks": _dealer(endpoints["chunks"], config)}
    counts = dict.fromkeys(targets, 0)
    types = list(Msg)
    try:
        for i in range(10_200):
            name = ("head", "head", "workers", "chunks")[i % 4]
            targets[name].send_multipart(fuzzer.message(types[i % len(types)]))
            counts[name] += 1
        # Each target answers a good message sent last: it got through the rest.
        last = {"head": (Msg.QUERY, (2**40, "nodes", None), Msg.QUERY_REPLY),
                "workers": (Msg.PULL_OBJECT, (b"p" * 18, 10, ()), Msg.OBJECT_PULLED),
                "chunks": (Msg.CHUNK_REQUEST, (b"c" * 18, 0, 10), Msg.CHUNK)}
        for name, (kind, item, _) in last.items():
            targets[name].send_multipart(protocol.encode(kind, [item]))
        for name, (_, item, answer) in last.items():
            _answer(targets[name], lambda kind, got: kind is answer and got[0] == item[0], 60)
    finally:
        for sock in targets.values():
            sock.close()
    assert sum(counts.values()) >= 10_000
    _everything_alive(cluster)
    _small_workload()
    _everything_alive(cluster)


def test_fuzz_items_are_all_malformed_or_harmless():
    fuzzer = Fuzzer(seed=1)
    for msg in Msg:
        for _ in range(50):
            item = pickle.loads(pickle.dumps(fuzzer.item(msg), 5))
            assert msg in _HARMLESS or protocol.why_malformed(msg, item) is not None
