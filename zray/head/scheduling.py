"""Where a task runs, decided from an index of the nodes, never a scan.

Default strategy: among nodes whose uncommitted resources fit the request, the
one holding the most bytes of the task's arguments; ties go to packing (the
first node below half use) and then to the least used.  When no node has room
now, a node may still take the task into its queue while its commitments stay
within ``node_overcommit_factor`` times its totals: the node runs it as soon as
its own resources free up, which keeps workers busy between round trips.  How
far: ``node_overcommit_factor`` for functions whose recent run time is under
``short_task_s`` (a deep queue turns round trips into batches), and
``long_task_overcommit_factor`` for the rest and for functions not seen yet
(long tasks queued on one node could wait while another node idles).
"SPREAD" takes the next node that fits after the last one SPREAD used, in join
order (a rotating cursor).  Node affinity pins a task to one node (a direct
lookup); a soft affinity falls back to the default when that node is gone or
lacks room.

Every answer comes from ``zray.head.node_index``: the nodes that fit each
resource shape, kept current on every grant and release (``node_changed``),
so a decision costs the same at 10 nodes as at 10,000, locality costs the
number of the arguments' locations, and an infeasible shape is known at once.
Tasks queue per scheduling class (shape and strategy), and one pass places a
class's whole queue.
"""

from __future__ import annotations

import logging
from collections import deque

from zray import exceptions as zerr
from zray.head.node_index import NodeIndex, has_room, shape_key
from zray.head.placement import group_of
from zray.head.records import NodeState, TaskState
from zray.protocol import Msg
from zray.resources import fits, held

log = logging.getLogger("zray.head")

#: Shapes whose resources dict specs share, at most (then it starts afresh).
MAX_SHARED_SHAPES = 1024


class Scheduler:
    """The part of HeadState that owns the queues, placement and recent run times."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.queues = {}
        #: resource shapes already warned about
        self.infeasible_warned = set()
        #: seq (join order) of the node the last SPREAD task went to
        self.spread_cursor = -1
        #: nodes by free capacity per resource shape (see zray.head.node_index)
        self.index = NodeIndex((self.config.node_overcommit_factor,
                                self.config.long_task_overcommit_factor))
        #: shape key -> the resources dict the specs of that shape share, and
        #: id of that dict -> its shape key (it stays alive while it is in both)
        self.shape_resources = {}
        self.shape_by_id = {}
        self.dispatch_counts = {"node": 0, "lease": 0, "granted": 0, "local": 0,
                                "spilled": 0}
        #: function id -> recent run time (s)
        self.run_times = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.functions = head.functions
        self.nodes = head.nodes
        self.objects = head.objects
        self.tasks = head.tasks
        self.leases = head.leases
        self.task_flow = head.task_flow

    def share_resources(self, spec) -> tuple:
        """The spec's resource shape; its resources dict becomes the one its
        shape's specs share (~90 bytes each, from submission on)."""
        resources = spec.resources
        shape = self.shape_by_id.get(id(resources))
        if shape is not None:       # already the shared dict
            return shape
        shape = shape_key(resources)
        shared = self.shape_resources.get(shape)
        if shared is None:
            if len(self.shape_resources) >= MAX_SHARED_SHAPES:
                self.shape_resources.clear()        # (and their ids with them)
                self.shape_by_id.clear()
            shared = self.shape_resources[shape] = resources
            self.shape_by_id[id(resources)] = shape
        spec.resources = shared
        return shape

    def enqueue(self, task):
        spec = task.spec
        shape = self.share_resources(spec)
        key = (shape, _strategy_key(spec.strategy))
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        queue.append(spec.task_id)
        self.head.dirty = True

    def node_joined(self, node) -> None:
        """Index the new node; shapes no node could fit may fit it: warn about
        them again."""
        self.index.add_node(node)
        self.infeasible_warned.clear()

    def node_changed(self, node) -> None:
        """The node's free or total resources or its state changed: every
        change to them is followed by this call, which keeps the index exact."""
        self.index.refresh(node)

    def count_dispatch(self, how: str) -> None:
        self.dispatch_counts[how] += 1

    def schedule(self):
        leases_returned = False
        self.index.settle()
        for key, queue in list(self.queues.items()):
            shape = self.index.shape(key[0])      # one class, one lookup per pass
            while queue:
                task = self.tasks.get(queue[0])
                if task is None or task.state is not TaskState.PENDING:
                    queue.popleft()
                    continue
                if len(queue) == 1:          # a lone task: the fast path pays off
                    lease_node = self.leases.free_lease_for(task)
                    if lease_node is not None:
                        queue.popleft()
                        self.leases.assign_lease(task, lease_node)
                        continue
                elif not leases_returned:    # a burst: nodes need all their CPUs
                    self.leases.return_free_leases()
                    leases_returned = True
                node = self._pick_node(task, shape)
                if node is None:
                    break
                queue.popleft()
                self._assign(task, node)
            if not queue:
                del self.queues[key]
        self.index.end_pass({key[0] for key in self.queues})

    def _pick_node(self, task, shape=None):
        node = pick_node(self, task, shape)
        if node is None:
            self._check_feasible(task)
        return node

    def _check_feasible(self, task):
        request = task.spec.resources
        strategy = task.spec.strategy
        if group_of(task.spec) is not None:     # waits for its group's bundles
            why = self.head.placements.unplaceable(task)
            if why:
                self.head.placements.fail_unplaceable(task, why)
            return
        if isinstance(strategy, tuple) and strategy[0] == "node_affinity" and not strategy[2]:
            target = self.nodes.get(strategy[1])
            if target is None or target.state is not NodeState.ALIVE \
                    or not fits(request, target.total):
                self.task_flow.finish_with_error(task, zerr.TaskUnschedulableError(
                    f"Task {task.spec.name} has a hard node affinity to node "
                    f"{strategy[1].hex()}, which is not alive or can never fit {request}."),
                    TaskState.FAILED)
            return
        shape = shape_key(request)
        if self.index.shape(shape).feasible or shape in self.infeasible_warned:
            return        # O(1): the index counts the nodes whose totals fit it
        self.infeasible_warned.add(shape)
        alive = [n for n in self.nodes.values() if n.state is NodeState.ALIVE]
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
        task.move(TaskState.ASSIGNED)
        task.node_id = node.node_id
        self.head.events.assigned(task, node.node_id, self.head.now)
        for name, amount in held(spec).items():
            node.available[name] = node.available.get(name, 0.0) - amount
        self.index.refresh(node)
        self.out.send(node.identity, Msg.EXECUTE_TASKS,
                      (self.to_send(spec, node.known_functions),))

    def to_send(self, spec, known_functions: set):
        """The spec as dispatched: dependency values resolved, and the function's
        code attached for a receiver that has not had it yet."""
        known = spec.function_id in known_functions
        if not spec.dep_ids and known:
            return spec     # nothing to add: the head's own (sent before it changes)
        send = spec.copy()
        if spec.dep_ids:
            send.dep_values = [self._dep_value(d) for d in spec.dep_ids]
        if not known:
            send.function_blob = self.functions.get(spec.function_id)
            known_functions.add(spec.function_id)
        return send

    def _dep_value(self, object_id):
        obj = self.objects[object_id]
        return (obj.kind, obj.data, obj.size, tuple(obj.locations))

    def release(self, task):
        """Give back what the task committed on its node (once)."""
        if task.scheduled is not None:      # its event row, while its node is known
            self.head.events.keep(task)
        node = self.nodes.get(task.node_id)
        task.node_id = None
        if task.lease is not None:     # the lease holds the CPU, not the task
            lease, task.lease = task.lease, None
            if task.blocked and node is not None:   # it finished before its unblock
                node.available["CPU"] = node.available.get("CPU", 0.0) - 1.0
                self.index.refresh(node)
                task.blocked = False
            lease.tasks.discard(task.spec.task_id)
            if node is not None and node.lease is lease and lease.task_id == \
                    task.spec.task_id:
                lease.task_id = None
                lease.last_used = self.head.now
                self.head.dirty = True
            return
        if node is None:
            return
        for name, amount in held(task.spec).items():
            if task.blocked and name == "CPU" or name not in node.total:
                continue       # (not in total: its bundle was removed meanwhile)
            node.available[name] = node.available.get(name, 0.0) + amount
        self.index.refresh_later(node)       # once per node per batch
        task.blocked = False
        self.head.dirty = True

    def record_run_time(self, function_id: bytes, seconds: float) -> None:
        previous = self.run_times.get(function_id)
        self.run_times[function_id] = seconds if previous is None else \
            0.8 * previous + 0.2 * seconds

    def is_short(self, function_id: bytes) -> bool:
        """Tasks of this function are known to finish fast (deep queues pay off)."""
        seconds = self.run_times.get(function_id)
        return seconds is not None and seconds <= self.config.short_task_s

def _strategy_key(strategy):
    if strategy is None or isinstance(strategy, str):
        return strategy
    return tuple(strategy)


def pick_node(state, task, shape=None):
    """The node ``task`` goes to now, or None: a few index lookups, never a scan.
    ``shape``: the index of the task's resource shape, when the caller has it."""
    spec = task.spec
    index = state.index
    if index.stale:
        index.settle()
    strategy = spec.strategy
    if strategy is None or type(strategy) is str:
        pass                # (most tasks: no affinity, no group; one test)
    elif strategy and strategy[0] == "node_affinity":
        _, node_id, soft = strategy
        target = state.nodes.get(node_id)      # a direct lookup
        if target is not None and target.state is NodeState.ALIVE \
                and fits(spec.resources, target.total):
            return target if has_room(shape_key(spec.resources), target,
                                      _factor(state, spec)) else None
        if not soft:
            return None
        strategy = None
    elif group_of(spec) is not None:     # its resources keep it in its bundles
        strategy = None
    if shape is None:
        shape = index.shape(shape_key(spec.resources))
    if strategy == "SPREAD":
        pool = shape.fit if shape.fit.members else shape.room[_factor(state, spec)]
        seq = pool.after(state.spread_cursor)
        if seq is None:
            return None
        state.spread_cursor = seq
        return index.nodes[seq]
    if shape.fit.members:
        return _best_default(state, shape, spec)
    return index.node(index.most_free(shape.room[_factor(state, spec)]))


def _factor(state, spec) -> float:
    config = state.config
    return config.node_overcommit_factor if state.is_short(spec.function_id) \
        else config.long_task_overcommit_factor


def _best_default(state, shape, spec):
    """Locality (bytes of the task's arguments already there) first, then packing:
    the first joined node below half use, else the least used."""
    index = state.index
    if spec.dep_ids:
        fit = shape.fit.members
        local = {}
        for dep_id in spec.dep_ids:       # costs the arguments' locations, not N
            obj = state.objects.get(dep_id)
            if obj is None or not obj.size:
                continue
            for node_id in obj.locations:
                seq = index.seq(node_id)
                if seq in fit:
                    local[seq] = local.get(seq, 0) + obj.size
        if local:
            best = max(local.values())
            chosen = sorted(seq for seq, size in local.items() if size == best)
            if len(chosen) == 1:
                return index.nodes[chosen[0]]
            for seq in chosen:
                if index.fracs[seq] > 0.5:
                    return index.nodes[seq]
            return index.nodes[min(chosen, key=lambda s: (-index.fracs[s], s))]
    seq = shape.half.first()
    if seq is None:
        seq = index.most_free(shape.fit)
    return index.nodes[seq]


__all__ = ["Scheduler", "pick_node"]
