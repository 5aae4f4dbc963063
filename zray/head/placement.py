"""Placement groups: bundles of resources reserved together, all or nothing.

A driver or worker asks with CREATE_PLACEMENT_GROUP; the group is PENDING until
``place_bundles`` finds a node for every bundle at once (by the group's
strategy, against the nodes' uncommitted resources).  Then each bundle is
taken from its node's free resources and turned into resources of its own
(``zray.resources.bundle_resources``), which the head records in the node's
tables and tells the node with RESERVE_BUNDLES; the group's tasks and actors
ask for those renamed resources, so ordinary placement and the node's
admission keep them inside their bundle.

A node that dies takes its bundles with it: the group goes RESCHEDULING and
its lost bundles are placed again (on nodes that keep the strategy) when
there is room; then it is CREATED again.  REMOVE_PLACEMENT_GROUP (or the end
of the job of a group that is not detached) gives the bundles back, kills the
group's actors and cancels its tasks.  Waiting groups are tried before queued
tasks every time the scheduler runs, so freed resources go to them first.
"""

from __future__ import annotations

import logging

from zray import exceptions as zerr
from zray.head.records import (
    TERMINAL, NodeState, PlacementGroup, PlacementGroupState, TaskState,
)
from zray.protocol import BUNDLES_MINOR, Msg
from zray.resources import add_resources, bundle_resources, fits

log = logging.getLogger("zray.head")

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: How many steps the STRICT_SPREAD search may take per try.
SEARCH_STEPS = 10000
#: Removed groups kept for placement_group_table, newest last.
REMOVED_KEPT = 1000


def group_of(spec):
    """The placement group id a task or actor runs in, or None."""
    strategy = spec.strategy
    if type(strategy) is tuple and strategy and strategy[0] == "placement_group":
        return strategy[1]
    return None


class Placements:
    """The part of HeadState that owns the placement group table."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        #: pg_id -> PlacementGroup, in creation order
        self.groups = {}
        #: (namespace, name) -> pg_id of a group not removed
        self.named = {}
        #: pg_id -> group, of those PENDING or RESCHEDULING (oldest first)
        self.waiting = {}

    def bind(self, head):
        self.nodes = head.nodes
        self.tasks = head.tasks
        self.clients = head.clients
        self.job_namespaces = head.job_namespaces
        self.actor_table = head.actor_table
        self.task_flow = head.task_flow
        self.leases = head.leases

    # --- messages --------------------------------------------------------------------

    def on_create_placement_group(self, key, items, now):
        for pg_id, bundles, strategy, name, lifetime, request_id in items:
            try:
                self.create(key, pg_id, bundles, strategy, name, lifetime, now)
                reply = (request_id, True, None)
            except ValueError as exc:
                reply = (request_id, False, str(exc))
            if request_id:
                self.out.send(key, Msg.QUERY_REPLY, reply)

    def create(self, key, pg_id, bundles, strategy, name, lifetime, now):
        problem = bundles_problem(bundles, strategy)
        if problem:
            raise ValueError(problem)
        client = self.clients.get(key)
        job_id = client.job_id if client is not None else None
        namespace = self.job_namespaces.get(job_id, "")
        if name and (namespace, name) in self.named:
            raise ValueError(f"A placement group named {name!r} already exists in "
                             f"namespace {namespace!r}; remove it or pick another name.")
        if pg_id in self.groups:
            return
        group = PlacementGroup(pg_id, [dict(b) for b in bundles], strategy, name, namespace,
                               job_id, lifetime == "detached", now)
        self.groups[pg_id] = group
        self.waiting[pg_id] = group
        if name:
            self.named[(namespace, name)] = pg_id
        self.head.dirty = True

    def on_remove_placement_group(self, key, items, now):
        for pg_id, request_id in items:
            group = self.groups.get(pg_id)
            if group is not None:
                self.remove(group, "its placement group was removed")
            if request_id:
                self.out.send(key, Msg.QUERY_REPLY, (request_id, True, None))

    # --- lifecycle -------------------------------------------------------------------

    def remove(self, group, why: str) -> None:
        if group.state is PlacementGroupState.REMOVED:
            return
        for index, node_id in enumerate(group.nodes):
            if node_id is not None:
                self._unreserve(group, index, self.nodes.get(node_id))
        group.move(PlacementGroupState.REMOVED)
        self.waiting.pop(group.pg_id, None)
        if group.name and self.named.get((group.namespace, group.name)) == group.pg_id:
            del self.named[(group.namespace, group.name)]
        for actor in list(self.head.actors.values()):
            if group_of(actor.spec) == group.pg_id:
                self.actor_table.kill(actor, f"The actor was killed: {why}.")
        for task in list(self.tasks.values()):
            if group_of(task.spec) == group.pg_id and task.state not in TERMINAL \
                    and task.spec.actor_id is None:
                self.task_flow.cancel(task, force=True)
        self.head.dirty = True
        self._forget_old_removed()

    def _forget_old_removed(self) -> None:
        removed = [g for g in self.groups.values() if g.state is PlacementGroupState.REMOVED]
        for group in removed[:max(0, len(removed) - REMOVED_KEPT)]:
            del self.groups[group.pg_id]

    def job_finished(self, job_id) -> None:
        """A job's driver is gone: its groups go too, unless detached."""
        for group in list(self.groups.values()):
            if group.job_id == job_id and not group.detached:
                self.remove(group, "its job (driver) finished")

    def node_died(self, node) -> None:
        """Bundles on ``node`` are lost: their groups are placed again."""
        for group in self.groups.values():
            if node.node_id not in group.nodes:
                continue
            group.nodes = [None if n == node.node_id else n for n in group.nodes]
            if group.state is PlacementGroupState.CREATED:
                group.move(PlacementGroupState.RESCHEDULING)
                self.waiting[group.pg_id] = group
                log.warning("placement group %s lost bundles with node %s: rescheduling",
                            group.pg_id.hex(), node.node_id.hex()[:12])
        self.head.dirty = True

    # --- placing ---------------------------------------------------------------------

    def schedule(self) -> None:
        """Place every waiting group that fits now, oldest first."""
        if not self.waiting:
            return
        for group in list(self.waiting.values()):
            group.attempts += 1
            if group.strategy == "PACK" and self._packs_only_without_leases(group):
                # PACK prefers one node: when only lent workers keep every node
                # from holding the whole group, ask for them back first
                self.leases.return_free_leases()
            if self._try_place(group) or not self._fits_without_leases(group):
                continue
            # idle nodes lent workers (and their CPUs) to the head or drivers: the
            # group fits once they are back, so ask for them and try again
            self.leases.return_free_leases()
            self._try_place(group)

    def _free(self, lent_back: bool) -> dict:
        alive = sorted((n for n in self.nodes.values() if n.state is NodeState.ALIVE
                        and n.protocol_minor >= BUNDLES_MINOR),
                       key=lambda n: n.registered_at)
        free = {n.node_id: n.available for n in alive}
        if lent_back:
            for node in alive:
                if node.lease is not None:
                    free[node.node_id] = {**node.available,
                                          "CPU": node.available.get("CPU", 0.0) + 1.0}
        return free

    def _packs_only_without_leases(self, group) -> bool:
        if not any(n.lease is not None for n in self.nodes.values()):
            return False
        return place_bundles(group.bundles, "STRICT_PACK", self._free(False),
                             group.nodes) is None and \
            place_bundles(group.bundles, "STRICT_PACK", self._free(True),
                          group.nodes) is not None

    def _fits_without_leases(self, group) -> bool:
        if not any(n.lease is not None for n in self.nodes.values()):
            return False
        return place_bundles(group.bundles, group.strategy, self._free(True),
                             group.nodes) is not None

    def _try_place(self, group) -> bool:
        chosen = place_bundles(group.bundles, group.strategy, self._free(False), group.nodes)
        if chosen is None:
            return False
        for index, node_id in enumerate(chosen):
            if group.nodes[index] is None:
                self._reserve(group, index, self.nodes[node_id])
        group.nodes = list(chosen)
        group.placed_at = self.head.now
        group.move(PlacementGroupState.CREATED)
        del self.waiting[group.pg_id]
        self.head.dirty = True
        return True

    def _reserve(self, group, index, node) -> None:
        bundle = group.bundles[index]
        for name, amount in bundle.items():
            node.available[name] = node.available.get(name, 0.0) - amount
        add_resources(node.total, node.available,
                      bundle_resources(group.pg_id.hex(), index, bundle), 1.0)
        self.head.scheduler.node_changed(node)
        self.out.send(node.identity, Msg.RESERVE_BUNDLES, (group.pg_id, index, bundle))

    def _unreserve(self, group, index, node) -> None:
        if node is None or node.state is not NodeState.ALIVE:
            return
        bundle = group.bundles[index]
        add_resources(node.total, node.available,
                      bundle_resources(group.pg_id.hex(), index, bundle), -1.0)
        for name, amount in bundle.items():
            node.available[name] = node.available.get(name, 0.0) + amount
        self.head.scheduler.node_changed(node)
        self.out.send(node.identity, Msg.RELEASE_BUNDLES, (group.pg_id, index))

    # --- for the scheduler and queries -----------------------------------------------

    def unplaceable(self, task) -> str | None:
        """Why a task of a group can never run (its group is gone), else None."""
        pg_id = group_of(task.spec)
        group = self.groups.get(pg_id)
        if group is None:
            return f"its placement group {pg_id.hex()} does not exist"
        if group.state is PlacementGroupState.REMOVED:
            return f"its placement group {pg_id.hex()} was removed"
        return None

    def fail_unplaceable(self, task, why: str) -> None:
        text = f"{task.spec.name} cannot be scheduled: {why}."
        if task.spec.is_actor_creation:
            actor = self.head.actors.get(task.spec.actor_id)
            if actor is not None:
                self.actor_table.kill(actor, text)
                return
        self.task_flow.finish_with_error(task, zerr.TaskUnschedulableError(text),
                                         TaskState.FAILED)

    def demands(self) -> list:
        alive = [n for n in self.nodes.values() if n.state is NodeState.ALIVE]
        out = []
        for group in self.groups.values():
            if group.waiting:
                missing = [b for b, n in zip(group.bundles, group.nodes) if n is None]
                out.append({"resources": missing, "count": 1, "kind": "placement_group",
                            "placement_group_id": group.pg_id.hex(),
                            "strategy": group.strategy,
                            "feasible": all(any(fits(b, n.total) for n in alive)
                                            for b in missing)})
        return out

    def validate(self) -> None:
        assert set(self.waiting) == {g.pg_id for g in self.groups.values() if g.waiting}, \
            "the waiting list differs from the groups' states"
        for (namespace, name), pg_id in self.named.items():
            group = self.groups.get(pg_id)
            assert group is not None and group.state is not PlacementGroupState.REMOVED, \
                f"name {name!r} kept for a removed placement group"
        for group in self.groups.values():
            placed = [n for n in group.nodes if n is not None]
            if group.state is PlacementGroupState.CREATED:
                assert len(placed) == len(group.bundles), "a created group lacks bundles"
            if group.state in (PlacementGroupState.PENDING, PlacementGroupState.REMOVED):
                assert not placed or group.state is PlacementGroupState.REMOVED, \
                    "a pending group holds bundles"
            for node_id in placed:
                node = self.nodes.get(node_id)
                assert node is not None, "a bundle on an unknown node"
                if group.state is not PlacementGroupState.REMOVED:
                    assert node.state is NodeState.ALIVE, "a bundle kept on a dead node"


def bundles_problem(bundles, strategy) -> str | None:
    """What is wrong with a group's bundles or strategy (Ray's rules), or None."""
    if strategy not in STRATEGIES:
        return (f"Invalid placement group strategy {strategy!r}; supported strategies "
                f"are {list(STRATEGIES)}.")
    if not bundles:
        return "The placement group `bundles` argument cannot contain an empty list."
    for bundle in bundles:
        if not isinstance(bundle, dict) or not any(v > 0 for v in bundle.values()):
            return ("Bundles cannot be an empty dictionary or resources with only 0 "
                    f"values. Bundles: {list(bundles)}")
        negative = [k for k, v in bundle.items() if v < 0]
        if negative:
            return f"Bundle resources must be non-negative, got {bundle}."
    return None


# --- where bundles go: a pure function of the nodes' free resources ------------------

def place_bundles(bundles, strategy, free, placed):
    """A node id for every bundle, or None if the strategy cannot be met now.

    ``free``: node id -> uncommitted resources, in the order nodes joined;
    ``placed``: the node id of bundles that keep their place (a group being
    rescheduled), None for those to place.
    """
    free = {node_id: dict(available) for node_id, available in free.items()}
    todo = [i for i, node_id in enumerate(placed) if node_id is None]
    chosen = list(placed)
    place = _PLACERS[strategy]
    if not place(bundles, todo, free, chosen):
        return None
    return chosen


def _take(free, node_id, bundle, chosen, index) -> None:
    available = free[node_id]
    for name, amount in bundle.items():
        available[name] = available.get(name, 0.0) - amount
    chosen[index] = node_id


def _sum(bundles) -> dict:
    total = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + amount
    return total


def _strict_pack(bundles, todo, free, chosen) -> bool:
    used = {n for n in chosen if n is not None}
    candidates = [n for n in free if n in used] if used else list(free)
    need = _sum(bundles[i] for i in todo)
    for node_id in candidates:
        if fits(need, free[node_id]):
            for i in todo:
                _take(free, node_id, bundles[i], chosen, i)
            return True
    return False


def _pack(bundles, todo, free, chosen) -> bool:
    if _strict_pack(bundles, todo, free, chosen):
        return True
    for i in todo:       # fill the nodes already used, then the next ones
        used = [n for n in free if n in chosen]
        order = used + [n for n in free if n not in used]
        node_id = next((n for n in order if fits(bundles[i], free[n])), None)
        if node_id is None:
            return False
        _take(free, node_id, bundles[i], chosen, i)
    return True


def _spread(bundles, todo, free, chosen) -> bool:
    for i in todo:       # the node with the fewest of the group's bundles
        counts = {n: chosen.count(n) for n in free}
        fitting = [n for n in free if fits(bundles[i], free[n])]
        if not fitting:
            return False
        _take(free, min(fitting, key=lambda n: counts[n]), bundles[i], chosen, i)
    return True


def _strict_spread(bundles, todo, free, chosen) -> bool:
    """A distinct node per bundle: a small backtracking search, largest first."""
    order = sorted(todo, key=lambda i: -sum(bundles[i].values()))
    used = {n for n in chosen if n is not None}
    budget = [SEARCH_STEPS]

    def search(k) -> bool:
        if k == len(order):
            return True
        budget[0] -= 1
        if budget[0] < 0:        # give up on this round; tried again when things change
            return False
        i = order[k]
        for node_id in free:
            if node_id not in used and fits(bundles[i], free[node_id]):
                used.add(node_id)
                chosen[i] = node_id
                if search(k + 1):
                    return True
                used.discard(node_id)
                chosen[i] = None
        return False
    return len(order) <= len(free) and search(0)


_PLACERS = {"PACK": _pack, "SPREAD": _spread, "STRICT_PACK": _strict_pack,
            "STRICT_SPREAD": _strict_spread}


__all__ = ["Placements", "place_bundles", "bundles_problem", "group_of", "STRATEGIES"]
