"""Turning values into bytes and back: cloudpickle, pickle protocol 5, shared memory.

Small values are pickled in-band and travel inside messages (``KIND_INLINE``).
Large values are pickled with out-of-band buffers (numpy arrays, bytes) and
written to one shared-memory segment per object (``KIND_SHM``): a header, the
pickle stream, then each buffer 64-byte aligned.  Reading a segment maps it and
hands pickle memoryviews into the map, so numpy arrays come back as read-only
views of shared memory, with no copy whatever their size.

ObjectRefs found while pickling are collected in a per-thread context so the
head can keep them alive as long as the object that contains them.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import pickle
import struct
import threading
import time
from collections import OrderedDict, deque

KIND_INLINE = 0
KIND_ERROR = 1
KIND_SHM = 2

_MAGIC = b"ZRO1"
_HEAD = struct.Struct("<4sIQ")          # magic, buffer count, meta length
_SPAN = struct.Struct("<QQ")            # offset, length
_ALIGN = 64
#: Mode a node gives a segment it wants to spill while someone maps it:
#: processes that only keep a cached map of it (SegmentMaps) let go on their
#: next sweep, so that only live values pin a segment.
SPILL_WANTED_MODE = 0o700
_FAST_TYPES = frozenset((int, float, str, bool, type(None), bytes))

_context = threading.local()


class SerializationError(TypeError):
    """A value could not be pickled; the message names what and why."""


class SerializedObject:
    __slots__ = ("meta", "buffers", "contained_ids", "size")

    def __init__(self, meta, buffers, contained_ids):
        self.meta = meta
        self.buffers = buffers
        self.contained_ids = contained_ids
        self.size = len(meta) + sum(b.nbytes for b in buffers) if buffers else len(meta)


def record_contained_ref(object_id: bytes) -> None:
    """Called by ObjectRef.__reduce__: note a ref nested in what is being pickled."""
    found = getattr(_context, "refs", None)
    if found is not None:
        found.append(object_id)


def serialize(value, what: str = "value") -> SerializedObject:
    """Pickle ``value`` with out-of-band buffers; collect nested ObjectRefs."""
    if type(value) in _FAST_TYPES:
        return SerializedObject(pickle.dumps(value, 5), [], ())
    import cloudpickle    # here: the head and node managers never need it (~1.4 MB each)
    buffers = []
    outer = getattr(_context, "refs", None)
    _context.refs = []
    try:
        meta = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        refs = tuple(_context.refs)
    except Exception as exc:
        raise SerializationError(
            f"Could not serialize the {what} {_describe(value)}: {exc!r}. "
            "Make it picklable (cloudpickle), or create it inside the task instead."
        ) from exc
    finally:
        _context.refs = outer
    if outer is not None:
        outer.extend(refs)
    return SerializedObject(meta, [b.raw() for b in buffers], refs)


def inline_bytes(obj: SerializedObject) -> bytes:
    """The object as one in-band pickle (for small objects with buffers)."""
    if not obj.buffers:
        return obj.meta
    return pickle.dumps(pickle.loads(obj.meta, buffers=obj.buffers), 5)


def deserialize(data: bytes, buffers=()):
    return pickle.loads(data, buffers=buffers)


def dumps_error(exc: BaseException) -> bytes:
    import cloudpickle
    try:
        return cloudpickle.dumps(exc, protocol=5)
    except Exception:
        from zray.exceptions import RaySystemError
        return pickle.dumps(RaySystemError(f"unpicklable error {exc!r}"), 5)


#: What a message carrying a pickled function needs beyond the pickle itself.
HEAD_MESSAGE_ROOM_BYTES = 64 * 1024


def check_code_size(blob: bytes, what: str, config) -> None:
    """Refuse (ValueError) or warn about a remote function or actor class whose
    pickle is large, as Ray does: it almost always captures a large object."""
    size = len(blob)
    if size <= config.function_size_warn_bytes:
        return
    advice = ("Check that its definition is not implicitly capturing a large array or "
              "other object in scope. Tip: use zray.put() to put large objects in the "
              "object store and pass the ObjectRef.")
    mib = f"{size / 2**20:.1f} MiB"
    if size > config.function_size_error_bytes:
        raise ValueError(f"The {what} is too large ({mib} > function_size_error_bytes="
                         f"{config.function_size_error_bytes / 2**20:.1f} MiB, "
                         f"ZRAY_FUNCTION_SIZE_ERROR_BYTES). {advice}")
    head_limit = config.max_head_message_bytes - HEAD_MESSAGE_ROOM_BYTES
    if 0 < config.max_head_message_bytes and size > head_limit:
        raise ValueError(f"The {what} is too large ({mib}) to reach the head, which "
                         f"takes messages up to {head_limit / 2**20:.1f} MiB "
                         f"(max_head_message_bytes, ZRAY_MAX_HEAD_MESSAGE_BYTES). {advice}")
    import warnings
    from zray.options import user_stacklevel
    warnings.warn(f"The {what} is very large ({mib}). {advice}", UserWarning,
                  stacklevel=user_stacklevel())


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} of type {type(value).__name__}"


# --- shared-memory segments ------------------------------------------------------------

def segment_path(shm_dir: str, node_id: bytes, object_id: bytes) -> str:
    return f"{shm_dir}/zray_{node_id.hex()[:16]}_{object_id.hex()}"


def segment_prefix(shm_dir: str, node_id: bytes) -> str:
    return f"{shm_dir}/zray_{node_id.hex()[:16]}_"


def _layout(meta_len: int, buffer_lengths) -> tuple[list, int]:
    offset = _HEAD.size + _SPAN.size * len(buffer_lengths) + meta_len
    spans = []
    for length in buffer_lengths:
        offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
        spans.append((offset, length))
        offset += length
    return spans, offset


def segment_bytes(obj: SerializedObject) -> int:
    """The size of the segment ``write_segment`` makes for ``obj``."""
    return max(_layout(len(obj.meta), [b.nbytes for b in obj.buffers])[1], 1)


def write_segment(path: str, obj: SerializedObject, spares=()) -> int:
    """Write ``obj`` to a new segment at ``path``; return its size in bytes.

    ``spares``: the node's spare segment paths (see ``SpareSegments``); a
    spare at least as large (and not more than 4x) is renamed to a name of
    this writer's, written over (~3x faster than into fresh tmpfs pages), and
    only then linked at ``path``, so no reader ever opens a half-written spare
    there.  A store that is full drops the spares and tries once more.
    Raises FileExistsError if ``path`` exists (and no spare was used)."""
    spans, total = _layout(len(obj.meta), [b.nbytes for b in obj.buffers])
    header = _HEAD.pack(_MAGIC, len(spans), len(obj.meta)) + b"".join(
        _SPAN.pack(*span) for span in spans) + obj.meta
    writing = f"{path}.w{os.getpid()}-{threading.get_ident()}"
    fd = claim_spare(writing, total, spares) if total >= SPARE_MIN_BYTES else None
    target = path if fd is None else writing
    if fd is None:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, max(total, 1))
        _pwrite_all(fd, header, 0)
        for (offset, _), buf in zip(spans, obj.buffers):
            _pwrite_all(fd, buf, offset)
    except BaseException as exc:
        os.close(fd)
        _unlink_quietly(target)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and spares:
            for spare in spares:          # their pages are what fills the store
                _unlink_quietly(spare)
            return write_segment(path, obj)
        raise
    os.close(fd)
    if target is writing:
        os.rename(writing, path)     # whole, at once (over an earlier attempt's copy)
    return total


# --- spare segments: freed pages kept for the next large write ------------------------

#: Smaller segments are not worth keeping: fresh pages cost little for them.
SPARE_MIN_BYTES = 256 * 1024
#: A node keeps at most this many spare segments.
SPARE_SLOTS = 4


def spare_paths(shm_dir: str, node_id: bytes) -> tuple:
    """The names a node's spare segments take (in its store's prefix, so that
    cleaning a node's store removes them too)."""
    prefix = segment_prefix(shm_dir, node_id)
    return tuple(f"{prefix}spare{slot}" for slot in range(SPARE_SLOTS))


def claim_spare(path: str, total: int, spares) -> int | None:
    """Rename the smallest spare that fits to ``path``; its open fd, or None.
    A spare over 4x ``total`` is left for a larger object: the write would
    truncate most of its pages away."""
    best = None
    for spare in spares:
        try:
            size = os.stat(spare).st_size
        except OSError:
            continue
        if total <= size <= 4 * total and (best is None or size < best[0]):
            best = (size, spare)
    if best is None:
        return None
    try:
        os.rename(best[1], path)       # atomic: of two writers, one gets it
    except OSError:
        return None
    try:
        return os.open(path, os.O_RDWR)
    except OSError:
        _unlink_quietly(path)
        return None


class SpareSegments:
    """A node's freed segments kept as spares for the next large writes.

    A freed segment's pages stay faulted in, so writing the next large object
    into it copies at memory speed instead of paying a page fault per 4 KiB.
    Only a file nobody has open or mapped may be reused, or a reader's
    zero-copy array would change under it: a write lease (``F_SETLEASE``) is
    granted only then, whatever process holds the map, so one is taken and
    dropped at once as the test.  A segment still mapped (typically by a
    worker's SegmentMaps, which let go of maps of files that are gone) is
    renamed out of the object namespace to drain, and tried again on each
    ``tick`` for a couple of seconds before it is removed.
    """

    DRAIN_S = 2.0

    def __init__(self, shm_dir: str, node_id: bytes, budget_bytes: int):
        self.slots = spare_paths(shm_dir, node_id)
        self.prefix = segment_prefix(shm_dir, node_id)
        try:                   # never more than a quarter of the store's file system
            stat = os.statvfs(shm_dir)
            budget_bytes = min(budget_bytes, stat.f_blocks * stat.f_frsize // 4)
        except OSError:
            pass
        self.budget_bytes = budget_bytes
        self.draining: dict[str, float] = {}    # path -> when to give up on it
        self.blanks: dict[str, int] = {}        # slot -> inode of the blank put there

    def free(self, path: str, now: float) -> None:
        """The object at ``path`` has no references left."""
        verdict = self._keep(path)
        if verdict == "in use":
            drain = f"{self.prefix}drain_{os.path.basename(path)[-36:]}"
            try:
                os.rename(path, drain)
                self.draining[drain] = now + self.DRAIN_S
                return
            except OSError:
                pass
        if verdict != "kept":
            _unlink_quietly(path)

    def adopt(self, path: str) -> bool:
        """Make ``path`` (a segment nobody maps) a spare if a slot and the
        budget allow; whether it did."""
        slot = self._free_slot(path)
        if slot is None:
            return False
        try:
            os.rename(path, slot)
        except OSError:
            return False
        return True

    def _free_slot(self, path: str) -> str | None:
        """A free slot for the segment ``path`` within the budget, or None."""
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        if size < SPARE_MIN_BYTES or size > self.budget_bytes:
            return None
        free_slot, used, blanks = None, 0, []
        for slot in self.slots:
            try:
                stat = os.stat(slot)
            except FileNotFoundError:
                free_slot = free_slot or slot
                continue
            used += stat.st_size
            if self.blanks.get(slot) == stat.st_ino:
                blanks.append((slot, stat.st_size))
        while (free_slot is None or used + size > self.budget_bytes) and blanks:
            slot, blank_size = blanks.pop()      # a freed segment beats a blank:
            _unlink_quietly(slot)                # blanks are remade in idle time
            self.blanks.pop(slot, None)
            used -= blank_size
            free_slot = free_slot or slot
        if free_slot is None or used + size > self.budget_bytes:
            return None
        return free_slot

    def held_bytes(self) -> int:
        """Bytes of memory the spares and draining segments hold."""
        held = 0
        for path in (*self.slots, *self.draining):
            try:
                held += os.stat(path).st_size
            except OSError:
                pass
        return held

    def drop_spares(self) -> None:
        """Give the spares' pages back (the store needs the room)."""
        for slot in self.slots:
            _unlink_quietly(slot)

    def tick(self, now: float) -> None:
        for path, give_up_at in list(self.draining.items()):
            verdict = self._keep(path)
            if verdict == "in use" and now < give_up_at:
                continue
            del self.draining[path]
            if verdict != "kept":
                _unlink_quietly(path)

    def _keep(self, path: str) -> str:
        """"kept" (now a spare), "in use" (open or mapped somewhere), or "no"."""
        free_slot = self._free_slot(path)
        if free_slot is None:
            return "no"
        unused = _unused(path)
        if unused is None:
            return "no"             # no leases here: cannot tell, so never reuse
        if not unused:
            return "in use"
        try:
            os.rename(path, free_slot)
        except OSError:
            return "no"
        return "kept"


class SpareFiller:
    """Keeps pre-faulted blank spare segments ready for the next large writes.

    A write into fresh tmpfs pages pays a page fault and a page clear per 4 KiB
    (100 MB: ~49 ms by pwrite on a 2-core VM, ~35 ms into pages already
    there).  A node's filler thread makes blank spares in idle time with
    ``posix_fallocate`` (100 MB: ~25 ms, the kernel's bulk path), so that a
    put in a fresh cluster writes at the warm speed.  Blanks go only into free
    spare slots, are counted in the same ``spare_segment_bytes`` budget as
    recycled spares, and leave one slot free for a recycled segment.  Runs in
    a thread of its own (``posix_fallocate`` releases the GIL): ``fill`` makes
    at most one blank per call and says whether it did.
    """

    def __init__(self, spares: "SpareSegments", blank_bytes: int):
        self.spares = spares
        self.blank_bytes = blank_bytes
        self.tmp = f"{spares.prefix}blank_tmp"

    def room(self) -> str | None:
        """The free slot a blank would go into, or None: no blank to make now."""
        if self.blank_bytes < SPARE_MIN_BYTES:
            return None
        free, used = [], 0
        for slot in self.spares.slots:
            try:
                used += os.stat(slot).st_size
            except FileNotFoundError:
                free.append(slot)
        if len(free) < 2 or used + self.blank_bytes > self.spares.budget_bytes:
            return None
        return free[0]

    def fill(self) -> bool:
        slot = self.room()
        if slot is None:
            return False
        fd = os.open(self.tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.blank_bytes)
        except OSError:
            _unlink_quietly(self.tmp)     # a full store: no blanks
            return False
        finally:
            os.close(fd)
        try:
            os.link(self.tmp, slot)    # never over a slot filled meanwhile
            self.spares.blanks[slot] = os.stat(slot).st_ino
        except OSError:
            return False
        finally:
            _unlink_quietly(self.tmp)
        return True


class IdleCpu:
    """Whether at least ``cores`` of the host's CPUs were idle through the last
    ``window_s`` seconds (Linux ``/proc/stat``; elsewhere always True).  The
    node's loop asks it at its tick and wakes the spare filler only then: its
    ``posix_fallocate`` is CPU work, and an actor's worker is a scheduling
    group of its own (it calls setsid), so a low priority for the filler's
    thread would not keep it from taking a third of two busy cores from the
    work it prepares pages for.  The window keeps it from starting in a lull
    between a put and the tasks that read it.

    Idle ticks alone cannot see demand: while the filler's page clearing ran
    (it used to count as idle) the tasks got what was left and looked content,
    so the filler went on through every blank in the middle of a burst of
    tasks (map_reduce ran ~10% slower).  So the host must also have had no
    more runnable threads than CPUs, the caller's aside, at every sample of
    the window (``/proc/loadavg``'s running count)."""

    def __init__(self, cores: float = 0.5, window_s: float = 0.2,
                 stat_path: str = "/proc/stat", loadavg_path: str = "/proc/loadavg"):
        self.cores = cores
        self.window_s = window_s
        self.stat_path = stat_path
        self.loadavg_path = loadavg_path
        self.cpus = os.cpu_count() or 1
        self.crowded_at = float("-inf")     # when others last waited for a CPU
        self.ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.samples: deque = deque()
        self()

    def _sample(self):
        try:
            with open(self.stat_path) as stat:
                fields = stat.readline().split()
            idle_ticks = int(fields[4]) + int(fields[5])                # idle + iowait
            return time.monotonic(), idle_ticks / self.ticks_per_s
        except (OSError, ValueError, IndexError):
            return None

    def _crowded(self) -> bool:
        """More runnable threads than CPUs, not counting the caller (the node's
        loop asks at its tick: itself running, the filler thread idle)."""
        try:
            with open(self.loadavg_path) as loadavg:
                running = int(loadavg.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return False
        return running - 1 > self.cpus - self.cores

    def __call__(self) -> bool:
        now = self._sample()
        if now is None:
            return True
        if self._crowded():
            self.crowded_at = now[0]
        samples = self.samples
        samples.append(now)
        while len(samples) > 2 and now[0] - samples[1][0] >= self.window_s:
            samples.popleft()
        first = samples[0]
        span = now[0] - first[0]
        return (span >= self.window_s and now[0] - self.crowded_at >= self.window_s
                and (now[1] - first[1]) / span >= self.cores)


def _unused(path: str) -> bool | None:
    """Nobody (this process included) has the file open or mapped; None when
    this file system or kernel setting offers no leases to tell."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except OSError as exc:
        return False if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def read_segment(path: str):
    """Map a segment and return the value it holds (buffers are views into it)."""
    return _decode(path, _map(path)[1])


def _map(path: str) -> tuple:
    """((inode, size), read-only map) of the segment at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        return (stat.st_ino, stat.st_size), mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def _decode(path: str, mapped):
    view = memoryview(mapped)
    magic, count, meta_len = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError(f"{path} is not a zray object segment")
    pos = _HEAD.size
    buffers = []
    for _ in range(count):
        offset, length = _SPAN.unpack_from(view, pos)
        buffers.append(view[offset:offset + length])
        pos += _SPAN.size
    meta = view[pos:pos + meta_len]
    return pickle.loads(meta, buffers=buffers)


class SegmentMaps:
    """The segments this process read lately, each mapped once.

    Mapping 100 MB costs nothing, but touching it first costs ~9 ms of page
    faults on a 2-core VM, in every new mapping: ten tasks reading one large
    argument on two workers paid it ten times.  Kept maps are checked against
    the file (inode and size) on every read, so a segment removed and made
    again under the same name is mapped afresh.  A kept map of a removed
    segment holds its memory (and keeps its node from reusing it), so ``sweep``
    (after each task, and every 0.1 s by the I/O thread) lets go of those, and ``forget`` of an object
    this process released.  Values handed out stay valid either way: they hold
    the map themselves.
    """

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._maps: OrderedDict = OrderedDict()      # path -> ((inode, size), map)
        self._lock = threading.Lock()

    def read(self, path: str):
        stat = os.stat(path)
        with self._lock:
            kept = self._maps.get(path)
            if kept is not None and kept[0] == (stat.st_ino, stat.st_size):
                self._maps.move_to_end(path)
                return _decode(path, kept[1])
        identity, mapped = _map(path)
        with self._lock:
            self._maps[path] = (identity, mapped)
            self._maps.move_to_end(path)
            while len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
        return _decode(path, mapped)

    def forget(self, path: str) -> None:
        with self._lock:
            self._maps.pop(path, None)

    def clear(self) -> None:
        """Let go of every kept map (values handed out keep theirs): before
        this process asks its node for room, so that maps kept only for reuse
        do not pin objects the node could spill."""
        with self._lock:
            self._maps.clear()

    def sweep(self) -> None:
        if not self._maps:
            return
        with self._lock:
            kept = list(self._maps.items())
        for path, (identity, _) in kept:
            try:
                stat = os.stat(path)
                current = (stat.st_ino, stat.st_size) == identity and \
                    stat.st_mode & 0o777 != SPILL_WANTED_MODE
            except OSError:
                current = False
            if not current:
                with self._lock:
                    if self._maps.get(path, (None,))[0] == identity:
                        del self._maps[path]

    def __len__(self) -> int:
        return len(self._maps)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_segments(shm_dir: str, node_id: bytes) -> int:
    """Delete every segment of one node's store; return how many."""
    prefix = os.path.basename(segment_prefix(shm_dir, node_id))
    removed = 0
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix):
            _unlink_quietly(os.path.join(shm_dir, name))
            removed += 1
    return removed
