"""Read-only answers to QUERY messages: cluster state for the API and the CLI."""

from __future__ import annotations

from zray.head.events import END, START, SUBMITTER, TASK_ID, matches, row_of
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
            "ResourcesAvailable": _node_available(node),
            "Labels": info.get("labels", {}),
            "pid": info.get("pid"),
            "DeathReason": node.death_reason,
            "DeathTime": node.death_time,
            "alive": node.state is NodeState.ALIVE,
        })
    return out


def _node_available(node) -> dict:
    """What a node has free (an idle lease's CPU counted as free), within its total."""
    if node.state is not NodeState.ALIVE:
        return {}
    available = dict(node.available)
    if node.lease is not None and node.lease.task_id is None:
        available["CPU"] = available.get("CPU", 0.0) + 1.0
    return {name: max(0.0, min(amount, node.total.get(name, 0.0)))
            for name, amount in available.items()}


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
        for name, amount in _node_available(node).items():
            free[name] = free.get(name, 0.0) + amount
    return {k: v for k, v in free.items() if v > 0}


def _filters(args):
    """The head-side filters and limit of a list query: a filter on a key the
    head's rows lack (``error_type``: the client decodes errors) is left to the
    client, and then so is the limit."""
    args = args or {}
    filters = [tuple(f) for f in args.get("filters") or ()]
    return filters, args.get("limit", 1000)


def _select(rows, args):
    filters, limit = _filters(args)
    out, deferred = [], False
    for row in rows:
        known = [f for f in filters if f[0] in row]
        deferred = deferred or len(known) < len(filters)
        if matches(row, known):
            out.append(row)
    return out if deferred or limit is None else out[:limit]


def list_tasks(state, args):
    """Task attempts from the event history (finished ones too), oldest first;
    with ``newest`` in args, the newest first, building only the rows returned
    (filters then apply to the head's keys only: not ``error_type``)."""
    if (args or {}).get("newest"):
        filters, limit = _filters(args)
        return {"rows": state.events.newest(filters, limit, state.tasks),
                "total": len(state.events.rows), "dropped": state.events.dropped}
    rows = state.events.select(tasks=state.tasks)
    selected = _select(rows, args)
    return {"rows": selected, "total": len(rows), "dropped": state.events.dropped}


def task_counts(state, args):
    """Task attempts by state (waiting tasks too), and how many the history
    dropped: the dashboard's overview, without building a row per task."""
    return {"by_state": state.events.counts(state.tasks), "total": len(state.events.rows),
            "dropped": state.events.dropped}


def get_task(state, args):
    """Every attempt of the task whose id (hex) is ``args``."""
    rows = [row_of(t) for t in state.events.rows.values() if t[TASK_ID].hex() == args]
    task = next((t for t in state.tasks.values() if t.spec.task_id.hex() == args), None)
    if task is not None:
        rows += state.events.pending({task.spec.task_id: task})
    return rows


def timeline(state, args):
    """Attempts that ran (a start and an end), for ``zray.timeline``."""
    out = []
    for t in state.events.rows.values():
        if t[START] is not None and t[END] is not None:
            row = row_of(t)
            client = state.clients.get(t[SUBMITTER])
            row["submitter_pid"] = client.info.get("pid") if client is not None else None
            row.pop("error", None)
            out.append(row)
    return out


def list_objects(state, args):
    out = []
    for obj in list(state.objects.values()):
        out.append({"object_id": obj.object_id.hex(), "state": obj.state.value,
                    "size_bytes": obj.size, "inline": obj.kind != KIND_SHM,
                    "locations": [n.hex() for n in obj.locations],
                    "references": sum(obj.holders.values()), "pins": obj.pins})
    return _select(out, args)


def summary(state, args):
    return {"tasks": len(state.tasks), "objects": len(state.objects),
            "clients": len(state.clients), "functions": len(state.functions),
            "queued": sum(len(q) for q in state.queues.values()),
            "dispatched": dict(state.dispatch_counts)}


def list_actors(state, args):
    return _select([actor.describe() for actor in state.actors.values()], args)


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
    return _select([g.describe() for g in state.placement_groups.values()], args)


def get_placement_group(state, args):
    """The id and bundles of the group named ``name`` in the caller's namespace."""
    name, namespace, job_id = args
    if namespace is None:
        namespace = state.job_namespaces.get(job_id, "")
    group = state.placement_groups.get(state.placements.named.get((namespace, name)))
    if group is None:
        return None
    return group.pg_id, group.bundles


def logs(state, args):
    """Worker output kept at the head: args ``node_id`` (hex), ``pid``, ``since``
    (a sequence number), ``tail``, ``start``/``end`` (wall seconds)."""
    args = args or {}
    chunks, next_seq = state.logs.read(args.get("node_id"), args.get("pid"),
                                       args.get("since", 0), args.get("tail"),
                                       args.get("start"), args.get("end"))
    return {"chunks": chunks, "next": next_seq}


def log_sources(state, args):
    """The workers whose output the head keeps: node, pid, chunk count, times."""
    return state.logs.sources()


def actor_calls_ran(state, args):
    """An actor worker's batch of method calls it ran (``zray.worker.call_events``),
    sent with no reply wanted: rows of the task-event history."""
    state.events.actor_calls_ran(args["node_id"], args["pid"], args["calls"])


def record_metrics(state, args):
    """User metrics' records (``zray.util.metrics``), sent with no reply wanted."""
    state.user_metrics.record(args)


def barrier(state, args):
    """Nothing: its reply tells the asker that the head has handled everything
    it sent before (one peer's messages are handled in the order sent).  An
    actor worker that ends itself waits for it (``zray.worker.main``)."""
    return None


def metrics(state, args):
    """The Prometheus exposition text (what the metrics endpoint serves)."""
    from zray.head.metrics import render
    return render(state)


QUERIES = {
    "barrier": barrier,
    "record_metrics": record_metrics,
    "actor_calls_ran": actor_calls_ran,
    "logs": logs,
    "log_sources": log_sources,
    "metrics": metrics,
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
    "task_counts": task_counts,
    "get_task": get_task,
    "timeline": timeline,
    "list_objects": list_objects,
    "summary": summary,
}

