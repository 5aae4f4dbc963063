"""The client's decisions, without sockets, threads or a clock: ``ClientState``.

Drivers and workers share it.  It is fed events (a task submitted, an object
arrived, an actor moved, a lease granted, a reference dropped) and answers with
messages in ``out`` (a deque of ``(route, msg_type, item)``, see routes.py) and,
where a socket must change, with commands (``ConnectActor``, ``CloseActor``).
The time, when a decision needs it, is an argument.  It is not thread-safe: the
facade (facade.py) and the I/O loop (io.py) call it under one lock.

What it keeps:

- references: a count per object id held in this process; the first announces
  itself to the head (ADD_REFS), the last one's release sends REMOVE_REFS (or
  nothing, for the results of an actor call the head never heard of);
- objects: the entries ``(kind, data, size, node_ids)`` of the ready objects we
  hold, the waiters and callbacks for missing ones, and which ones we
  subscribed to or expect pushed;
- actor calls we own (actor_calls.py): sent straight to the actor; the head
  hears of one only when a ref of its results escapes (``register_escaping``);
- the lease grant (grants.py), generator streams (streams.py) and the tasks a
  worker offers its own node (local.py).
"""

from __future__ import annotations

from collections import deque

from zray.client.actor_calls import ActorCalls
from zray.client.grants import Grants
from zray.client.local import LocalOffers
from zray.client.routes import HEAD
from zray.client.streams import COMPLETION, Streams
from zray.ids import is_handle_id
from zray.protocol import Msg
from zray.serialization import KIND_SHM
from zray.task_spec import STREAMING


class Waiter:
    """Counts down the objects a blocked ``wait`` still needs; ``wake`` (given by
    the facade, e.g. an Event's ``set``) runs when none is left, or on a fatal error."""

    __slots__ = ("needed", "wake")

    def __init__(self, needed: int, wake):
        self.needed = needed
        self.wake = wake

    def hit(self) -> None:
        self.needed -= 1
        if self.needed == 0:
            self.wake()


class ClientState:
    def __init__(self, role: str):
        self.role = role
        self.out: deque = deque()          # (route, msg_type, item), in order
        self.refs: dict[bytes, int] = {}
        self.objects: dict[bytes, tuple] = {}
        self.pushed: set = set()           # returns of our tasks: pushed to us
        self.subscribed: set = set()
        self.callbacks: dict[bytes, list] = {}
        self.waiters: dict[bytes, list] = {}
        self.ready_callbacks: list = []    # (callback, entry) to run outside the lock
        self.fatal = None
        self.owner_address = None          # a driver's ROUTER for results of its tasks
        self.functions_sent: set = set()
        self.function_blobs: dict[bytes, bytes] = {}
        self.calls = ActorCalls(self)
        self.grants = Grants(self)
        self.streams = Streams(self)
        self.local = LocalOffers(self)     # a worker's tasks its node may place

    def send(self, route, msg_type: Msg, item: tuple) -> None:
        self.out.append((route, msg_type, item))

    # --- submitting ------------------------------------------------------------------

    def register_function(self, function_id: bytes, blob: bytes) -> None:
        if function_id not in self.functions_sent:
            self.functions_sent.add(function_id)
            if self.role == "driver" or self.local.enabled:   # for a granted worker
                # or our node, which lack it
                self.function_blobs[function_id] = blob
            self.send(HEAD, Msg.REGISTER_FUNCTIONS, (function_id, blob))

    def submit(self, spec, now: float) -> list:
        """A task: its returns are ours (pushed to us); it goes to our node (a
        worker's plain task, local.py), our granted worker if it may, else to
        the head."""
        awaited = len(self.pushed)             # results of our other tasks
        return_ids = self._own_returns(spec)
        if self.local.try_offer(spec, awaited, now):
            pass
        elif self.grants.lease is None or not self.grants.try_submit(spec, now):
            self.out.append((HEAD, Msg.SUBMIT_TASKS, (spec,)))
        return return_ids

    def submit_actor_call(self, spec, max_pending: int = -1) -> list:
        self.calls.check_pending(spec.actor_id, max_pending)
        return_ids = self._own_returns(spec)
        self.calls.submit(spec)
        return return_ids

    def _own_returns(self, spec) -> list:
        return_ids = spec.return_ids()
        if spec.num_returns == STREAMING:   # before its first item can come
            self.streams.expect(return_ids[0])
        for object_id in return_ids:
            self.refs[object_id] = self.refs.get(object_id, 0) + 1
            self.pushed.add(object_id)
        return return_ids

    def put(self, object_id: bytes, entry: tuple, item: tuple) -> None:
        """An object made by put (inline, or already written to the local store)."""
        self.refs[object_id] = self.refs.get(object_id, 0) + 1
        self.objects[object_id] = entry
        self.send(HEAD, Msg.PUT_OBJECTS, item)

    # --- references ------------------------------------------------------------------

    def add_ref(self, object_id: bytes, announce: bool = True) -> None:
        """One more reference here; ``announce=False`` when the head already counts
        it (the handle of an actor we create, a generator's item)."""
        count = self.refs.get(object_id, 0)
        self.refs[object_id] = count + 1
        if count == 0 and announce:
            self.send(HEAD, Msg.ADD_REFS, (object_id,))

    def release(self, object_id: bytes) -> bool:
        """One reference fewer; True if it was the last one of a shared-memory object
        we had (its map may go)."""
        refs = self.refs
        count = refs.get(object_id, 0) - 1
        if count > 0:
            refs[object_id] = count
            return False
        refs.pop(object_id, None)
        entry = self.objects.pop(object_id, None)
        self.pushed.discard(object_id)
        self.subscribed.discard(object_id)
        calls = self.calls
        if calls.unregistered and calls.owns_released(object_id):
            pass                            # the head never heard of it, or later
        elif is_handle_id(object_id) and calls.hold_handle(object_id):
            pass                            # released once our calls finish
        else:
            self.out.append((HEAD, Msg.REMOVE_REFS, (object_id,)))
        return entry is not None and entry[0] == KIND_SHM

    # --- waiting ---------------------------------------------------------------------

    def begin_wait(self, unique: set, num_returns: int, streams, wake):
        """Register a wait for ``num_returns`` of ``unique`` and ``streams``; return
        ``(waiter, missing, pending_streams)``, the waiter None if no wait is needed."""
        missing = [o for o in unique if o not in self.objects]
        pending = [s for s in streams if not self.streams.ready(s)]
        total = len(unique) + len(streams)
        needed = min(num_returns, total) - (total - len(missing) - len(pending))
        if needed <= 0:
            return None, missing, pending
        waiter = Waiter(needed, wake)
        for object_id in missing:
            self.waiters.setdefault(object_id, []).append(waiter)
        for stream in pending:
            stream.waiters.append(waiter)
        self.subscribe_missing(missing)
        return waiter, missing, pending

    def end_wait(self, waiter, missing, pending) -> None:
        for object_id in missing:
            waiters = self.waiters.get(object_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self.waiters[object_id]
        for stream in pending:
            if waiter in stream.waiters:
                stream.waiters.remove(waiter)

    def subscribe_missing(self, object_ids) -> None:
        for object_id in object_ids:
            if object_id in self.objects or object_id in self.pushed \
                    or object_id in self.subscribed:
                continue
            self.subscribed.add(object_id)
            self.send(HEAD, Msg.SUBSCRIBE_OBJECTS, (object_id,))

    def subscribe_pushed(self, object_ids) -> None:
        """Returns of our own tasks still missing after a grace period: a push lost
        with a worker that died between its two sends would leave a get waiting
        forever, so subscribe at the head too."""
        for object_id in object_ids:
            if object_id in self.pushed and object_id not in self.objects \
                    and object_id not in self.subscribed:
                self.subscribed.add(object_id)
                self.send(HEAD, Msg.SUBSCRIBE_OBJECTS, (object_id,))

    def add_callback(self, object_id: bytes, callback):
        """The entry if ready; else ``callback(entry)`` is kept for its arrival."""
        entry = self.objects.get(object_id)
        if entry is None:
            self.callbacks.setdefault(object_id, []).append(callback)
            self.subscribe_missing([object_id])
        return entry

    def forget_stale(self, object_id: bytes, stale: tuple) -> None:
        """Every copy of this entry is gone: ask the head again (refetch)."""
        if self.objects.get(object_id) in (stale, None):
            self.objects.pop(object_id, None)
            self.subscribed.discard(object_id)
            self.pushed.discard(object_id)

    def add_local_copy(self, object_id: bytes, node_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None and node_id not in entry[3]:
            self.objects[object_id] = entry[:3] + (entry[3] + (node_id,),)

    # --- arrivals --------------------------------------------------------------------

    def objects_ready(self, items, now, from_actor: bool = False) -> None:
        """Objects (or generator items) reached us; their callbacks wait in
        ``ready_callbacks`` for the caller to run once the lock is let go."""
        fire, woken = self.ready_callbacks, []
        streams = self.streams.by_task
        calls = self.calls
        if not from_actor and calls.actor_of:   # else no call of ours can finish
            for item in items:
                if item[0][:16] not in streams or item[0][16:] == COMPLETION:
                    calls.done(item[0][:16])
        lease = self.grants.lease
        refs, objects, callbacks, waiters = self.refs, self.objects, self.callbacks, \
            self.waiters
        for item in items:
            object_id = item[0]
            if lease is not None:
                self.grants.task_returned(object_id[:16], now)
            if streams and object_id[:16] in streams:
                self.streams.arrival(streams[object_id[:16]], object_id, woken)
            if object_id not in refs or object_id in objects:
                continue            # not ours any more, or already answered
            entry = tuple(item[1:])
            objects[object_id] = entry
            self.pushed.discard(object_id)
            self.subscribed.discard(object_id)
            if callbacks:
                for callback in callbacks.pop(object_id, ()):
                    fire.append((callback, entry))
            if waiters:
                for waiter in waiters.pop(object_id, ()):
                    waiter.hit()
        for stream in woken:
            self.streams.changed(stream)

    def take_callbacks(self) -> list:
        fire, self.ready_callbacks = self.ready_callbacks, []
        return fire

    def fail(self, error: Exception) -> None:
        """A fatal error (the head lost, a protocol mismatch): wake every waiter."""
        self.fatal = error
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.wake()

    # --- checks (tests) --------------------------------------------------------------

    def validate(self) -> None:
        """Cross-table invariants; the unit tests run it after every event."""
        assert all(count > 0 for count in self.refs.values()), self.refs
        assert not set(self.waiters) & set(self.objects), "a waiter for a ready object"
        for object_id in self.objects:
            assert object_id in self.refs, f"entry without a reference {object_id.hex()}"
        assert not self.subscribed & self.objects.keys(), "subscribed to a ready object"
        self.calls.validate()
        self.grants.validate()
