"""The client side of zray, shared by drivers and workers.

    user threads ──► outbox (deque) ──eventfd──► I/O thread ──DEALER──► head
         ▲                                          │   ├─DEALER──► node (workers only:
         │                                          │   │           tasks in, done out)
         │                                          │   ├─DEALER──► each actor we call
         └──── waiters   ◄── objects / replies ◄────┘   └─ROUTER◄── callers (actor workers)

One I/O thread owns the sockets (pyzmq sockets are not thread-safe).  User
threads append messages to the outbox and wake the thread at most once per
batch; consecutive messages of one type leave as one message.  Arrivals
(OBJECTS_READY, QUERY_REPLY, LOG_LINES, ...) are handled in the I/O thread and
wake the waiters registered for exactly those objects.

Reference counting: each process counts its live ObjectRefs per object; the
first reference announces itself to the head (ADD_REFS), the last one's death
sends REMOVE_REFS.  Drops are deferred to the I/O thread, which is always safe
(a late decrement only delays a free).  Returns of tasks we submit and objects
we put are registered with the head by SUBMIT_TASKS / PUT_OBJECTS themselves.

Actor calls are owned here until their refs leave this process: the call goes
straight to the actor and its (inline) result straight back, and the head hears
of it only when one of its refs is passed on (``register_escaping``), when its
result holds refs or lives in shared memory, or never.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque

import zmq

from zray import protocol
from zray.ids import (handle_id, is_handle_id, item_index, object_id_for_item,
                      object_id_for_return)
from zray._process import has_input, poll_ms, recv_frames, send_frames
from zray.exceptions import GetTimeoutError, ObjectLostError, ProtocolError, RaySystemError
from zray.protocol import Msg
from zray.task_spec import STREAMING
from zray.security import secure_client, secure_server
from zray.serialization import (KIND_ERROR, KIND_INLINE, KIND_SHM, SegmentMaps,
                                deserialize, segment_path)

log = logging.getLogger("zray")


class CoreClient:
    def __init__(self, endpoint: str, identity: bytes, config, role: str,
                 local_node_id: bytes | None = None, node_endpoint: str | None = None,
                 node_identity: bytes | None = None):
        self.endpoint = endpoint
        self.identity = identity
        self.node_endpoint = node_endpoint
        self.node_identity = node_identity
        self.config = config
        self.role = role
        self.local_node_id = local_node_id
        self.job_id = None
        self.welcome = None
        self.closed = False
        self.fatal = None
        self.liveness_check = None
        self.blocked_hook = None
        self.unblocked_hook = None
        self.message_handlers = {}
        self.log_to_driver = True      # init(log_to_driver=False): drop LOG_LINES
        self.current_task = threading.local()
        self._lock = threading.RLock()
        self._outbox = deque()
        self._released = deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._refs: dict[bytes, int] = {}
        self._objects: dict[bytes, tuple] = {}
        self._pushed: set = set()
        self._subscribed: set = set()
        self._callbacks: dict[bytes, list] = {}
        self._waiters: dict[bytes, list] = {}
        self._replies: dict[int, concurrent.futures.Future] = {}
        self._request_ids = itertools.count(1)
        self._functions_sent: set = set()
        self._deferred: list = []
        self._deferred_since = 0.0
        self._defer_s = config.bookkeeping_delay_s
        self._welcomed = threading.Event()
        self._stop = False
        self._actor_conns: dict[bytes, _ActorConn] = {}
        self._actor_call_of: dict[bytes, bytes] = {}      # task id -> actor id (I/O thread)
        self._actor_pending: dict[bytes, int] = {}        # actor id -> unfinished calls
        self.killed_actors: set = set()    # killed from here: calls go to the head only
        self._unregistered: dict[bytes, object] = {}   # task id -> spec of our actor calls
        self._call_results: dict[bytes, tuple] = {}    # task id -> (status, results)
        self._held_handles: set = set()   # handle ids whose release waits for our calls
        self._forward_results: set = set()   # registered calls whose answer the head needs
        self._poller = None
        self._server = None
        self._serve_request = None
        self.server_endpoint = None
        self.owner_address = None          # a driver's ROUTER for results of its tasks
        self.direct_dispatch = False       # handlers run for a message from the head or
                                           # a driver (a leased worker's tasks), not the node
        self.from_driver = False           # ... from a driver that was granted this worker
        self._grant = None                 # _Grant: a leased worker the head granted us
        self._grant_failed: set = set()    # task ids that could not go to the grant
        self._server_mandatory = False
        # driver: granted tasks the head may not know finished yet (REPORT_NOW); a
        # worker holds a report back 2 ms at most, so the last few suffice
        self._granted_unreported: deque = deque(maxlen=64)
        self.lazy_finishes: set = set()       # worker: granted tasks whose TASKS_FINISHED
                                              # may wait as bookkeeping
        self._report_now = False
        self._function_blobs: dict[bytes, bytes] = {}
        self.segment_maps = SegmentMaps()   # large objects this process read lately
        self._owner_socks: dict[str, object] = {}
        self._served = threading.Event()
        self._pulls: dict[bytes, concurrent.futures.Future] = {}
        self._streams: dict[bytes, _Stream] = {}   # task id -> a generator task we own
        self._sockets = [None, None]
        self._handlers = {
            Msg.OBJECTS_READY: self._on_objects_ready,
            Msg.QUERY_REPLY: self._on_query_reply,
            Msg.WELCOME: self._on_welcome,
            Msg.LOG_LINES: self._on_log_lines,
            Msg.WARNING: self._on_warning,
            Msg.PROTOCOL_ERROR: self._on_protocol_error,
            Msg.ACTOR_INFO: self._on_actor_info,
            Msg.ACTOR_RESULTS: self._on_actor_results,
            Msg.OBJECT_PULLED: self._on_object_pulled,
            Msg.LEASE_GRANT: self._on_lease_grant,
            Msg.LEASE_RECALL: self._on_lease_recall,
            Msg.REPORT_NOW: self._on_report_now,
            Msg.HEARTBEAT: _ignore,          # the head's answer: heard, nothing to do
        }
        self._thread = threading.Thread(target=self._io_main, name="zray-io", daemon=True)
        self._thread.start()

    # --- sending ---------------------------------------------------------------------

    def send(self, msg_type: Msg, item: tuple, to_node: bool = False, target=None) -> None:
        """Queue a message: to the head, the node (``to_node``), or ``target``: an
        actor id (a method call) or ``("reply", identity)`` (an actor's answer)."""
        self._outbox.append((1 if to_node else (target or 0), msg_type, item))
        if not self._wake_pending:
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def hello(self, info: dict, timeout_s: float) -> dict:
        self.send(Msg.HELLO, (self.role, protocol.PROTOCOL_MAJOR, protocol.PROTOCOL_MINOR,
                              os.getpid(), info))
        deadline = time.monotonic() + timeout_s
        while not self._welcomed.wait(0.05):
            self._raise_if_fatal()
            if self.liveness_check is not None:
                self.liveness_check()
            if time.monotonic() > deadline:
                raise RaySystemError(self._no_welcome_text(timeout_s))
        self._raise_if_fatal()
        return self.welcome

    def _no_welcome_text(self, timeout_s: float) -> str:
        text = f"the head at {self.endpoint} did not answer within {timeout_s:.0f} s. "
        if self.endpoint.startswith("tcp://") and not self.config.insecure:
            return text + (
                "The likely cause is a cluster key that is not the head's: a head "
                "refuses the handshake of a wrong key without a word (this driver used "
                f"{self.config.cluster_key_file or 'no key file'}; set "
                "ZRAY_CLUSTER_KEY_FILE to a copy of the head's cluster.key). Otherwise "
                "check that the head runs and that its port is reachable.")
        return text + "Is it running and reachable?"

    def register_function(self, function_id: bytes, blob: bytes) -> None:
        if function_id not in self._functions_sent:
            self._functions_sent.add(function_id)
            if self.role == "driver":            # for a granted worker that lacks it
                self._function_blobs[function_id] = blob
            self.send(Msg.REGISTER_FUNCTIONS, (function_id, blob))

    def submit(self, spec) -> list:
        """Send a task; return the ids of its returns (already referenced once).

        With a granted lease (see ``_on_lease_grant``) and nothing of ours
        running on it, a plain task goes straight to that worker, and the head
        is told with SUBMIT_LEASED; a second one while it runs means a burst,
        so the grant goes back and nodes share the work out."""
        self._raise_if_fatal()
        return_ids = spec.return_ids()
        # Under the lock: a LEASE_RETURN (a recall, a burst on another thread)
        # must never be queued between a granted task and its SUBMIT_LEASED.
        with self._lock:
            if spec.num_returns == STREAMING:   # before its first item can come
                self._streams[spec.task_id] = _Stream(return_ids[0])
            for object_id in return_ids:
                self._refs[object_id] = self._refs.get(object_id, 0) + 1
                self._pushed.add(object_id)
            grant = self._grant
            if grant is not None and _grantable(spec):
                if grant.busy is None:
                    grant.busy = spec.task_id
                    grant.last_used = time.monotonic()
                    send = spec
                    if spec.function_id not in grant.known_functions:
                        grant.known_functions.add(spec.function_id)
                        send = spec.copy()
                        send.function_blob = self._function_blobs.get(spec.function_id)
                    self._outbox.append((("grant", grant.identity, spec.task_id),
                                         Msg.EXECUTE_TASKS, (send,)))
                    self._granted_unreported.append(spec.task_id)
                    self.send(Msg.SUBMIT_LEASED, (spec, grant.worker_id))
                    return return_ids
                self._drop_grant()          # a burst: give it back
            self.send(Msg.SUBMIT_TASKS, (spec,))
        return return_ids

    def _on_lease_grant(self, items) -> None:
        for worker_id, task_id in items:
            with self._lock:
                if self._grant is None and self.owner_address:
                    grant = self._grant = _Grant(worker_id)
                    # The task the head ran there may still be running: the
                    # worker is ours once its result is here (or gone from us).
                    result = object_id_for_return(task_id, 1)
                    if result in self._refs and result not in self._objects:
                        grant.busy = task_id
                    continue
                self.send(Msg.LEASE_RETURN, (worker_id,))   # one at a time is enough

    def _on_lease_recall(self, items) -> None:
        for (worker_id,) in items:
            with self._lock:
                grant = self._grant
                if grant is not None and grant.worker_id == worker_id:
                    self._drop_grant()

    def _on_report_now(self, items) -> None:
        """Worker: a driver waits, through the head, on these granted tasks."""
        for (task_id,) in items:
            self.lazy_finishes.discard(task_id)
        self._report_now = True
        self._wake()                    # flush the held reports on this loop turn

    def _return_idle_grant(self, now: float) -> None:
        with self._lock:
            grant = self._grant
            if grant is None or now - grant.last_used < self.config.lease_idle_s:
                return
            if grant.busy is not None and (
                    object_id_for_return(grant.busy, 1) in self._refs
                    or now - grant.last_used < ORPHAN_GRANT_S):
                return
            # Idle, or busy with a task whose result we dropped and may never be
            # told of (the head tells holders only): the head takes it back.
            self._drop_grant()

    def _grant_unreachable(self, task_id: bytes) -> None:
        """The granted worker is not connected (gone, or not yet): this task goes
        to the head instead, and the grant back."""
        self._grant_failed.add(task_id)
        with self._lock:
            if self._grant is not None:
                self._drop_grant()

    def _drop_grant(self) -> None:
        """Give the grant back to the head.  Call with the lock held, so that no
        granted task's SUBMIT_LEASED can be queued after the LEASE_RETURN."""
        grant, self._grant = self._grant, None
        self.send(Msg.LEASE_RETURN, (grant.worker_id,))

    def submit_actor_call(self, spec, max_pending: int = -1) -> list:
        """Send a method call straight to the actor; the head is told only if the
        results' refs leave this process (see ``register_escaping``)."""
        self._raise_if_fatal()
        return_ids = spec.return_ids()
        with self._lock:
            pending = self._actor_pending.get(spec.actor_id, 0)
            if 0 <= max_pending <= pending:
                from zray.exceptions import PendingCallsLimitExceeded
                raise PendingCallsLimitExceeded(
                    f"The actor {spec.actor_id.hex()} already has {pending} calls in flight "
                    f"(max_pending_calls={max_pending}); wait for some to finish.")
            self._actor_pending[spec.actor_id] = pending + 1
            if spec.num_returns == STREAMING:   # before its first item can come
                self._streams[spec.task_id] = _Stream(return_ids[0])
            if spec.is_generator:
                # A generator's items go to the head as they come: it must know the
                # call; the actor reports its end there too, so nothing is forwarded.
                self._register_call_locked(spec, forward=False)
            elif spec.dep_ids or spec.nested_ids:
                self._register_call_locked(spec)    # the head pins the arguments
            else:
                self._unregistered[spec.task_id] = spec
            for object_id in return_ids:
                self._refs[object_id] = self._refs.get(object_id, 0) + 1
                self._pushed.add(object_id)
        self.send(Msg.ACTOR_CALLS, (spec,), target=spec.actor_id)
        return return_ids

    def register_escaping(self, object_ids) -> None:
        """These refs are about to leave this process: make sure the head knows
        every actor call they come from (registration, and results we hold)."""
        if not self._unregistered:
            return
        with self._lock:
            for object_id in object_ids:
                spec = self._unregistered.pop(object_id[:16], None)
                if spec is not None:
                    self._register_call_locked(spec)

    def _register_call_locked(self, spec, forward: bool = True) -> None:
        self._outbox.append((0, Msg.SUBMIT_TASKS, (spec,)))
        done = self._call_results.pop(spec.task_id, None)
        if done is not None:
            status, results = done
            self._outbox.append((0, Msg.ACTOR_TASKS_FINISHED,
                                 (spec.task_id, spec.attempt, status, results)))
        elif forward:
            self._forward_results.add(spec.task_id)    # when the answer comes
        self._wake()

    def cancel_actor_call(self, task_id: bytes, actor_id: bytes) -> None:
        self.send(Msg.CANCEL_TASKS, (task_id, False), target=("cancel", actor_id))

    def request(self, msg_type: Msg, item_without_id: tuple, timeout_s: float = 30.0):
        """Send a message whose last field is a request id; wait for QUERY_REPLY."""
        request_id = next(self._request_ids)
        future = concurrent.futures.Future()
        with self._lock:
            self._replies[request_id] = future
        self.send(msg_type, item_without_id + (request_id,))
        return self._wait_reply(future, msg_type.name, timeout_s)

    def serve(self, endpoint: str, handler, timeout_s: float = 10.0) -> str:
        """Bind a ROUTER for callers (actor workers); ``handler(identity, message)``
        runs in the I/O thread.  Returns the bound endpoint."""
        self._serve_request = (endpoint, handler)
        self._wake()
        if not self._served.wait(timeout_s):
            raise RaySystemError(f"could not bind {endpoint} for actor calls")
        self._raise_if_fatal()
        return self.server_endpoint

    def serve_results(self, endpoint: str) -> None:
        """Let workers send the inline results of our tasks straight here (one hop
        instead of two through the head, which still records them)."""
        def on_message(identity, message):
            if message.type is Msg.OBJECTS_READY:
                self._on_objects_ready(message.items)
        self.owner_address = self.serve(endpoint, on_message)

    def put_serialized(self, object_id: bytes, obj) -> None:
        """Register an object made by put: inline, or written to the local store."""
        self._raise_if_fatal()
        self.register_escaping(obj.contained_ids)
        if obj.size <= self.config.max_inline_object_bytes:
            from zray.serialization import inline_bytes
            entry = (KIND_INLINE, inline_bytes(obj), obj.size, ())
            item = (object_id, KIND_INLINE, entry[1], obj.size, None, obj.contained_ids)
        else:
            if self.local_node_id is None:
                raise RaySystemError("this process has no local node to store a large "
                                     "object in")
            from zray.serialization import spare_paths, write_segment
            size = write_segment(
                segment_path(self.config.shm_dir, self.local_node_id, object_id), obj,
                spare_paths(self.config.shm_dir, self.local_node_id))
            entry = (KIND_SHM, None, size, (self.local_node_id,))
            item = (object_id, KIND_SHM, None, size, self.local_node_id, obj.contained_ids)
        with self._lock:
            self._refs[object_id] = self._refs.get(object_id, 0) + 1
            self._objects[object_id] = entry
        self.send(Msg.PUT_OBJECTS, item)

    # --- references ------------------------------------------------------------------

    def add_ref(self, object_id: bytes, announce: bool = True) -> None:
        with self._lock:
            count = self._refs.get(object_id, 0)
            self._refs[object_id] = count + 1
            if count == 0 and announce:
                self.send(Msg.ADD_REFS, (object_id,))

    def release_ref(self, object_id: bytes) -> None:
        """Called from ObjectRef.__del__ in any thread: defer to the I/O thread."""
        if self.closed:
            return
        self._released.append(object_id)
        if not self._wake_pending:
            self._wake()

    def _apply_releases(self) -> None:
        if not self._released:
            return
        with self._lock:
            while self._released:
                object_id = self._released.popleft()
                count = self._refs.get(object_id, 0) - 1
                if count > 0:
                    self._refs[object_id] = count
                    continue
                self._refs.pop(object_id, None)
                entry = self._objects.pop(object_id, None)
                if entry is not None and entry[0] == KIND_SHM and len(self.segment_maps):
                    self.segment_maps.forget(self._segment(object_id))
                self._pushed.discard(object_id)
                self._subscribed.discard(object_id)
                task_id = object_id[:16]
                if task_id in self._unregistered:       # the head never heard of it
                    if not any(oid in self._refs for oid in
                               self._unregistered[task_id].return_ids()):
                        self._call_results.pop(task_id, None)
                        if task_id not in self._actor_call_of:
                            del self._unregistered[task_id]
                    continue
                if is_handle_id(object_id) and self._actor_pending.get(task_id):
                    self._held_handles.add(object_id)   # released once our calls finish
                    continue
                self._outbox.append((0, Msg.REMOVE_REFS, (object_id,)))

    # --- getting ---------------------------------------------------------------------

    def wait_entries(self, object_ids, num_returns: int, timeout_s, streams=()) -> set:
        """Block until ``num_returns`` of the (unique) objects, and of ``streams``
        (generators we own: ready when their next item is here or they ended),
        are ready, or the timeout passes; return the ids that are ready."""
        unique = set(object_ids)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            self._raise_if_fatal()
            missing = [o for o in unique if o not in self._objects]
            pending = [s for s in streams if not self._stream_ready(s)]
            total = len(unique) + len(streams)
            needed = min(num_returns, total) - (total - len(missing) - len(pending))
            if needed <= 0 or timeout_s == 0:
                return unique.difference(missing)
            waiter = _Waiter(needed)
            for object_id in missing:
                self._waiters.setdefault(object_id, []).append(waiter)
            for stream in pending:
                stream.waiters.append(waiter)
            self._subscribe_missing(missing)
        blocked = self._notify_blocked(True)
        started = time.monotonic()
        try:
            while not waiter.event.wait(0.5 if deadline is None
                                        else max(0.0, min(0.5, deadline - time.monotonic()))):
                self._raise_if_fatal()
                if self.liveness_check is not None:
                    self.liveness_check()
                if time.monotonic() - started >= PUSH_GRACE_S:
                    self._subscribe_pushed(missing)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            self._raise_if_fatal()
        finally:
            # no return in here: it would swallow KeyboardInterrupt and errors
            if blocked:
                self._notify_blocked(False)
            with self._lock:
                for object_id in missing:
                    waiters = self._waiters.get(object_id)
                    if waiters and waiter in waiters:
                        waiters.remove(waiter)
                        if not waiters:
                            del self._waiters[object_id]
                for stream in pending:
                    if waiter in stream.waiters:
                        stream.waiters.remove(waiter)
        with self._lock:       # (not in the finally: a return there would swallow
            return {o for o in unique if o in self._objects}    # KeyboardInterrupt)

    def get_entries(self, object_ids, timeout_s):
        wanted = len(set(object_ids))
        ready = self.wait_entries(object_ids, len(object_ids), timeout_s)
        if len(ready) < wanted:
            raise GetTimeoutError(
                f"Get timed out: {wanted - len(ready)} of {wanted} objects were not "
                f"ready after {timeout_s} s.")
        with self._lock:
            return [self._objects[o] for o in object_ids]

    def _subscribe_missing(self, object_ids) -> None:
        for object_id in object_ids:
            if object_id in self._objects or object_id in self._pushed \
                    or object_id in self._subscribed:
                continue
            self._subscribed.add(object_id)
            self.send(Msg.SUBSCRIBE_OBJECTS, (object_id,))

    def _subscribe_pushed(self, object_ids) -> None:
        """Ask the head for returns of our own tasks that are still missing.

        They are pushed to us (by the head, or straight from the worker for
        inline results, which the head then does not repeat), so a push lost
        with a worker that died between its two sends would leave a get
        waiting forever; after PUSH_GRACE_S a subscription covers that."""
        with self._lock:
            late = [o for o in object_ids if o in self._pushed and o not in self._objects
                    and o not in self._subscribed]
            self._subscribed.update(late)
        for object_id in late:
            self.send(Msg.SUBSCRIBE_OBJECTS, (object_id,))

    def _notify_blocked(self, blocked: bool) -> bool:
        task_id = getattr(self.current_task, "task_id", None)
        if self.role != "worker" or task_id is None:
            return False
        if blocked:
            returned = self.blocked_hook() if self.blocked_hook is not None else ()
            self.send(Msg.WORKER_BLOCKED, (task_id, tuple(returned)), to_node=True)
        else:
            if self.unblocked_hook is not None:
                self.unblocked_hook()
            self.send(Msg.WORKER_UNBLOCKED, (task_id,), to_node=True)
        return True

    def value_of(self, object_id: bytes, entry: tuple):
        """Turn a ready entry into its value; raise the stored error for an error."""
        kind, data, size, node_ids = entry
        if kind == KIND_INLINE:
            return deserialize(data)
        if kind == KIND_ERROR:
            raise _as_raisable(deserialize(data))
        if kind == KIND_SHM:
            if self.local_node_id not in node_ids:
                try:
                    self.pull(object_id, size, node_ids)
                except ObjectLostError:
                    fresh = self._refetch(object_id, entry)
                    if fresh is None:
                        raise
                    return self.value_of(object_id, fresh)
            return self.segment_maps.read(self._segment(object_id))
        raise RaySystemError(f"unknown object kind {kind}")

    def _segment(self, object_id: bytes) -> str:
        return segment_path(self.config.shm_dir, self.local_node_id, object_id)

    def _refetch(self, object_id: bytes, stale: tuple, timeout_s: float = 300.0):
        """Every copy we knew of is gone: ask the head again, which answers once
        it has rebuilt the object from its lineage (or with the error saying why
        it cannot).  None when the head still names the same copies."""
        from zray.object_ref import ObjectRef
        holder = ObjectRef(object_id, _client=self)    # answers come only for our refs
        try:
            return self._refetch_held(object_id, stale, timeout_s)
        finally:
            del holder

    def _refetch_held(self, object_id: bytes, stale: tuple, timeout_s: float):
        with self._lock:
            if self._objects.get(object_id) == stale or \
                    self._objects.get(object_id) is None:
                self._objects.pop(object_id, None)
                self._subscribed.discard(object_id)
                self._pushed.discard(object_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            [fresh] = self.get_entries([object_id], max(0.1, deadline - time.monotonic()))
            if fresh != stale:
                return fresh
            with self._lock:            # the head has not noticed the loss yet
                if self._objects.get(object_id) == stale:
                    self._objects.pop(object_id, None)
                    self._subscribed.discard(object_id)
            time.sleep(0.2)
        return None

    def pull(self, object_id: bytes, size: int, node_ids) -> None:
        """Have this process's node copy a segment that lives on other nodes
        into its store; wait until it is there."""
        if self.local_node_id is None or self.node_endpoint is None:
            raise RaySystemError(
                f"object {object_id.hex()} lives on node(s) "
                f"{[n.hex()[:12] for n in node_ids]}, and this process has no node of its "
                "own to pull it to; run the driver on a host where a zray node runs")
        with self._lock:
            future = self._pulls.get(object_id)
            first = future is None
            if first:
                future = self._pulls[object_id] = concurrent.futures.Future()
        if first:
            self.send(Msg.PULL_OBJECT, (object_id, size, tuple(node_ids)), to_node=True)
        while True:
            try:
                error = future.result(timeout=1.0)
                break
            except concurrent.futures.TimeoutError:
                self._raise_if_fatal()
        if error is not None:
            from zray.exceptions import ObjectLostError
            raise ObjectLostError(object_id.hex(), error)
        with self._lock:
            entry = self._objects.get(object_id)
            if entry is not None and self.local_node_id not in entry[3]:
                self._objects[object_id] = entry[:3] + (entry[3] + (self.local_node_id,),)

    def _on_object_pulled(self, items) -> None:
        with self._lock:
            for object_id, error in items:
                future = self._pulls.pop(object_id, None)
                if future is not None:
                    future.set_result(error)

    def add_callback(self, object_id: bytes, callback) -> None:
        """Call ``callback(entry)`` (in the I/O thread) once the object is ready."""
        with self._lock:
            entry = self._objects.get(object_id)
            if entry is None:
                self._callbacks.setdefault(object_id, []).append(callback)
                self._subscribe_missing([object_id])
                return
        callback(entry)

    # --- generators we own (see zray.generators) ----------------------------------

    def open_stream(self, completion_id: bytes) -> "_Stream":
        """The items of our streaming generator task (registered by ``submit``, so
        that none is missed): the head pushes each one as it is stored; the
        completion brings the count."""
        with self._lock:
            stream = self._streams.get(completion_id[:16])
            if stream is None:
                stream = self._streams[completion_id[:16]] = _Stream(completion_id)
            stream.on_completion = lambda entry: self._stream_completed(stream, entry)
        self.add_callback(completion_id, stream.on_completion)
        return stream

    def close_stream(self, stream: "_Stream") -> None:
        """The generator is gone: drop the items it received and never handed out."""
        with self._lock:
            if self._streams.pop(stream.task_id, None) is None:
                return
            callbacks = self._callbacks.get(stream.completion_id)
            if callbacks and stream.on_completion in callbacks:
                callbacks.remove(stream.on_completion)
                if not callbacks:
                    del self._callbacks[stream.completion_id]
            for index in range(stream.next_index, stream.arrived):
                object_id = object_id_for_item(stream.task_id, index)
                if object_id in self._refs:
                    self.release_ref(object_id)

    def stream_next(self, stream: "_Stream"):
        """The id of the stream's next ref (the caller now owns one count of it), or
        None if it is not here yet; StopIteration after the last."""
        with self._lock:
            object_id = object_id_for_item(stream.task_id, stream.next_index)
            if object_id in self._objects:
                stream.next_index += 1
                return object_id
            if stream.failed is not None and not stream.exhausted:
                stream.exhausted = True      # the completion itself holds the error
                self._refs[stream.completion_id] = self._refs.get(stream.completion_id, 0) + 1
                return stream.completion_id
            if stream.exhausted or stream.count is not None and \
                    stream.next_index >= stream.count:
                raise StopIteration
            return None

    def stream_ready(self, stream: "_Stream") -> bool:
        with self._lock:
            return self._stream_ready(stream)

    def stream_finished(self, stream: "_Stream") -> bool:
        with self._lock:
            return stream.exhausted or stream.failed is None and \
                stream.count is not None and stream.next_index >= stream.count

    def when_stream_ready(self, stream: "_Stream", waiter) -> None:
        """Call ``waiter.hit()`` (in the I/O thread, under the lock) once ready."""
        with self._lock:
            if self._stream_ready(stream):
                waiter.hit()
            else:
                stream.waiters.append(waiter)

    def _stream_ready(self, stream) -> bool:
        """Would next() return at once?  Call with the lock held."""
        return object_id_for_item(stream.task_id, stream.next_index) in self._objects \
            or stream.exhausted or stream.failed is not None \
            or (stream.count is not None and stream.next_index >= stream.count)

    def _stream_completed(self, stream, entry) -> None:
        kind, data, _size, _node_ids = entry
        with self._lock:
            if kind == KIND_INLINE:
                stream.count = deserialize(data)
            else:                   # not a count: the task failed as a whole
                stream.failed = entry
            self._stream_changed(stream)

    def _stream_arrival(self, stream, object_id: bytes, woken: list) -> None:
        """An item (or the completion) of a generator we iterate reached us: the
        generator holds the item's ref until next() hands it out (the head pins
        it until then).  Call with the lock held, before the entry is stored."""
        woken.append(stream)
        if object_id[16:] == _COMPLETION or object_id in self._refs:
            return
        index = item_index(object_id)
        if index >= stream.next_index:         # not one handed out and dropped since
            self.add_ref(object_id)
            stream.arrived = max(stream.arrived, index + 1)

    def _stream_changed(self, stream) -> None:
        if stream.waiters and self._stream_ready(stream):
            waiters, stream.waiters = stream.waiters, []
            for waiter in waiters:
                waiter.hit()

    # --- queries ---------------------------------------------------------------------

    def query(self, name: str, args=None, timeout_s: float = 30.0):
        request_id = next(self._request_ids)
        future = concurrent.futures.Future()
        with self._lock:
            self._replies[request_id] = future
        self.send(Msg.QUERY, (request_id, name, args))
        return self._wait_reply(future, name, timeout_s)

    def _wait_reply(self, future, name, timeout_s):
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_fatal()
            try:
                ok, value = future.result(timeout=0.1)
                break
            except concurrent.futures.TimeoutError:
                if self.liveness_check is not None:
                    self.liveness_check()
                if time.monotonic() > deadline:
                    raise GetTimeoutError(f"the head did not answer query {name!r} in "
                                          f"{timeout_s} s") from None
        if not ok:
            raise RaySystemError(value)
        return value

    # --- the I/O thread --------------------------------------------------------------

    def _connect(self, ctx, endpoint: str, identity: bytes):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if self.config.max_message_bytes > 0:
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.IDENTITY, identity)
        secure_client(sock, endpoint, self.config)
        sock.connect(endpoint)
        return sock

    def _io_main(self) -> None:
        ctx = self._ctx = zmq.Context()
        sock = self._connect(ctx, self.endpoint, self.identity)
        node = None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        if self.node_endpoint:
            node = self._connect(ctx, self.node_endpoint, self.node_identity)
            poller.register(node, zmq.POLLIN)
        sockets = self._sockets = [sock, node]    # a driver connects its node lazily
        self._poller = poller
        self.beat_every = self.config.heartbeat_interval_s    # the head's, once welcomed
        last_beat = time.monotonic() - self.beat_every
        last_sweep = head_heard = time.monotonic()
        try:
            while True:
                timeout_s = self.beat_every
                if len(self.segment_maps):      # let go of removed segments' maps soon
                    timeout_s = min(timeout_s, MAP_SWEEP_S)
                if self._grant is not None:
                    timeout_s = min(timeout_s, self.config.lease_idle_s)
                if self._deferred:
                    timeout_s = self._deferred_since + self._defer_s - time.monotonic()
                events = dict(poller.poll(poll_ms(timeout_s)))
                if self._wake_fd in events:
                    try:
                        os.eventfd_read(self._wake_fd)
                    except BlockingIOError:
                        pass
                self._wake_pending = False
                self._apply_releases()
                self._flush(sockets)
                if sock in events:
                    head_heard = time.monotonic()
                    self.direct_dispatch = True
                    self._drain(sock)
                    self.direct_dispatch = False
                node = sockets[1]
                if node is not None and node in events:
                    self._drain(node)
                for owner_sock in self._owner_socks.values():
                    if owner_sock in events:
                        self.direct_dispatch = self.from_driver = True
                        self._drain(owner_sock)
                        self.direct_dispatch = self.from_driver = False
                if self._actor_conns or self._server is not None or \
                        self._serve_request is not None:
                    self._drain_extra(ctx, events)
                if self._stop:
                    self._apply_releases()
                    self._flush(sockets, final=True)
                    break
                now = time.monotonic()
                if self._grant is not None:
                    self._return_idle_grant(now)
                if now >= last_sweep + MAP_SWEEP_S:
                    self.segment_maps.sweep()
                    last_sweep = now
                if self.role == "driver" and now >= last_beat + self.beat_every:
                    sock.send_multipart(protocol.encode(Msg.HEARTBEAT, [(time.time(),)]))
                    last_beat = now
                    if self.fatal is None and now - head_heard > self.config.head_timeout_s:
                        self._set_fatal(self._head_lost(now - head_heard))
        except Exception as exc:  # a bug here must not hang every waiter silently
            log.exception("zray I/O thread failed")
            self._set_fatal(RaySystemError(f"zray's I/O thread failed: {exc!r}"))
        finally:
            for s in sockets:
                if s is not None:
                    s.close()
            for conn in self._actor_conns.values():
                if conn.socket is not None:
                    conn.socket.close()
            for owner_sock in self._owner_socks.values():
                owner_sock.close()
            if self._server is not None:
                self._server.close()
                if self.server_endpoint and self.server_endpoint.startswith("ipc://"):
                    try:
                        os.unlink(self.server_endpoint[len("ipc://"):])
                    except OSError:
                        pass
            ctx.term()

    def _flush(self, sockets, final: bool = False) -> None:
        """Send the outbox in order, consecutive items of one type as one message.

        Bookkeeping for the head (reference counts, registrations of actor
        calls and granted tasks, actor results the caller already has, a
        granted task's report) may wait up to ``bookkeeping_delay_s`` so that it
        leaves in batches; anything else for the head sends it, and everything
        before it, at once.  REMOVE_REFS leave last, as one message: a reference
        dropped later than the program did only keeps an object a little longer,
        and a loop of submit-then-get would otherwise alternate types and send
        one-item messages."""
        outbox = self._outbox
        deferred = self._deferred
        urgent = final or self._report_now
        self._report_now = False
        while outbox:
            entry = outbox.popleft()
            if entry[0] == 0:
                if entry[1] is Msg.SUBMIT_LEASED and entry[2][0].task_id in self._grant_failed:
                    self._grant_failed.discard(entry[2][0].task_id)
                    entry = (0, Msg.SUBMIT_TASKS, (entry[2][0],))
                if not deferred:
                    self._deferred_since = time.monotonic()
                deferred.append(entry)
                if not urgent and not self._is_bookkeeping(entry[1], entry[2]):
                    urgent = True
                    if self._granted_unreported:
                        self._ask_report(sockets)
            else:
                self._route(sockets, (entry[0], entry[1]), [entry[2]])
        if deferred and (urgent or time.monotonic() - self._deferred_since >= self._defer_s):
            self._deferred = []
            current, items, removes = None, [], []
            for target, msg_type, item in deferred:
                if msg_type is Msg.REMOVE_REFS:
                    removes.append(item)
                    continue
                if msg_type is not current and items:
                    self._route(sockets, (0, current), items)
                    items = []
                current = msg_type
                items.append(item)
            if items:
                self._route(sockets, (0, current), items)
            if removes:
                self._route(sockets, (0, Msg.REMOVE_REFS), removes)

    def _is_bookkeeping(self, msg_type, item) -> bool:
        if msg_type is Msg.TASKS_FINISHED and item[0] in self.lazy_finishes:
            self.lazy_finishes.discard(item[0])     # its driver already has the results
            return True
        return _is_bookkeeping(msg_type, item)

    def _ask_report(self, sockets) -> None:
        """Driver: a message the head acts on now may wait on our granted tasks
        (a task taking their results, a subscription...); their worker holds its
        reports as bookkeeping, so ask for them at once."""
        ids = list(self._granted_unreported)
        self._granted_unreported.clear()
        grant = self._grant
        if grant is not None:
            self._route(sockets, (("grant", grant.identity, None), Msg.REPORT_NOW),
                        [(task_id,) for task_id in ids])

    def _route(self, sockets, key, items) -> None:
        target, msg_type = key
        if target == 0 or target == 1:
            if sockets[target] is None:     # a driver's first pull from its node
                sockets[1] = self._connect(self._ctx, self.node_endpoint,
                                           self.node_identity or self.identity)
                self._poller.register(sockets[1], zmq.POLLIN)
            limit = self.config.max_head_message_bytes    # the node's bound too
            try:
                for frames in protocol.encode_within(msg_type, items, limit):
                    if 0 < limit < len(frames[0]):
                        log.error("a %s item of %d bytes is over the receiver's limit, "
                                  "max_head_message_bytes=%d: it will be refused",
                                  msg_type.name, len(frames[0]), limit)
                    send_frames(sockets[target], frames)
            except zmq.Again:       # no connection (e.g. the head refused our key)
                log.error("could not send %s to the %s: not connected", msg_type.name,
                          "head" if target == 0 else "node")
        elif type(target) is bytes:
            self._send_actor_calls(target, [item[0] for item in items])
        elif target[0] == "grant":
            if not self._server_mandatory:
                # A worker that is not connected raises instead of the task
                # vanishing (set here: only the I/O thread touches the socket).
                self._server.setsockopt(zmq.ROUTER_MANDATORY, 1)
                self._server_mandatory = True
            try:
                send_frames(self._server, [target[1]] + protocol.encode(msg_type, items))
            except zmq.ZMQError:            # not connected: the head runs it instead
                if target[2] is not None:
                    self._grant_unreachable(target[2])
        elif target[0] == "owner":
            sock = self._owner_socks.get(target[1])
            if sock is None:
                sock = self._owner_socks[target[1]] = \
                    self._connect(self._ctx, target[1], self.identity)
                self._poller.register(sock, zmq.POLLIN)    # a granted driver's tasks
            send_frames(sock, protocol.encode(msg_type, items))
        elif target[0] == "cancel":
            conn = self._conn(target[1])
            if conn.socket is not None:
                send_frames(conn.socket, protocol.encode(msg_type, items))
            else:                       # sent right after the calls, once it is up
                conn.cancels.extend(items)
        elif target[0] == "reply" and self._server is not None:
            try:
                send_frames(self._server, [target[1]] + protocol.encode(msg_type, items))
            except zmq.ZMQError as exc:
                log.warning("could not answer caller %r: %s", target[1][:12], exc)

    # --- actors, caller side (I/O thread) --------------------------------------------

    def _conn(self, actor_id: bytes) -> "_ActorConn":
        conn = self._actor_conns.get(actor_id)
        if conn is None:
            conn = self._actor_conns[actor_id] = _ActorConn()
        return conn

    def _send_actor_calls(self, actor_id: bytes, specs: list) -> None:
        conn = self._conn(actor_id)
        for spec in specs:
            conn.unfinished[spec.task_id] = spec
            self._actor_call_of[spec.task_id] = actor_id
        if actor_id in self.killed_actors or conn.state == "DEAD":
            self._settle_unregistered(conn, "DEAD", conn.text or "it was killed")
            return
        if conn.state == "ALIVE" and conn.socket is not None:
            send_frames(conn.socket, protocol.encode(Msg.ACTOR_CALLS,
                                                     [(s,) for s in specs]))
        elif not conn.subscribed:
            conn.subscribed = True
            self._outbox.append((0, Msg.SUBSCRIBE_ACTOR, (actor_id,)))

    def _on_actor_info(self, items) -> None:
        for actor_id, state, address, text in items:
            conn = self._conn(actor_id)
            conn.subscribed = True
            conn.state = state
            conn.text = text
            if state == "ALIVE" and address:
                if address != conn.address:
                    self._close_conn(conn)
                    conn.socket = self._connect(self._ctx, address, self.identity)
                    self._poller.register(conn.socket, zmq.POLLIN)
                    conn.address = address
                    if conn.unfinished:
                        conn.socket.send_multipart(protocol.encode(
                            Msg.ACTOR_CALLS, [(s,) for s in conn.unfinished.values()]))
                    if conn.cancels:
                        send_frames(conn.socket, protocol.encode(Msg.CANCEL_TASKS,
                                                                 conn.cancels))
                        conn.cancels = []
            else:
                if conn.socket is not None:
                    self._drain(conn.socket)    # answers it sent before it went away
                self._close_conn(conn)
                if state in ("RESTARTING", "DEAD"):
                    self._ask_head_for(conn.unfinished.values())
                    self._settle_unregistered(conn, state, text)
                if state == "DEAD":
                    for task_id in conn.unfinished:
                        self._actor_call_of.pop(task_id, None)
                    with self._lock:
                        self._actor_pending.pop(actor_id, None)
                        handle = handle_id(actor_id)
                        if handle in self._held_handles:
                            self._held_handles.discard(handle)
                            self._outbox.append((0, Msg.REMOVE_REFS, (handle,)))
                    conn.unfinished.clear()

    def _settle_unregistered(self, conn, state, text) -> None:
        """The actor's process went away: a call with retries left is resent to
        the new instance; others fail with ActorDiedError, here for calls the head
        does not know about, by the head for the rest."""
        from zray.exceptions import ActorDiedError
        from zray.serialization import dumps_error
        failed = []
        with self._lock:
            for task_id, spec in list(conn.unfinished.items()):
                retries = spec.max_retries
                if state == "RESTARTING" and (retries < 0 or spec.attempt < retries):
                    spec.attempt += 1            # resent to the new instance
                    continue
                if self._unregistered.get(task_id) is not spec:
                    del conn.unfinished[task_id]   # the head fails it
                    continue
                blob = dumps_error(ActorDiedError(
                    f"The actor died while running {spec.name}: "
                    f"{text or 'its process exited'}", spec.actor_id))
                failed.extend((oid, KIND_ERROR, blob, len(blob), ())
                              for oid in spec.return_ids())
                del conn.unfinished[task_id]
        if failed:
            self._on_objects_ready(failed)

    def _ask_head_for(self, specs) -> None:
        """The actor went away: answers it sent us may be lost, but the head has
        them (or will fail the calls), so subscribe to the results there."""
        with self._lock:
            for spec in specs:
                if spec.task_id in self._unregistered:
                    continue            # the head never heard of it: settled here
                for object_id in spec.return_ids():
                    if object_id in self._refs and object_id not in self._objects \
                            and object_id not in self._subscribed:
                        self._subscribed.add(object_id)
                        self._outbox.append((0, Msg.SUBSCRIBE_OBJECTS, (object_id,)))

    def _close_conn(self, conn) -> None:
        if conn.socket is not None:
            self._poller.unregister(conn.socket)
            conn.socket.close(linger=0)
            conn.socket = None
        conn.address = None

    def _on_actor_results(self, items) -> None:
        ready = []
        for task_id, node_id, results, status in items:
            for object_id, kind, data, size, contained in results:
                ready.append((object_id, kind, data, size,
                              (node_id,) if kind == KIND_SHM else ()))
            self._keep_call_results(task_id, status, results)
            self._actor_call_done(task_id)
        if ready:
            self._on_objects_ready(ready, from_actor=True)

    def _keep_call_results(self, task_id, status, results) -> None:
        """An unregistered call answered: keep what the head may need later; a
        result holding refs or living in shared memory is registered now (the
        actor reported it to the head, which holds it until we do)."""
        reported = any(r[4] or r[1] == KIND_SHM for r in results)  # by the actor
        with self._lock:
            if task_id in self._forward_results:
                self._forward_results.discard(task_id)
                if not reported:
                    self._outbox.append((0, Msg.ACTOR_TASKS_FINISHED,
                                         (task_id, 0, status, results)))
                    self._wake()
                return
            spec = self._unregistered.get(task_id)
            if spec is None:
                return
            held = any(oid in self._refs for oid in spec.return_ids())
            if reported or not held:
                del self._unregistered[task_id]
                if reported and held:     # claims what the head keeps for it
                    self._outbox.append((0, Msg.SUBMIT_TASKS, (spec,)))
                    self._wake()
            else:
                self._call_results[task_id] = (status, results)

    def _actor_call_done(self, task_id: bytes) -> None:
        actor_id = self._actor_call_of.pop(task_id, None)
        if actor_id is None:
            return
        conn = self._actor_conns.get(actor_id)
        if conn is not None:
            conn.unfinished.pop(task_id, None)
        with self._lock:
            count = self._actor_pending.get(actor_id, 0) - 1
            if count > 0:
                self._actor_pending[actor_id] = count
            else:
                self._actor_pending.pop(actor_id, None)
                handle = handle_id(actor_id)
                if handle in self._held_handles:
                    self._held_handles.discard(handle)
                    self._outbox.append((0, Msg.REMOVE_REFS, (handle,)))

    def _drain_extra(self, ctx, events) -> None:
        """Actor sockets and the caller-facing ROUTER of an actor worker."""
        if self._serve_request is not None:
            endpoint, handler = self._serve_request
            self._serve_request = None
            try:
                server = ctx.socket(zmq.ROUTER)
                server.setsockopt(zmq.LINGER, 2000)   # answers must survive an exit
                server.setsockopt(zmq.SNDHWM, 0)
                server.setsockopt(zmq.RCVHWM, 0)
                if self.config.max_message_bytes > 0:
                    server.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
                from zray._process import bind_private
                secure_server(server, endpoint, self.config)
                self.server_endpoint = bind_private(server, endpoint,
                                                    self.config.port_range)
                self._server, self._server_handler = server, handler
                self._poller.register(server, zmq.POLLIN)
            except (zmq.ZMQError, ValueError) as exc:
                self._set_fatal(RaySystemError(f"could not bind {endpoint}: {exc}"))
            self._served.set()
        if self._server is not None and self._server in events:
            self._drain_server()
        for conn in list(self._actor_conns.values()):
            if conn.socket is not None and conn.socket in events:
                self._drain(conn.socket)

    def _drain_server(self) -> None:
        while has_input(self._server):
            frames = recv_frames(self._server)
            try:
                message = protocol.decode(frames[1:])
            except ProtocolError as exc:
                log.warning("dropped a malformed call from %r: %s", frames[0][:12], exc)
                continue
            try:
                self._server_handler(frames[0], message)
            except Exception:
                log.exception("handling %s from a caller failed", message.type.name)

    def _drain(self, sock) -> None:
        while has_input(sock):
            frames = recv_frames(sock)
            try:
                message = protocol.decode(frames)
            except ProtocolError as exc:
                if "version mismatch" in str(exc):
                    self._set_fatal(exc)
                log.warning("dropped a malformed message from %s: %s", self.endpoint, exc)
                continue
            handler = self._handlers.get(message.type) or \
                self.message_handlers.get(message.type)
            if handler is None:
                log.warning("ignoring unexpected %s", message.type.name)
                continue
            try:
                handler(message.items)
            except Exception:
                log.exception("handling %s failed", message.type.name)

    def _on_objects_ready(self, items, from_actor: bool = False) -> None:
        fire = []
        streams = self._streams
        if not from_actor and self._actor_call_of:
            for item in items:
                if item[0][:16] not in streams or item[0][16:] == _COMPLETION:
                    self._actor_call_done(item[0][:16])
        with self._lock:
            grant = self._grant
            woken = []
            for item in items:
                object_id = item[0]
                if grant is not None and grant.busy == object_id[:16]:
                    grant.busy = None           # our granted worker is free again
                    grant.last_used = time.monotonic()
                if streams and object_id[:16] in streams:
                    self._stream_arrival(streams[object_id[:16]], object_id, woken)
                if object_id not in self._refs or object_id in self._objects:
                    continue            # not ours any more, or already answered
                entry = item[1:]
                self._objects[object_id] = entry
                self._pushed.discard(object_id)
                self._subscribed.discard(object_id)
                callbacks = self._callbacks.pop(object_id, None)
                if callbacks:
                    fire.extend((cb, entry) for cb in callbacks)
                for waiter in self._waiters.pop(object_id, ()):
                    waiter.needed -= 1
                    if waiter.needed == 0:
                        waiter.event.set()
            for stream in woken:
                self._stream_changed(stream)
        for callback, entry in fire:
            try:
                callback(entry)
            except Exception:
                log.exception("object callback failed")

    def _on_query_reply(self, items) -> None:
        for request_id, ok, value in items:
            with self._lock:
                future = self._replies.pop(request_id, None)
            if future is not None:
                future.set_result((ok, value))

    def _on_welcome(self, items) -> None:
        self.welcome = items[0][0]
        self.job_id = self.welcome.get("job_id")
        # the head judges liveness by its own heartbeat settings: beat at its pace
        self.beat_every = self.welcome.get("heartbeat_interval_s", self.beat_every)
        self._welcomed.set()

    def _on_log_lines(self, items) -> None:
        if not self.log_to_driver:
            return
        for job_id, prefix, stream, text in items:
            out = sys.stderr if stream == "stderr" else sys.stdout
            try:
                out.write("".join(f"{prefix} {line}\n" for line in text.splitlines()))
                out.flush()
            except (OSError, ValueError):
                pass

    def _on_warning(self, items) -> None:
        for (text,) in items:
            log.warning("%s", text)

    def _on_protocol_error(self, items) -> None:
        self._set_fatal(ProtocolError(items[0][0]))

    def _set_fatal(self, error: Exception) -> None:
        with self._lock:
            self.fatal = error
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.event.set()
        self._welcomed.set()
        for future in list(self._replies.values()):
            if not future.done():
                future.set_exception(error)

    def _head_lost(self, silent_s: float) -> RaySystemError:
        log.error("no answer from the head at %s for %.0f s; presuming it dead",
                  self.endpoint, silent_s)
        return RaySystemError(
            f"the head at {self.endpoint} has not answered for {silent_s:.0f} s "
            f"(head_timeout_s={self.config.head_timeout_s:g}): it is presumed dead, and "
            "the work and objects of this session are lost. Start the cluster again "
            "(zray start --head) and call zray.init() anew.")

    def _raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    # --- closing ---------------------------------------------------------------------

    def close(self, timeout_s: float = 2.0) -> None:
        if self.closed:
            return
        self._stop = True
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass
        self._thread.join(timeout_s)
        self.closed = True
        os.close(self._wake_fd)


#: Seconds after which a grant still busy with a task whose result this driver
#: dropped goes back to the head (see CoreClient._return_idle_grant).
ORPHAN_GRANT_S = 1.0

#: How often the I/O thread lets go of kept maps of removed segments (a node
#: reuses a freed segment only once nobody maps it, see SpareSegments).
MAP_SWEEP_S = 0.1

#: Seconds a get waits for a pushed return of its own task before it also
#: subscribes to it at the head (see CoreClient._subscribe_pushed).
PUSH_GRACE_S = 2.0

_BOOKKEEPING = frozenset((Msg.ADD_REFS, Msg.REMOVE_REFS, Msg.ACTOR_TASKS_FINISHED,
                          Msg.SUBMIT_LEASED))


def _ignore(items) -> None:
    pass


def _is_bookkeeping(msg_type, item) -> bool:
    if msg_type in _BOOKKEEPING:
        return True
    return msg_type is Msg.SUBMIT_TASKS and item[0].actor_id is not None \
        and item[0].method != "__init__"


class _Grant:
    """A leased worker the head granted this driver (see CoreClient.submit)."""

    __slots__ = ("worker_id", "identity", "busy", "last_used", "known_functions")

    def __init__(self, worker_id: bytes):
        self.worker_id = worker_id
        self.identity = b"W" + worker_id    # the worker's identity on our results socket
        self.busy = None                    # the id of our task running there
        self.last_used = time.monotonic()
        self.known_functions: set = set()


def _grantable(spec) -> bool:
    """A task a granted worker may run: what the head itself sends to leases, with
    nothing to resolve first and one return to tell us it finished."""
    return spec.resources == _ONE_CPU and spec.strategy is None and not spec.max_calls \
        and spec.actor_id is None and not spec.timeout_s and not spec.dep_ids \
        and not spec.nested_ids and spec.num_returns == 1 and bool(spec.owner_address)


_ONE_CPU = {"CPU": 1.0}


class _ActorConn:
    """The caller's view of one actor: where it is and the calls not yet answered."""

    __slots__ = ("state", "address", "socket", "unfinished", "subscribed", "text",
                 "cancels")

    def __init__(self):
        from collections import OrderedDict
        self.state = "UNKNOWN"
        self.address = None
        self.socket = None
        self.unfinished = OrderedDict()
        self.subscribed = False
        self.text = None
        self.cancels = []


class _Waiter:
    __slots__ = ("needed", "event")

    def __init__(self, needed: int):
        self.needed = needed
        self.event = threading.Event()

    def hit(self) -> None:
        self.needed -= 1
        if self.needed == 0:
            self.event.set()


class _Stream:
    """The owner's view of one streaming generator task (one ObjectRefGenerator)."""

    __slots__ = ("task_id", "completion_id", "next_index", "arrived", "count", "failed",
                 "exhausted", "waiters", "on_completion")

    def __init__(self, completion_id: bytes):
        self.task_id = completion_id[:16]
        self.completion_id = completion_id
        self.next_index = 0       # the item next() hands out next
        self.arrived = 0          # items 0..arrived-1 reached us (the head sends in order)
        self.count = None         # how many items the task made, once it finished
        self.failed = None        # the completion's entry when it is an error, not a count
        self.exhausted = False    # next() has handed out the failed completion
        self.waiters = []         # _Waiter-likes to hit() when next() would not block
        self.on_completion = None  # our callback for the completion's arrival


_COMPLETION = b"\x00\x01"        # return index of a generator task's completion


def _as_raisable(error):
    from zray.exceptions import RayTaskError
    if isinstance(error, RayTaskError):
        return error.as_instanceof_cause()
    if isinstance(error, BaseException):
        return error
    return RaySystemError(f"stored error is not an exception: {error!r}")
