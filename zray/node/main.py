"""The node manager process: one loop over three channels.

Sockets and pipes:
- DEALER to the head (identity ``N`` + node id): REGISTER_NODE, HEARTBEAT,
  WORKER_BLOCKED/UNBLOCKED and WORKER_DIED out; EXECUTE_TASKS, CANCEL_TASKS,
  FREE_OBJECTS, SHUTDOWN in.
- ROUTER on an owner-only ipc path for this node's workers: HELLO, TASKS_DONE,
  WORKER_BLOCKED/UNBLOCKED in; EXECUTE_TASKS, CANCEL_TASKS out.  (Workers send
  results, nested tasks and references straight to the head on a socket of
  their own, so one ordered channel carries all of a worker's object traffic.)
- pipes to the fork server, which forks workers and reports their exits.
- ROUTER for peer nodes (ipc on one host, TCP between hosts): CHUNK_REQUEST in,
  CHUNK out; and one DEALER per peer this node pulls objects from (see
  ``zray.node.transfer``).  Drivers and workers ask for pulls and restores with
  PULL_OBJECT, and for room in the store with RESERVE_SPACE / OBJECT_WRITTEN,
  on the worker ROUTER (see ``zray.node.store``); STORE_STATS goes to the head
  with each heartbeat.

Decisions are made by ``NodeManagerState``; this module only moves bytes.
No peer's message ends the loop: ``decode`` refuses malformed items (logged
with the peer; the rest of a batch still counts), failing handlers and periodic
steps are logged and the loop goes on.  Inbound frames are bounded per socket:
``Config.max_head_message_bytes`` for the workers' ROUTER, one chunk plus
headroom for the transfer sockets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import zmq

from zray import protocol
from zray._process import (bind_private, configure_socket, connect_soon, guarded, has_input,
                           install_stop_handler, log_rejected, parent_alive, poll_ms,
                           recv_frames, run_profiled, send_frames, serve_endpoint,
                           setup_logging, transfer_frame_limit, tune_gc)
from zray._session_nodes import record_node
from zray.config import Config
from zray.exceptions import ProtocolError
from zray.node import forkserver
from zray.node.memory_monitor import MemoryMonitor, MemoryReading, candidates_of, oom_message
from zray.node.spill import (SpillFiles, open_spill_dir, remove_dead_session_spill_dirs,
                             remove_spill_dir, spill_base)
from zray.node.state import HEAD, NodeManagerState
from zray.node.store import ObjectStore
from zray.node.sealing import RequestSeal, SealError, ServerSeal, libcrypto, send_sealed
from zray.node.transfer import ChunkServer, Puller
from zray.security import secure_client, secure_server, transfer_seal_key
from zray.protocol import Msg, REASON_OOM
from zray.serialization import IdleCpu, SpareFiller, SpareSegments, remove_segments, segment_path

log = logging.getLogger("zray.node")

TICK_S = 0.1
DRAIN_BUDGET = 2000


class NodeLoop:
    def __init__(self, config: Config, head_address: str, node_id: bytes, resources: dict,
                 session_dir: str, host: str, parent_pid: int | None, early_forkserver=None):
        self.config = config
        self.head_address = head_address
        self.node_id = node_id
        self.host = host
        self.parent_pid = parent_pid
        self.session_dir = session_dir
        self.flag = {"stop": False}
        self.ctx = zmq.Context()
        self.head = self.ctx.socket(zmq.DEALER)
        configure_socket(self.head, config)
        self.head.setsockopt(zmq.IDENTITY, b"N" + node_id)
        secure_client(self.head, head_address, config)
        connect_soon(self.head, head_address)
        self.workers = self.ctx.socket(zmq.ROUTER)
        configure_socket(self.workers, config, config.max_head_message_bytes)
        self.worker_endpoint = bind_private(
            self.workers, forkserver.worker_endpoint(session_dir, node_id.hex()))
        self.transfer = self.ctx.socket(zmq.ROUTER)
        configure_socket(self.transfer, config, transfer_frame_limit(config))
        endpoint = serve_endpoint(session_dir, f"transfer-{node_id.hex()[:12]}", host,
                                  head_address)
        seal_key = transfer_seal_key(endpoint, config)
        self.server_seal = None if seal_key is None else ServerSeal(seal_key)
        if seal_key is not None:
            libcrypto()       # no AES-GCM here: stop now, saying what to set
        else:
            secure_server(self.transfer, endpoint, config)
        self.transfer_endpoint = bind_private(self.transfer, endpoint, config.port_range)
        self.chunks = ChunkServer(config.shm_dir, node_id)
        self._open_store(resources)
        self.filler = SpareFiller(self.spares, config.spare_blank_bytes)
        self.filler_stop = threading.Event()
        self.filler_go = threading.Event()     # set by the loop: make one blank now
        self.idle_cpu = IdleCpu()
        self.filler_thread = threading.Thread(target=self._fill_spares, daemon=True,
                                              name="zray-spare-filler")
        self.puller = Puller(config.shm_dir, node_id, config.transfer_chunk_bytes,
                             config.transfer_window, config.transfer_timeout_s)
        self.puller.reachable = lambda peer: peer in self.peer_endpoints
        self.puller.send_requests = self._send_chunk_requests
        self.puller.spares = self.spares.slots
        self.peer_endpoints: dict[bytes, str] = {}    # alive peers' chunk servers
        self.peers: dict[bytes, zmq.Socket] = {}      # DEALERs to pull from them
        self.peer_seals: dict[bytes, RequestSeal] = {}   # theirs, where sealed
        self.poller = None
        self.head_gone = False
        self.rejoin = False       # exit, then start again as a new node (see main)
        self.beat_every = config.heartbeat_interval_s   # the head's pace, once welcomed
        self.state = NodeManagerState(node_id, resources, config, time.monotonic())
        self.resources = resources
        self.forkserver = None
        self.early_forkserver = early_forkserver   # started by zray.node.__main__
        self.events_buffer = b""
        self.memory = MemoryMonitor(config.memory_usage_threshold) \
            if config.memory_monitor_refresh_ms > 0 else None
        # the first reading one period after start, off the start-up's busy moment
        self.next_memory_check = time.monotonic() + config.memory_monitor_refresh_ms / 1e3
        state = self.state
        self.worker_handlers = {
            Msg.HELLO: lambda w, item, now: state.on_worker_hello(w, item.pid, now),
            Msg.TASKS_DONE: lambda w, item, now: state.on_task_done(w, item.task_id, now),
            Msg.PLACE_TASKS: lambda w, item, now: state.on_place_tasks(w, (item.spec,), now),
            Msg.WORKER_BLOCKED: lambda w, item, now: state.on_worker_blocked(
                w, item.task_id, item.returned_task_ids, now),
            Msg.WORKER_UNBLOCKED:
                lambda w, item, now: state.on_worker_unblocked(w, item.task_id, now),
            Msg.PULL_OBJECT: lambda w, item, now: self.store.request(
                "pull", item.object_id, item.size, w, now, item),
            Msg.RESERVE_SPACE: lambda w, item, now: self.store.request(
                "write", item.object_id, item.size, w, now),
            Msg.OBJECT_WRITTEN: lambda w, item, now: self.store.written(
                item.object_id, item.size, now, w),
        }

    def _open_store(self, resources: dict) -> None:
        """The bounded store: spares, spill folder and files, the store's state."""
        config = self.config
        bound = int(resources.get("object_store_memory") or 0) or 2 ** 62
        self.spares = SpareSegments(config.shm_dir, self.node_id,
                                    min(config.spare_segment_bytes, bound // 4))
        self.spill_base = spill_base(config, self.session_dir)
        remove_dead_session_spill_dirs(config.temp_dir)   # of nodes SIGKILLed here
        spill_dir = open_spill_dir(self.spill_base, self.node_id)
        self.files = SpillFiles(config.shm_dir, self.node_id, spill_dir, self.spares,
                                self.chunks)
        self.store = ObjectStore(self.node_id, bound, config.object_store_full_timeout_s,
                                 self.files)
        self.chunks.spilled_path = self.store.spill_path_of

    # --- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        install_stop_handler(self.flag)
        self._start_forkserver()
        # SpareSegments tests files with a write lease, dropped at once; a lease
        # broken meanwhile would signal SIGIO, whose default is to terminate.
        # (After the fork server starts: an ignored signal survives exec.)
        signal.signal(signal.SIGIO, signal.SIG_IGN)
        tune_gc()
        self._register()
        self.state.start(time.monotonic())
        if self.config.spare_blank_bytes and self.config.spare_segment_bytes:
            self.filler_thread.start()
        poller = self.poller = zmq.Poller()
        poller.register(self.head, zmq.POLLIN)
        poller.register(self.workers, zmq.POLLIN)
        poller.register(self.events_fd, zmq.POLLIN)
        poller.register(self.transfer, zmq.POLLIN)
        next_tick = self.head_heard = time.monotonic()
        last_beat = next_tick - self.beat_every
        while not self.flag["stop"]:
            ready = dict(poller.poll(poll_ms(next_tick - time.monotonic())))
            now = time.monotonic()
            if ready.get(self.workers):
                self._drain_workers(now)
            if ready.get(self.head):
                self._drain_head(now)
            if ready.get(self.events_fd):
                guarded(log, "reading the fork server's events", self._read_forkserver, now)
            if ready.get(self.transfer):
                self._serve_chunks()
            for peer, sock in list(self.peers.items()):
                if ready.get(sock):
                    self._drain_peer(peer, sock, now)
            if now >= next_tick:
                guarded(log, "the node's periodic work", self.state.tick, now)
                guarded(log, "the pulls' timeouts", self.puller.tick, now)
                guarded(log, "the spare segments' upkeep", self.spares.tick, now)
                guarded(log, "the spare filler", self._ask_for_blank)
                if self.memory is not None and now >= self.next_memory_check:
                    guarded(log, "the memory monitor", self._check_memory)
                    self.next_memory_check = now + self.config.memory_monitor_refresh_ms / 1e3
                guarded(log, "the object store's upkeep", self.store.tick, now)
                next_tick = now + TICK_S
                if not parent_alive(self.parent_pid):
                    log.warning("parent process %s is gone; shutting down", self.parent_pid)
                    break
            if now >= last_beat + self.beat_every:
                self.state.out.send(HEAD, Msg.HEARTBEAT, (time.time(),))
                stats = self.store.stats()
                self.state.out.send(HEAD, Msg.STORE_STATS, (
                    stats["used_bytes"], stats["bound_bytes"], stats["spilled_bytes"],
                    stats["spilled_objects"]))
                last_beat = now
                if now - self.head_heard > self.config.head_timeout_s:
                    log.error("no answer from the head at %s for %.0f s (head_timeout_s); "
                              "presuming it dead: stopping this node and its workers",
                              self.head_address, now - self.head_heard)
                    self.head_gone = True
                    break
            guarded(log, "sending what the node queued", self._flush)
        self._shutdown()

    def _register(self) -> None:
        info = {"host": self.host, "hostname": socket.gethostname(), "pid": os.getpid(),
                "resources": self.resources, "store": self.config.shm_dir,
                "worker_endpoint": self.worker_endpoint,
                "transfer_endpoint": self.transfer_endpoint}
        self.state.out.send(HEAD, Msg.REGISTER_NODE, (
            self.node_id, protocol.PROTOCOL_MAJOR, protocol.PROTOCOL_MINOR, info))

    def _start_forkserver(self) -> None:
        if self.early_forkserver is not None and self.worker_endpoint == \
                forkserver.worker_endpoint(self.session_dir, self.node_id.hex()):
            self.forkserver, self.cmd_w, self.events_fd = self.early_forkserver
            return
        if self.early_forkserver is not None:     # it would dial the wrong address
            popen, cmd_w, events_fd = self.early_forkserver
            os.close(cmd_w)                       # it kills its workers and exits
            os.close(events_fd)
            popen.wait()
        self.forkserver, self.cmd_w, self.events_fd = forkserver.spawn(forkserver.worker_args(
            self.node_id.hex(), self.head_address, self.session_dir, self.config.to_json(),
            self.host))

    def _shutdown(self) -> None:
        if not self.head_gone:
            self.state.out.send(HEAD, Msg.SHUTDOWN, ("node manager stopping",))
        self._flush()
        os.close(self.cmd_w)          # the fork server kills its workers and exits
        try:
            self.forkserver.wait(self.config.shutdown_grace_s)
        except subprocess.TimeoutExpired:
            self.forkserver.kill()
            self.forkserver.wait()
        for worker in self.state.workers.values():
            if worker.pid:
                forkserver.kill_worker(worker.pid)
        self.puller.close()
        self._flush()
        self.filler_stop.set()
        self.filler_go.set()
        if self.filler_thread.is_alive():
            self.filler_thread.join()
        removed = remove_segments(self.config.shm_dir, self.node_id)
        self.files.close()
        remove_spill_dir(self.spill_base, self.node_id)
        self.head.close()
        self.workers.close()
        self.transfer.close()
        for sock in self.peers.values():
            sock.close()
        self.ctx.term()
        for endpoint in (self.worker_endpoint, self.transfer_endpoint):
            if endpoint.startswith("ipc://"):
                try:
                    os.unlink(endpoint[len("ipc://"):])
                except FileNotFoundError:
                    pass
        log.info("node stopped; removed %d object segments", removed)

    def _fill_spares(self) -> None:
        """The filler thread: make a blank pre-faulted spare (SpareFiller) each
        time the loop says the host is idle and one is missing
        (``_ask_for_blank``).  The loop decides, at its tick: a thread that woke
        20 times a second to read /proc and stat the slots itself took the
        node's GIL from its loop each time (hundreds of futex hand-offs a
        second, measured in map_reduce)."""
        while not self.filler_stop.is_set():
            if not self.filler_go.wait(1.0):
                continue
            try:
                if not self.filler_stop.is_set():
                    self.filler.fill()
            except Exception:
                log.exception("making a blank spare segment failed")
            finally:
                self.filler_go.clear()

    def _ask_for_blank(self) -> None:
        if (self.filler_thread.is_alive() and not self.filler_go.is_set()
                and self.idle_cpu() and self.filler.room() is not None):
            self.filler_go.set()

    def _check_memory(self) -> None:
        """Out-of-memory protection: above the threshold, tell the head why and
        kill the worker the monitor picks (see zray.node.memory_monitor)."""
        import psutil      # here, not at start-up: 10 ms of imports the first check pays
        memory = psutil.virtual_memory()
        reading = MemoryReading(memory.total - memory.available, memory.total)
        victim = self.memory.decide(reading, candidates_of(self.state.workers.values()))
        if victim is None:
            return
        text = oom_message(victim, reading, self.memory.threshold, self.node_id.hex(),
                           self.host)
        log.warning("host memory at %.1f%% (threshold %.1f%%): killing worker pid %d (%s)",
                    100 * reading.fraction, 100 * self.memory.threshold, victim.pid,
                    victim.name or "leased")
        self.state.out.send(HEAD, Msg.WORKER_KILLED, (victim.worker_id, REASON_OOM, text))
        self._flush()                 # the cause reaches the head before the death
        forkserver.kill_worker(victim.pid)

    # --- channels --------------------------------------------------------------------

    def _read_forkserver(self, now: float) -> None:
        data = os.read(self.events_fd, 65536)
        if not data:
            log.error("the fork server exited; node manager stopping")
            self.flag["stop"] = True
            return
        self.events_buffer += data
        while b"\n" in self.events_buffer:
            line, self.events_buffer = self.events_buffer.split(b"\n", 1)
            words = line.decode().split()
            if words[0] == "started":
                self.state.on_worker_started(bytes.fromhex(words[1]), int(words[2]))
            elif words[0] == "exited":
                self.state.on_worker_exited(int(words[1]), int(words[2]), now)
            elif words[0] == "preloaded":
                log.info("the fork server preloaded worker_preload_modules; workers forked "
                         "before it to replace: %d", len(self.state.stale))
                self.state.on_preloaded(now)

    def _drain_head(self, now: float) -> None:
        for i in range(DRAIN_BUDGET):
            if i and not has_input(self.head):     # the first: the poll said so
                return
            try:
                frames = recv_frames(self.head)
            except zmq.Again:
                return
            self.head_heard = now
            try:
                message = protocol.decode(frames, keep_good_items=True)
            except ProtocolError as exc:
                if "version mismatch" in str(exc):
                    log.error("the head speaks another protocol: %s", exc)
                    self.flag["stop"] = True
                    return
                log.warning("dropped a message from the head: %s", exc)
                continue
            if message.rejected:
                log_rejected(log, message, "the head")
            try:
                self._on_head_message(message, now)
            except Exception:
                log.exception("handling %s from the head failed", message.type.name)

    def _on_head_message(self, message, now: float) -> None:
        kind = message.type
        if kind is Msg.EXECUTE_TASKS:
            self.state.on_execute_tasks([item.spec for item in message.items], now)
        elif kind is Msg.FREE_OBJECTS:
            for (object_id,) in message.items:
                self.chunks.forget(object_id)
                self.puller.on_freed(object_id)
                self.spares.free(segment_path(self.config.shm_dir, self.node_id, object_id),
                                 now)
                self.store.freed(object_id, now)
        elif kind is Msg.CANCEL_TASKS:
            for task_id, force in message.items:
                self.state.on_cancel(task_id, force, now)
        elif kind is Msg.LEASE_RETURN:
            for (worker_id,) in message.items:
                self.state.on_lease_return(worker_id, now)
        elif kind is Msg.RESERVE_BUNDLES:
            for pg_id, index, resources in message.items:
                self.state.on_reserve_bundle(pg_id, index, resources, now)
        elif kind is Msg.RELEASE_BUNDLES:
            for pg_id, index in message.items:
                self.state.on_release_bundle(pg_id, index, now)
        elif kind is Msg.NODE_TABLE:
            for node_id, endpoint, alive in message.items:
                self._set_peer(node_id, endpoint, alive)
        elif kind is Msg.SHUTDOWN:
            log.info("shutdown requested by the head: %s", message.items)
            if message.items and message.items[0].reason == protocol.REJOIN:
                log.warning("the head declared this node dead (a partition?); "
                            "starting over as a new node")
                self.rejoin = True
            self.head_gone = True
            self.flag["stop"] = True
        elif kind is Msg.HEARTBEAT:
            pass                        # the head is alive: heard in _drain_head
        elif kind is Msg.WELCOME:
            log.info("registered with the head")
            self.beat_every = message.items[0].info.get("heartbeat_interval_s",
                                                        self.beat_every)
        elif kind is Msg.PROTOCOL_ERROR:
            log.error("the head refused this node: %s", message.items[0].text)
            self.flag["stop"] = True
        else:
            log.warning("ignoring %s from the head", kind.name)

    def _drain_workers(self, now: float) -> None:
        for i in range(DRAIN_BUDGET):
            if i and not has_input(self.workers):  # the first: the poll said so
                return
            try:
                frames = recv_frames(self.workers)
            except zmq.Again:
                return
            worker_id = frames[0]
            try:
                message = protocol.decode(frames[1:], keep_good_items=True)
            except ProtocolError as exc:
                log.warning("dropped a message from worker %s: %s", worker_id.hex(), exc)
                continue
            if message.rejected:
                log_rejected(log, message, f"worker {worker_id.hex()}")
            handler = self.worker_handlers.get(message.type)
            if handler is None:
                log.warning("ignoring %s from worker %s", message.type.name, worker_id.hex())
                continue
            for item in message.items:
                try:
                    handler(worker_id, item, now)
                except Exception:
                    log.exception("handling %s from worker %s failed", message.type.name,
                                  worker_id.hex())

    # --- object transfer -----------------------------------------------------------

    def _set_peer(self, node_id: bytes, endpoint: str, alive: bool) -> None:
        if node_id == self.node_id:
            return
        known = self.peer_endpoints.get(node_id)
        if alive and known == endpoint:
            return
        sock = self.peers.pop(node_id, None)
        self.peer_seals.pop(node_id, None)
        if sock is not None:
            self.poller.unregister(sock)
            sock.close()
        if alive:
            self.peer_endpoints[node_id] = endpoint
        else:
            self.peer_endpoints.pop(node_id, None)
            self.puller.on_node_dead(node_id)

    def _peer(self, node_id: bytes):
        sock = self.peers.get(node_id)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            configure_socket(sock, self.config, transfer_frame_limit(self.config))
            sock.setsockopt(zmq.IDENTITY, b"T" + self.node_id)
            endpoint = self.peer_endpoints[node_id]
            try:
                seal_key = transfer_seal_key(endpoint, self.config)
                if seal_key is None:
                    secure_client(sock, endpoint, self.config)
                else:
                    self.peer_seals[node_id] = RequestSeal(seal_key)
                sock.connect(endpoint)
            except zmq.ZMQError:
                sock.close()
                raise
            self.peers[node_id] = sock
            self.poller.register(sock, zmq.POLLIN)
        return sock

    def _serve_chunks(self) -> None:
        for _ in range(DRAIN_BUDGET):
            if not has_input(self.transfer):
                return
            frames = recv_frames(self.transfer)
            peer = f"peer {frames[0][:17]!r}"
            salt, body = None, frames[1:]
            try:
                if self.server_seal is not None:
                    salt, body = self.server_seal.open_request(body)
                message = protocol.decode(body, keep_good_items=True)
                if message.type is not Msg.CHUNK_REQUEST:
                    raise ProtocolError(f"unexpected {message.type.name}")
            except (ProtocolError, SealError) as exc:
                log.warning("dropped a message from %s: %s", peer, exc)
                continue
            if message.rejected:
                log_rejected(log, message, peer)
            for item in message.items:
                try:
                    header, buffers = self.chunks.chunk(item.object_id, item.offset,
                                                        item.length)
                    out = protocol.encode(Msg.CHUNK, [header])
                    if salt is not None:
                        out = self.server_seal.seal_chunk(salt, out, buffers)
                    else:
                        out = out + buffers
                except Exception:   # a request the server cannot answer: a bug
                    log.exception("answering a CHUNK_REQUEST from %s failed", peer)
                    continue
                try:
                    send_sealed(self.transfer, [frames[0]] + out)
                except zmq.ZMQError as exc:
                    log.warning("could not send a chunk: %s", exc)

    def _drain_peer(self, peer: bytes, sock, now: float) -> None:
        for _ in range(DRAIN_BUDGET):
            if not has_input(sock):
                return
            frames = sock.recv_multipart(copy=False)
            seal = self.peer_seals.get(peer)
            try:
                plain = None
                if seal is not None:
                    frames, plain = seal.open_chunk([f.buffer for f in frames])
                message = protocol.decode([bytes(frames[0])] + frames[1:],
                                          keep_good_items=True)
            except (ProtocolError, SealError) as exc:
                log.warning("dropped a message from node %s: %s", peer.hex()[:12], exc)
                continue
            if message.rejected:
                log_rejected(log, message, f"node {peer.hex()[:12]}")
            if message.type is not Msg.CHUNK:
                log.warning("ignoring %s from node %s", message.type.name, peer.hex()[:12])
                continue
            if plain is not None:
                buffers = [plain]
            else:
                buffers = [frame.buffer for frame in message.buffers]
            for item in message.items:
                try:
                    self.puller.on_chunk(peer, item.object_id, item.offset, item.size,
                                         item.error, buffers, now)
                except Exception:
                    log.exception("writing a chunk of %s from node %s failed",
                                  item.object_id.hex(), peer.hex()[:12])

    def _send_chunk_requests(self) -> None:
        requests, self.puller.requests = self.puller.requests, []
        for peer, item in requests:    # one request per message: chunks come back apace
            if peer not in self.peer_endpoints:
                continue
            try:
                sock, frames = self._peer(peer), protocol.encode(Msg.CHUNK_REQUEST, [item])
                seal = self.peer_seals.get(peer)
                send_frames(sock, frames if seal is None else seal.seal_request(frames))
            except zmq.ZMQError as exc:     # its endpoint does not parse: no use waiting
                log.warning("cannot reach node %s at %r: %s", peer.hex()[:12],
                            self.peer_endpoints.pop(peer), exc)
                self.puller.on_node_dead(peer)

    def _flush_transfers(self) -> None:
        puller = self.puller
        while puller.requests or puller.finished:
            self._send_chunk_requests()
            finished, puller.finished = puller.finished, []
            for object_id, error, waiters, size in finished:
                self.store.written(object_id, size if error is None else 0, time.monotonic())
                if error is None:
                    self.state.out.send(HEAD, Msg.OBJECT_COPIED, (object_id, size))
                else:
                    log.warning("%s", error)
                for waiter in waiters:
                    self.state.out.send(waiter, Msg.OBJECT_PULLED, (object_id, error))

    def _answer_store(self) -> None:
        """Send the store's answers; start the pulls it made room for."""
        store, now = self.store, time.monotonic()
        while store.replies:
            replies, store.replies = store.replies, []
            for kind, who, object_id, error, item in replies:
                if kind == "write":
                    self.state.out.send(who, Msg.SPACE_RESERVED,
                                        (object_id, item if error is None else 0, error))
                elif kind == "pull" and error is None:
                    self.puller.request(object_id, item.size, item.node_ids, who, now)
                else:
                    self.state.out.send(who, Msg.OBJECT_PULLED, (object_id, error))

    def _flush(self) -> None:
        store, puller, state = self.store, self.puller, self.state
        if store.replies or puller.requests or puller.finished:
            self._answer_store()
            self._flush_transfers()
            while store.replies:        # pulls that ended freed room for more
                self._answer_store()
                self._flush_transfers()
        if state.commands:
            for command in state.commands:
                self._run_command(command)
            state.commands = []
        if not state.out.batches:
            return
        for (identity, msg_type), items in state.out.drain().items():
            try:
                frames = protocol.encode(msg_type, items)
                if identity == HEAD:
                    send_frames(self.head, frames)
                else:
                    send_frames(self.workers, [identity] + frames)
            except zmq.ZMQError as exc:
                log.warning("could not send %s: %s", msg_type.name, exc)
            except Exception:        # an item that does not pickle: a bug, not a peer
                log.exception("could not encode %s; dropped", msg_type.name)

    def _run_command(self, command) -> None:
        if command[0] == "spawn":
            os.write(self.cmd_w, f"spawn {command[1].hex()}\n".encode())
        elif command[0] == "preload":
            os.write(self.cmd_w, b"preload\n")
        elif command[0] == "kill":
            forkserver.kill_worker(command[1])


def main(argv=None, early_forkserver=None) -> None:
    parser = argparse.ArgumentParser(prog="zray.node")
    parser.add_argument("--config", required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--resources", required=True)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--log-file")
    args = parser.parse_args(argv)
    config = Config.from_json(args.config)
    setup_logging("node", config.log_level, args.log_file)
    record_node(args.session_dir, args.node_id)    # `zray stop` cleans up after us
    loop = NodeLoop(config, args.head, bytes.fromhex(args.node_id), json.loads(args.resources),
                    args.session_dir, args.host, args.parent_pid, early_forkserver)
    run_profiled("node", loop.run)
    if loop.rejoin:        # same process (pid), new node: nothing stale survives
        argv = sys.argv[1:] if argv is None else list(argv)
        position = argv.index("--node-id") + 1
        argv[position] = os.urandom(16).hex()
        os.execv(sys.executable, [sys.executable, "-m", "zray.node"] + argv)


if __name__ == "__main__":
    main()
