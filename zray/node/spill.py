"""Spill files: the node's objects on disk while its store is over its bound.

A node spills to its own folder ``<base>/zray-spill-<node>`` (``base`` is
``Config.object_spilling_directory``, else the session directory), one file
per object, named by the object id.  A spill copies the whole segment with
``sendfile`` (the kernel moves the pages: large sequential writes, no Python
buffer), then removes the segment; a restore copies it back into a new
segment and renames it into place, so readers never see half an object.  The
spill file stays until the object is freed, so spilling a restored object
again only removes its segment.

``SpillFiles`` is what ``zray.node.store.ObjectStore`` calls for every effect
on files; the store decides, this module touches the disk.  The folder holds
``owner.pid`` with the node's pid: a node starting on this host removes the
folders of nodes that died without cleaning up (SIGKILL), and ``zray stop``
and ``Cluster.remove_node`` remove the folders of the nodes they stopped.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import threading

from zray.serialization import (SPILL_WANTED_MODE, claim_spare, _unlink_quietly, _unused, segment_path,
                                segment_prefix)

log = logging.getLogger("zray.node")

SPILL_DIR_PREFIX = "zray-spill-"
OWNER_FILE = "owner.pid"
COPY_STEP_BYTES = 1 << 30


def spill_base(config, session_dir: str) -> str:
    return config.object_spilling_directory or session_dir


def node_spill_dir(base: str, node_id: bytes) -> str:
    return os.path.join(base, f"{SPILL_DIR_PREFIX}{node_id.hex()[:16]}")


def open_spill_dir(base: str, node_id: bytes) -> str:
    """Make this node's spill folder (owner-only) and record our pid in it."""
    os.makedirs(base, mode=0o700, exist_ok=True)
    remove_dead_spill_dirs(base)
    path = node_spill_dir(base, node_id)
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(path, OWNER_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:          # owner-only, like every session file
        f.write(str(os.getpid()))
    return path


def remove_spill_dir(base: str, node_id: bytes) -> None:
    shutil.rmtree(node_spill_dir(base, node_id), ignore_errors=True)


def remove_dead_spill_dirs(base: str) -> int:
    """Remove spill folders under ``base`` whose node process is gone; how many."""
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if not name.startswith(SPILL_DIR_PREFIX):
            continue
        path = os.path.join(base, name)
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def remove_dead_session_spill_dirs(temp_dir: str) -> int:
    """The same for every session folder under ``temp_dir`` (the default base)."""
    try:
        names = [n for n in os.listdir(temp_dir) if n.startswith("session_")]
    except OSError:
        return 0
    return sum(remove_dead_spill_dirs(os.path.join(temp_dir, n)) for n in names)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_file(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes from the start of ``src_fd`` to ``dst_fd``'s position,
    in the kernel (sendfile), in steps of up to 1 GiB."""
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(dst_fd, src_fd, offset, min(COPY_STEP_BYTES, size - offset))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            _copy_by_reads(src_fd, dst_fd, offset, size)
            return
        if sent == 0:
            raise OSError(errno.EIO, f"short copy: {offset} of {size} bytes")
        offset += sent


def _copy_by_reads(src_fd: int, dst_fd: int, offset: int, size: int) -> None:
    while offset < size:
        data = os.pread(src_fd, min(64 << 20, size - offset), offset)
        if not data:
            raise OSError(errno.EIO, f"short read: {offset} of {size} bytes")
        view = memoryview(data)
        while view:
            view = view[os.write(dst_fd, view):]
        offset += len(data)


class SpillFiles:
    """The file side of a node's store: segments, spill files, spares, pins.

    Besides the spills the store asks for when it needs room now, a writer
    thread copies objects to their spill files ahead of need (``write_behind``:
    the store asks once it passes a share of its bound), so that making room
    later only removes segments and the disk writes overlap other work.
    """

    def __init__(self, shm_dir: str, node_id: bytes, spill_dir: str, spares, chunks):
        self.shm_dir = shm_dir
        self.node_id = node_id
        self.spill_dir = spill_dir
        self.spares = spares              # SpareSegments: freed pages kept for reuse
        self.recycled: list[str] = []     # spilled segments kept for the next restore
        self.chunks = chunks              # ChunkServer: its maps pin segments
        self.worker_pids: dict = {}       # pid -> what runs there (for error texts)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = None

    def write_behind(self, object_id: bytes) -> None:
        """Copy the object to its spill file in the writer thread; the result
        comes back from ``written_behind``."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="spill-writer",
                                            daemon=True)
            self._writer.start()
        self._jobs.put(object_id)

    def written_behind(self) -> list:
        """[(object_id, spill path or None, error or None)] finished since last asked."""
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def close(self) -> None:
        self.drop_recycled()
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join(timeout=10.0)

    def _write_loop(self) -> None:
        while True:
            object_id = self._jobs.get()
            if object_id is None:
                return
            path = self.spill_path(object_id)
            try:
                _copy_path(self.segment(object_id), path)
                self._done.put((object_id, path, None))
            except OSError as exc:       # freed meanwhile, or the disk is full
                _unlink_quietly(path)
                self._done.put((object_id, None, exc))

    def segment(self, object_id: bytes) -> str:
        return segment_path(self.shm_dir, self.node_id, object_id)

    def spill_path(self, object_id: bytes) -> str:
        return os.path.join(self.spill_dir, object_id.hex())

    def held_bytes(self) -> int:
        """Bytes of spare and draining segments (freed objects' pages)."""
        return self.spares.held_bytes()

    def drop_spares(self) -> None:
        self.spares.drop_spares()

    def segment_size(self, object_id: bytes) -> int | None:
        try:
            return os.stat(self.segment(object_id)).st_size
        except OSError:
            return None

    def in_use(self, object_id: bytes) -> bool:
        """Whether a process (this one included) has the segment open or mapped:
        a running task's argument, a live zero-copy value, a write in progress."""
        self.chunks.forget(object_id)
        return _unused(self.segment(object_id)) is False

    def mark_wanted(self, object_id: bytes) -> None:
        try:
            os.chmod(self.segment(object_id), SPILL_WANTED_MODE)
        except OSError:
            pass

    def spill(self, object_id: bytes, spill_path: str | None, aside: bool = False,
              recycle: bool = False) -> str:
        """Write the segment to its spill file (unless one exists: objects never
        change) and remove the segment; the spill file's path.  ``aside``: the
        writer thread is writing the usual path, so use another.  ``recycle``:
        keep the segment's pages for the restore this spill makes room for
        (nobody maps it: the store spills only segments not in use)."""
        source = self.segment(object_id)
        if spill_path is None:
            spill_path = self.spill_path(object_id) + (".now" if aside else "")
            _copy_path(source, spill_path)
        if recycle:
            kept = f"{source}.recycled"
            try:
                os.rename(source, kept)
            except OSError:
                kept = None
            # A reader may have mapped the segment after the store found it
            # unused (the copy to disk takes tens of ms): its pages are only
            # recycled if nobody has them now, when no new reader can find them.
            if kept is not None and _unused(kept):
                self.recycled.append(kept)
                return spill_path
            if kept is not None:
                _unlink_quietly(kept)     # the reader keeps the pages, intact
                return spill_path
        _unlink_quietly(source)
        return spill_path

    def restore(self, object_id: bytes, spill_path: str) -> None:
        """Copy a spill file back into a segment, renamed into place: into the
        pages of a segment just spilled to make room when one is large enough
        (writing over pages already there is ~3x faster than faulting in fresh
        tmpfs pages), else into a new file."""
        path = self.segment(object_id)
        size = os.stat(spill_path).st_size
        fd = self._claim_recycled(path + ".restore", size)
        if fd is None:
            _copy_path(spill_path, path + ".restore")
        else:
            try:
                src = os.open(spill_path, os.O_RDONLY)
                try:
                    os.ftruncate(fd, max(size, 1))
                    copy_file(src, fd, size)
                finally:
                    os.close(src)
            except BaseException:
                _unlink_quietly(path + ".restore")
                raise
            finally:
                os.close(fd)
        os.rename(path + ".restore", path)

    def _claim_recycled(self, target: str, size: int) -> int | None:
        """The smallest recycled segment of at least ``size`` bytes, renamed to
        ``target`` and opened (as a writer claims a spare); None if none fits."""
        fd = claim_spare(target, size, self.recycled)
        self.recycled = [path for path in self.recycled if os.path.exists(path)]
        return fd

    def recycled_to_spares(self, size: int) -> None:
        """Offer a recycled segment of at least ``size`` bytes to the writer the
        room was made for, as a spare (it claims the smallest that fits)."""
        for path in list(self.recycled):
            try:
                fits = os.stat(path).st_size >= size
            except OSError:
                continue
            if fits and self.spares.adopt(path):
                self.recycled.remove(path)
                return

    def drop_recycled(self) -> None:
        """Remove the segments kept for a restore that did not take them."""
        while self.recycled:
            _unlink_quietly(self.recycled.pop())

    def delete_spill(self, spill_path: str) -> None:
        _unlink_quietly(spill_path)

    def pinned_detail(self, object_ids) -> str:
        """Which processes map these segments, for an ObjectStoreFullError."""
        paths = {self.segment(o): o for o in object_ids}
        holders = _mappers(set(paths), segment_prefix(self.shm_dir, self.node_id))
        me = os.getpid()
        parts = []
        for path, object_id in paths.items():
            pids = sorted(p for p in holders.get(path, ()) if p != me)
            who = ", ".join(self._describe(pid) for pid in pids) or "a write in progress"
            size = self.segment_size(object_id) or 0
            parts.append(f"{object_id.hex()} ({size / 2**20:.1f} MiB) by {who}")
        return "; ".join(parts)

    def _describe(self, pid: int) -> str:
        what = self.worker_pids.get(pid)
        if what:
            return f"pid {pid} ({what})"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        return f"pid {pid} ({cmd[:60]})" if cmd else f"pid {pid}"


def _copy_path(source: str, target: str) -> None:
    """Copy the file ``source`` to a new file ``target`` (removed on failure)."""
    src = os.open(source, os.O_RDONLY)
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            copy_file(src, dst, size)
        except BaseException:
            os.close(dst)
            _unlink_quietly(target)
            raise
        os.close(dst)
    finally:
        os.close(src)


def _mappers(paths: set, prefix: str) -> dict:
    """{segment path: pids that have it mapped}, read from /proc/*/maps."""
    found: dict = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if prefix not in text:
            continue
        for line in text.splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            path = path.removesuffix(" (deleted)")
            if path in paths:
                found.setdefault(path, set()).add(pid)
    return found
