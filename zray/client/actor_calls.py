"""Actor calls this process owns: where each actor is, the calls it has not
answered, and what the head must hear of them.  Part of ``ClientState``
(state.py): socket-free, called under the client's lock.

A call goes straight to the actor (``Actor`` route) and its inline result comes
straight back (ACTOR_RESULTS).  The head hears of a call only if a ref of its
results leaves this process (``register_escaping``: the result we hold as
ACTOR_TASKS_FINISHED then SUBMIT_TASKS, or the result later as it comes), if its arguments
hold refs (the head pins them), if it is a generator, or if its result holds
refs or lives in shared memory (the actor reports those itself).  An actor's
handle dropped while our calls run is released when the last one finishes.
"""

from __future__ import annotations

from collections import OrderedDict

from zray.client.routes import HEAD, Actor, ActorCancel, CloseActor, ConnectActor
from zray.ids import handle_id
from zray.protocol import Msg
from zray.serialization import KIND_ERROR, KIND_SHM


class ActorConn:
    """The caller's view of one actor: where it is and the calls not yet answered."""

    __slots__ = ("state", "address", "unfinished", "subscribed", "text", "cancels")

    def __init__(self):
        self.state = "UNKNOWN"
        self.address = None          # the address our socket is connected to
        self.unfinished = OrderedDict()
        self.subscribed = False
        self.text = None
        self.cancels = []


class ActorCalls:
    def __init__(self, client):
        self.client = client               # the ClientState this is part of
        self.conns: dict[bytes, ActorConn] = {}
        self.actor_of: dict[bytes, bytes] = {}       # task id -> actor id, unanswered
        self.pending: dict[bytes, int] = {}          # actor id -> unfinished calls
        self.killed: set = set()          # killed from here: calls go to the head only
        self.unregistered: dict[bytes, object] = {}  # task id -> spec the head lacks
        self.results: dict[bytes, tuple] = {}        # task id -> (status, results) kept
        self.held_handles: set = set()    # handle ids whose release waits for our calls
        self.forward: set = set()         # registered calls whose answer the head needs

    def conn(self, actor_id: bytes) -> ActorConn:
        conn = self.conns.get(actor_id)
        if conn is None:
            conn = self.conns[actor_id] = ActorConn()
        return conn

    def check_pending(self, actor_id: bytes, max_pending: int) -> None:
        pending = self.pending.get(actor_id, 0)
        if 0 <= max_pending <= pending:
            from zray.exceptions import PendingCallsLimitExceeded
            raise PendingCallsLimitExceeded(
                f"The actor {actor_id.hex()} already has {pending} calls in flight "
                f"(max_pending_calls={max_pending}); wait for some to finish.")

    def submit(self, spec) -> None:
        """Own a call (its returns are already referenced) and send it, or ask
        where the actor is."""
        self.pending[spec.actor_id] = self.pending.get(spec.actor_id, 0) + 1
        if spec.is_generator:
            # A generator's items go to the head as they come: it must know the
            # call; the actor reports its end there too, so nothing is forwarded.
            self._register(spec, forward=False)
        elif spec.dep_ids or spec.nested_ids:
            self._register(spec)            # the head pins the arguments
        else:
            self.unregistered[spec.task_id] = spec
        conn = self.conn(spec.actor_id)
        conn.unfinished[spec.task_id] = spec
        self.actor_of[spec.task_id] = spec.actor_id
        if spec.actor_id in self.killed or conn.state == "DEAD":
            self._settle(conn, "DEAD", conn.text or "it was killed")
        elif conn.state == "ALIVE" and conn.address is not None:
            self.client.send(Actor(spec.actor_id, conn.address), Msg.ACTOR_CALLS, (spec,))
        elif not conn.subscribed:
            conn.subscribed = True
            self.client.send(HEAD, Msg.SUBSCRIBE_ACTOR, (spec.actor_id,))

    def cancel(self, task_id: bytes, actor_id: bytes) -> None:
        conn = self.conn(actor_id)
        if conn.address is not None:
            self.client.send(ActorCancel(actor_id), Msg.CANCEL_TASKS, (task_id, False))
        else:                       # sent right after the calls, once it is up
            conn.cancels.append((task_id, False))

    def register_escaping(self, object_ids) -> None:
        """These refs are about to leave this process: the head must know every
        actor call they come from (registration, and results we hold)."""
        for object_id in object_ids:
            spec = self.unregistered.pop(object_id[:16], None)
            if spec is not None:
                self._register(spec)

    def _register(self, spec, forward: bool = True) -> None:
        done = self.results.pop(spec.task_id, None)
        if done is not None:
            # The results first: the head keeps them until the registration
            # comes, which then finishes the call with them even when the actor
            # has died (or been killed by us) since it answered.
            status, results = done
            self.client.send(HEAD, Msg.ACTOR_TASKS_FINISHED,
                             (spec.task_id, spec.attempt, status, results))
        self.client.send(HEAD, Msg.SUBMIT_TASKS, (spec,))
        if done is None and forward:
            self.forward.add(spec.task_id)    # when the answer comes

    # --- references ------------------------------------------------------------------

    def owns_released(self, object_id: bytes) -> bool:
        """The last ref of a result of a call the head never heard of went: nothing
        to tell it.  True if that is the case."""
        task_id = object_id[:16]
        spec = self.unregistered.get(task_id)
        if spec is None:
            return False
        if not any(oid in self.client.refs for oid in spec.return_ids()):
            self.results.pop(task_id, None)
            if task_id not in self.actor_of:
                del self.unregistered[task_id]
        return True

    def hold_handle(self, handle: bytes) -> bool:
        """An actor's handle dropped: held back (True) while our calls to it run."""
        if self.pending.get(handle[:16]):
            self.held_handles.add(handle)
            return True
        return False

    def _let_handle_go(self, actor_id: bytes) -> None:
        handle = handle_id(actor_id)
        if handle in self.held_handles:
            self.held_handles.discard(handle)
            self.client.send(HEAD, Msg.REMOVE_REFS, (handle,))

    # --- answers ---------------------------------------------------------------------

    def results_arrived(self, items, now: float) -> None:
        """ACTOR_RESULTS: the answers of our calls."""
        ready = []
        for task_id, node_id, results, status in items:
            for object_id, kind, data, size, _contained in results:
                ready.append((object_id, kind, data, size,
                              (node_id,) if kind == KIND_SHM else ()))
            self._keep_results(task_id, status, results)
            self.done(task_id)
        if ready:
            self.client.objects_ready(ready, now, from_actor=True)

    def _keep_results(self, task_id, status, results) -> None:
        """Keep what the head may need later; a result holding refs or living in
        shared memory is registered now (the actor reported it to the head,
        which holds it until we do)."""
        reported = any(r[4] or r[1] == KIND_SHM for r in results)  # by the actor
        if task_id in self.forward:
            self.forward.discard(task_id)
            if not reported:
                self.client.send(HEAD, Msg.ACTOR_TASKS_FINISHED,
                                 (task_id, 0, status, results))
            return
        spec = self.unregistered.get(task_id)
        if spec is None:
            return
        held = any(oid in self.client.refs for oid in spec.return_ids())
        if reported or not held:
            del self.unregistered[task_id]
            if reported and held:
                # claims what the head keeps for it; and the results once more,
                # in order before anything else we send (a kill of the actor):
                # the actor's own report may reach the head after that kill
                self.client.send(HEAD, Msg.SUBMIT_TASKS, (spec,))
                self.client.send(HEAD, Msg.ACTOR_TASKS_FINISHED,
                                 (task_id, spec.attempt, status, results))
        else:
            self.results[task_id] = (status, results)

    def done(self, task_id: bytes) -> None:
        actor_id = self.actor_of.pop(task_id, None)
        if actor_id is None:
            return
        conn = self.conns.get(actor_id)
        if conn is not None:
            conn.unfinished.pop(task_id, None)
        count = self.pending.get(actor_id, 0) - 1
        if count > 0:
            self.pending[actor_id] = count
        else:
            self.pending.pop(actor_id, None)
            self._let_handle_go(actor_id)

    # --- where actors are ------------------------------------------------------------

    def actor_moved(self, item) -> list:
        """ACTOR_INFO for one actor; returns the socket commands.  (The I/O loop
        reads what a socket still holds before telling us it is not ALIVE.)"""
        actor_id, state, address, text = item
        conn = self.conn(actor_id)
        conn.subscribed = True
        conn.state = state
        conn.text = text
        if state == "ALIVE" and address:
            if address == conn.address:
                return []
            conn.address = address
            cancels, conn.cancels = tuple(conn.cancels), []
            return [ConnectActor(actor_id, address, tuple(conn.unfinished.values()),
                                 cancels)]
        commands = [CloseActor(actor_id)] if conn.address is not None else []
        conn.address = None
        if state in ("RESTARTING", "DEAD"):
            self._ask_head_for(conn.unfinished.values())
            self._settle(conn, state, text)
        if state == "DEAD":
            for task_id in conn.unfinished:
                self.actor_of.pop(task_id, None)
            self.pending.pop(actor_id, None)
            self._let_handle_go(actor_id)
            conn.unfinished.clear()
        return commands

    def _settle(self, conn, state, text) -> None:
        """The actor's process went away: a call with retries left is resent to
        the new instance; others fail with ActorDiedError, here for calls the head
        does not know about, by the head for the rest."""
        from zray.exceptions import ActorDiedError
        from zray.serialization import dumps_error
        failed = []
        for task_id, spec in list(conn.unfinished.items()):
            retries = spec.max_retries
            if state == "RESTARTING" and (retries < 0 or spec.attempt < retries):
                spec.attempt += 1            # resent to the new instance
                continue
            del conn.unfinished[task_id]
            if self.unregistered.get(task_id) is not spec:
                continue                     # the head fails it
            blob = dumps_error(ActorDiedError(
                f"The actor died while running {spec.name}: "
                f"{text or 'its process exited'}", spec.actor_id))
            failed.extend((oid, KIND_ERROR, blob, len(blob), ())
                          for oid in spec.return_ids())
        if failed:
            self.client.objects_ready(failed, None)

    def _ask_head_for(self, specs) -> None:
        """Answers the actor sent may be lost, but the head has them (or will
        fail the calls), so subscribe to the results there."""
        client = self.client
        for spec in specs:
            if spec.task_id in self.unregistered:
                continue            # the head never heard of it: settled here
            for object_id in spec.return_ids():
                if object_id in client.refs and object_id not in client.objects \
                        and object_id not in client.subscribed:
                    client.subscribed.add(object_id)
                    client.send(HEAD, Msg.SUBSCRIBE_OBJECTS, (object_id,))

    def validate(self) -> None:
        for task_id, actor_id in self.actor_of.items():
            assert self.pending.get(actor_id, 0) > 0, f"call {task_id.hex()} uncounted"
        assert not self.forward & set(self.unregistered), "forwarding an unregistered call"
        for handle in self.held_handles:
            assert self.pending.get(handle[:16]), "a handle held with no call running"
