"""The head's decisions, with no sockets, clocks or processes in them.

``HeadState`` is fed decoded messages (``handle``) and the passage of time
(``tick``) and answers by putting messages in an ``Outbox``; the process loop in
``zray.head.main`` does the I/O.  It keeps:

- nodes: membership, resources (total and uncommitted), liveness;
- clients: drivers and workers, the object references each holds;
- tasks: every task still running or still needed as lineage of a live object;
- objects: where each object is (inline bytes or nodes holding its segment),
  who refers to it, and the task that made it.

Task flow: SUBMIT_TASKS → WAITING (dependencies not ready) → PENDING (in the
queue of its scheduling class) → ASSIGNED (sent to a node) → FINISHED, or back
to PENDING for a retry.  Objects are freed once no client holds them and no
task or containing object pins them; a task record goes when it is done and
none of its returns is alive.
"""

from __future__ import annotations

import enum
import logging
from collections import deque

from zray import exceptions as zerr
from zray.protocol import (
    Msg, PROTOCOL_MAJOR, STATUS_OK, STATUS_RETRIABLE_ERROR, STATUS_CANCELLED,
    REASON_CANCELLED, REASON_TIMEOUT, REJOIN,
)
from zray.head.actors import ActorsMixin, ActorState
from zray.head.generators import GeneratorsMixin
from zray.ids import is_handle_id, is_put_id
from zray.outbox import Outbox
from zray.serialization import KIND_INLINE, KIND_ERROR, KIND_SHM, dumps_error

log = logging.getLogger("zray.head")


class IllegalTransition(RuntimeError):
    pass


class TaskState(str, enum.Enum):
    WAITING = "WAITING_FOR_DEPENDENCIES"
    PENDING = "PENDING_NODE_ASSIGNMENT"
    ASSIGNED = "ASSIGNED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TASK_TRANSITIONS = {
    TaskState.WAITING: {TaskState.PENDING, TaskState.FAILED, TaskState.CANCELLED},
    TaskState.PENDING: {TaskState.ASSIGNED, TaskState.FAILED, TaskState.CANCELLED,
                        TaskState.WAITING},    # an argument was lost: wait for its rebuild
    TaskState.ASSIGNED: {TaskState.FINISHED, TaskState.FAILED, TaskState.PENDING,
                         TaskState.CANCELLED},
    TaskState.FINISHED: {TaskState.PENDING, TaskState.WAITING},   # lineage re-execution
    TaskState.FAILED: set(),
    TaskState.CANCELLED: set(),
}
TERMINAL = (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED)


class ObjectState(str, enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    LOST = "LOST"


class NodeState(str, enum.Enum):
    ALIVE = "ALIVE"
    DEAD = "DEAD"


class Task:
    __slots__ = ("spec", "state", "owner", "node_id", "waiting_on", "live_returns",
                 "pinned", "cancel_requested", "blocked", "lease", "items")

    def __init__(self, spec, owner):
        self.spec = spec
        self.state = TaskState.WAITING
        self.owner = owner
        self.node_id = None
        self.waiting_on = 0
        self.live_returns = spec.num_returns if spec.num_returns >= 0 else 1
        self.pinned = False
        self.cancel_requested = False
        self.blocked = False
        self.lease = None            # the leased worker running it, if any
        self.items = 0               # a generator task: items 0..items-1 were stored


class ObjectRecord:
    __slots__ = ("object_id", "state", "kind", "data", "size", "locations",
                 "holders", "pins", "subscribers", "contained_ids", "dependents",
                 "lost")

    def __init__(self, object_id, state=ObjectState.PENDING):
        self.object_id = object_id
        self.state = state
        self.kind = KIND_INLINE
        self.data = None
        self.size = 0
        self.locations = set()
        self.holders = {}
        self.pins = 0
        self.subscribers = set()
        self.contained_ids = ()
        self.dependents = []
        self.lost = False     # its copies are gone; rebuilt from lineage when needed

    def ready_item(self) -> tuple:
        return (self.object_id, self.kind, self.data, self.size, tuple(self.locations))


class Node:
    __slots__ = ("node_id", "identity", "info", "total", "available", "state",
                 "last_seen", "known_functions", "death_reason",
                 "death_time", "registered_at", "lease")

    def __init__(self, node_id, identity, info, now):
        self.node_id = node_id
        self.identity = identity
        self.info = info
        self.total = dict(info.get("resources", {}))
        self.available = dict(self.total)
        self.state = NodeState.ALIVE
        self.last_seen = now
        self.known_functions = set()
        self.death_reason = None
        self.death_time = None
        self.registered_at = now
        self.lease = None    # Lease: an idle worker the node lent us, see _assign_lease


class Client:
    """A driver or worker connected to the head (key: its socket identity)."""

    __slots__ = ("key", "kind", "job_id", "holding", "last_seen", "info", "node_id")

    def __init__(self, key, kind, job_id, now, info=None, node_id=None):
        self.key = key
        self.kind = kind
        self.job_id = job_id
        self.holding = {}
        self.last_seen = now
        self.info = info or {}
        self.node_id = node_id


class Lease:
    """A worker its node lent us: the next 1-CPU task can go straight to it.

    The head may grant it on to a driver (``granted_to``), which then sends its
    plain tasks to the worker itself, one at a time, and registers each with
    SUBMIT_LEASED; ``tasks`` holds those the head has heard of and not seen
    finish.  While granted, the head neither uses the lease nor returns it; it
    recalls it from the driver when nodes need all their workers.
    """

    __slots__ = ("worker_id", "task_id", "last_used", "known_functions", "granted_to",
                 "tasks", "recalled")

    def __init__(self, worker_id, now):
        self.worker_id = worker_id
        self.task_id = None
        self.last_used = now
        self.known_functions = set()
        self.granted_to = None      # the driver (client key) holding it, if any
        self.tasks = set()          # ids of its granted tasks the head knows are running
        self.recalled = False       # LEASE_RECALL sent; waiting for the LEASE_RETURN


_ONE_CPU = {"CPU": 1.0}


def fits(request: dict, available: dict) -> bool:
    for name, amount in request.items():
        if amount > available.get(name, 0.0) + 1e-9:
            return False
    return True


class HeadState(ActorsMixin, GeneratorsMixin):
    def __init__(self, config, session_name: str, now: float = 0.0):
        self.config = config
        self.session_name = session_name
        self.out = Outbox()
        self.nodes: dict[bytes, Node] = {}
        self.node_by_identity: dict[bytes, Node] = {}
        self.clients: dict[tuple, Client] = {}
        self.tasks: dict[bytes, Task] = {}
        self.objects: dict[bytes, ObjectRecord] = {}
        self.functions: dict[bytes, bytes] = {}
        self.actors: dict = {}
        self.named_actors: dict = {}
        self.early_actor_results: dict = {}
        self.early_items: dict = {}    # task id -> items of an unregistered actor call
        self.job_namespaces: dict = {}
        self.placeholders: dict[bytes, float] = {}
        self.run_times: dict[bytes, float] = {}    # function id -> recent run time (s)
        self.dispatch_counts = {"node": 0, "lease": 0, "granted": 0}
        #: TASKS_FINISHED of granted tasks that arrived before their SUBMIT_LEASED:
        #: task id -> (worker key, item, when, node id).
        self.early_granted = {}
        #: WORKER_BLOCKED/UNBLOCKED of granted tasks not registered yet:
        #: task id -> (blocked, when).
        self.early_blocked = {}
        self.now = now
        self.queues: dict[tuple, deque] = {}
        self.infeasible_warned: set = set()
        self.pending_welcomes: list = []
        self.next_job = 1
        self.spread_cursor = 0
        self.dirty = False
        self.exit_requested = False
        self.started_at = now
        self.handlers = {
            Msg.HELLO: self._on_hello,
            Msg.REGISTER_NODE: self._on_register_node,
            Msg.HEARTBEAT: self._on_heartbeat,
            Msg.REGISTER_FUNCTIONS: self._on_register_functions,
            Msg.SUBMIT_TASKS: self._on_submit_tasks,
            Msg.TASKS_FINISHED: self._on_tasks_finished,
            Msg.ITEMS_YIELDED: self._on_items_yielded,
            Msg.TASKS_FAILED: self._on_tasks_failed,
            Msg.WORKER_BLOCKED: self._on_worker_blocked,
            Msg.WORKER_UNBLOCKED: self._on_worker_unblocked,
            Msg.WORKER_DIED: self._on_worker_died,
            Msg.PUT_OBJECTS: self._on_put_objects,
            Msg.ADD_REFS: self._on_add_refs,
            Msg.REMOVE_REFS: self._on_remove_refs,
            Msg.SUBSCRIBE_OBJECTS: self._on_subscribe_objects,
            Msg.CANCEL_TASKS: self._on_cancel_tasks,
            Msg.LOG_LINES: self._on_log_lines,
            Msg.QUERY: self._on_query,
            Msg.SHUTDOWN: self._on_shutdown,
            Msg.CREATE_ACTOR: self._on_create_actor,
            Msg.ACTOR_READY: self._on_actor_ready,
            Msg.ACTOR_DIED: self._on_actor_died,
            Msg.SUBSCRIBE_ACTOR: self._on_subscribe_actor,
            Msg.KILL_ACTOR: self._on_kill_actor,
            Msg.ACTOR_TASKS_FINISHED: self._on_actor_tasks_finished,
            Msg.LEASE_OFFER: self._on_lease_offer,
            Msg.LEASE_RETURN: self._on_lease_return,
            Msg.SUBMIT_LEASED: self._on_submit_leased,
            Msg.OBJECT_COPIED: self._on_object_copied,
        }
        from zray.head.queries import QUERIES
        self.queries = QUERIES

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
        """Run once after a batch of messages: place what can be placed."""
        if self.dirty:
            self.dirty = False
            self._schedule()

    def tick(self, now: float) -> None:
        """Periodic work: liveness of nodes and drivers, expiries, idle leases."""
        for sweep in self.sweeps():
            sweep(now)

    def sweeps(self) -> tuple:
        """The steps of ``tick``, in order: the process loop runs each on its own,
        so that one that fails is logged and the others still run."""
        return (self._expire_nodes, self._expire_drivers, self._expire_early_results,
                self._expire_early_items, self._expire_early_granted,
                self._expire_placeholders,
                self._return_idle_leases, self.after_batch)

    def _heartbeat_limit_s(self) -> float:
        return self.config.heartbeat_interval_s * self.config.heartbeat_missed_limit

    def _expire_nodes(self, now: float) -> None:
        limit = self._heartbeat_limit_s()
        for node in list(self.nodes.values()):
            if node.state is NodeState.ALIVE and now - node.last_seen > limit:
                self._node_died(node, now, f"missed {self.config.heartbeat_missed_limit} "
                                           "heartbeats")

    def _expire_drivers(self, now: float) -> None:
        limit = self._heartbeat_limit_s()
        for client in list(self.clients.values()):
            if client.kind == "driver" and now - client.last_seen > limit:
                log.warning("driver %s missed its heartbeats; releasing its job",
                            client.job_id.hex())
                self._client_gone(client)

    # --- membership ------------------------------------------------------------------

    def _on_hello(self, key, items, now):
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
                client = self._client(key, now)
                client.node_id = info.get("node_id")
                client.info = dict(info, pid=pid)
        self._send_welcomes()

    def _send_welcomes(self):
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
                "job_id": client.job_id, "session_name": self.session_name,
                "heartbeat_interval_s": self.config.heartbeat_interval_s,
                "nodes": self.queries["nodes"](self, None)},))
        self.pending_welcomes = waiting

    def _on_register_node(self, key, items, now):
        for node_id, major, minor, info in items:
            if major != PROTOCOL_MAJOR:
                self.out.send(key, Msg.PROTOCOL_ERROR, (
                    f"protocol version mismatch: node {major}.{minor}, head "
                    f"{PROTOCOL_MAJOR}; run the same zray major version everywhere",))
                continue
            old = self.node_by_identity.get(key)
            if old is not None and old.state is NodeState.ALIVE and old.node_id != node_id:
                self._node_died(old, now, "replaced by a new registration")
            node = Node(node_id, key, info, now)
            self.nodes[node_id] = node
            self.node_by_identity[key] = node
            log.info("node %s joined from %s with %s", node_id.hex()[:12],
                     info.get("host"), node.total)
            self.out.send(key, Msg.WELCOME, ({
                "session_name": self.session_name,
                "heartbeat_interval_s": self.config.heartbeat_interval_s},))
            self.infeasible_warned.clear()
            self.dirty = True
            self._send_node_table(node)
        self._send_welcomes()

    def _send_node_table(self, changed):
        """Tell every alive node about ``changed`` (joined or died), and a node that
        just joined about every node: O(N) messages per change, not O(N^2)."""
        def entry(n):
            return (n.node_id, n.info.get("transfer_endpoint"), n.state is NodeState.ALIVE)
        if changed.info.get("transfer_endpoint"):
            for node in self.nodes.values():
                if node.state is NodeState.ALIVE and node is not changed:
                    self.out.send(node.identity, Msg.NODE_TABLE, entry(changed))
        if changed.state is NodeState.ALIVE:
            for other in self.nodes.values():
                if other.info.get("transfer_endpoint"):
                    self.out.send(changed.identity, Msg.NODE_TABLE, entry(other))

    def _on_object_copied(self, key, items, now):
        node = self.node_by_identity.get(key)
        if node is None or node.state is not NodeState.ALIVE:
            return
        for object_id, _size in items:
            obj = self.objects.get(object_id)
            if obj is not None and obj.kind == KIND_SHM:
                obj.locations.add(node.node_id)
            else:        # freed meanwhile: the copy is not wanted
                self.out.send(key, Msg.FREE_OBJECTS, (object_id,))

    def _on_heartbeat(self, key, items, now):
        client = self.clients.get(key)
        if client is not None:
            client.last_seen = now
        if client is not None or key in self.node_by_identity:
            self.out.send(key, Msg.HEARTBEAT, (now,))   # drivers and nodes watch the head

    def _node_died(self, node, now, reason):
        node.state = NodeState.DEAD
        if node.lease is not None:
            self._end_grant(node.lease)
        node.lease = None
        node.death_reason = reason
        node.death_time = now
        log.warning("node %s declared dead: %s", node.node_id.hex()[:12], reason)
        for client in [c for c in self.clients.values() if c.node_id == node.node_id]:
            self._client_gone(client)
        for actor in list(self.actors.values()):
            creation = self.tasks.get(actor.actor_id)
            if actor.node_id == node.node_id or (
                    creation is not None and creation.node_id == node.node_id):
                self._actor_process_died(actor, f"its node died ({reason})", now)
        for task in list(self.tasks.values()):
            if task.state is TaskState.ASSIGNED and task.node_id == node.node_id \
                    and not task.spec.is_actor_creation:
                self._task_failed(task, zerr.NodeDiedError(
                    f"The node {node.node_id.hex()} running task {task.spec.name} "
                    f"died ({reason})."), retriable=True, now=now)
        lost = []
        for obj in list(self.objects.values()):
            if node.node_id in obj.locations:
                obj.locations.discard(node.node_id)
                if not obj.locations and obj.kind == KIND_SHM:
                    lost.append(obj)
        self._rebuild_or_lose(lost, node)
        self._send_node_table(node)
        self.dirty = True

    # --- lineage: re-running the tasks that made lost objects -----------------------

    def _rebuild_or_lose(self, lost, node):
        """Objects whose only copy was on ``node``: those a task made are made
        again by re-running it (its own lost inputs first, since they are rebuilt
        the same way); those made by put are lost for good."""
        rebuild = []
        for obj in lost:
            task = self.tasks.get(obj.object_id[:16])
            if is_put_id(obj.object_id) or task is None or task.spec.actor_id is not None:
                self._object_lost(obj, node)
            elif task.state is TaskState.FINISHED and not self._retries_left(task):
                self._make_error(obj, zerr.ObjectReconstructionFailedError(
                    obj.object_id.hex(), (
                        f"Object {obj.object_id.hex()} was lost with node "
                        f"{node.node_id.hex()} and cannot be rebuilt: task "
                        f"{task.spec.name} that made it has used all "
                        f"{task.spec.max_retries} retries (max_retries).")))
                obj.state = ObjectState.LOST
            else:
                obj.state = ObjectState.PENDING      # readers wait for the new copy
                obj.data, obj.size = None, 0
                obj.lost = task.state is TaskState.FINISHED
                if obj.lost:
                    rebuild.append(obj)
        for task in list(self.tasks.values()):       # queued work on a lost input waits
            if task.state is TaskState.PENDING and task.spec.actor_id is None and \
                    any(self.objects.get(d) is not None and
                        self.objects[d].state is ObjectState.PENDING
                        for d in task.spec.dep_ids):
                self._transition(task, TaskState.WAITING)
                self._wait_for_deps(task)
        for obj in rebuild:
            if obj.holders:              # someone may get it: rebuild now; the rest
                self._rebuild(obj)       # only when a task or a reader needs it

    def _rebuild(self, obj):
        """Re-run the finished task that made ``obj`` (once, for all its results)."""
        if not obj.lost:
            return
        task = self.tasks.get(obj.object_id[:16])
        for object_id in self._generator_output_ids(task):
            sibling = self.objects.get(object_id)
            if sibling is not None:
                sibling.lost = False
        if not self._retries_left(task):
            self._make_error(obj, zerr.ObjectReconstructionFailedError(
                obj.object_id.hex(), (
                    f"Object {obj.object_id.hex()} was lost with its node and cannot be "
                    f"rebuilt: task {task.spec.name} that made it has used all "
                    f"{task.spec.max_retries} retries (max_retries).")))
            obj.state = ObjectState.LOST
            return
        log.info("re-running %s to rebuild lost object %s", task.spec.name,
                 obj.object_id.hex()[:16])
        task.spec.attempt += 1
        task.node_id = None
        self._transition(task, TaskState.WAITING)
        self._wait_for_deps(task)

    def _wait_for_deps(self, task):
        """A WAITING task: count its pending inputs, or go ahead if there are none."""
        waiting = 0
        for dep_id in task.spec.dep_ids:
            dep = self.objects.get(dep_id) or self._unknown_object(dep_id)
            if dep.state is ObjectState.PENDING:     # once per use, as _object_ready counts
                dep.dependents.append(task.spec.task_id)
                waiting += 1
                if dep.lost:
                    self._rebuild(dep)
        task.waiting_on = waiting
        if waiting == 0:
            self._deps_ready(task)

    def _object_lost(self, obj, node):
        err = zerr.ObjectLostError(obj.object_id.hex(), (
            f"Object {obj.object_id.hex()} is lost: its only copy was on node "
            f"{node.node_id.hex()}, which died."))
        self._make_error(obj, err)
        obj.state = ObjectState.LOST

    def _client_gone(self, client):
        self.clients.pop(client.key, None)
        for node in self.nodes.values():
            if node.lease is not None and node.lease.granted_to == client.key:
                node.lease.granted_to = None      # back to the head's own use
                node.lease.recalled = False
        for object_id, count in list(client.holding.items()):
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.holders.pop(client.key, None)
                self._maybe_free(obj)
        if client.kind == "driver":
            for task in list(self.tasks.values()):
                if task.owner == client.key and task.state not in TERMINAL \
                        and task.spec.actor_id is None:
                    self._cancel(task, force=True)
            self._job_finished(client.job_id)

    # --- tasks -----------------------------------------------------------------------

    def _on_register_functions(self, key, items, now):
        for function_id, blob in items:
            self.functions[function_id] = blob

    def _on_submit_tasks(self, key, items, now):
        client = self._client(key, now)
        for (spec,) in items:
            task = self._new_task(spec, client)
            if spec.actor_id is not None:
                self._register_actor_call(task)
                continue
            self._pin_task_args(task)
            self._wait_for_deps(task)

    def _new_task(self, spec, client):
        """The task record, its return objects held by the submitter, and
        placeholders for arguments not heard of yet."""
        key = client.key
        task = Task(spec, key)
        self.tasks[spec.task_id] = task
        for object_id in spec.return_ids():
            obj = self.objects.get(object_id)
            if obj is None:
                obj = self.objects[object_id] = ObjectRecord(object_id)
            else:
                self.placeholders.pop(object_id, None)
            obj.holders[key] = obj.holders.get(key, 0) + 1
            client.holding[object_id] = client.holding.get(object_id, 0) + 1
        for object_id in spec.dep_ids + tuple(spec.nested_ids):
            if object_id not in self.objects:
                self._unknown_object(object_id)
        return task

    def _unknown_object(self, object_id):
        """A placeholder for an object we have not heard of yet: its PUT or SUBMIT
        may still be on its way from another process (messages from different
        processes are not ordered).  If nothing claims it soon, it is lost."""
        obj = ObjectRecord(object_id)
        self.objects[object_id] = obj
        self.placeholders[object_id] = self.now
        return obj

    def _expire_placeholders(self, now, limit_s: float = 30.0):
        for object_id, since in list(self.placeholders.items()):
            if now - since < limit_s:
                continue
            del self.placeholders[object_id]
            obj = self.objects.get(object_id)
            if obj is None or obj.state is not ObjectState.PENDING:
                continue
            self._make_error(obj, zerr.ObjectLostError(object_id.hex(), (
                f"Object {object_id.hex()} is unknown to the head: it was freed, or "
                "made by a process that has gone.")))
            obj.state = ObjectState.LOST
            self._maybe_free(obj)

    def _pin_task_args(self, task):
        for object_id in task.spec.dep_ids + tuple(task.spec.nested_ids):
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.pins += 1
        task.pinned = True

    def _unpin_task_args(self, task):
        if not task.pinned:
            return
        task.pinned = False
        for object_id in task.spec.dep_ids + tuple(task.spec.nested_ids):
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.pins -= 1
                self._maybe_free(obj)

    def _deps_ready(self, task):
        for dep_id in task.spec.dep_ids:
            dep = self.objects.get(dep_id) or self._unknown_object(dep_id)
            if dep.kind == KIND_ERROR:
                self._finish_with_error_blob(task, dep.data, TaskState.FAILED)
                return
        self._transition(task, TaskState.PENDING)
        self._enqueue(task)

    def _enqueue(self, task):
        spec = task.spec
        key = (tuple(sorted(spec.resources.items())), _strategy_key(spec.strategy))
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        queue.append(spec.task_id)
        self.dirty = True

    def _transition(self, task, new_state):
        if new_state not in TASK_TRANSITIONS[task.state]:
            raise IllegalTransition(f"task {task.spec.name} {task.spec.task_id.hex()}: "
                                    f"{task.state.value} -> {new_state.value}")
        task.state = new_state

    # --- scheduling ------------------------------------------------------------------

    def _schedule(self):
        leases_returned = False
        for key, queue in list(self.queues.items()):
            while queue:
                task = self.tasks.get(queue[0])
                if task is None or task.state is not TaskState.PENDING:
                    queue.popleft()
                    continue
                if len(queue) == 1:          # a lone task: the fast path pays off
                    lease_node = self._free_lease_for(task)
                    if lease_node is not None:
                        queue.popleft()
                        self._assign_lease(task, lease_node)
                        continue
                elif not leases_returned:    # a burst: nodes need all their CPUs
                    self._return_free_leases()
                    leases_returned = True
                node = self._pick_node(task)
                if node is None:
                    break
                queue.popleft()
                self._assign(task, node)
            if not queue:
                del self.queues[key]

    def _pick_node(self, task):
        from zray.head.scheduling import pick_node
        node = pick_node(self, task)
        if node is None:
            self._check_feasible(task)
        return node

    def _check_feasible(self, task):
        request = task.spec.resources
        alive = [n for n in self.nodes.values() if n.state is NodeState.ALIVE]
        strategy = task.spec.strategy
        if isinstance(strategy, tuple) and strategy[0] == "node_affinity" and not strategy[2]:
            target = self.nodes.get(strategy[1])
            if target is None or target.state is not NodeState.ALIVE \
                    or not fits(request, target.total):
                self._finish_with_error(task, zerr.TaskUnschedulableError(
                    f"Task {task.spec.name} has a hard node affinity to node "
                    f"{strategy[1].hex()}, which is not alive or can never fit {request}."),
                    TaskState.FAILED)
            return
        if any(fits(request, n.total) for n in alive):
            return
        shape = tuple(sorted(request.items()))
        if shape in self.infeasible_warned:
            return
        self.infeasible_warned.add(shape)
        have = {}
        for n in alive:
            for name, amount in n.total.items():
                have[name] = max(have.get(name, 0.0), amount)
        missing = {k: v for k, v in request.items() if have.get(k, 0.0) + 1e-9 < v}
        text = (f"The task {task.spec.name} cannot be scheduled right now: it requires "
                f"{request}, but no node has {missing} (largest node offers "
                f"{ {k: have.get(k, 0.0) for k in missing} }). It stays pending until a node "
                "with these resources joins the cluster.")
        log.warning(text)
        self.out.send(task.owner, Msg.WARNING, (text,))

    def _assign(self, task, node):
        spec = task.spec
        self.dispatch_counts["node"] += 1
        self._transition(task, TaskState.ASSIGNED)
        task.node_id = node.node_id
        for name, amount in _held(spec).items():
            node.available[name] = node.available.get(name, 0.0) - amount
        self.out.send(node.identity, Msg.EXECUTE_TASKS,
                      (self._to_send(spec, node.known_functions),))

    def _to_send(self, spec, known_functions: set):
        """The spec as dispatched: dependency values resolved, and the function's
        code attached for a receiver that has not had it yet."""
        send = spec.copy()
        if spec.dep_ids:
            send.dep_values = [self._dep_value(d) for d in spec.dep_ids]
        if spec.function_id not in known_functions:
            send.function_blob = self.functions.get(spec.function_id)
            known_functions.add(spec.function_id)
        return send

    def _dep_value(self, object_id):
        obj = self.objects[object_id]
        return (obj.kind, obj.data, obj.size, tuple(obj.locations))

    def _release(self, task):
        """Give back what the task committed on its node (once)."""
        node = self.nodes.get(task.node_id)
        task.node_id = None
        if task.lease is not None:     # the lease holds the CPU, not the task
            lease, task.lease = task.lease, None
            if task.blocked and node is not None:   # it finished before its unblock
                node.available["CPU"] = node.available.get("CPU", 0.0) - 1.0
                task.blocked = False
            lease.tasks.discard(task.spec.task_id)
            if node is not None and node.lease is lease and lease.task_id == \
                    task.spec.task_id:
                lease.task_id = None
                lease.last_used = self.now
                self.dirty = True
            return
        if node is None:
            return
        for name, amount in _held(task.spec).items():
            if task.blocked and name == "CPU":
                continue
            node.available[name] = node.available.get(name, 0.0) + amount
        task.blocked = False
        self.dirty = True

    # --- results ---------------------------------------------------------------------

    def _on_tasks_finished(self, key, items, now):
        client = self.clients.get(key)
        client_node = self.nodes.get(client.node_id) if client is not None else None
        for item in items:
            task_id, attempt, status, results, run_s = item
            task = self.tasks.get(task_id)
            if task is not None:
                self._record_run_time(task.spec.function_id, run_s)
            elif client_node is not None and client_node.lease is not None and \
                    client_node.lease.granted_to is not None and \
                    client_node.lease.worker_id == key[1:]:
                # A granted task whose SUBMIT_LEASED (from its driver) is still on
                # its way: keep the finish until it arrives.
                self.early_granted[task_id] = (key, item, now, client_node.node_id)
                continue
            node = client_node
            if node is None and task is not None:   # a dead worker's late result
                node = self.nodes.get(task.node_id)
            if not _is_current(task, attempt, node):
                self._discard_results(results, node)
                continue
            self._release(task)
            if status == STATUS_RETRIABLE_ERROR and self._retries_left(task) \
                    and not task.cancel_requested:
                self._discard_results(results, node)
                self._retry(task)
                continue
            if status == STATUS_CANCELLED or task.cancel_requested and status != STATUS_OK:
                self._discard_results(results, node)
                self._finish_with_error(task, zerr.TaskCancelledError(task_id.hex()),
                                        TaskState.CANCELLED)
                continue
            self._transition(task, TaskState.FINISHED if status == STATUS_OK
                             else TaskState.FAILED)
            # The worker sent a successful task's inline results straight to an
            # owner with a result socket; pushing them again would only cost both.
            direct = status == STATUS_OK and bool(task.spec.owner_address)
            for object_id, kind, data, size, contained in results:
                self._store_result(object_id, kind, data, size, contained, node,
                                   push_owner=not (direct and kind == KIND_INLINE))
            self._task_done(task)

    def _discard_results(self, results, node):
        for object_id, kind, data, size, contained in results:
            if kind == KIND_SHM and node is not None:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (object_id,))

    def _store_result(self, object_id, kind, data, size, contained, node,
                      push_owner=True):
        obj = self.objects.get(object_id)
        if obj is None:
            if kind == KIND_SHM and node is not None:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (object_id,))
            return
        obj.kind, obj.data, obj.size = kind, data, size
        if kind == KIND_SHM:
            obj.locations.add(node.node_id)
        self._set_contained(obj, contained)
        self._object_ready(obj, push_owner)

    def _set_contained(self, obj, contained):
        if not contained:       # (a generator's completion keeps the items it lists)
            return
        obj.contained_ids = tuple(contained)
        for cid in obj.contained_ids:
            inner = self.objects.get(cid)
            if inner is not None:
                inner.pins += 1

    def _object_ready(self, obj, push_owner=True):
        obj.state = ObjectState.READY
        item = obj.ready_item()
        for client_key in obj.subscribers:
            self.out.send(client_key, Msg.OBJECTS_READY, item)
        obj.subscribers = set()
        task = self.tasks.get(obj.object_id[:16])
        if push_owner and task is not None and task.owner in obj.holders:
            self.out.send(task.owner, Msg.OBJECTS_READY, item)
        dependents, obj.dependents = obj.dependents, []
        for task_id in dependents:
            waiter = self.tasks.get(task_id)
            if waiter is not None and waiter.state is TaskState.WAITING:
                waiter.waiting_on -= 1
                if waiter.waiting_on == 0:
                    self._deps_ready(waiter)

    def _task_done(self, task):
        # A finished task keeps its arguments (its lineage) while its results may
        # still be needed, so that a lost result can be made again.
        if task.live_returns <= 0 or task.state is not TaskState.FINISHED \
                or task.spec.actor_id is not None:
            self._unpin_task_args(task)
        if task.live_returns <= 0:
            self.tasks.pop(task.spec.task_id, None)

    def _record_run_time(self, function_id: bytes, seconds: float) -> None:
        previous = self.run_times.get(function_id)
        self.run_times[function_id] = seconds if previous is None else \
            0.8 * previous + 0.2 * seconds

    def is_short(self, function_id: bytes) -> bool:
        """Tasks of this function are known to finish fast (deep queues pay off)."""
        seconds = self.run_times.get(function_id)
        return seconds is not None and seconds <= self.config.short_task_s

    def _retries_left(self, task) -> bool:
        limit = task.spec.max_retries
        return limit < 0 or task.spec.attempt < limit

    def _retry(self, task):
        task.spec.attempt += 1
        task.node_id = None
        self._transition(task, TaskState.PENDING)
        self._enqueue(task)

    def _task_failed(self, task, error, retriable, now):
        """The task's run ended abnormally (worker or node death)."""
        self._release(task)
        if task.cancel_requested:
            self._finish_with_error(task, zerr.TaskCancelledError(task.spec.task_id.hex()),
                                    TaskState.CANCELLED)
        elif retriable and self._retries_left(task):
            log.info("retrying %s (attempt %d): %s", task.spec.name,
                     task.spec.attempt + 1, error)
            self._retry(task)
        else:
            self._finish_with_error(task, error, TaskState.FAILED)

    def _finish_with_error(self, task, error, state):
        self._finish_with_error_blob(task, dumps_error(error), state)

    def _finish_with_error_blob(self, task, blob, state):
        self._transition(task, state)
        if task.spec.is_generator and self._generator_failed(task, blob):
            self._task_done(task)
            return
        for object_id in task.spec.return_ids():
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.kind, obj.data, obj.size = KIND_ERROR, blob, len(blob)
                self._object_ready(obj)
        self._task_done(task)

    def _make_error(self, obj, error):
        obj.kind, obj.data = KIND_ERROR, dumps_error(error)
        obj.size = len(obj.data)
        obj.locations = set()
        self._object_ready(obj)

    def _on_tasks_failed(self, key, items, now):
        node = self.node_by_identity.get(key)
        for task_id, attempt, reason, text in items:
            task = self.tasks.get(task_id)
            if not _is_current(task, attempt, node):
                continue
            if reason == REASON_CANCELLED:
                self._release(task)
                self._finish_with_error(task, zerr.TaskCancelledError(task_id.hex()),
                                        TaskState.CANCELLED)
            elif reason == REASON_TIMEOUT:        # a retriable failure, like a crash
                self._task_failed(task, zerr.TaskTimeoutError(text), retriable=True,
                                  now=now)
            else:
                self._task_failed(task, zerr.RaySystemError(text), retriable=False, now=now)

    def _on_worker_died(self, key, items, now):
        node = self.node_by_identity.get(key)
        for worker_id, pid, exit_code, task_id, attempt in items:
            if node is not None and node.lease is not None and \
                    node.lease.worker_id == worker_id:
                self._lease_worker_died(node, pid, exit_code, now)
            client = self.clients.get(b"W" + worker_id)
            if client is not None:
                self._client_gone(client)
            task = self.tasks.get(task_id) if task_id else None
            actor = self._worker_hosted_actor(b"W" + worker_id)
            if actor is None and task is not None and task.spec.is_actor_creation:
                actor = self.actors.get(task.spec.actor_id)
            if actor is not None:
                self._actor_process_died(actor, f"its worker process (pid {pid}) exited "
                                                f"with code {exit_code}", now)
                continue
            if not _is_current(task, attempt, node):
                continue
            error = zerr.WorkerCrashedError(
                f"The worker (pid {pid}) running task {task.spec.name} died with exit "
                f"code {exit_code}; the task was tried {task.spec.attempt + 1} time(s).")
            self._task_failed(task, error, retriable=True, now=now)

    # --- leases: a worker lent by its node for direct dispatch -------------------------

    def _on_lease_offer(self, key, items, now):
        node = self.node_by_identity.get(key)
        if node is None or node.state is not NodeState.ALIVE:
            return
        for (worker_id,) in items:
            node.lease = Lease(worker_id, now)
            node.available["CPU"] = node.available.get("CPU", 0.0) - 1.0
            self.dirty = True

    def _free_lease_for(self, task):
        """A node with an unused lease, when ``task`` is a plain 1-CPU task."""
        spec = task.spec
        if spec.resources != _ONE_CPU or spec.strategy is not None or spec.max_calls \
                or spec.actor_id is not None or spec.timeout_s:    # nodes enforce those
            return None
        wanted = None       # nodes holding its shared-memory arguments: locality first
        for dep_id in spec.dep_ids:
            obj = self.objects.get(dep_id)
            if obj is not None and obj.locations:
                wanted = (wanted or set()) | obj.locations
        for node in self.nodes.values():
            lease = node.lease
            if lease is not None and lease.task_id is None and not lease.tasks and \
                    lease.granted_to is None and node.state is NodeState.ALIVE and \
                    (wanted is None or node.node_id in wanted):
                return node
        return None

    def _assign_lease(self, task, node):
        """Send the task straight to the leased worker (no node hop)."""
        lease = node.lease
        spec = task.spec
        self.dispatch_counts["lease"] += 1
        self._transition(task, TaskState.ASSIGNED)
        task.node_id = node.node_id
        task.lease = lease
        lease.task_id = spec.task_id
        self.out.send(b"W" + lease.worker_id, Msg.EXECUTE_TASKS,
                      (self._to_send(spec, lease.known_functions),))
        if spec.owner_address and spec.num_returns == 1 and not spec.dep_ids and \
                not spec.nested_ids and \
                not any(n.lease is not None and n.lease.granted_to == task.owner
                        for n in self.nodes.values()):
            # A driver that serves results and submits one task at a time: let it
            # send the next ones to this worker itself, two hops instead of three
            # (only after a task it could have sent: a lease picked for where a
            # task's arguments are stays the head's, for the next such task).
            client = self.clients.get(task.owner)
            if client is not None and client.kind == "driver":
                lease.granted_to = task.owner      # busy with this task until it ends
                self.out.send(task.owner, Msg.LEASE_GRANT, (lease.worker_id, spec.task_id))

    def _on_submit_leased(self, key, items, now):
        """Tasks a driver sent straight to the worker it was granted."""
        client = self._client(key, now)
        for spec, worker_id in items:
            task = self._new_task(spec, client)
            self._pin_task_args(task)
            node = self._granted_node(key, worker_id)
            early = self.early_granted.pop(spec.task_id, None)
            if node is None and early is None:
                # The lease died before this arrived: the worker is gone, so the
                # task did not finish there; run it like any other.
                self._wait_for_deps(task)
                continue
            early_node = self.nodes.get(early[3]) if node is None else None
            if node is None and (early_node is None or early_node.state is not NodeState.ALIVE):
                # It finished on a node that died since: its results went with it.
                self._discard_results(early[1].results, None)
                self._wait_for_deps(task)
                continue
            self.dispatch_counts["granted"] += 1
            self._transition(task, TaskState.PENDING)
            self._transition(task, TaskState.ASSIGNED)
            if node is not None:
                task.node_id = node.node_id
                task.lease = node.lease
                node.lease.tasks.add(spec.task_id)
                node.lease.known_functions.add(spec.function_id)
                node.lease.last_used = now
                blocked = self.early_blocked.pop(spec.task_id, (False,))[0]
                if blocked:                # it waits in get: its CPU is lent back
                    node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
                    task.blocked = True
                    self.dirty = True
            else:
                # It finished there before its worker died: the lease (and its
                # CPU) is gone, so a detached one stands in for the books.
                task.node_id = early[3]
                task.lease = Lease(b"", now)
            if early is not None:
                self._on_tasks_finished(early[0], [early[1]], now)

    def _granted_node(self, driver_key, worker_id):
        for node in self.nodes.values():
            lease = node.lease
            if lease is not None and lease.worker_id == worker_id and \
                    lease.granted_to == driver_key and node.state is NodeState.ALIVE:
                return node
        return None

    def _on_lease_return(self, key, items, now):
        """A driver gives back the lease it was granted."""
        for (worker_id,) in items:
            node = self._granted_node(key, worker_id)
            if node is not None:
                node.lease.granted_to = None
                node.lease.recalled = False
                node.lease.last_used = now
                self.dirty = True

    def _granted_on(self, node_key) -> bool:
        node = self.node_by_identity.get(node_key)
        return node is not None and node.lease is not None and \
            node.lease.granted_to is not None

    def _recall_grant(self, lease):
        if lease.granted_to is not None and not lease.recalled:
            lease.recalled = True
            self.out.send(lease.granted_to, Msg.LEASE_RECALL, (lease.worker_id,))

    def _expire_early_granted(self, now, limit_s: float = 60.0):
        """Drop finishes whose SUBMIT_LEASED never came (its driver died)."""
        for task_id, (_key, item, since, node_id) in list(self.early_granted.items()):
            if now - since >= limit_s:
                del self.early_granted[task_id]
                self._discard_results(item.results, self.nodes.get(node_id))
        for task_id, (_blocked, since) in list(self.early_blocked.items()):
            if now - since >= limit_s:
                del self.early_blocked[task_id]

    def _lease_worker_died(self, node, pid, exit_code, now):
        lease = node.lease
        task = self.tasks.get(lease.task_id) if lease.task_id else None
        if task is not None and task.state is TaskState.ASSIGNED and task.lease is lease:
            self._task_failed(task, zerr.WorkerCrashedError(
                f"The worker (pid {pid}) running task {task.spec.name} died with exit "
                f"code {exit_code}; the task was tried {task.spec.attempt + 1} time(s)."),
                retriable=True, now=now)
        for task_id in list(lease.tasks):         # granted tasks it was running
            task = self.tasks.get(task_id)
            if task is not None and task.state is TaskState.ASSIGNED and task.lease is lease:
                self._task_failed(task, zerr.WorkerCrashedError(
                    f"The worker (pid {pid}) running task {task.spec.name} died with "
                    f"exit code {exit_code}; the task was tried {task.spec.attempt + 1} "
                    "time(s)."), retriable=True, now=now)
        self._end_grant(lease)
        node.lease = None
        node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
        self.dirty = True

    def _end_grant(self, lease):
        """The lease is gone: its driver must stop using it."""
        if lease.granted_to is not None:
            self.out.send(lease.granted_to, Msg.LEASE_RECALL, (lease.worker_id,))
            lease.granted_to = None

    def _return_free_leases(self):
        """A burst: nodes need all their workers, granted ones included."""
        for node in self.nodes.values():
            if node.lease is not None:
                self._recall_grant(node.lease)
        self._return_idle_leases(self.now, idle_s=-1.0)

    def _return_idle_leases(self, now, idle_s=None):
        idle_s = self.config.lease_idle_s if idle_s is None else idle_s
        for node in self.nodes.values():
            lease = node.lease
            if lease is not None and lease.task_id is None and not lease.tasks and \
                    lease.granted_to is None and now - lease.last_used > idle_s:
                node.lease = None
                node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
                if node.state is NodeState.ALIVE:
                    self.out.send(node.identity, Msg.LEASE_RETURN, (lease.worker_id,))
                self.dirty = True

    def _on_worker_blocked(self, key, items, now):
        for task_id, _returned in items:
            task = self.tasks.get(task_id)
            if task is None and self._granted_on(key):
                self.early_blocked[task_id] = (True, now)   # its SUBMIT_LEASED is due
                continue
            if task is None or task.state is not TaskState.ASSIGNED or task.blocked:
                continue
            node = self.nodes.get(task.node_id)
            cpus = task.spec.resources.get("CPU", 0.0)
            if node is not None and cpus:
                node.available["CPU"] = node.available.get("CPU", 0.0) + cpus
                task.blocked = True
                self.dirty = True

    def _on_worker_unblocked(self, key, items, now):
        for (task_id,) in items:
            task = self.tasks.get(task_id)
            if task is None and task_id in self.early_blocked:
                self.early_blocked[task_id] = (False, now)
                continue
            if task is None or task.state is not TaskState.ASSIGNED or not task.blocked:
                continue
            node = self.nodes.get(task.node_id)
            if node is not None:
                node.available["CPU"] -= task.spec.resources.get("CPU", 0.0)
            task.blocked = False

    # --- cancellation ----------------------------------------------------------------

    def _on_cancel_tasks(self, key, items, now):
        for task_id, force in items:
            task = self.tasks.get(task_id)
            if task is not None:
                self._cancel(task, force)

    def _cancel(self, task, force):
        if task.spec.is_actor_call:
            actor = self.actors.get(task.spec.actor_id)
            if task.state is not TaskState.ASSIGNED or actor is None:
                return
            if actor.state is ActorState.ALIVE and actor.worker_key:
                self.out.send(actor.worker_key, Msg.CANCEL_TASKS, (task.spec.task_id, force))
            else:
                actor.pending_cancels.add(task.spec.task_id)
            return
        if task.state in (TaskState.WAITING, TaskState.PENDING):
            self._finish_with_error(task, zerr.TaskCancelledError(task.spec.task_id.hex()),
                                    TaskState.CANCELLED)
        elif task.state is TaskState.ASSIGNED:
            task.cancel_requested = True
            if task.lease is not None:
                self.out.send(b"W" + task.lease.worker_id, Msg.CANCEL_TASKS,
                              (task.spec.task_id, force))
                return
            node = self.nodes.get(task.node_id)
            if node is not None:
                self.out.send(node.identity, Msg.CANCEL_TASKS,
                              (task.spec.task_id, force))

    # --- objects and references ------------------------------------------------------

    def _client(self, key, now) -> Client:
        client = self.clients.get(key)
        if client is None:
            client = Client(key, "worker", None, now)
            self.clients[key] = client
        return client

    def _on_put_objects(self, key, items, now):
        client = self._client(key, now)
        for object_id, kind, data, size, node_id, contained in items:
            obj = self.objects.get(object_id)
            placeholder = obj is not None
            if obj is None:
                obj = self.objects[object_id] = ObjectRecord(object_id, ObjectState.READY)
            self.placeholders.pop(object_id, None)
            obj.kind, obj.data, obj.size = kind, data, size
            if node_id is not None:
                obj.locations.add(node_id)
            obj.holders[key] = obj.holders.get(key, 0) + 1
            client.holding[object_id] = client.holding.get(object_id, 0) + 1
            self._set_contained(obj, contained)
            if placeholder:
                self._object_ready(obj)

    def _on_add_refs(self, key, items, now):
        client = self._client(key, now)
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if obj is None:
                obj = self._unknown_object(object_id)
            obj.holders[key] = obj.holders.get(key, 0) + 1
            client.holding[object_id] = client.holding.get(object_id, 0) + 1

    def _on_remove_refs(self, key, items, now):
        client = self.clients.get(key)
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if client is not None:
                count = client.holding.get(object_id, 0) - 1
                if count > 0:
                    client.holding[object_id] = count
                else:
                    client.holding.pop(object_id, None)
            if obj is None:
                continue
            count = obj.holders.get(key, 0) - 1
            if count > 0:
                obj.holders[key] = count
            else:
                obj.holders.pop(key, None)
                self._maybe_free(obj)

    def _maybe_free(self, obj):
        if obj.holders or obj.pins > 0:
            return
        self.objects.pop(obj.object_id, None)
        self.placeholders.pop(obj.object_id, None)
        if is_handle_id(obj.object_id):
            self._actor_handle_released(obj.object_id[:16])
            return
        for node_id in obj.locations:
            node = self.nodes.get(node_id)
            if node is not None and node.state is NodeState.ALIVE:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (obj.object_id,))
        for cid in obj.contained_ids:
            inner = self.objects.get(cid)
            if inner is not None:
                inner.pins -= 1
                self._maybe_free(inner)
        task = self.tasks.get(obj.object_id[:16])
        if task is not None and not is_put_id(obj.object_id):
            task.live_returns -= 1
            if task.live_returns <= 0 and task.state in TERMINAL:
                self.tasks.pop(task.spec.task_id, None)
                self._unpin_task_args(task)      # its lineage is no longer needed

    def _on_subscribe_objects(self, key, items, now):
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if obj is None:
                obj = self._unknown_object(object_id)
            if obj.state is ObjectState.PENDING:
                obj.subscribers.add(key)
                if obj.lost:
                    self._rebuild(obj)
            else:
                self.out.send(key, Msg.OBJECTS_READY, obj.ready_item())

    # --- everything else -------------------------------------------------------------

    def _on_log_lines(self, key, items, now):
        drivers = {c.job_id: c.key for c in self.clients.values() if c.kind == "driver"}
        for item in items:
            target = drivers.get(item.job_id)
            if target is not None:
                self.out.send(target, Msg.LOG_LINES, item)

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
            self.out.send(key, Msg.QUERY_REPLY, reply)

    def _on_shutdown(self, key, items, now):
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
            self.exit_requested = True
        elif client is not None:
            self._client_gone(client)

    # --- checks ----------------------------------------------------------------------

    def validate(self) -> None:
        """Cross-table invariants; run after every event in tests."""
        for task_id, task in self.tasks.items():
            assert task.spec.task_id == task_id
            if task.state is TaskState.ASSIGNED:
                assert task.node_id in self.nodes, "assigned to an unknown node"
        for object_id, obj in self.objects.items():
            assert obj.pins >= 0, f"negative pins on {object_id.hex()}"
            assert obj.holders or obj.pins > 0, f"unreferenced object {object_id.hex()} kept"
            for key, count in obj.holders.items():
                assert count > 0
                assert key in self.clients, "object held by an unknown client"
        for node in self.nodes.values():
            for name, amount in node.available.items():
                assert amount <= node.total.get(name, 0.0) + 1e-6, \
                    f"node {node.node_id.hex()} has more {name} free than it owns"
            lease = node.lease
            if lease is not None:
                running = [self.tasks.get(t) for t in (lease.task_id, *lease.tasks) if t]
                lent = any(task is not None and task.blocked for task in running)
                assert lent or node.available.get("CPU", 0.0) + 1.0 <= \
                    node.total.get("CPU", 0.0) + 1e-6, "a lease's CPU counted as free"


def _is_current(task, attempt, node) -> bool:
    """The report is about the attempt the head is waiting for, on its node."""
    return task is not None and task.state is TaskState.ASSIGNED \
        and task.spec.attempt == attempt and node is not None \
        and task.node_id == node.node_id


def _held(spec) -> dict:
    """Resources a task commits while it runs; an actor holds its ``held`` set for life."""
    if spec.actor_options is not None:
        return spec.actor_options.get("held", {})
    return spec.resources


def _strategy_key(strategy):
    if strategy is None or isinstance(strategy, str):
        return strategy
    return tuple(strategy)


__all__ = ["HeadState", "Outbox", "TaskState", "ObjectState", "NodeState", "fits",
           "IllegalTransition"]
