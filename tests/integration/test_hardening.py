"""No message from a peer ends a zray process.

Malformed messages from an authenticated peer (a CURVE member, or the owner of
an ipc socket) are refused at decode and logged; a failing periodic sweep is
logged and the loop goes on; a peer without the key cannot make the head or a
chunk server buffer a large frame.  Integration tests on a real cluster over
TCP with CURVE (``cluster_utils.Cluster``), plus one in-process head loop.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import psutil
import pytest

import zray
from zray import protocol
from zray.cluster_utils import Cluster
from zray.config import Config
from zray.head.main import HeadLoop
from zray.protocol import Msg
from zray.serialization import segment_path

from tests.conftest import SHM_DIR, node_preloaded, wait_for
from tests.tasks import make_array, pid
from tests.integration.test_security import _answer, _chunk_dealer, _dealer, _logs

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


# --- ids that are not bytes --------------------------------------------------------

def test_references_to_ids_that_are_not_bytes_are_refused_and_logged(cluster):
    """ADD_REFS/SUBSCRIBE_OBJECTS (12345,) used to leave a placeholder keyed by
    12345, and the head's next expiry sweep (30 s later) died on 12345.hex()."""
    cluster, _ = cluster
    head = _dealer(cluster.address_endpoint, cluster.config)
    good = b"g" * 18
    try:
        head.send_multipart(protocol.encode(Msg.ADD_REFS, [(12345,), (good,)]))
        head.send_multipart(protocol.encode(Msg.SUBSCRIBE_OBJECTS, [(12345,), (good,)]))
        head.send_multipart(protocol.encode(Msg.QUERY, [(1, "list_objects", None)]))
        reply = _answer(head, lambda kind, item: kind is Msg.QUERY_REPLY)
    finally:
        head.close()
    _, ok, objects = reply
    assert ok, objects
    ids = {entry["object_id"] for entry in objects}
    assert good.hex() in ids                         # the good item of the batch counted
    log = _logs(cluster)
    for kind in ("ADD_REFS", "SUBSCRIBE_OBJECTS"):
        assert f"malformed {kind} item 0: field object_id should be bytes (18), got int" \
            in log


# --- a malformed CHUNK_REQUEST --------------------------------------------------------

def test_malformed_chunk_requests_leave_the_node_its_workers_and_its_segments(cluster):
    """A CHUNK_REQUEST item 1.5 used to end the node manager at once (its error
    handler failed on the item it logged), killing its workers and objects."""
    cluster, node = cluster
    ref = make_array.options(resources={"second": 1}).remote(TWO_MB // 8, 2.0)
    zray.wait([ref], timeout=60)
    segment = segment_path(SHM_DIR, bytes.fromhex(node.node_id), ref.binary())
    assert os.path.exists(segment)
    # The node's fork server and a worker forked after its preload (the first
    # worker, forked before, retires once the preload is done: not a death)
    assert wait_for(lambda: node_preloaded(cluster.session_dir, node.node_id))
    workers = {p.pid for p in psutil.Process(node.pid).children()} | \
        {zray.get(pid.options(resources={"second": 1}).remote(), timeout=60)}
    chunks = _chunk_dealer(_endpoints(node)["chunks"], cluster.config)
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


# --- a peer with an endpoint nobody can connect to ----------------------------------

def test_a_pull_from_a_node_with_a_bad_endpoint_fails_at_once(cluster):
    """A member may register a node whose chunk server endpoint does not parse:
    a pull from it used to raise out of the node's flush (its other messages
    waited a turn, the socket leaked) and hang until the 30 s transfer timeout."""
    cluster, node = cluster
    fake_id = os.urandom(16)
    fake = _dealer(cluster.address_endpoint, cluster.config, b"N" + fake_id)
    puller = _dealer(_endpoints(node)["workers"], cluster.config, os.urandom(8))
    try:
        fake.send_multipart(protocol.encode(Msg.REGISTER_NODE, [(
            fake_id, protocol.PROTOCOL_MAJOR, protocol.PROTOCOL_MINOR,
            {"resources": {}, "transfer_endpoint": "tcp://not a host:1"})]))
        _answer(fake, lambda kind, item: kind is Msg.WELCOME)
        assert wait_for(lambda: any(n["NodeID"] == fake_id.hex() for n in zray.nodes()))
        started = time.monotonic()
        puller.send_multipart(protocol.encode(Msg.PULL_OBJECT, [(b"f" * 18, 10, (fake_id,))]))
        _, error = _answer(puller, lambda kind, item: kind is Msg.OBJECT_PULLED, 20)
        assert error and time.monotonic() - started < 5
    finally:
        fake.send_multipart(protocol.encode(Msg.SHUTDOWN, [("leaving",)]))
        fake.close()
        puller.close()
    assert node.alive()


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

    loop.state.directory.expire_placeholders = broken_sweep
    loop.state.leases.return_idle_leases = later_sweep
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        loop.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert len(later_sweeps) == 2
    assert caplog.text.count("broken_sweep failed; the loop goes on") == 2
