"""Membership: nodes and clients (drivers, workers) joining, heartbeating, leaving.

A part of ``HeadState``.  Handles HELLO, REGISTER_NODE, HEARTBEAT, SHUTDOWN and
LOG_LINES; declares a node dead when it misses its heartbeats (its running
tasks are retried, its actors restarted, objects whose only copy it held are
rebuilt from lineage or lost) and releases what a departed client held.
"""

from __future__ import annotations

import logging

from zray import exceptions as zerr
from zray.head.node_table import NodeTable
from zray.head.records import Client, Node, NodeState, TaskState, TERMINAL
from zray.protocol import Msg, PROTOCOL_MAJOR
from zray.serialization import KIND_SHM

log = logging.getLogger("zray.head")


class Membership:
    """The part of HeadState that owns nodes, clients and job namespaces."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.nodes = {}
        self.node_by_identity = {}
        self.clients = {}
        self.job_namespaces = {}
        #: drivers waiting for enough nodes: (client key, nodes wanted)
        self.pending_welcomes = []
        #: the next job id to hand out
        self.next_job = 1
        #: the nodes' transfer endpoints, as the nodes learn them (NODE_TABLE)
        self.table = NodeTable(head.out)

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.actors = head.actors
        self.objects = head.objects
        self.tasks = head.tasks
        self.actor_table = head.actor_table
        self.directory = head.directory
        self.leases = head.leases
        self.scheduler = head.scheduler
        self.task_flow = head.task_flow

    def _heartbeat_limit_s(self) -> float:
        return self.config.heartbeat_interval_s * self.config.heartbeat_missed_limit

    def expire_nodes(self, now: float) -> None:
        limit = self._heartbeat_limit_s()
        for node in list(self.nodes.values()):
            if node.state is NodeState.ALIVE and now - node.last_seen > limit:
                self._node_died(node, now, f"missed {self.config.heartbeat_missed_limit} "
                                           "heartbeats")

    def expire_drivers(self, now: float) -> None:
        limit = self._heartbeat_limit_s()
        for client in list(self.clients.values()):
            if client.kind == "driver" and now - client.last_seen > limit:
                log.warning("driver %s missed its heartbeats; releasing its job",
                            client.job_id.hex())
                self.client_gone(client)

    def on_hello(self, key, items, now):
        for role, major, minor, pid, info in items:
            if major != PROTOCOL_MAJOR:
                self.out.send(key, Msg.PROTOCOL_ERROR, (
                    f"protocol version mismatch: peer {major}.{minor}, head "
                    f"{PROTOCOL_MAJOR}; run the same zray major version everywhere",))
                continue
            if role == "driver":
                job_id = self.next_job.to_bytes(4, "big")
                self.next_job += 1
                info = dict(info, pid=pid, start_time=now)
                self.clients[key] = Client(key, "driver", job_id, now, info)
                self.job_namespaces[job_id] = info.get("namespace") or f"anon-{job_id.hex()}"
                self.pending_welcomes.append((key, info.get("wait_for_nodes", 0)))
                log.info("driver pid %s connected as job %s", pid, job_id.hex())
            elif role == "worker":
                client = self.client(key, now)
                client.node_id = info.get("node_id")
                client.info = dict(info, pid=pid)
        self._send_welcomes()

    def _send_welcomes(self):
        if not self.pending_welcomes:       # a join costs no pass over the nodes
            return
        alive = sum(1 for n in self.nodes.values() if n.state is NodeState.ALIVE)
        waiting = []
        for key, wanted in self.pending_welcomes:
            client = self.clients.get(key)
            if client is None:
                continue
            if alive < wanted:
                waiting.append((key, wanted))
                continue
            self.out.send(key, Msg.WELCOME, ({
                "job_id": client.job_id, "session_name": self.head.session_name,
                "heartbeat_interval_s": self.config.heartbeat_interval_s,
                "nodes": self.head.queries["nodes"](self.head, None)},))
        self.pending_welcomes = waiting

    def on_register_node(self, key, items, now):
        for node_id, major, minor, info in items:
            if major != PROTOCOL_MAJOR:
                self.out.send(key, Msg.PROTOCOL_ERROR, (
                    f"protocol version mismatch: node {major}.{minor}, head "
                    f"{PROTOCOL_MAJOR}; run the same zray major version everywhere",))
                continue
            old = self.node_by_identity.get(key)
            if old is not None and old.state is NodeState.ALIVE and old.node_id != node_id:
                self._node_died(old, now, "replaced by a new registration")
            previous = self.nodes.get(node_id)
            if previous is not None and previous.lease is not None:
                self.leases.set_lease(previous, None)     # that record is replaced
            node = Node(node_id, key, info, now)
            node.protocol_minor = minor
            self.nodes[node_id] = node
            self.node_by_identity[key] = node
            log.info("node %s joined from %s with %s", node_id.hex()[:12],
                     info.get("host"), node.total)
            self.out.send(key, Msg.WELCOME, ({
                "session_name": self.head.session_name,
                "heartbeat_interval_s": self.config.heartbeat_interval_s},))
            self.scheduler.node_joined(node)
            self.head.dirty = True
            # O(1) here: the others hear of it in the batch's broadcast, and it
            # gets the table as shared blocks (see zray.head.node_table)
            endpoint = info.get("transfer_endpoint")
            if endpoint:
                self.table.set(node_id, endpoint, True)
            self.table.send_to(key)
        self._send_welcomes()

    def alive_identities(self) -> list:
        """The socket identities of the alive nodes (a broadcast's peers)."""
        return [n.identity for n in self.nodes.values() if n.state is NodeState.ALIVE]

    def on_heartbeat(self, key, items, now):
        client = self.clients.get(key)
        if client is not None:
            client.last_seen = now
        if client is not None or key in self.node_by_identity:
            self.out.send(key, Msg.HEARTBEAT, (now,))   # drivers and nodes watch the head

    def on_store_stats(self, key, items, now):
        """A node's object store: used / bound / spilled (for `zray memory`, status)."""
        node = self.node_by_identity.get(key)
        if node is not None:
            for item in items:
                node.info["object_store"] = {
                    "used_bytes": item.used_bytes, "bound_bytes": item.bound_bytes,
                    "spilled_bytes": item.spilled_bytes,
                    "spilled_objects": item.spilled_objects}

    def _node_died(self, node, now, reason):
        node.move(NodeState.DEAD)
        if node.lease is not None:
            self.leases.end_grant(node.lease)
        self.leases.set_lease(node, None)
        self.scheduler.node_changed(node)
        node.death_reason = reason
        node.death_time = now
        log.warning("node %s declared dead: %s", node.node_id.hex()[:12], reason)
        self.head.placements.node_died(node)
        for client in [c for c in self.clients.values() if c.node_id == node.node_id]:
            self.client_gone(client)
        for actor in list(self.actors.values()):
            creation = self.tasks.get(actor.actor_id)
            if actor.node_id == node.node_id or (
                    creation is not None and creation.node_id == node.node_id):
                self.actor_table.actor_process_died(actor, f"its node died ({reason})", now)
        for task in list(self.tasks.values()):
            if task.state is TaskState.ASSIGNED and task.node_id == node.node_id \
                    and not task.spec.is_actor_creation:
                self.task_flow.task_failed(task, zerr.NodeDiedError(
                    f"The node {node.node_id.hex()} running task {task.spec.name} "
                    f"died ({reason})."), retriable=True, now=now)
        lost = []
        for obj in list(self.objects.values()):
            if node.node_id in obj.locations:
                obj.discard_location(node.node_id)
                if not obj.locations and obj.kind == KIND_SHM:
                    lost.append(obj)
        self.directory.rebuild_or_lose(lost, node)
        endpoint = node.info.get("transfer_endpoint")
        if endpoint:
            self.table.set(node.node_id, endpoint, False)
        self.head.dirty = True

    def client_gone(self, client):
        self.clients.pop(client.key, None)
        for node in self.leases.lent.values():
            if node.lease.granted_to == client.key:
                node.lease.take_back()      # back to the head's own use
        for object_id, count in list(client.holding.items()):
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.drop_holder(client.key)
                self.directory.maybe_free(obj)
        if client.kind == "driver":
            for task in list(self.tasks.values()):
                if task.owner == client.key and task.state not in TERMINAL \
                        and task.spec.actor_id is None:
                    self.task_flow.cancel(task, force=True)
            self.actor_table.job_finished(client.job_id)
            self.head.placements.job_finished(client.job_id)

    def client(self, key, now) -> Client:
        client = self.clients.get(key)
        if client is None:
            client = Client(key, "worker", None, now)
            self.clients[key] = client
        return client

    def on_shutdown(self, key, items, now):
        node = self.node_by_identity.get(key)
        if node is not None:        # a node manager stopping on its own
            if node.state is NodeState.ALIVE:
                self._node_died(node, now, f"it stopped ({items[0].reason if items else ''})")
            return
        client = self.clients.get(key)
        if client is not None and client.kind == "driver" and items and \
                items[0].reason == "cluster":
            for node in self.nodes.values():
                if node.state is NodeState.ALIVE:
                    self.out.send(node.identity, Msg.SHUTDOWN, ("head shutting down",))
            self.head.exit_requested = True
        elif client is not None:
            self.client_gone(client)

    def on_log_lines(self, key, items, now):
        drivers = {c.job_id: c.key for c in self.clients.values() if c.kind == "driver"}
        sender = self.clients.get(key)
        node_id = sender.node_id if sender is not None else None
        pid = sender.info.get("pid") if sender is not None else None
        for item in items:
            self.head.logs.add(node_id, pid, item.stream, item.text)
            target = drivers.get(item.job_id)
            if target is not None:
                self.out.send(target, Msg.LOG_LINES, item)


__all__ = ["Membership"]
