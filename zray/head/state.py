"""The head's decisions, with no sockets, clocks or processes in them.

``HeadState`` is fed decoded messages (``handle``) and the passage of time
(``tick``) and answers by putting messages in an ``Outbox``; the process loop in
``zray.head.main`` does the I/O.  This module holds the one entry point and the
cross-table checks; each concern is a part in its own module, which owns its
tables and reaches the others' through ``bind``:

- ``membership``: nodes and clients, heartbeats, deaths;
- ``objects``: the object directory, references, placeholders, lineage rebuilds;
- ``tasks``: submission, dependencies, results, retries, cancellation;
- ``scheduling``: queues per scheduling class and where a task runs;
- ``leases``: workers lent by nodes for direct dispatch, and grants to drivers;
- ``local``: tasks a node placed itself (its own workers' plain tasks);
- ``actors`` and ``generators``: the actor table and generator items;
- ``placement``: placement groups, their bundles and where they are reserved;
- ``queries``: read-only answers to QUERY.

The records they share, with their states and transition tables, are in
``zray.head.records``; resource rules in ``zray.resources``.
"""

from __future__ import annotations

import logging

from zray.head.actors import ActorTable
from zray.head.generators import GeneratorItems
from zray.head.leases import Leases
from zray.head.local import LocalTasks
from zray.head.membership import Membership
from zray.head.objects import ObjectDirectory
from zray.head.placement import Placements
from zray.head.queries import QUERIES
from zray.head.records import (
    ACTOR_TRANSITIONS, OBJECT_TRANSITIONS, ActorState, IllegalTransition, LeaseState,
    NodeState, ObjectState, TaskState,
)
from zray.head.scheduling import Scheduler
from zray.head.tasks import TaskFlow
from zray.head.outbox import HeadOutbox
from zray.outbox import Outbox
from zray.head.events import TaskEvents
from zray.head.logs import LogBuffer
from zray.head.metrics import UserMetrics
from zray.protocol import Msg, REJOIN
from zray.resources import fits
from zray.serialization import KIND_ERROR

log = logging.getLogger("zray.head")


class HeadState:
    """The head: one entry point (``handle``, ``tick``, ``after_batch``) over the
    parts that own the tables; ``out`` collects what to send."""

    def __init__(self, config, session_name: str, now: float = 0.0):
        self.config = config
        self.session_name = session_name
        self.out = HeadOutbox()
        self.now = now
        self.dirty = False          # something may be placeable: run the scheduler
        self.exit_requested = False
        self.started_at = now
        self.queries = QUERIES
        self.events = TaskEvents(config.task_events_max, now)
        self.user_metrics = UserMetrics()
        self.logs = LogBuffer(config.log_buffer_chunks)
        self.membership = Membership(self)
        self.directory = ObjectDirectory(self)
        self.task_flow = TaskFlow(self)
        self.scheduler = Scheduler(self)
        self.leases = Leases(self)
        self.local = LocalTasks(self)
        self.actor_table = ActorTable(self)
        self.generator_items = GeneratorItems(self)
        self.placements = Placements(self)
        self._share_tables()
        for part in self.parts():
            part.bind(self)
        self.handlers = self._handlers()

    def parts(self) -> tuple:
        return (self.membership, self.directory, self.task_flow, self.scheduler,
                self.leases, self.local, self.actor_table, self.generator_items,
                self.placements)

    def _share_tables(self) -> None:
        """The tables, each owned by one part, under the names the process loop,
        queries, the simulator and tests read."""
        membership, tasks, scheduler = self.membership, self.task_flow, self.scheduler
        self.nodes = membership.nodes
        self.node_by_identity = membership.node_by_identity
        self.clients = membership.clients
        self.job_namespaces = membership.job_namespaces
        self.objects = self.directory.objects
        self.placeholders = self.directory.placeholders
        self.tasks = tasks.tasks
        self.functions = tasks.functions
        self.early_granted = self.leases.early_granted
        self.early_blocked = self.leases.early_blocked
        self.queues = scheduler.queues
        self.infeasible_warned = scheduler.infeasible_warned
        self.dispatch_counts = scheduler.dispatch_counts
        self.run_times = scheduler.run_times
        self.actors = self.actor_table.actors
        self.named_actors = self.actor_table.named_actors
        self.early_actor_results = self.actor_table.early_actor_results
        self.early_items = self.generator_items.early_items
        self.placement_groups = self.placements.groups

    def _handlers(self) -> dict:
        return {
            Msg.HELLO: self.membership.on_hello,
            Msg.REGISTER_NODE: self.membership.on_register_node,
            Msg.HEARTBEAT: self.membership.on_heartbeat,
            Msg.REGISTER_FUNCTIONS: self.task_flow.on_register_functions,
            Msg.SUBMIT_TASKS: self.task_flow.on_submit_tasks,
            Msg.TASKS_FINISHED: self.task_flow.on_tasks_finished,
            Msg.ITEMS_YIELDED: self.generator_items.on_items_yielded,
            Msg.TASKS_FAILED: self.task_flow.on_tasks_failed,
            Msg.WORKER_BLOCKED: self.task_flow.on_worker_blocked,
            Msg.WORKER_UNBLOCKED: self.task_flow.on_worker_unblocked,
            Msg.WORKER_DIED: self.task_flow.on_worker_died,
            Msg.WORKER_KILLED: self.task_flow.on_worker_killed,
            Msg.PUT_OBJECTS: self.directory.on_put_objects,
            Msg.ADD_REFS: self.directory.on_add_refs,
            Msg.REMOVE_REFS: self.directory.on_remove_refs,
            Msg.SUBSCRIBE_OBJECTS: self.directory.on_subscribe_objects,
            Msg.CANCEL_TASKS: self.task_flow.on_cancel_tasks,
            Msg.LOG_LINES: self.membership.on_log_lines,
            Msg.QUERY: self._on_query,
            Msg.SHUTDOWN: self.membership.on_shutdown,
            Msg.CREATE_ACTOR: self.actor_table.on_create_actor,
            Msg.ACTOR_READY: self.actor_table.on_actor_ready,
            Msg.ACTOR_DIED: self.actor_table.on_actor_died,
            Msg.SUBSCRIBE_ACTOR: self.actor_table.on_subscribe_actor,
            Msg.KILL_ACTOR: self.actor_table.on_kill_actor,
            Msg.ACTOR_TASKS_FINISHED: self.actor_table.on_actor_tasks_finished,
            Msg.LEASE_OFFER: self.leases.on_lease_offer,
            Msg.LEASE_RETURN: self.leases.on_lease_return,
            Msg.SUBMIT_LEASED: self.leases.on_submit_leased,
            Msg.SUBMIT_LOCAL: self.local.on_submit_local,
            Msg.TASKS_SPILLED: self.local.on_tasks_spilled,
            Msg.OBJECT_COPIED: self.directory.on_object_copied,
            Msg.CREATE_PLACEMENT_GROUP: self.placements.on_create_placement_group,
            Msg.REMOVE_PLACEMENT_GROUP: self.placements.on_remove_placement_group,
            Msg.STORE_STATS: self.membership.on_store_stats,
        }

    # --- entry points ----------------------------------------------------------------

    def handle(self, identity: bytes, message, now: float) -> None:
        """Apply one decoded message from peer ``identity``."""
        handler = self.handlers.get(message.type)
        if handler is None:
            log.warning("dropping %s from %r: not a message the head handles",
                        message.type.name, identity)
            return
        node = self.node_by_identity.get(identity)
        if node is not None:
            if node.state is NodeState.DEAD and message.type is not Msg.REGISTER_NODE:
                # back from a partition: nothing of its old life is trusted; it must
                # start over as a new node (see the node's handling of REJOIN)
                if message.type is Msg.HEARTBEAT:
                    self.out.send(identity, Msg.SHUTDOWN, (REJOIN,))
                return
            node.last_seen = now
        self.now = now
        handler(identity, message.items, now)

    def after_batch(self, now: float) -> None:
        """Run once after a batch of messages: place what can be placed (waiting
        placement groups first, so freed resources go to them)."""
        self.now = now
        if self.dirty:
            self.dirty = False
            self.placements.schedule()
            self.scheduler.schedule()
        self.membership.table.flush()      # this batch's joins and deaths, to every node

    def tick(self, now: float) -> None:
        """Periodic work: liveness of nodes and drivers, expiries, idle leases."""
        for sweep in self.sweeps():
            sweep(now)

    def sweeps(self) -> tuple:
        """The steps of ``tick``, in order: the process loop runs each on its own,
        so that one that fails is logged and the others still run."""
        return (self.membership.expire_nodes, self.membership.expire_drivers,
                self.actor_table.expire_early_results, self.generator_items.expire_early_items,
                self.leases.expire_early_granted, self.local.expire_early,
                self.directory.expire_placeholders,
                self.leases.return_idle_leases, self.task_flow.run_delayed_retries,
                self.after_batch)

    def _on_query(self, key, items, now):
        for request_id, name, args in items:
            query = self.queries.get(name)
            if query is None:
                reply = (request_id, False, f"unknown query {name!r}; known: "
                                            f"{sorted(self.queries)}")
            else:
                try:
                    reply = (request_id, True, query(self, args))
                except Exception as exc:
                    log.exception("query %s failed", name)
                    reply = (request_id, False, f"query {name} failed: {exc!r}")
            if request_id >= 0:          # a negative id asks for no reply
                self.out.send(key, Msg.QUERY_REPLY, reply)

    # --- checks ----------------------------------------------------------------------

    def validate(self) -> None:
        """Cross-table invariants; run after every event in tests."""
        for task_id, task in self.tasks.items():
            assert task.spec.task_id == task_id
            if task.state is TaskState.ASSIGNED:
                assert task.node_id in self.nodes, "assigned to an unknown node"
        for object_id, obj in self.objects.items():
            assert obj.state in OBJECT_TRANSITIONS
            assert obj.state is not ObjectState.LOST or obj.kind == KIND_ERROR, \
                f"lost object {object_id.hex()} without its error"
            assert obj.pins >= 0, f"negative pins on {object_id.hex()}"
            assert obj.holder is not None or obj.pins > 0, f"unreferenced object {object_id.hex()} kept"
            assert obj.holder not in obj.more_holders, "a holder counted twice"
            for key, count in obj.holders.items():
                assert count > 0
                assert key in self.clients, "object held by an unknown client"
        for node in self.nodes.values():
            for name, amount in node.available.items():
                assert amount <= node.total.get(name, 0.0) + 1e-6, \
                    f"node {node.node_id.hex()} has more {name} free than it owns"
            lease = node.lease
            assert node.state is NodeState.ALIVE or lease is None, "a dead node's lease kept"
            if lease is not None:
                assert (lease.granted_to is None) == (lease.state is LeaseState.HEAD), \
                    f"lease {lease.worker_id.hex()} {lease.state.value} with " \
                    f"granted_to={lease.granted_to!r}"
                assert lease.granted_to is None or lease.granted_to in self.clients, \
                    "a lease granted to an unknown client"
                running = [self.tasks.get(t) for t in (lease.task_id, *lease.tasks) if t]
                lent = any(task is not None and task.blocked for task in running)
                assert lent or node.available.get("CPU", 0.0) + 1.0 <= \
                    node.total.get("CPU", 0.0) + 1e-6, "a lease's CPU counted as free"
        assert self.leases.lent == {node_id: node for node_id, node in self.nodes.items()
                                    if node.lease is not None}, "lent leases out of step"
        assert all(node.lease is not None and node.lease.worker_id == worker_id
                   for worker_id, node in self.leases.lent_by_worker.items()), \
            "leases by worker out of step"
        self.scheduler.index.validate(self.nodes)
        self.membership.table.validate({node_id for node_id, node in self.nodes.items()
                                        if node.state is NodeState.ALIVE})
        self._validate_actors()
        self.placements.validate()
        self.local.validate()

    def _validate_actors(self) -> None:
        for (namespace, name), actor_id in self.named_actors.items():
            actor = self.actors.get(actor_id)
            assert actor is not None and actor.state is not ActorState.DEAD, \
                f"name {name!r} ({namespace}) kept for a dead or unknown actor"
        for actor in self.actors.values():
            assert actor.state in ACTOR_TRANSITIONS
            assert actor.state is not ActorState.DEAD or not actor.calls, \
                f"dead actor {actor.actor_id.hex()} still has calls"


__all__ = ["HeadState", "Outbox", "TaskState", "ObjectState", "NodeState", "fits",
           "IllegalTransition"]
