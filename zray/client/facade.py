"""The blocking client used by zray.api, remote functions, actors and workers.

``Client`` takes the lock, feeds the ``ClientState`` (state.py), wakes the I/O
thread (io.py) when the state queued messages, and blocks callers on events
for what they wait for (objects, query replies, pulls).  Timeouts are decided
here, with the clock; the state never reads it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import pickle
import sys
import threading
import time
from collections import deque

from zray import protocol
from zray.client.io import ClientIO
from zray.client.store import LocalStore
from zray.client.routes import HEAD, NODE, Sent
from zray.client.state import ClientState
from zray.exceptions import GetTimeoutError, ObjectLostError, ProtocolError, RaySystemError
from zray.protocol import Msg
from zray.serialization import (KIND_ERROR, KIND_INLINE, KIND_SHM, SegmentMaps,
                                deserialize, inline_bytes, segment_path, spare_paths)

log = logging.getLogger("zray")
_loads = pickle.loads       # an inline value (deserialize without buffers)

#: Seconds a get waits for a pushed return of its own task before it also
#: subscribes to it at the head (see ClientState.subscribe_pushed).
PUSH_GRACE_S = 2.0


class Client:
    def __init__(self, endpoint: str, identity: bytes, config, role: str,
                 local_node_id: bytes | None = None, node_endpoint: str | None = None,
                 node_identity: bytes | None = None, bookkeeping=None):
        """``bookkeeping(msg_type, item) -> bool``: more messages for the head that
        may wait as bookkeeping (a worker's held reports, see worker/reports.py)."""
        self.endpoint, self.identity, self.config, self.role = endpoint, identity, config, role
        self.local_node_id = local_node_id
        self.node_endpoint, self.node_identity = node_endpoint, node_identity
        self.job_id = self.welcome = None
        self.closed = False
        self.liveness_check = self.blocked_hook = self.unblocked_hook = None
        self.log_to_driver = True      # init(log_to_driver=False): drop LOG_LINES
        self.current_task = threading.local()
        self.segment_maps = SegmentMaps()   # large objects this process read lately
        self.lock = threading.RLock()
        self.state = ClientState(role)
        self.state.local.enabled = role == "worker" and config.local_placement
        self.state.local.max_awaited = config.local_placement_max_awaited
        self._released = deque()           # from ObjectRef.__del__, any thread
        self._replies: dict[int, concurrent.futures.Future] = {}
        self._request_ids = itertools.count(1)
        self.store = LocalStore(self)       # room, writes, pulls and restores here
        self._welcomed = threading.Event()
        self.io = ClientIO(self)
        self.io.bookkeeping_hook = bookkeeping
        self.message_handlers = self.io.handlers      # more handlers: the worker's
        self.message_handlers.update({
            Msg.QUERY_REPLY: self._on_query_reply, Msg.WELCOME: self._on_welcome,
            Msg.OBJECT_PULLED: self.store.on_object_pulled,
            Msg.SPACE_RESERVED: self.store.on_space_reserved,
            Msg.LOG_LINES: lambda items: _print_log_lines(self, items),
            Msg.WARNING: _on_warning,
            Msg.PROTOCOL_ERROR: lambda items: self.set_fatal(ProtocolError(items[0][0]))})
        self.io.thread.start()

    @property
    def fatal(self):
        return self.state.fatal

    @property
    def owner_address(self):
        return self.state.owner_address

    @property
    def has_grant(self) -> bool:
        """Whether the head leased a worker to this driver now."""
        return self.state.grants.lease is not None

    @property
    def message_source(self):
        """The route (HEAD, NODE, Owner(...), ...) of the message being handled:
        for handlers, in the I/O thread."""
        return self.io.source

    # --- sending ---------------------------------------------------------------------

    def send(self, msg_type: Msg, item: tuple, route=HEAD) -> None:
        """Queue a message for ``route`` (see routes.py): the head by default."""
        self.state.out.append((route, msg_type, item))
        if not self.io.wake_pending:
            self.io.wake()

    def wait_sent(self, timeout_s: float = 5.0) -> bool:
        """Block until the I/O thread has sent everything queued so far."""
        event = threading.Event()
        self.send(None, None, Sent(event))
        return event.wait(timeout_s)

    def flush_now(self) -> None:
        """Send what waits as bookkeeping on the I/O thread's next turn."""
        self.io.report_now = True
        self.io.wake()

    def hello(self, info: dict, timeout_s: float) -> dict:
        self.send(Msg.HELLO, (self.role, protocol.PROTOCOL_MAJOR, protocol.PROTOCOL_MINOR,
                              os.getpid(), info))
        deadline = time.monotonic() + timeout_s
        while not self._welcomed.wait(0.05):
            self._raise_if_fatal()
            if self.liveness_check is not None:
                self.liveness_check()
            if time.monotonic() > deadline:
                raise RaySystemError(_no_welcome_text(self, timeout_s))
        self._raise_if_fatal()
        return self.welcome

    def _call(self, method, *args):
        """Run a state method under the lock; wake the I/O thread if it queued."""
        with self.lock:
            result = method(*args)
        if self.state.out and not self.io.wake_pending:
            self.io.wake()
        return result

    def register_function(self, function_id: bytes, blob: bytes) -> None:
        if function_id not in self.state.functions_sent:
            self._call(self.state.register_function, function_id, blob)

    def submit(self, spec) -> list:
        """Send a task; return the ids of its returns (already referenced once)."""
        state = self.state            # (_call inlined: the hot path of .remote())
        if state.fatal is not None:
            raise state.fatal
        with self.lock:
            return_ids = state.submit(spec, time.monotonic())
        if state.out and not self.io.wake_pending:
            self.io.wake()
        return return_ids

    def submit_actor_call(self, spec, max_pending: int = -1) -> list:
        """Send a method call straight to the actor; the head is told only if the
        results' refs leave this process (see ``register_escaping``)."""
        self._raise_if_fatal()
        return self._call(self.state.submit_actor_call, spec, max_pending)

    def register_escaping(self, object_ids) -> None:
        """These refs are about to leave this process (see ActorCalls)."""
        if self.state.calls.unregistered and object_ids:
            self._call(self.state.calls.register_escaping, object_ids)

    def unregistered_call(self, task_id: bytes):
        """The spec of our actor call the head has not heard of, or None."""
        return self.state.calls.unregistered.get(task_id)

    def cancel_actor_call(self, task_id: bytes, actor_id: bytes) -> None:
        self._call(self.state.calls.cancel, task_id, actor_id)

    def mark_killed(self, actor_id: bytes) -> None:
        """Killed from here: later calls fail here, the head fails the rest."""
        with self.lock:
            self.state.calls.killed.add(actor_id)

    def request(self, msg_type: Msg, item_without_id: tuple, timeout_s: float = 30.0):
        """Send a message whose last field is a request id; wait for QUERY_REPLY."""
        request_id = next(self._request_ids)
        future = self._replies[request_id] = concurrent.futures.Future()
        self.send(msg_type, item_without_id + (request_id,))
        return self._wait_reply(future, msg_type.name, timeout_s)

    def query(self, name: str, args=None, timeout_s: float = 30.0):
        request_id = next(self._request_ids)
        future = self._replies[request_id] = concurrent.futures.Future()
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

    def serve(self, endpoint: str, handler, timeout_s: float = 10.0) -> str:
        """Bind a ROUTER for callers (actor workers); ``handler(identity, message)``
        runs in the I/O thread.  Returns the bound endpoint."""
        self.io.serve_request = (endpoint, handler)
        self.io.wake()
        if not self.io.served.wait(timeout_s):
            raise RaySystemError(f"could not bind {endpoint} for actor calls")
        self._raise_if_fatal()
        return self.io.server_endpoint

    def serve_results(self, endpoint: str) -> None:
        """Let workers send the inline results of our tasks straight here (one hop
        instead of two through the head, which still records them)."""
        on_objects = self.io.handlers[Msg.OBJECTS_READY]

        def on_message(identity, message):
            if message.type is Msg.OBJECTS_READY:
                on_objects(message.items)
        self.state.owner_address = self.serve(endpoint, on_message)

    def put_serialized(self, object_id: bytes, obj) -> None:
        """Register an object made by put: inline, or written to the local store."""
        state = self.state
        if state.fatal is not None:
            raise state.fatal
        if obj.contained_ids:
            self.register_escaping(obj.contained_ids)
        if obj.size <= self.config.max_inline_object_bytes:
            data = inline_bytes(obj)
            entry = (KIND_INLINE, data, obj.size, ())
            item = (object_id, KIND_INLINE, data, obj.size, None, obj.contained_ids)
        else:
            if self.local_node_id is None:
                raise RaySystemError("this process has no local node to store a large "
                                     "object in")
            size = self.store.write_object(object_id, obj,
                                     spare_paths(self.config.shm_dir, self.local_node_id))
            entry = (KIND_SHM, None, size, (self.local_node_id,))
            item = (object_id, KIND_SHM, None, size, self.local_node_id, obj.contained_ids)
        with self.lock:            # (_call inlined: the hot path of put)
            state.put(object_id, entry, item)
        if not self.io.wake_pending:
            self.io.wake()

    def segment_of(self, object_id: bytes) -> str:
        """The path of the object's segment in this process's node store."""
        return segment_path(self.config.shm_dir, self.local_node_id, object_id)

    # --- references ------------------------------------------------------------------

    def add_ref(self, object_id: bytes, announce: bool = True) -> None:
        """One more reference; ``announce=False`` where the head counts it already."""
        self._call(self.state.add_ref, object_id, announce)

    def release_ref(self, object_id: bytes) -> None:
        """Called from ObjectRef.__del__ in any thread: defer to the I/O thread."""
        if self.closed:
            return
        self._released.append(object_id)
        if not self.io.wake_pending:
            self.io.wake()

    def apply_releases(self) -> None:
        """The I/O thread applies the releases of the last turn."""
        if not self._released:
            return
        maps, released, release = self.segment_maps, self._released, self.state.release
        with self.lock:
            while released:
                object_id = released.popleft()
                if release(object_id) and len(maps):
                    maps.forget(self.segment_of(object_id))

    # --- getting ---------------------------------------------------------------------

    def wait_entries(self, object_ids, num_returns: int, timeout_s, streams=()) -> set:
        """Block until ``num_returns`` of the (unique) objects, and of ``streams``
        (generators we own: ready when their next item is here or they ended),
        are ready, or the timeout passes; return the ids that are ready."""
        unique = set(object_ids)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.lock:
            self._raise_if_fatal()
            if timeout_s == 0:
                return {o for o in unique if o in self.state.objects}
            gate = _Gate()
            waiter, missing, pending = self.state.begin_wait(unique, num_returns, streams,
                                                             gate.open)
            if waiter is None:
                return unique.difference(missing)
        if self.state.local.enabled:
            # What we wait for may be a task our node placed: its result reaches
            # us through the head, which waits for its registration (SUBMIT_LOCAL,
            # held as bookkeeping): send that now, not up to 2 ms later.
            self.io.report_now = True
            self.io.wake()
        elif self.state.out and not self.io.wake_pending:
            self.io.wake()
        blocked = self._notify_blocked(True)
        started = time.monotonic()
        try:
            while not gate.wait(0.5 if deadline is None
                                else max(0.0, min(0.5, deadline - time.monotonic()))):
                self._raise_if_fatal()
                if self.liveness_check is not None:
                    self.liveness_check()
                if time.monotonic() - started >= PUSH_GRACE_S:
                    self._call(self.state.subscribe_pushed, missing)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            self._raise_if_fatal()
        finally:
            # no return in here: it would swallow KeyboardInterrupt and errors
            if blocked:
                self._notify_blocked(False)
            with self.lock:
                self.state.end_wait(waiter, missing, pending)
        with self.lock:
            return {o for o in unique if o in self.state.objects}

    def get_entries(self, object_ids, timeout_s):
        with self.lock:                 # all here already (the common case): no wait
            self._raise_if_fatal()
            objects = self.state.objects
            if all(o in objects for o in object_ids):
                return [objects[o] for o in object_ids]
        wanted = len(set(object_ids))
        ready = self.wait_entries(object_ids, len(object_ids), timeout_s)
        if len(ready) < wanted:
            raise GetTimeoutError(
                f"Get timed out: {wanted - len(ready)} of {wanted} objects were not "
                f"ready after {timeout_s} s.")
        with self.lock:
            return [self.state.objects[o] for o in object_ids]

    def _notify_blocked(self, blocked: bool) -> bool:
        task_id = getattr(self.current_task, "task_id", None)
        if self.role != "worker" or task_id is None:
            return False
        if blocked:
            returned = self.blocked_hook() if self.blocked_hook is not None else ()
            self.send(Msg.WORKER_BLOCKED, (task_id, tuple(returned)), NODE)
        else:
            if self.unblocked_hook is not None:
                self.unblocked_hook()
            self.send(Msg.WORKER_UNBLOCKED, (task_id,), NODE)
        return True

    def value_of(self, object_id: bytes, entry: tuple):
        """Turn a ready entry into its value; raise the stored error for an error."""
        kind, data, size, node_ids = entry
        if kind == KIND_INLINE:
            return _loads(data)
        if kind == KIND_ERROR:
            raise _as_raisable(deserialize(data))
        if kind == KIND_SHM:
            try:
                if self.local_node_id not in node_ids:
                    self.store.pull(object_id, size, node_ids)
                return self.store.read_local(object_id, size)
            except ObjectLostError:
                # every copy we knew of is gone (here too: e.g. our node came
                # back as a new one): the head rebuilds it from lineage
                fresh = self._refetch(object_id, entry)
                if fresh is None:
                    raise
                return self.value_of(object_id, fresh)
        raise RaySystemError(f"unknown object kind {kind}")

    def _refetch(self, object_id: bytes, stale: tuple, timeout_s: float = 300.0):
        """Every copy we knew of is gone: ask the head again, which answers once
        it has rebuilt the object from its lineage (or with the error saying why
        it cannot).  None when the head still names the same copies."""
        from zray.object_ref import ObjectRef
        holder = ObjectRef(object_id, _client=self)    # answers come only for our refs
        try:
            self._call(self.state.forget_stale, object_id, stale)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                [fresh] = self.get_entries([object_id],
                                           max(0.1, deadline - time.monotonic()))
                if fresh != stale:
                    return fresh
                with self.lock:            # the head has not noticed the loss yet
                    self.state.forget_stale(object_id, stale)
                time.sleep(0.2)
            return None
        finally:
            del holder

    def add_callback(self, object_id: bytes, callback) -> None:
        """Call ``callback(entry)`` (in the I/O thread) once the object is ready."""
        entry = self._call(self.state.add_callback, object_id, callback)
        if entry is not None:
            callback(entry)

    # --- generators we own (see zray.generators) ----------------------------------

    def open_stream(self, completion_id: bytes) -> "StreamHandle":
        """The items of our streaming generator task (registered by ``submit``, so
        that none is missed): the head pushes each one as it is stored; the
        completion brings the count."""
        streams = self.state.streams
        with self.lock:
            stream = streams.open(completion_id)

        def on_completion(entry):
            with self.lock:
                streams.completed(stream, entry)
        stream.on_completion = on_completion
        self.add_callback(completion_id, on_completion)
        return StreamHandle(self, stream)

    # --- I/O thread callbacks ---------------------------------------------------------

    def _on_query_reply(self, items) -> None:
        for request_id, ok, value in items:
            future = self._replies.pop(request_id, None)
            if future is not None:
                future.set_result((ok, value))

    def _on_welcome(self, items) -> None:
        self.welcome = items[0][0]
        self.job_id = self.welcome.get("job_id")
        # the head judges liveness by its own heartbeat settings: beat at its pace
        self.io.beat_every = self.welcome.get("heartbeat_interval_s", self.io.beat_every)
        self._welcomed.set()

    def set_fatal(self, error: Exception) -> None:
        with self.lock:
            self.state.fail(error)
        self._welcomed.set()
        for future in list(self._replies.values()):
            if not future.done():
                future.set_exception(error)

    def _raise_if_fatal(self) -> None:
        if self.state.fatal is not None:
            raise self.state.fatal

    # --- closing ---------------------------------------------------------------------

    def close(self, timeout_s: float = 2.0) -> None:
        if self.closed:
            return
        self.io.stop = True
        self.io.wake()
        self.io.thread.join(timeout_s)
        self.closed = True
        os.close(self.io.wake_fd)


def _no_welcome_text(client, timeout_s: float) -> str:
    text = f"the head at {client.endpoint} did not answer within {timeout_s:.0f} s. "
    if client.endpoint.startswith("tcp://") and not client.config.insecure:
        return text + (
            "The likely cause is a cluster key that is not the head's: a head "
            "refuses the handshake of a wrong key without a word (this driver used "
            f"{client.config.cluster_key_file or 'no key file'}; set "
            "ZRAY_CLUSTER_KEY_FILE to a copy of the head's cluster.key). Otherwise "
            "check that the head runs and that its port is reachable.")
    return text + "Is it running and reachable?"


def _print_log_lines(client, items) -> None:
    if not client.log_to_driver:
        return
    for _job_id, prefix, stream, text in items:
        out = sys.stderr if stream == "stderr" else sys.stdout
        try:
            out.write("".join(f"{prefix} {line}\n" for line in text.splitlines()))
            out.flush()
        except (OSError, ValueError):
            pass


class _Gate:
    """A one-shot event on a bare lock: a wait is one acquire, an open one release
    (cheaper than threading.Event's condition on the sync get path)."""

    __slots__ = ("lock", "opened")

    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.opened = False

    def open(self) -> None:
        if not self.opened:       # (the I/O thread only, under the client's lock)
            self.opened = True
            self.lock.release()

    def wait(self, timeout_s: float) -> bool:
        if self.lock.acquire(timeout=timeout_s):
            self.lock.release()       # stays open for a later wait
            return True
        return False


def _on_warning(items) -> None:
    for (text,) in items:
        log.warning("%s", text)


def _as_raisable(error):
    from zray.exceptions import RayTaskError
    if isinstance(error, RayTaskError):
        return error.as_instanceof_cause()
    if isinstance(error, BaseException):
        return error
    return RaySystemError(f"stored error is not an exception: {error!r}")


class StreamHandle:
    """One generator task's stream, for zray.generators: each call takes the
    client's lock around the state's Streams."""

    __slots__ = ("client", "stream")

    def __init__(self, client: Client, stream):
        self.client = client
        self.stream = stream

    def next(self):
        """The next item's id (its ref is the caller's), None if not here yet;
        StopIteration after the last."""
        with self.client.lock:
            return self.client.state.streams.next(self.stream)

    def ready(self) -> bool:
        with self.client.lock:
            return self.client.state.streams.ready(self.stream)

    def finished(self) -> bool:
        with self.client.lock:
            return self.client.state.streams.finished(self.stream)

    def when_ready(self, waiter) -> None:
        """``waiter.hit()`` (in the I/O thread, under the lock) once ready."""
        with self.client.lock:
            self.client.state.streams.when_ready(self.stream, waiter)

    def close(self) -> None:
        """The generator is gone: drop the items it received and never handed out."""
        client = self.client
        with client.lock:
            for object_id in client.state.streams.close(self.stream):
                client.release_ref(object_id)
