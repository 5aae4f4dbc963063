"""Small helpers shared by the head, node and worker process loops."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys

import zmq


# pyzmq's enum flags cost microseconds per use on the hot path; plain ints do not.
_POLLIN = int(zmq.POLLIN)
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
# pyzmq's Socket.send is a Python method (routing_id and group for draft
# sockets) around the compiled one: ~0.2 us per frame that send_frames skips.
_send = zmq.backend.Socket.send
_get = zmq.backend.Socket.get
_EVENTS = int(zmq.EVENTS)


def has_input(sock) -> bool:
    """A message is waiting (cheaper than catching zmq.Again after the last one).

    The compiled ``getsockopt(EVENTS)``: pyzmq's ``Socket.get`` first turns the
    option into its enum in Python (~0.5 us).  Not ``zmq_poll(..., 0)``, which
    looks as cheap alone but makes a poll syscall and lets go of the GIL: in a
    client's I/O thread that hands the GIL to the task running on the main
    thread at every check, and the I/O thread waits to get it back (map_reduce
    workers: ~10 us more per task, measured against this)."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


def preload(names, who: str) -> None:
    """Import each module in ``names`` now; one that fails is reported on
    stderr (the process's log) and skipped."""
    import importlib
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            print(f"zray {who}: cannot preload {name!r}: {exc!r}", file=sys.stderr,
                  flush=True)


def poll_ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up: pyzmq truncates a float,
    so 0.4 ms would poll with 0 and spin until the deadline passed."""
    return max(0, math.ceil(seconds * 1000))


def recv_frames(sock) -> list:
    """All frames of the next message, as bytes; call only when ``has_input``,
    or first after a poll reported the socket readable (then a loop asks
    ``has_input`` only from the second message on; zmq.Again, ~5 us, where
    the poll's answer no longer held).

    A frame received without copying says itself whether more follow
    (``Frame.more``): asking the socket (``get(RCVMORE)``) costs pyzmq an
    option-enum lookup per frame, about a third of a small message's receive.
    ``Frame.bytes`` copies once, as ``recv(copy=True)`` does."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def send_frames(sock, frames) -> None:
    """Send one message's frames (bytes), copying, without blocking (raises
    zmq.Again where it would block)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, _NOBLOCK | _SNDMORE if i < last else _NOBLOCK)


#: The collector's thresholds in the head and node managers (Python's default:
#: 700, 10, 10).  At 700 allocations a young collection, and every tenth of those
#: a middle one, walk the thousands of task records in flight: 12% of the head's
#: CPU in ``tasks_async`` (0.21 s of 1.7 s for 40,000 tasks), 0.07-0.10 s at
#: 10,000.  Cyclic garbage, rare in these loops, waits a little longer.
SERVER_GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """For the head and node managers, once started (never in a driver or a
    worker: they run the user's code).  ``gc.freeze`` moves what start-up
    made (modules, classes, the config) out of every later collection's walk."""
    import gc
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def setup_logging(role: str, level: str, log_path: str | None = None) -> None:
    if log_path:            # owner-only, as the session directory holding it
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handler = logging.FileHandler(log_path) if log_path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {role}[%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def install_stop_handler(flag: dict) -> None:
    """SIGTERM/SIGINT set ``flag["stop"]``; the loop exits cleanly at its next turn."""
    def _stop(signum, frame):
        flag["stop"] = True
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def parent_alive(parent_pid: int | None) -> bool:
    return parent_pid is None or os.getppid() == parent_pid


def configure_socket(sock, config, max_message_bytes: int | None = None) -> None:
    """Loop socket options.  ``max_message_bytes`` bounds every inbound frame
    (``Config.max_message_bytes`` unless given; <= 0: no bound): ZeroMQ drops a
    peer that declares a larger one, before buffering it and before the CURVE
    handshake is done, so a socket should allow only what it can legitimately
    receive."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    limit = config.max_message_bytes if max_message_bytes is None else max_message_bytes
    if limit > 0:
        sock.setsockopt(zmq.MAXMSGSIZE, limit)


def connect_soon(sock, endpoint: str) -> None:
    """Connect, retrying after 10 ms, 20, 40... up to ZeroMQ's usual 100 ms
    when the peer is not there yet.  A driver, node or worker often connects
    before the head or node it starts alongside has bound: with ZeroMQ's fixed
    100 ms retry a fresh ``init`` waited ~50 ms for nothing (its head was up)."""
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
    sock.connect(endpoint)


#: Room for a CHUNK's header next to its chunk of data, and for a CHUNK_REQUEST.
TRANSFER_HEADROOM_BYTES = 64 * 1024


def transfer_frame_limit(config) -> int:
    """The largest frame a transfer socket legitimately receives: one chunk."""
    return config.transfer_chunk_bytes + TRANSFER_HEADROOM_BYTES


def guarded(log, what: str, function, *args) -> None:
    """Run one step of a process loop (a periodic sweep, a flush): a failure is
    logged with ``what`` and the loop goes on, as it does for a failing handler."""
    try:
        function(*args)
    except Exception:
        log.exception("%s failed; the loop goes on", what)


def log_rejected(log, message, peer: str) -> None:
    """decode(keep_good_items=True) left out malformed items: say which, from whom."""
    for why in message.rejected:
        log.warning("dropped an item from %s: %s", peer, why)


def bind_private(sock, address: str, port_range: str = "") -> str:
    """Bind; an ipc socket file is made owner-only.  A TCP address ending in
    ``:*`` takes a port from ``port_range`` ("lo-hi") when one is set, so a
    firewall can allow a known range.  Returns the bound endpoint."""
    if address.startswith("tcp://") and address.endswith(":*") and port_range:
        low, _, high = port_range.partition("-")
        if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) < 65536):
            raise ValueError(f"port_range {port_range!r} is not 'low-high', e.g. "
                             "'20000-20999' (set by ZRAY_PORT_RANGE)")
        try:
            sock.bind_to_random_port(address[:-2], int(low), int(high) + 1, max_tries=500)
        except zmq.ZMQBindError:
            raise zmq.ZMQError(msg=f"no free port in port_range {port_range}") from None
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.bind(address)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], 0o600)
    return endpoint


def serve_endpoint(session_dir: str, name: str, host: str, head_endpoint: str) -> str:
    """Where a process listens for its peers: an owner-only ipc path when the
    cluster lives on this host (its head is reached by ipc), else TCP on this
    host's address with a port the OS picks."""
    if head_endpoint.startswith("ipc://"):
        return f"ipc://{session_dir}/{name}.sock"
    return f"tcp://{host}:*"


def advertised_host(head_endpoint: str) -> str:
    """This host's address as the cluster's other hosts reach it: on the route
    to the head for a TCP cluster, loopback for a local (ipc) one."""
    if not head_endpoint.startswith("tcp://"):
        return "127.0.0.1"
    host = head_endpoint[len("tcp://"):].rpartition(":")[0]
    return "127.0.0.1" if host in ("127.0.0.1", "localhost") else route_ip(host)


def route_ip(peer_host: str = "192.0.2.1") -> str:
    """This host's address on the route to ``peer_host`` (a UDP connect sends
    nothing; it only asks the kernel which interface it would use)."""
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def run_profiled(role: str, function) -> None:
    """Run ``function``; with ZRAY_PROFILE_DIR set, under cProfile, dumping
    ``<dir>/<role>-<pid>.prof`` at exit (a developer's tool for hot paths)."""
    folder = os.environ.get("ZRAY_PROFILE_DIR")
    if not folder:
        function()
        return
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        function()
    finally:
        profiler.disable()
        os.makedirs(folder, exist_ok=True)
        profiler.dump_stats(os.path.join(folder, f"{role}-{os.getpid()}.prof"))
