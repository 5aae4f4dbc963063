"""Where a task runs: pure functions of the head's node table.

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
"SPREAD" goes round robin over the nodes that fit.  Node affinity pins a task
to one node; a soft affinity falls back to the default when that node is gone
or lacks room.
"""

from __future__ import annotations

import logging
from collections import deque

from zray import exceptions as zerr
from zray.head.placement import group_of
from zray.head.records import NodeState, TaskState
from zray.protocol import Msg
from zray.resources import fits, held

log = logging.getLogger("zray.head")


class Scheduler:
    """The part of HeadState that owns the queues, placement and recent run times."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.queues = {}
        #: resource shapes already warned about
        self.infeasible_warned = set()
        self.spread_cursor = 0
        self.dispatch_counts = {"node": 0, "lease": 0, "granted": 0}
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

    def enqueue(self, task):
        spec = task.spec
        key = (tuple(sorted(spec.resources.items())), _strategy_key(spec.strategy))
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        queue.append(spec.task_id)
        self.head.dirty = True

    def node_joined(self) -> None:
        """Shapes no node could fit may fit the new one: warn about them again."""
        self.infeasible_warned.clear()

    def count_dispatch(self, how: str) -> None:
        self.dispatch_counts[how] += 1

    def schedule(self):
        leases_returned = False
        for key, queue in list(self.queues.items()):
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
                node = self._pick_node(task)
                if node is None:
                    break
                queue.popleft()
                self._assign(task, node)
            if not queue:
                del self.queues[key]

    def _pick_node(self, task):
        node = pick_node(self, task)
        if node is None:
            self._check_feasible(task)
        return node

    def _check_feasible(self, task):
        request = task.spec.resources
        alive = [n for n in self.nodes.values() if n.state is NodeState.ALIVE]
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
        task.move(TaskState.ASSIGNED)
        task.node_id = node.node_id
        self.head.events.scheduled(task, node.node_id, self.head.now)
        for name, amount in held(spec).items():
            node.available[name] = node.available.get(name, 0.0) - amount
        self.out.send(node.identity, Msg.EXECUTE_TASKS,
                      (self.to_send(spec, node.known_functions),))

    def to_send(self, spec, known_functions: set):
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

    def release(self, task):
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
                lease.last_used = self.head.now
                self.head.dirty = True
            return
        if node is None:
            return
        for name, amount in held(task.spec).items():
            if task.blocked and name == "CPU" or name not in node.total:
                continue       # (not in total: its bundle was removed meanwhile)
            node.available[name] = node.available.get(name, 0.0) + amount
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


def pick_node(state, task):
    spec = task.spec
    alive = [n for n in state.nodes.values() if n.state is NodeState.ALIVE]
    strategy = spec.strategy
    if isinstance(strategy, tuple) and strategy and strategy[0] == "node_affinity":
        _, node_id, soft = strategy
        target = state.nodes.get(node_id)
        if target is not None and target.state is NodeState.ALIVE \
                and fits(spec.resources, target.total):
            return target if _has_room(state, target, spec) else None
        if not soft:
            return None
        strategy = None
    elif group_of(spec) is not None:     # its resources keep it in its bundles
        strategy = None
    candidates = [n for n in alive if fits(spec.resources, n.available)]
    if strategy == "SPREAD":
        pool = candidates or [n for n in alive if _has_room(state, n, spec)]
        return _round_robin(state, pool)
    if candidates:
        return _best_default(state, candidates, spec)
    overflow = [n for n in alive if _has_room(state, n, spec)]
    if not overflow:
        return None
    return max(overflow, key=lambda n: _free_fraction(n))


def _has_room(state, node, spec) -> bool:
    request = spec.resources
    if not fits(request, node.total):
        return False
    config = state.config
    factor = config.node_overcommit_factor if state.is_short(spec.function_id) \
        else config.long_task_overcommit_factor
    for name, amount in request.items():
        if amount and node.available.get(name, 0.0) + factor * node.total.get(name, 0.0) \
                < amount - 1e-9:
            return False
    return True


def _round_robin(state, pool):
    if not pool:
        return None
    pool.sort(key=lambda n: n.registered_at)
    state.spread_cursor += 1
    return pool[state.spread_cursor % len(pool)]


def _best_default(state, candidates, spec):
    if len(candidates) == 1:
        return candidates[0]
    if spec.dep_ids:
        local = {n.node_id: 0 for n in candidates}
        for dep_id in spec.dep_ids:
            obj = state.objects.get(dep_id)
            if obj is None:
                continue
            for node_id in obj.locations:
                if node_id in local:
                    local[node_id] += obj.size
        best = max(local.values())
        if best > 0:
            candidates = [n for n in candidates if local[n.node_id] == best]
            if len(candidates) == 1:
                return candidates[0]
    candidates.sort(key=lambda n: n.registered_at)
    for node in candidates:
        if _free_fraction(node) > 0.5:
            return node
    return max(candidates, key=_free_fraction)


def _free_fraction(node) -> float:
    total = node.total.get("CPU", 0.0)
    if total <= 0:
        return 1.0
    return node.available.get("CPU", 0.0) / total


__all__ = ["Scheduler", "pick_node"]
