"""The client's I/O thread: it owns every socket, feeds arrivals to the
``ClientState`` and sends what the state queues.

    user threads ─► ClientState.out ─eventfd─► I/O thread ─DEALER─► head
      ▲      (under the client's lock)          │  ├─DEALER─► node
      │                                         │  ├─DEALER─► each actor we call
      └─ waiters ◄─ OBJECTS_READY, ACTOR_RESULTS┘  └─ROUTER◄─ callers, granted workers

One I/O thread owns the sockets (pyzmq sockets are not thread-safe).  User
threads queue messages in the state and wake the thread at most once per
batch; consecutive messages of one type for the head leave as one message.
Socket commands from the state (``ConnectActor``, ``CloseActor``) are carried
out here.  Handlers run in this thread, one per message type.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from zray import protocol
from zray._process import (bind_private, connect_soon, has_input, poll_ms, recv_frames,
                           send_frames)
from zray.client.routes import (HEAD, NODE, Actor, ActorCancel, CloseActor, ConnectActor,
                                Grant, Head, Node, Owner, Reply, Sent)
from zray.exceptions import ProtocolError, RaySystemError
from zray.protocol import Msg
from zray.serialization import KIND_SHM
from zray.security import secure_client, secure_server

log = logging.getLogger("zray")


def run_callbacks(fire) -> None:
    """Run ``(callback, entry)`` pairs from ClientState.take_callbacks."""
    for callback, entry in fire:
        try:
            callback(entry)
        except Exception:
            log.exception("object callback failed")

#: How often the I/O thread lets go of kept maps of removed segments (a node
#: reuses a freed segment only once nobody maps it, see SpareSegments).
MAP_SWEEP_S = 0.1

_BOOKKEEPING = frozenset((Msg.ADD_REFS, Msg.REMOVE_REFS, Msg.ACTOR_TASKS_FINISHED,
                          Msg.SUBMIT_LEASED, Msg.SUBMIT_LOCAL))


def is_bookkeeping(msg_type, item) -> bool:
    """Messages for the head that may wait up to ``bookkeeping_delay_s``.

    An actor's report of results in shared memory or holding refs is not: the
    head must have it before the caller, which gets its answer straight from
    the actor, can kill the actor or pass the result on; else the head would
    fail the call with the actor's death while the caller holds its value."""
    if msg_type is Msg.ACTOR_TASKS_FINISHED:
        return not any(result[4] or result[1] == KIND_SHM for result in item[3])
    if msg_type in _BOOKKEEPING:
        return True
    return msg_type is Msg.SUBMIT_TASKS and item[0].actor_id is not None \
        and item[0].method != "__init__"


def open_router(ctx, endpoint: str, config):
    """A ROUTER for callers bound to ``endpoint`` (a port or path of its own);
    returns it and the endpoint it is bound to.  Raises zmq.ZMQError or
    ValueError when it cannot bind."""
    server = ctx.socket(zmq.ROUTER)
    try:
        server.setsockopt(zmq.LINGER, 2000)   # answers must survive an exit
        server.setsockopt(zmq.SNDHWM, 0)
        server.setsockopt(zmq.RCVHWM, 0)
        if config.max_message_bytes > 0:
            server.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        secure_server(server, endpoint, config)
        return server, bind_private(server, endpoint, config.port_range)
    except (zmq.ZMQError, ValueError):
        server.close(linger=0)
        raise


class ClientIO:
    """The loop of one client (see the module docstring); ``client`` is the facade."""

    def __init__(self, client):
        self.client = client
        self.state = client.state
        self.lock = client.lock
        self.config = client.config
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.wake_pending = False
        self.stop = False
        self.source = None                 # the route of the message being handled
        self.report_now = False
        self.bookkeeping_hook = None       # worker: more bookkeeping (lazy reports)
        self.deferred: list = []
        self.deferred_since = 0.0
        #: a SUBMIT_LOCAL waits in ``deferred``: it leaves before anything we send
        #: elsewhere (an owner, an actor, a caller) that could pass its refs on
        self.local_deferred = False
        self.head = self.node = self.server = self.server_handler = self.poller = None
        self.server_mandatory = False
        self.serve_request = None
        self.server_endpoint = None
        self.served = threading.Event()
        self.actor_socks: dict[bytes, tuple] = {}    # actor id -> (address, socket)
        self.owner_socks: dict[str, object] = {}
        self.handlers = {
            Msg.OBJECTS_READY: self._on_objects_ready,
            Msg.ACTOR_INFO: self._on_actor_info,
            Msg.ACTOR_RESULTS: self._on_actor_results,
            Msg.LEASE_GRANT: self._on_lease_grant,
            Msg.LEASE_RECALL: self._on_lease_recall,
            Msg.TASKS_SPILLED: self._on_tasks_spilled,
            Msg.HEARTBEAT: _ignore,          # the head's answer: heard, nothing to do
        }
        self.senders = {Head: self._send_head, Node: self._send_head, Actor: self._send_actor,
                        ActorCancel: self._send_cancel, Grant: self._send_grant,
                        Owner: self._send_owner, Reply: self._send_reply}
        self.thread = threading.Thread(target=self._main, name="zray-io", daemon=True)

    def wake(self) -> None:
        self.wake_pending = True
        try:
            os.eventfd_write(self.wake_fd, 1)
        except OSError:
            pass

    # --- handlers (this thread) -------------------------------------------------------

    def _on_objects_ready(self, items) -> None:
        with self.lock:
            self.state.objects_ready(items, time.monotonic())
            fire = self.state.take_callbacks()
        if fire:
            run_callbacks(fire)

    def _on_actor_results(self, items) -> None:
        with self.lock:
            self.state.calls.results_arrived(items, time.monotonic())
            fire = self.state.take_callbacks()
        run_callbacks(fire)

    def _on_lease_grant(self, items) -> None:
        with self.lock:
            self.state.grants.granted(items, time.monotonic())

    def _on_lease_recall(self, items) -> None:
        with self.lock:
            self.state.grants.recalled(items)

    def _on_tasks_spilled(self, items) -> None:
        """Our node had no room for tasks we offered it: offer none for a while."""
        with self.lock:
            self.state.local.spilled(items, time.monotonic())

    def _on_actor_info(self, items) -> None:
        for item in items:
            if item[1] != "ALIVE" and item[0] in self.actor_socks:
                self._drain(self.actor_socks[item[0]][1], Actor(item[0], None))
            with self.lock:     # answers it sent before it went away, read first
                commands = self.state.calls.actor_moved(item)
                fire = self.state.take_callbacks()
            for command in commands:
                self._perform(command)
            run_callbacks(fire)

    def _perform(self, command) -> None:
        self._close_actor(command.actor_id)
        if type(command) is ConnectActor:
            sock = self._connect(command.address, self.client.identity)
            self.poller.register(sock, zmq.POLLIN)
            self.actor_socks[command.actor_id] = (command.address, sock)
            if command.calls:
                send_frames(sock, protocol.encode(Msg.ACTOR_CALLS,
                                                  [(s,) for s in command.calls]))
            if command.cancels:
                send_frames(sock, protocol.encode(Msg.CANCEL_TASKS, list(command.cancels)))
        else:
            assert type(command) is CloseActor

    def _close_actor(self, actor_id: bytes) -> None:
        entry = self.actor_socks.pop(actor_id, None)
        if entry is not None:
            self.poller.unregister(entry[1])
            entry[1].close(linger=0)

    # --- the loop ---------------------------------------------------------------------

    def _connect(self, endpoint: str, identity: bytes):
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if self.config.max_message_bytes > 0:
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.IDENTITY, identity)
        secure_client(sock, endpoint, self.config)
        connect_soon(sock, endpoint)
        return sock

    def _main(self) -> None:
        client = self.client
        self.ctx = zmq.Context()
        try:
            self.poller = zmq.Poller()
            self.head = self._connect(client.endpoint, client.identity)
            self.poller.register(self.head, zmq.POLLIN)
            self.poller.register(self.wake_fd, zmq.POLLIN)
            if client.node_endpoint:
                self._connect_node()
            self._loop()
        except Exception as exc:  # a bug here must not hang every waiter silently
            log.exception("zray I/O thread failed")
            client.set_fatal(RaySystemError(f"zray's I/O thread failed: {exc!r}"))
        finally:
            self._close_all()

    def _loop(self) -> None:
        client, state, config = self.client, self.state, self.config
        self.beat_every = config.heartbeat_interval_s    # the head's, once welcomed
        last_beat = time.monotonic() - self.beat_every
        last_sweep = head_heard = time.monotonic()
        while True:
            timeout_s = self.beat_every
            if len(client.segment_maps):      # let go of removed segments' maps soon
                timeout_s = min(timeout_s, MAP_SWEEP_S)
            if state.grants.lease is not None:
                timeout_s = min(timeout_s, config.lease_idle_s)
            if self.deferred:
                timeout_s = self.deferred_since + config.bookkeeping_delay_s - time.monotonic()
            events = dict(self.poller.poll(poll_ms(timeout_s)))
            if self.wake_fd in events:
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
            self.wake_pending = False
            client.apply_releases()
            self.flush()
            if self.head in events:
                head_heard = time.monotonic()
                self._drain(self.head, HEAD, True)
            if self.node is not None and self.node in events:
                self._drain(self.node, NODE, True)
            for address, sock in list(self.owner_socks.items()):
                if sock in events:
                    self._drain(sock, Owner(address), True)
            self._drain_extra(events)
            if self.stop:
                client.apply_releases()
                self.flush(final=True)
                return
            now = time.monotonic()
            if state.grants.lease is not None:
                with self.lock:
                    state.grants.return_idle(now, config.lease_idle_s)
            if now >= last_sweep + MAP_SWEEP_S:
                client.segment_maps.sweep()
                last_sweep = now
            if client.role == "driver" and now >= last_beat + self.beat_every:
                self.head.send_multipart(protocol.encode(Msg.HEARTBEAT, [(time.time(),)]))
                last_beat = now
                if state.fatal is None and now - head_heard > config.head_timeout_s:
                    client.set_fatal(_head_lost(client, now - head_heard))

    def _drain_extra(self, events) -> None:
        """Actor sockets and the caller-facing ROUTER."""
        if self.serve_request is not None:
            self._bind_server()
        if self.server is not None and self.server in events:
            self._drain_server()
        if self.actor_socks:
            for actor_id, (_address, sock) in list(self.actor_socks.items()):
                if sock in events:
                    self._drain(sock, Actor(actor_id, None), True)

    def _bind_server(self) -> None:
        endpoint, handler = self.serve_request
        self.serve_request = None
        try:
            server, self.server_endpoint = open_router(self.ctx, endpoint, self.config)
            self.server, self.server_handler = server, handler
            self.poller.register(server, zmq.POLLIN)
        except (zmq.ZMQError, ValueError) as exc:
            self.client.set_fatal(RaySystemError(f"could not bind {endpoint}: {exc}"))
        self.served.set()

    def _drain_server(self) -> None:
        """After a poll said the server socket is readable."""
        polled = True
        while polled or has_input(self.server):
            polled = False
            try:
                frames = recv_frames(self.server)
            except zmq.Again:
                return
            try:
                message = protocol.decode(frames[1:])
            except ProtocolError as exc:
                log.warning("dropped a malformed call from %r: %s", frames[0][:12], exc)
                continue
            try:
                self.server_handler(frames[0], message)
            except Exception:
                log.exception("handling %s from a caller failed", message.type.name)

    def _drain(self, sock, source, polled: bool = False) -> None:
        """Handle what ``sock`` holds; ``polled``: a poll just said it is readable."""
        self.source = source
        while polled or has_input(sock):
            polled = False
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                break
            try:
                message = protocol.decode(frames)
            except ProtocolError as exc:
                if "version mismatch" in str(exc):
                    self.client.set_fatal(exc)
                log.warning("dropped a malformed message from %s: %s",
                            self.client.endpoint, exc)
                continue
            handler = self.handlers.get(message.type)
            if handler is None:
                log.warning("ignoring unexpected %s", message.type.name)
                continue
            try:
                handler(message.items)
            except Exception:
                log.exception("handling %s failed", message.type.name)
        self.source = None

    # --- sending ----------------------------------------------------------------------

    def flush(self, final: bool = False) -> None:
        """Send the outbox in order, consecutive items of one type as one message.

        Bookkeeping for the head (reference counts, registrations of actor
        calls and granted tasks, actor results the caller already has, a
        granted task's report) may wait up to ``bookkeeping_delay_s`` so that it
        leaves in batches; anything else for the head sends it, and everything
        before it, at once.  REMOVE_REFS leave last, as one message: a reference
        dropped later than the program did only keeps an object a little longer,
        and a loop of submit-then-get would otherwise alternate types and send
        one-item messages.

        Items for the node and for an owner (a worker's TASKS_DONE and
        OBJECTS_READY for each task it ran) gather per route, runs of one
        type as one message, until the next message for another socket or
        the end: a worker that ran several prefetched tasks since the last
        turn sends one message of each, not one per task."""
        outbox, deferred, grants = self.state.out, self.deferred, self.state.grants
        urgent = final or self.report_now
        self.report_now = False
        sent = []
        gathered = None      # owner address, or None: the node -> [route, [type, items]...]
        while outbox:
            route, msg_type, item = outbox.popleft()
            kind = type(route)
            if kind is Head:
                if msg_type is Msg.SUBMIT_LEASED:
                    msg_type, item = grants.to_head(msg_type, item)
                if not deferred:
                    self.deferred_since = time.monotonic()
                deferred.append((msg_type, item))
                if msg_type is Msg.SUBMIT_LOCAL:
                    self.local_deferred = True
                if not urgent and not self._is_bookkeeping(msg_type, item):
                    urgent = True
                    if grants.unreported:      # (a driver's granted tasks only)
                        self._ask_report()
            elif kind is Node or kind is Owner:
                if gathered is None:
                    gathered = {}
                key = route.address if kind is Owner else None    # (str: a cheap hash)
                runs = gathered.get(key)
                if runs is None:
                    gathered[key] = [route, [msg_type, [item]]]
                elif runs[-1][0] is msg_type:
                    runs[-1][1].append(item)
                else:
                    runs.append([msg_type, [item]])
            elif kind is Sent:
                sent.append(route.event)
                urgent = True
            else:
                if gathered:
                    self._send_gathered(gathered)
                    gathered = None
                if self.local_deferred:
                    self._send_deferred()
                self.senders[kind](route, msg_type, [item])
        if gathered:
            self._send_gathered(gathered)
        if deferred and (urgent or time.monotonic() - self.deferred_since
                         >= self.config.bookkeeping_delay_s):
            self._send_deferred()
        for event in sent:
            event.set()

    def _send_gathered(self, gathered: dict) -> None:
        """The node's runs first; then, if a SUBMIT_LOCAL waits, the head's
        deferred items (a node's task is registered only after the node has it,
        and before an owner can see its refs); then the owners'."""
        if self.local_deferred:
            node_runs = gathered.pop(None, None)
            if node_runs is not None:
                route, *runs = node_runs
                for msg_type, items in runs:
                    self.senders[type(route)](route, msg_type, items)
            if gathered:
                self._send_deferred()
        for route, *runs in gathered.values():
            sender = self.senders[type(route)]
            for msg_type, items in runs:
                sender(route, msg_type, items)

    def _send_deferred(self) -> None:
        send = self.senders[Head]
        deferred, self.deferred = self.deferred, []
        self.local_deferred = False
        current, items, removes = None, [], []
        for msg_type, item in deferred:
            if msg_type is Msg.REMOVE_REFS:
                removes.append(item)
                continue
            if msg_type is not current and items:
                send(HEAD, current, items)
                items = []
            current = msg_type
            items.append(item)
        if items:
            send(HEAD, current, items)
        if removes:
            send(HEAD, Msg.REMOVE_REFS, removes)

    def _is_bookkeeping(self, msg_type, item) -> bool:
        hook = self.bookkeeping_hook
        return (hook is not None and hook(msg_type, item)) or is_bookkeeping(msg_type, item)

    def _ask_report(self) -> None:
        with self.lock:
            request = self.state.grants.take_report_request()
        if request is not None:
            self._send_grant(request[0], Msg.REPORT_NOW, request[1])

    def _connect_node(self) -> None:
        client = self.client
        self.node = self._connect(client.node_endpoint,
                                  client.node_identity or client.identity)
        self.poller.register(self.node, zmq.POLLIN)

    def _send_head(self, route, msg_type, items) -> None:
        if type(route) is Node and self.node is None:    # a driver's first pull
            self._connect_node()
        sock = self.head if type(route) is Head else self.node
        limit = self.config.max_head_message_bytes    # the node's bound too
        try:
            for frames in protocol.encode_within(msg_type, items, limit):
                if 0 < limit < len(frames[0]):
                    log.error("a %s item of %d bytes is over the receiver's limit, "
                              "max_head_message_bytes=%d: it will be refused",
                              msg_type.name, len(frames[0]), limit)
                send_frames(sock, frames)
        except zmq.Again:       # no connection (e.g. the head refused our key)
            log.error("could not send %s to the %s: not connected", msg_type.name,
                      "head" if type(route) is Head else "node")

    def _send_actor(self, route, msg_type, items) -> None:
        entry = self.actor_socks.get(route.actor_id)
        if entry is not None and entry[0] == route.address:
            send_frames(entry[1], protocol.encode(msg_type, items))
        # else: queued for an address it has left; the calls are still unfinished
        # in the state and go to the new address with its ConnectActor

    def _send_cancel(self, route, msg_type, items) -> None:
        entry = self.actor_socks.get(route.actor_id)
        if entry is not None:
            send_frames(entry[1], protocol.encode(msg_type, items))

    def _send_grant(self, route, msg_type, items) -> None:
        if not self.server_mandatory:
            # A worker that is not connected raises instead of the task
            # vanishing (set here: only this thread touches the socket).
            self.server.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.server_mandatory = True
        try:
            send_frames(self.server, [route.identity] + protocol.encode(msg_type, items))
        except zmq.ZMQError:            # not connected: the head runs it instead
            if route.task_id is not None:
                with self.lock:
                    self.state.grants.unreachable(route.task_id)

    def _send_owner(self, route, msg_type, items) -> None:
        sock = self.owner_socks.get(route.address)
        if sock is None:
            sock = self.owner_socks[route.address] = \
                self._connect(route.address, self.client.identity)
            self.poller.register(sock, zmq.POLLIN)    # a granted driver's tasks
        # (several tasks' results, gathered: within the frame bound of its socket)
        for frames in protocol.encode_within(msg_type, items, self.config.max_message_bytes):
            send_frames(sock, frames)

    def _send_reply(self, route, msg_type, items) -> None:
        if self.server is None:
            return
        try:
            send_frames(self.server, [route.identity] + protocol.encode(msg_type, items))
        except zmq.ZMQError as exc:
            log.warning("could not answer caller %r: %s", route.identity[:12], exc)

    def _close_all(self) -> None:
        for sock in (self.head, self.node, *self.owner_socks.values()):
            if sock is not None:
                sock.close()
        for _address, sock in self.actor_socks.values():
            sock.close()
        if self.server is not None:
            self.server.close()
            if self.server_endpoint and self.server_endpoint.startswith("ipc://"):
                try:
                    os.unlink(self.server_endpoint[len("ipc://"):])
                except OSError:
                    pass
        self.ctx.term()


def _head_lost(client, silent_s: float) -> RaySystemError:
    log.error("no answer from the head at %s for %.0f s; presuming it dead",
              client.endpoint, silent_s)
    return RaySystemError(
        f"the head at {client.endpoint} has not answered for {silent_s:.0f} s "
        f"(head_timeout_s={client.config.head_timeout_s:g}): it is presumed dead, and "
        "the work and objects of this session are lost. Start the cluster again "
        "(zray start --head) and call zray.init() anew.")


def _ignore(items) -> None:
    pass
