"""The ``zmq`` backend: numpy arrays over direct ZeroMQ sockets.

Each rank binds one PULL socket and connects one PUSH socket to every other
rank.  A message is two frames: a small header ``(count, src)`` and the raw bytes of
one chunk, sent without a copy.  Messages between two ranks are numbered per
pair (ZeroMQ keeps them in order on one connection), so point-to-point
``send``/``recv`` between two ranks never shifts what the others expect;
messages that arrive ahead of the operation that wants them (a fast peer is
already in the next step) wait in a mailbox keyed by their header.

Allreduce is a ring: the array is cut into ``n`` chunks; in ``n - 1``
reduce-scatter steps each rank sends one chunk to the next rank and folds the
one from the previous rank into its own copy, so each rank ends up owning one
fully reduced chunk; ``n - 1`` allgather steps then pass the reduced chunks
around.  A chunk travels as pieces of 4 MiB, so a rank folds in one piece while
the next is still on the wire.  Every rank sends and receives ``2 (n - 1) / n`` of the array, at
most twice its size, whatever ``n``.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time

import numpy as np
import zmq

from zray.security import secure_client, secure_server
from zray.util.collective.types import NUMPY_REDUCERS, CollectiveError, ReduceOp

_HEADER = struct.Struct("<QI")       # message number on this pair of ranks, source rank
_PIECE_BYTES = 4 << 20               # allreduce sends ring chunks in pieces this big


class ZmqGroup:
    def __init__(self, world_size: int, rank: int, group_name: str, config,
                 head_endpoint: str, host: str, timeout_s: float):
        self.world_size = world_size
        self.rank = rank
        self.group_name = group_name
        self.timeout_s = timeout_s
        self.config = config
        self.ctx = zmq.Context()
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.RCVHWM, 0)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self._dir = None
        if head_endpoint.startswith("ipc://"):      # the whole cluster is on this host
            self._dir = tempfile.mkdtemp(prefix="zray-col-")
            endpoint = f"ipc://{self._dir}/r{rank}.sock"
        else:
            endpoint = f"tcp://{host}:*"
        secure_server(self.inbox, endpoint, config)
        self.inbox.bind(endpoint)
        self.address = self.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peers: dict[int, zmq.Socket] = {}
        self.mailbox: dict[tuple, zmq.Frame] = {}
        self.sent = [0] * world_size          # messages sent to each rank
        self.received = [0] * world_size      # messages taken from each rank
        self.operation = ""                   # for error messages

    def connect(self, addresses: list) -> None:
        """Open a PUSH socket to every other rank (``addresses[r]`` is rank r's)."""
        for rank, address in enumerate(addresses):
            if rank == self.rank:
                continue
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 5000)
            secure_client(sock, address, self.config)
            sock.connect(address)
            self.peers[rank] = sock

    def close(self) -> None:
        for sock in self.peers.values():
            sock.close()
        self.inbox.close()
        self.ctx.term()
        if self._dir:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)

    # --- point to point --------------------------------------------------------------

    def _send(self, dst: int, data) -> zmq.MessageTracker | None:
        header = _HEADER.pack(self.sent[dst], self.rank)
        self.sent[dst] += 1
        return self.peers[dst].send_multipart([header, data], copy=False, track=True)

    def _recv(self, src: int) -> memoryview:
        key = (self.received[src], src)
        self.received[src] += 1
        deadline = time.monotonic() + self.timeout_s
        while key not in self.mailbox:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.inbox.poll(remaining_ms):
                raise CollectiveError(
                    f"collective group {self.group_name!r}: rank {self.rank} waited "
                    f"{self.timeout_s:g} s for rank {src} in {self.operation}; is every "
                    "rank calling the same operations in the same order?")
            header, payload = self.inbox.recv_multipart(copy=False)
            self.mailbox[_HEADER.unpack(header.bytes)] = payload
        return self.mailbox.pop(key).buffer

    def _begin(self, operation: str) -> None:
        self.operation = operation

    # --- operations ------------------------------------------------------------------

    def allreduce(self, array: np.ndarray, op: ReduceOp) -> None:
        self._begin("allreduce")
        n = self.world_size
        if n == 1:
            return
        reducer = NUMPY_REDUCERS[op]
        flat = _flat_view(array)
        chunks = [_pieces(chunk) for chunk in np.array_split(flat, n)]
        nxt, prv = (self.rank + 1) % n, (self.rank - 1) % n
        sent: dict[int, list] = {}
        # Each ring chunk travels as pieces of _PIECE_BYTES: the peer reduces one
        # piece while the next is on the wire, and small receive buffers are
        # recycled by malloc instead of faulting in a fresh chunk-sized one.
        for step in range(n - 1):                          # reduce-scatter
            out, into = (self.rank - step) % n, (self.rank - step - 1) % n
            sent[out] = [self._send(nxt, piece) for piece in chunks[out]]
            for piece in chunks[into]:
                reducer(piece, np.frombuffer(self._recv(prv), dtype=flat.dtype), out=piece)
        for step in range(n - 1):                          # allgather
            out, into = (self.rank - step + 1) % n, (self.rank - step) % n
            sent[out] = [self._send(nxt, piece) for piece in chunks[out]]
            in_flight = sent.pop(into, None) or ()
            for i, piece in enumerate(chunks[into]):
                incoming = np.frombuffer(self._recv(prv), dtype=flat.dtype)
                if i < len(in_flight):
                    _wait_sent(in_flight[i])   # never overwrite what is in flight
                piece[...] = incoming
        for trackers in sent.values():
            for tracker in trackers:
                _wait_sent(tracker)

    def reduce(self, array: np.ndarray, dst_rank: int, op: ReduceOp) -> None:
        """Every rank sends to ``dst_rank``, which folds them in rank order."""
        self._begin("reduce")
        flat = _flat_view(array)
        if self.rank != dst_rank:
            _wait_sent(self._send(dst_rank, flat))
            return
        reducer = NUMPY_REDUCERS[op]
        for src in range(self.world_size):
            if src != self.rank:
                reducer(flat, np.frombuffer(self._recv(src), dtype=flat.dtype), out=flat)

    def broadcast(self, array: np.ndarray, src_rank: int) -> None:
        self._begin("broadcast")
        flat = _flat_view(array)
        if self.rank == src_rank:
            trackers = [self._send(dst, flat) for dst in self.peers]
            for tracker in trackers:
                _wait_sent(tracker)
        else:
            flat[...] = np.frombuffer(self._recv(src_rank), dtype=flat.dtype)

    def allgather(self, outputs: list, array: np.ndarray) -> None:
        self._begin("allgather")
        flat = _flat_view(array)
        trackers = [self._send(dst, flat) for dst in self.peers]
        for src in range(self.world_size):
            target = _flat_view(outputs[src])
            if src == self.rank:
                target[...] = flat
            else:
                target[...] = np.frombuffer(self._recv(src), dtype=target.dtype)
        for tracker in trackers:
            _wait_sent(tracker)

    def barrier(self) -> None:
        self._begin("barrier")
        trackers = [self._send(dst, b"") for dst in self.peers]
        for src in self.peers:
            self._recv(src)
        for tracker in trackers:
            _wait_sent(tracker)

    def send(self, array: np.ndarray, dst_rank: int) -> None:
        self._begin("send")
        _wait_sent(self._send(dst_rank, _flat_view(array)))

    def recv(self, array: np.ndarray, src_rank: int) -> None:
        self._begin("recv")
        flat = _flat_view(array)
        flat[...] = np.frombuffer(self._recv(src_rank), dtype=flat.dtype)


def _flat_view(array) -> np.ndarray:
    """A 1-d view sharing ``array``'s memory (collectives work in place)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"the zmq backend works on numpy arrays (or CPU torch tensors), "
                        f"got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError("collective operations need a C-contiguous array; pass "
                         "np.ascontiguousarray(x) and copy the result back")
    if not array.flags.writeable:
        raise ValueError("collective operations work in place and this array is "
                         "read-only (e.g. a zray.get of a shared-memory object); "
                         "pass a copy")
    return array.reshape(-1)


def _pieces(chunk: np.ndarray) -> list:
    """``chunk`` as consecutive views of about _PIECE_BYTES (at least one, so an
    empty chunk still sends one message and both sides count alike)."""
    count = max(1, -(-chunk.nbytes // _PIECE_BYTES))
    return np.array_split(chunk, count)


def _wait_sent(tracker) -> None:
    if tracker is not None and not tracker.done:
        tracker.wait()
