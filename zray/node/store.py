"""A node's object store with a bound: what is in memory, what is spilled, who waits.

Every shared-memory object of this node is an ``Entry``, in the order it was
last made, restored or pulled here (the oldest first: the first to spill):

    RESERVED ──(OBJECT_WRITTEN, pull done)──► IN_MEMORY ──(spill)──► SPILLED
        ▲                                        ▲                       │
        └── RESERVE_SPACE, PULL_OBJECT           └───(restore)───────────┘

The bytes of RESERVED and IN_MEMORY entries, plus the spare segments the node
keeps (freed pages), never pass ``bound_bytes``: a writer asks for room
(RESERVE_SPACE) before it writes a segment, a pull or restore before it makes
one.  Room is made by dropping spares, then spilling IN_MEMORY objects, oldest
first, that no process has open or mapped (``SpillFiles.in_use``: a running
task's argument, a live zero-copy value, a write in progress pin an object; a
cached map that is only cached is let go on request).  A request that does not
fit waits, first come first served, until memory is freed or its deadline
(``Config.object_store_full_timeout_s``) passes; then it fails with a text
naming the node, the bound and what is pinned by whom.

The store decides; every effect on files goes through ``files`` (a
``zray.node.spill.SpillFiles``, or a fake in unit tests).  Answers for the
requesters collect in ``replies`` as (kind, who, object_id, error, item):
kind "write" answers RESERVE_SPACE (item: the bytes granted, credit included);
"done" answers PULL_OBJECT (the object is
here, or the error says why not); "pull" asks the loop to pull it from a peer.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict

log = logging.getLogger("zray.node")

#: Seconds an object restored or pulled for a reader is not spilled again, so
#: that the reader can map it (a map then pins it).
READER_GRACE_S = 2.0
#: Past this share of the bound, the store writes its oldest objects to their
#: spill files in the background ("write behind") until the objects in memory
#: without one fit in WRITE_BEHIND_TO of the bound: making room then only
#: removes segments.
WRITE_BEHIND_FROM = 0.8
WRITE_BEHIND_TO = 0.6
#: A writer given room for one object gets this much more (at most 1/16 of
#: the bound) when it fits without spilling: its next objects need no round
#: trip.  The writer uses such credit for CREDIT_CLIENT_S (zray/client/store.py),
#: the store drops what is left of it after CREDIT_EXPIRY_S.
CREDIT_BYTES = 64 * 2 ** 20
CREDIT_EXPIRY_S = 10.0
#: A reservation whose writer never said it finished is looked at after this.
STALE_RESERVATION_S = 60.0


class ObjectState(str, enum.Enum):
    RESERVED = "RESERVED"        # room granted: being written, pulled or restored
    IN_MEMORY = "IN_MEMORY"      # a complete segment (and maybe a spill file too)
    SPILLED = "SPILLED"          # only its spill file holds it


TRANSITIONS = {
    ObjectState.RESERVED: {ObjectState.IN_MEMORY},
    ObjectState.IN_MEMORY: {ObjectState.SPILLED},
    ObjectState.SPILLED: {ObjectState.IN_MEMORY},
}


class Entry:
    __slots__ = ("object_id", "size", "state", "since", "spill_path", "held_until")

    def __init__(self, object_id: bytes, size: int, now: float):
        self.object_id = object_id
        self.size = size
        self.state = ObjectState.RESERVED
        self.since = now
        self.spill_path = None
        self.held_until = 0.0

    def move(self, new_state: ObjectState) -> None:
        if new_state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"object {self.object_id.hex()}: {self.state.value} -> "
                               f"{new_state.value}")
        self.state = new_state


class Request:
    __slots__ = ("kind", "object_id", "size", "who", "deadline", "item")

    def __init__(self, kind, object_id, size, who, deadline, item):
        self.kind, self.object_id, self.size = kind, object_id, size
        self.who, self.deadline, self.item = who, deadline, item


class ObjectStore:
    def __init__(self, node_id: bytes, bound_bytes: int, full_timeout_s: float, files):
        self.node_id = node_id
        self.bound_bytes = int(bound_bytes)
        self.full_timeout_s = full_timeout_s
        self.files = files
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()   # oldest first
        self.memory_bytes = 0          # RESERVED and IN_MEMORY entries
        self.spilled_bytes = 0         # SPILLED entries
        self.spilled_objects = 0
        self.waiting: list[Request] = []
        self.holds: dict = {}          # requester -> objects held for it (see _hold)
        self.writing_behind: set = set()   # objects the writer thread is copying
        self.credits: dict = {}        # writer -> [bytes left, granted at]
        self.replies: list = []        # (kind, who, object_id, error, item)
        self.totals = {"spilled_bytes": 0, "spilled_objects": 0,
                       "restored_bytes": 0, "restored_objects": 0}

    # --- requests ----------------------------------------------------------------

    def request(self, kind: str, object_id: bytes, size: int, who, now: float,
                item=None) -> None:
        """``kind``: "write" (RESERVE_SPACE), "restore" or "pull" (PULL_OBJECT)."""
        for held in self.holds.pop(who, ()):      # it moved on: it mapped those
            held_entry = self.entries.get(held)
            if held_entry is not None:
                held_entry.held_until = 0.0
        entry = self.entries.get(object_id)
        log.debug("store request %s %s size %d entry %s", kind, object_id.hex(), size,
                  entry and entry.state.value)
        if kind in ("pull", "restore") and entry is not None \
                and entry.state is not ObjectState.SPILLED:
            # here (answer now), or being pulled (join the pull)
            done = entry.state is ObjectState.IN_MEMORY
            self.replies.append(("done" if done else "pull", who, object_id, None, item))
            return
        if kind == "pull" and entry is not None:
            kind = "restore"
        if kind == "write":
            self._drop_credit(who)         # it asks again: what it had is used up
            if entry is not None:          # a retried task writes its result again
                self._drop(entry)
            size = max(int(size), 1)
            if size > self.bound_bytes:
                self.replies.append((kind, who, object_id, self._too_large(size), item))
                return
        if kind == "restore":
            if entry is None:             # not here: pull it from another copy, if any
                kind = "pull"
            else:
                size = entry.size
        deadline = now + self.full_timeout_s
        self.waiting.append(Request(kind, object_id, int(size), who, deadline, item))
        self.serve(now)

    def serve(self, now: float) -> None:
        """Grant waiting requests in order while they fit; fail expired ones."""
        while self.waiting:
            first = self.waiting[0]
            # The pages of what is spilled to make room go to the restore (or,
            # as a spare, to the writer) they make room for: writing over pages
            # already there is ~3x faster than faulting in fresh ones.
            recycle = first.kind in ("restore", "write")
            if self._room_for(first.size, now, recycle=recycle):
                self.waiting.pop(0)
                self._grant(first, now)
                if first.kind == "write":
                    self.files.recycled_to_spares(first.size)
                self.files.drop_recycled()
                continue
            self.files.drop_recycled()
            break
        for request in [r for r in self.waiting if now >= r.deadline]:
            self.waiting.remove(request)
            self.replies.append((request.kind, request.who, request.object_id,
                                 self._full_text(request, now), request.item))

    def _grant(self, request: Request, now: float) -> None:
        entry = self.entries.get(request.object_id)
        if request.kind == "restore":
            if entry is None or entry.state is not ObjectState.SPILLED:
                self.replies.append(("pull", request.who, request.object_id, None,
                                     request.item))
                return
            try:
                self.files.restore(entry.object_id, entry.spill_path)
            except OSError as exc:
                self.replies.append(("done", request.who, request.object_id,
                                     f"could not restore object {entry.object_id.hex()} "
                                     f"from {entry.spill_path}: {exc}", request.item))
                return
            entry.move(ObjectState.IN_MEMORY)
            self.spilled_bytes -= entry.size
            self.spilled_objects -= 1
            self.memory_bytes += entry.size
            self.totals["restored_bytes"] += entry.size
            self.totals["restored_objects"] += 1
            self._hold(entry, now, request.who)
            self._answer_joined(request)
            return
        if entry is not None:              # a pull joined a pull already granted
            self.replies.append(("pull", request.who, request.object_id, None, request.item))
            return
        entry = self.entries[request.object_id] = Entry(request.object_id, request.size, now)
        self.memory_bytes += entry.size
        if request.kind == "pull":
            self._hold(entry, now, request.who)
        granted = entry.size
        if request.kind == "write":
            extra = min(CREDIT_BYTES, self.bound_bytes // 16)
            if extra and self.bound_bytes - self.used_bytes() >= extra:
                self.credits[request.who] = [extra, now]
                self.memory_bytes += extra
                granted += extra
        self.replies.append((request.kind, request.who, request.object_id, None,
                             granted if request.kind == "write" else request.item))

    def _drop_credit(self, who) -> None:
        credit = self.credits.pop(who, None)
        if credit is not None:
            self.memory_bytes -= credit[0]

    def _hold(self, entry: Entry, now: float, who) -> None:
        """An object brought here for a reader is newest, and not spilled again
        before the reader mapped it (a map then pins it): until the reader's
        next request, or a grace passed."""
        entry.held_until = now + READER_GRACE_S
        self.holds.setdefault(who, []).append(entry.object_id)
        self.entries.move_to_end(entry.object_id)

    def _answer_joined(self, request: Request) -> None:
        """A restore answers every request for the same object that waits."""
        self.replies.append(("done", request.who, request.object_id, None, request.item))
        for other in [r for r in self.waiting if r.object_id == request.object_id
                      and r.kind == "restore"]:
            self.waiting.remove(other)
            self.replies.append(("done", other.who, other.object_id, None, other.item))

    # --- what the node hears -------------------------------------------------------

    def written(self, object_id: bytes, size: int, now: float, who=None) -> None:
        """A reserved segment is complete (``size`` 0: the write failed); one
        not reserved by itself was written on ``who``'s credit."""
        entry = self.entries.get(object_id)
        if entry is None and size > 0 and who in self.credits:
            credit = self.credits[who]
            taken = min(credit[0], int(size))
            credit[0] -= taken
            entry = self.entries[object_id] = Entry(object_id, int(size), now)
            entry.state = ObjectState.IN_MEMORY
            self.memory_bytes += int(size) - taken
            self._write_behind()
            self.serve(now)
            return
        if entry is None or entry.state is not ObjectState.RESERVED:
            return
        if size <= 0:
            self._drop(entry)
        else:
            self.memory_bytes += int(size) - entry.size
            entry.size = int(size)
            entry.move(ObjectState.IN_MEMORY)
            self._write_behind()
        self.serve(now)

    def freed(self, object_id: bytes, now: float) -> None:
        """The head freed the object: forget it and delete its spill file."""
        entry = self.entries.get(object_id)
        if entry is not None:
            self._drop(entry)
        for request in [r for r in self.waiting if r.object_id == object_id]:
            self.waiting.remove(request)
            self.replies.append((request.kind, request.who, object_id,
                                 "the object was freed", request.item))
        self.serve(now)

    def tick(self, now: float) -> None:
        for who in [w for w, (_, at) in self.credits.items() if now - at > CREDIT_EXPIRY_S]:
            self._drop_credit(who)
        for object_id, spill_path, error in self.files.written_behind():
            self.written_behind(object_id, spill_path, error, now)
        for entry in list(self.entries.values()):
            if entry.state is ObjectState.RESERVED and now - entry.since > STALE_RESERVATION_S:
                self._settle_stale(entry, now)
        self.serve(now)

    def _settle_stale(self, entry: Entry, now: float) -> None:
        """A writer that died, or never said it finished: look at the file."""
        size = self.files.segment_size(entry.object_id)
        if size is None:
            self._drop(entry)
        elif not self.files.in_use(entry.object_id):
            self.written(entry.object_id, size, now)
        else:
            entry.since = now

    def _drop(self, entry: Entry) -> None:
        log.debug("store drops %s (%s)", entry.object_id.hex(), entry.state.value)
        del self.entries[entry.object_id]
        if entry.state is ObjectState.SPILLED:
            self.spilled_bytes -= entry.size
            self.spilled_objects -= 1
        else:
            self.memory_bytes -= entry.size
        if entry.spill_path is not None:
            self.files.delete_spill(entry.spill_path)

    # --- making room -------------------------------------------------------------

    def used_bytes(self) -> int:
        return self.memory_bytes + self.files.held_bytes()

    def _room_for(self, size: int, now: float, recycle: bool = False) -> bool:
        """Whether ``size`` bytes fit now, spilling unused objects (oldest first)
        to make room; ``recycle``: keep the pages of what is spilled for a
        restore (the files' ``restore`` takes them)."""
        free = self.bound_bytes - self.used_bytes()
        if free >= size:
            return True
        if self.files.held_bytes():
            self.files.drop_spares()
            free = self.bound_bytes - self.used_bytes()
        backed = [e for e in self.entries.values() if e.spill_path is not None]
        for entry in backed + [e for e in self.entries.values() if e.spill_path is None]:
            if free >= size:
                break
            if entry.state is not ObjectState.IN_MEMORY:
                continue
            if self.files.in_use(entry.object_id):
                entry.held_until = 0.0         # its reader mapped it: a map pins now
                self.files.mark_wanted(entry.object_id)
                continue
            if entry.held_until > now:         # its reader has not mapped it yet
                continue
            if self._spill(entry, recycle):
                free += entry.size
        return free >= size

    def _write_behind(self) -> None:
        """Past WRITE_BEHIND_FROM of the bound, have the oldest objects without a
        spill file copied to one in the background."""
        if self.memory_bytes <= WRITE_BEHIND_FROM * self.bound_bytes:
            return
        unbacked = sum(e.size for e in self.entries.values()
                       if e.state is not ObjectState.SPILLED and e.spill_path is None
                       and e.object_id not in self.writing_behind)
        for entry in list(self.entries.values()):
            if unbacked <= WRITE_BEHIND_TO * self.bound_bytes:
                return
            if entry.state is ObjectState.IN_MEMORY and entry.spill_path is None and \
                    entry.object_id not in self.writing_behind:
                self.writing_behind.add(entry.object_id)
                self.files.write_behind(entry.object_id)
                unbacked -= entry.size

    def written_behind(self, object_id: bytes, spill_path, error, now: float) -> None:
        """The writer thread copied an object to its spill file (or failed)."""
        self.writing_behind.discard(object_id)
        entry = self.entries.get(object_id)
        if spill_path is None:
            if entry is not None:
                log.warning("could not write object %s to %s: %s", object_id.hex(),
                            self.files.spill_dir, error)
            return
        if entry is None or entry.spill_path is not None:
            self.files.delete_spill(spill_path)      # freed (or spilled) meanwhile
            return
        entry.spill_path = spill_path
        self.totals["spilled_bytes"] += entry.size
        self.totals["spilled_objects"] += 1
        self.serve(now)

    def _spill(self, entry: Entry, recycle: bool = False) -> bool:
        first = entry.spill_path is None
        try:
            entry.spill_path = self.files.spill(   # beside a copy the writer is making
                entry.object_id, entry.spill_path, entry.object_id in self.writing_behind,
                recycle=recycle)
        except OSError as exc:
            log.error("could not spill object %s (%d bytes) to %s: %s",
                      entry.object_id.hex(), entry.size, self.files.spill_dir, exc)
            return False
        entry.move(ObjectState.SPILLED)
        self.memory_bytes -= entry.size
        self.spilled_bytes += entry.size
        self.spilled_objects += 1
        if first:
            self.totals["spilled_bytes"] += entry.size
            self.totals["spilled_objects"] += 1
        return True

    # --- reporting ---------------------------------------------------------------

    def spill_path_of(self, object_id: bytes) -> str | None:
        """The spill file of an object spilled here (peers pull from it)."""
        entry = self.entries.get(object_id)
        return entry.spill_path if entry is not None else None

    def stats(self) -> dict:
        return {"used_bytes": self.used_bytes(), "bound_bytes": self.bound_bytes,
                "spilled_bytes": self.spilled_bytes, "spilled_objects": self.spilled_objects,
                **{f"total_{k}": v for k, v in self.totals.items()}}

    def _too_large(self, size: int) -> str:
        return (f"ObjectStoreFullError: an object of {size / 2**20:.1f} MiB cannot fit in "
                f"the object store of node {self.node_id.hex()[:12]}, whose bound is "
                f"{self.bound_bytes / 2**20:.1f} MiB (object_store_memory). Start the "
                "node with a larger object_store_memory, or make smaller objects.")

    def _full_text(self, request: Request, now: float) -> str:
        in_memory = [e for e in self.entries.values() if e.state is not ObjectState.SPILLED]
        pinned = [e.object_id for e in in_memory if e.state is ObjectState.IN_MEMORY][:10]
        reserved = sum(e.size for e in in_memory if e.state is ObjectState.RESERVED)
        what = {"write": "a new object", "restore": "restoring a spilled object",
                "pull": "a copy pulled from another node"}[request.kind]
        detail = self.files.pinned_detail(pinned) if pinned else "nothing"
        return (f"ObjectStoreFullError: the object store of node {self.node_id.hex()[:12]} "
                f"is full: {what} of {request.size / 2**20:.1f} MiB did not fit within "
                f"{self.full_timeout_s:g} s (object_store_full_timeout_s). Bound "
                f"{self.bound_bytes / 2**20:.1f} MiB (object_store_memory), "
                f"{self.memory_bytes / 2**20:.1f} MiB in memory in {len(in_memory)} "
                f"objects ({reserved / 2**20:.1f} MiB being written), "
                f"{self.spilled_bytes / 2**20:.1f} MiB spilled. Nothing more can be "
                f"spilled: pinned (open or mapped) are {detail}. Drop references to "
                "values you no longer need (zero-copy arrays pin their object), or give "
                "the node a larger object_store_memory.")

    def validate(self) -> None:
        """Cross-checks for tests: the counters agree with the entries."""
        memory = sum(e.size for e in self.entries.values()
                     if e.state is not ObjectState.SPILLED) + \
            sum(left for left, _ in self.credits.values())
        spilled = [e for e in self.entries.values() if e.state is ObjectState.SPILLED]
        assert memory == self.memory_bytes, (memory, self.memory_bytes)
        assert sum(e.size for e in spilled) == self.spilled_bytes
        assert len(spilled) == self.spilled_objects
        assert all(e.spill_path for e in spilled)
