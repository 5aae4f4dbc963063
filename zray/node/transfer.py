"""Moving object segments between nodes, in chunks, with a window of credits.

``ChunkServer`` answers a peer's CHUNK_REQUEST with a slice of a memory map of the
segment (sent without a copy), or, for an object spilled here, with the bytes
read from its spill file (the object is not restored to memory for a peer).  ``Puller`` brings a segment that lives elsewhere
into this node's store: it keeps at most ``window`` requests outstanding per pull
(each CHUNK that arrives returns a credit, as in the ZeroMQ guide's credit-based
flow control; the next request leaves before the chunk is written), writes each
chunk straight into the new segment with pwrite, and renames the segment into place only when it is complete, so readers never see
half an object.  Requests for an object already being pulled join that pull.

Neither class owns a socket: the node loop feeds them messages and sends what
they queue in ``requests`` (peer node id, CHUNK_REQUEST item) and ``finished``
(object id, error or None, waiters, size).
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

from zray.serialization import (SPARE_MIN_BYTES, _pwrite_all, _unlink_quietly,
                                claim_spare, segment_path)

OPEN_MAPS = 8      # segments a server keeps mapped between requests


class ChunkServer:
    def __init__(self, shm_dir: str, node_id: bytes):
        self.shm_dir = shm_dir
        self.node_id = node_id
        self._views: OrderedDict[bytes, memoryview] = OrderedDict()
        self._files: OrderedDict[bytes, int] = OrderedDict()   # spill file fds
        self.spilled_path = lambda object_id: None    # set by the loop (the store)

    def chunk(self, object_id: bytes, offset: int, length: int):
        """(header item, buffer frames) answering one CHUNK_REQUEST."""
        try:
            view = self._view(object_id)
        except OSError as exc:
            spilled = self.spilled_path(object_id)
            if spilled is not None:
                return self._from_file(object_id, spilled, offset, length)
            return (object_id, offset, 0, f"not in the store of node "
                                         f"{self.node_id.hex()[:12]}: {exc.strerror}"), []
        if offset < 0 or length <= 0 or offset >= len(view):
            return (object_id, offset, len(view), f"bad chunk range {offset}+{length}"), []
        if offset + length >= len(view):    # the last chunk: unmap once it is sent
            self._views.pop(object_id, None)
        return (object_id, offset, len(view), None), [view[offset:offset + length]]

    def forget(self, object_id: bytes) -> None:
        """The segment was freed: drop our map (frames in flight keep it alive)."""
        self._views.pop(object_id, None)
        fd = self._files.pop(object_id, None)
        if fd is not None:
            os.close(fd)

    def _from_file(self, object_id: bytes, path: str, offset: int, length: int):
        """A chunk of a spilled object, read from its spill file."""
        fd = self._files.get(object_id)
        try:
            if fd is None:
                fd = self._files[object_id] = os.open(path, os.O_RDONLY)
                while len(self._files) > OPEN_MAPS:
                    os.close(self._files.popitem(last=False)[1])
            size = os.fstat(fd).st_size
        except OSError as exc:
            self.forget(object_id)
            return (object_id, offset, 0, f"spilled object unreadable on node "
                                         f"{self.node_id.hex()[:12]}: {exc.strerror}"), []
        if offset < 0 or length <= 0 or offset >= size:
            return (object_id, offset, size, f"bad chunk range {offset}+{length}"), []
        data = os.pread(fd, min(length, size - offset), offset)
        if offset + length >= size:
            self.forget(object_id)
        return (object_id, offset, size, None), [data]

    def _view(self, object_id: bytes) -> memoryview:
        view = self._views.get(object_id)
        if view is not None:
            self._views.move_to_end(object_id)
            return view
        fd = os.open(segment_path(self.shm_dir, self.node_id, object_id), os.O_RDONLY)
        try:
            view = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
        finally:
            os.close(fd)
        self._views[object_id] = view
        while len(self._views) > OPEN_MAPS:
            self._views.popitem(last=False)
        return view


class Pull:
    __slots__ = ("object_id", "size", "sources", "source", "path", "part_path", "fd",
                 "next_offset", "in_flight", "received", "waiters", "last_progress",
                 "freed")

    def __init__(self, object_id, size, sources, path, now):
        self.object_id = object_id
        self.size = size
        self.sources = list(sources)     # copies not tried yet, in order
        self.source = None
        self.path = path
        self.part_path = path + ".part"
        self.fd = None
        self.next_offset = 0
        self.in_flight = 0
        self.received = 0
        self.waiters = []
        self.last_progress = now
        self.freed = False


class Puller:
    def __init__(self, shm_dir: str, node_id: bytes, chunk_bytes: int, window: int,
                 timeout_s: float):
        self.shm_dir = shm_dir
        self.node_id = node_id
        self.chunk_bytes = max(4096, int(chunk_bytes))
        self.window = max(1, int(window))
        self.timeout_s = timeout_s
        self.pulls: dict[bytes, Pull] = {}
        self.requests: list = []      # (peer node id, CHUNK_REQUEST item)
        self.finished: list = []      # (object id, error or None, waiters, size)
        self.reachable = lambda node_id: True   # set by the loop: is the peer known alive
        self.send_requests = lambda: None       # set by the loop: send ``requests`` now
        self.spares = ()      # the node's spare segment paths: pages already faulted in

    def request(self, object_id: bytes, size: int, sources, waiter, now: float) -> None:
        """``waiter`` wants the object here; start a pull unless one is running."""
        path = segment_path(self.shm_dir, self.node_id, object_id)
        if os.path.exists(path):
            self.finished.append((object_id, None, [waiter], size))
            return
        pull = self.pulls.get(object_id)
        if pull is not None:
            pull.waiters.append(waiter)
            return
        sources = [n for n in sources if n != self.node_id]
        pull = self.pulls[object_id] = Pull(object_id, int(size), sources, path, now)
        pull.waiters.append(waiter)
        self._next_source(pull, None)

    def on_chunk(self, peer: bytes, object_id: bytes, offset: int, size: int, error,
                 frames, now: float) -> None:
        pull = self.pulls.get(object_id)
        if pull is None or pull.source != peer:
            return                       # a late chunk of a pull that moved on
        if error is not None:
            self._next_source(pull, f"node {peer.hex()[:12]}: {error}")
            return
        if size != pull.size or not frames or offset + len(frames[0]) > size:
            self._next_source(pull, f"node {peer.hex()[:12]} sent a chunk that does not "
                                    f"fit the segment ({size} bytes, expected {pull.size})")
            return
        data = frames[0]
        pull.in_flight -= 1
        pull.last_progress = now
        self._fill_window(pull)
        self.send_requests()        # the peer sends the next chunk while we write this one
        _pwrite_all(pull.fd, data, offset)   # pwrite beats a fresh map's page faults
        pull.received += len(data)
        if pull.received >= pull.size:
            self._complete(pull)

    def on_freed(self, object_id: bytes) -> None:
        """The head freed the object: a running pull ends without installing it."""
        pull = self.pulls.get(object_id)
        if pull is not None:
            pull.freed = True

    def on_node_dead(self, node_id: bytes) -> None:
        for pull in list(self.pulls.values()):
            if pull.source == node_id:
                self._next_source(pull, f"node {node_id.hex()[:12]} died")

    def tick(self, now: float) -> None:
        for pull in list(self.pulls.values()):
            if now - pull.last_progress > self.timeout_s:
                self._next_source(pull, f"node {pull.source.hex()[:12]} sent nothing for "
                                        f"{self.timeout_s:g} s")

    def close(self) -> None:
        for pull in list(self.pulls.values()):
            self._fail(pull, "the node is shutting down")

    # --- internals -------------------------------------------------------------------

    def _next_source(self, pull: Pull, why) -> None:
        """Start over from the next copy; fail when none is left."""
        while pull.sources:
            source = pull.sources.pop(0)
            if self.reachable(source):
                break
        else:
            reason = why or "no live node holds a copy"
            self._fail(pull, f"could not pull object {pull.object_id.hex()}: {reason}")
            return
        if pull.fd is None:
            try:
                pull.fd = _create_segment(pull.part_path, pull.size, self.spares)
            except (OSError, OverflowError) as exc:     # no room, or an absurd size
                self._fail(pull, f"could not make room for object "
                                 f"{pull.object_id.hex()} ({pull.size} bytes): {exc}")
                return
        pull.source = source
        pull.next_offset = 0
        pull.in_flight = 0
        pull.received = 0
        self._fill_window(pull)

    def _fill_window(self, pull: Pull) -> None:
        while pull.in_flight < self.window and pull.next_offset < pull.size:
            length = min(self.chunk_bytes, pull.size - pull.next_offset)
            self.requests.append((pull.source, (pull.object_id, pull.next_offset, length)))
            pull.next_offset += length
            pull.in_flight += 1

    def _complete(self, pull: Pull) -> None:
        del self.pulls[pull.object_id]
        _release(pull)
        if pull.freed:
            _unlink_quietly(pull.part_path)
            self.finished.append((pull.object_id, "the object was freed while it was "
                                  "being pulled", pull.waiters, pull.size))
            return
        os.rename(pull.part_path, pull.path)
        self.finished.append((pull.object_id, None, pull.waiters, pull.size))

    def _fail(self, pull: Pull, error: str) -> None:
        self.pulls.pop(pull.object_id, None)
        _release(pull)
        _unlink_quietly(pull.part_path)
        self.finished.append((pull.object_id, error, pull.waiters, pull.size))


def _create_segment(path: str, size: int, spares=()) -> int:
    """The open file a pull writes into: a spare segment of the node's renamed
    there when one fits (writing over faulted-in pages takes about half the
    time of fresh tmpfs pages), else a new file."""
    fd = claim_spare(path, size, spares) if size >= SPARE_MIN_BYTES else None
    if fd is None:
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.ftruncate(fd, max(size, 1))
    except OSError:
        os.close(fd)
        raise
    return fd


def _release(pull: Pull) -> None:
    if pull.fd is not None:
        fd, pull.fd = pull.fd, None
        os.close(fd)

