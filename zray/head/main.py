"""The head process: one ROUTER socket, one loop, and ``HeadState``.

Sockets: ROUTER bound on an owner-only ipc path (local clusters) and/or TCP.
Peers, each a DEALER: drivers, workers (for results, nested tasks, puts,
references) and node managers.  Every message is decoded, handed to
``HeadState.handle``, and what the state machine queued in its outbox is sent
once per loop turn, one message per (peer, type).

No peer's message ends the loop: ``decode`` refuses a malformed item (logged
with its peer, the rest of its batch still counts), a failing handler or
periodic sweep is logged and the loop goes on, and the ROUTER drops a peer that
declares a frame over ``Config.max_head_message_bytes`` before buffering it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import zmq

from zray import protocol
from zray._process import (bind_private, configure_socket, guarded, has_input,
                           install_stop_handler, log_rejected, parent_alive, poll_ms,
                           recv_frames, run_profiled, send_frames, setup_logging, tune_gc)
from zray.config import Config
from zray.exceptions import ProtocolError
from zray.head.outbox import BROADCAST, frames_of
from zray.head.state import HeadState, NodeState
from zray.security import HandshakeWatch, secure_server

log = logging.getLogger("zray.head")

TICK_S = 0.1
DRAIN_BUDGET = 2000


class HeadLoop:
    def __init__(self, config: Config, binds: list, session_name: str,
                 parent_pid: int | None = None):
        self.config = config
        self.parent_pid = parent_pid
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        configure_socket(self.router, config, config.max_head_message_bytes)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        for bind in binds:
            secure_server(self.router, bind, config)
        self.watch = HandshakeWatch(self.router) if any(
            b.startswith("tcp://") for b in binds) and not config.insecure else None
        self.endpoints = [bind_private(self.router, b) for b in binds]
        self.state = HeadState(config, session_name, time.monotonic())
        self.flag = {"stop": False}
        self.metrics = None
        if config.metrics_export_port:
            from zray.head.metrics_http import MetricsEndpoint
            try:
                self.metrics = MetricsEndpoint(config.metrics_export_host,
                                               config.metrics_export_port)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%s (%s); running without them",
                          config.metrics_export_host, config.metrics_export_port, exc)

    def run(self, ready_file: str | None = None) -> None:
        install_stop_handler(self.flag)
        log.info("head listening on %s", self.endpoints)
        if ready_file:      # tells the launcher which ports the OS picked
            with open(ready_file + ".tmp", "w") as f:
                json.dump({"endpoints": self.endpoints, "pid": os.getpid()}, f)
            os.replace(ready_file + ".tmp", ready_file)
        tune_gc()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.watch is not None:
            poller.register(self.watch.socket, zmq.POLLIN)
        next_tick = time.monotonic() + TICK_S
        while not self.flag["stop"] and not self.state.exit_requested:
            if poller.poll(poll_ms(next_tick - time.monotonic())):
                self._drain(time.monotonic())
                if self.watch is not None:
                    self.watch.drain()
            now = time.monotonic()
            if now >= next_tick:
                for sweep in self.state.sweeps():
                    guarded(log, f"the head's periodic {sweep.__name__.strip('_')}",
                            sweep, now)
                next_tick = now + TICK_S
                if not parent_alive(self.parent_pid):
                    log.warning("parent process %s is gone; shutting down", self.parent_pid)
                    break
            if self.metrics is not None:
                self.metrics.answer(self._render_metrics)
            self._flush()
        self._shutdown()

    def _drain(self, now: float) -> None:
        router, state = self.router, self.state
        for _ in range(DRAIN_BUDGET):
            if not has_input(router):
                break
            frames = recv_frames(router)
            identity = frames[0]
            try:
                message = protocol.decode(frames[1:], keep_good_items=True)
            except ProtocolError as exc:
                log.warning("dropped a message from peer %r: %s", identity[:16], exc)
                self._refuse(identity, frames, exc)
                continue
            if message.rejected:
                log_rejected(log, message, f"peer {identity[:16]!r}")
            try:
                state.handle(identity, message, now)
            except Exception:
                log.exception("handler for %s from %r failed; message dropped",
                              message.type.name, identity[:16])
        guarded(log, "scheduling after a batch", state.after_batch, now)

    def _refuse(self, identity: bytes, frames: list, exc: ProtocolError) -> None:
        if "version mismatch" in str(exc):
            self.router.send_multipart(
                [identity] + protocol.encode(protocol.Msg.PROTOCOL_ERROR, [(str(exc),)]))

    def _render_metrics(self) -> str:
        from zray.head.metrics import render
        return render(self.state)

    def _flush(self) -> None:
        router, state = self.router, self.state
        for identity, msg_type, items in state.out.drain_whole():
            # shared items (the node table): one encoding, however many peers
            try:
                frames = frames_of(msg_type, items)
            except Exception:
                log.exception("could not encode %s; dropped", msg_type.name)
                continue
            peers = state.membership.alive_identities() if identity is BROADCAST \
                else (identity,)
            for peer in peers:
                try:
                    send_frames(router, [peer] + frames)
                except zmq.ZMQError as exc:
                    log.warning("could not send %s to %r: %s", msg_type.name, peer[:16], exc)
        for (identity, msg_type), items in state.out.drain().items():
            try:
                send_frames(router, [identity] + protocol.encode(msg_type, items))
            except zmq.ZMQError as exc:
                log.warning("could not send %s to %r: %s", msg_type.name, identity[:16], exc)
            except Exception:        # an item that does not pickle: a bug, not a peer
                log.exception("could not encode %s for %r; dropped", msg_type.name,
                              identity[:16])

    def _shutdown(self) -> None:
        for node in self.state.nodes.values():
            if node.state is NodeState.ALIVE:
                self.state.out.send(node.identity, protocol.Msg.SHUTDOWN,
                                    ("head exiting",))
        self._flush()
        if self.metrics is not None:
            self.metrics.close()
        self.router.setsockopt(zmq.LINGER, 500)
        if self.watch is not None:
            self.watch.close()
        self.router.close()
        self.ctx.term()
        for endpoint in self.endpoints:
            if endpoint.startswith("ipc://"):
                try:
                    os.unlink(endpoint[len("ipc://"):])
                except FileNotFoundError:
                    pass
        log.info("head stopped")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="zray.head")
    parser.add_argument("--config", required=True)
    parser.add_argument("--bind", action="append", required=True)
    parser.add_argument("--session-name", required=True)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--log-file")
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)
    os.umask(0o077)            # its log and ready file are owner-only
    config = Config.from_json(args.config)
    setup_logging("head", config.log_level, args.log_file)
    loop = HeadLoop(config, args.bind, args.session_name, args.parent_pid)
    run_profiled("head", lambda: loop.run(args.ready_file))


if __name__ == "__main__":
    main()
