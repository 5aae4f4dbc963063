"""The socket a sync actor's main thread serves its callers on.

A sync actor (max_concurrency 1) runs one call at a time on its main thread.
That thread owns this ROUTER: it reads the next calls itself and answers each
on the same socket, so a call crosses no thread of this process on its way in
or out (through the client's I/O thread it would cross two, twice).  Nobody
else touches the socket (pyzmq sockets are not thread-safe); the client's I/O
thread keeps its own sockets to the head and the node.

    caller's DEALER ──ACTOR_CALLS / CANCEL_TASKS──► ROUTER (main thread)
                    ◄─────────ACTOR_RESULTS────────┘
"""

from __future__ import annotations

import logging
import os

import zmq

from zray import protocol
from zray._process import has_input, recv_frames, send_frames
from zray.client import open_router
from zray.exceptions import ProtocolError

log = logging.getLogger("zray.worker")


class CallInbox:
    """A ROUTER bound to ``endpoint`` with a context of its own (so that the
    client's context ends without waiting for it), used by one thread."""

    def __init__(self, endpoint: str, config):
        self.ctx = zmq.Context(io_threads=1)
        try:
            self.sock, self.endpoint = open_router(self.ctx, endpoint, config)
        except BaseException:
            self.ctx.term()
            raise
        self.poller = zmq.Poller()      # kept: Socket.poll makes one per call
        self.poller.register(self.sock, zmq.POLLIN)

    def wait(self, handler, timeout_ms: int | None = None) -> None:
        """Block until a message comes (or ``timeout_ms`` passes), then hand each
        waiting one to ``handler(caller_identity, message)``."""
        if self.poller.poll(timeout_ms):
            self.drain(handler)

    def drain(self, handler) -> None:
        """Hand what has arrived to ``handler``, without blocking."""
        sock = self.sock
        while has_input(sock):
            frames = recv_frames(sock)
            try:
                message = protocol.decode(frames[1:])
            except ProtocolError as exc:
                log.warning("dropped a malformed call from %r: %s", frames[0][:12], exc)
                continue
            try:
                handler(frames[0], message)
            except Exception:
                log.exception("handling %s from a caller failed", message.type.name)

    def send(self, caller: bytes, msg_type, items) -> None:
        try:
            send_frames(self.sock, [caller] + protocol.encode(msg_type, items))
        except zmq.ZMQError as exc:
            log.warning("could not answer caller %r: %s", caller[:12], exc)

    def close(self) -> None:
        """Close, letting queued answers leave (the socket's linger), and remove
        an ipc socket file."""
        self.sock.close()
        self.ctx.term()
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://"):])
            except OSError:
                pass
