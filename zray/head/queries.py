"""Read-only answers to QUERY messages: cluster state for the API and the CLI."""

from __future__ import annotations

from zray.head.records import ActorState, NodeState
from zray.resources import fits
from zray.serialization import KIND_SHM


def nodes(state, args):
    out = []
    for node in state.nodes.values():
        info = node.info
        out.append({
            "NodeID": node.node_id.hex(),
            "Alive": node.state is NodeState.ALIVE,
            "State": node.state.value,
            "NodeManagerAddress": info.get("host", ""),
            "NodeManagerHostname": info.get("hostname", ""),
            "NodeManagerPort": info.get("port", 0),
            "ObjectStoreSocketName": info.get("store", ""),
            "NodeManagerEndpoint": info.get("worker_endpoint", ""),
            "ObjectTransferEndpoint": info.get("transfer_endpoint", ""),
            "ObjectStore": dict(info.get("object_store") or {}),
            "Resources": dict(node.total) if node.state is NodeState.ALIVE else {},
            "Labels": info.get("labels", {}),
            "pid": info.get("pid"),
            "DeathReason": node.death_reason,
            "DeathTime": node.death_time,
            "alive": node.state is NodeState.ALIVE,
        })
    return out


def cluster_resources(state, args):
    total = {}
    for node in state.nodes.values():
        if node.state is NodeState.ALIVE:
            for name, amount in node.total.items():
                total[name] = total.get(name, 0.0) + amount
    return total


def available_resources(state, args):
    free = {}
    for node in state.nodes.values():
        if node.state is NodeState.ALIVE:
            available = dict(node.available)
            if node.lease is not None and node.lease.task_id is None:
                available["CPU"] = available.get("CPU", 0.0) + 1.0   # an idle lease
            for name, amount in available.items():
                free[name] = free.get(name, 0.0) + max(0.0, min(amount, node.total.get(name, 0)))
    return {k: v for k, v in free.items() if v > 0}


def list_tasks(state, args):
    limit = (args or {}).get("limit", 1000)
    out = []
    for task in list(state.tasks.values())[:limit]:
        out.append({"task_id": task.spec.task_id.hex(), "name": task.spec.name,
                    "state": task.state.value, "attempt": task.spec.attempt,
                    "node_id": task.node_id.hex() if task.node_id else None,
                    "job_id": task.spec.job_id.hex() if task.spec.job_id else None})
    return out


def list_objects(state, args):
    limit = (args or {}).get("limit", 1000)
    out = []
    for obj in list(state.objects.values())[:limit]:
        out.append({"object_id": obj.object_id.hex(), "state": obj.state.value,
                    "size_bytes": obj.size, "inline": obj.kind != KIND_SHM,
                    "locations": [n.hex() for n in obj.locations],
                    "references": sum(obj.holders.values()), "pins": obj.pins})
    return out


def summary(state, args):
    return {"tasks": len(state.tasks), "objects": len(state.objects),
            "clients": len(state.clients), "functions": len(state.functions),
            "queued": sum(len(q) for q in state.queues.values()),
            "dispatched": dict(state.dispatch_counts)}


def list_actors(state, args):
    limit = (args or {}).get("limit", 1000)
    return [actor.describe() for actor in list(state.actors.values())[:limit]]


def get_actor(state, args):
    name, namespace, job_id = args
    if namespace is None:
        namespace = state.job_namespaces.get(job_id, "")
    actor = state.actors.get(state.named_actors.get((namespace, name)))
    if actor is None or actor.state is ActorState.DEAD:
        return None
    return actor.meta()


def demands(state, args):
    """Queued resource shapes: how many tasks wait for each, and whether any
    alive node could ever fit it (infeasible ones wait for a node to join)."""
    alive = [n for n in state.nodes.values() if n.state is NodeState.ALIVE]
    out = []
    for (shape, strategy), queue in state.queues.items():
        if type(strategy) is tuple and strategy[0] == "placement_group":
            continue          # their group's bundles are the demand (below)
        request = dict(shape)
        out.append({"resources": request, "count": len(queue),
                    "feasible": any(fits(request, n.total) for n in alive)})
    return out + state.placements.demands()


def placement_group_table(state, args):
    """One group's row (args: its id), or every group's by id hex (args: None)."""
    if args is not None:
        group = state.placement_groups.get(args)
        return group.describe() if group is not None else {}
    return {g.pg_id.hex(): g.describe() for g in state.placement_groups.values()}


def list_placement_groups(state, args):
    limit = (args or {}).get("limit", 1000)
    return [g.describe() for g in list(state.placement_groups.values())[:limit]]


def get_placement_group(state, args):
    """The id and bundles of the group named ``name`` in the caller's namespace."""
    name, namespace, job_id = args
    if namespace is None:
        namespace = state.job_namespaces.get(job_id, "")
    group = state.placement_groups.get(state.placements.named.get((namespace, name)))
    if group is None:
        return None
    return group.pg_id, group.bundles


QUERIES = {
    "demands": demands,
    "placement_group_table": placement_group_table,
    "list_placement_groups": list_placement_groups,
    "get_placement_group": get_placement_group,
    "list_actors": list_actors,
    "get_actor": get_actor,
    "nodes": nodes,
    "cluster_resources": cluster_resources,
    "available_resources": available_resources,
    "list_tasks": list_tasks,
    "list_objects": list_objects,
    "summary": summary,
}

