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

from zray.head.state import NodeState, fits


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
