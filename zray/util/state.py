"""Ray's state API (``ray.util.state``): what the cluster holds, as rows.

Each call asks the head once.  ``filters`` are Ray's ``(key, "=" | "!=",
value)`` triples (values compared as text, states case-insensitively);
``limit`` caps the rows (Ray's default, 100); ``detail=False`` keeps Ray's
default columns.  Rows are dicts that also read as attributes
(``task.state`` or ``task["state"]``), like Ray's state dataclasses.

Task rows come from the head's event history (``Config.task_events_max``
attempts), so finished and failed tasks are listed after their records are
gone.  A failed attempt's error is decoded here, in the caller, never in the
head: ``error_type`` is the exception's class name, ``error_message`` its text
(for a task's own exception, the traceback from the worker).

``address``: None for the connected cluster (``zray.init()`` first), or a
head's ``HOST:PORT`` / ``"auto"``, as the CLI does.
"""

from __future__ import annotations

import pickle

DEFAULT_LIMIT = 100

# Ray's default (detail=False) columns per resource
TASK_COLUMNS = ("task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type",
                "func_or_class_name", "node_id", "worker_pid", "error_type")


class StateRow(dict):
    """A row: a dict whose keys also read as attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _asker(address):
    if address is None:
        from zray import _runtime
        client = _runtime.client()
        return client.query
    from zray._admin import query
    from zray.api import head_endpoint
    endpoint = head_endpoint(address)
    return lambda name, args=None: query(endpoint, name, args, timeout_s=10.0)


def _check_filters(filters):
    out = []
    for f in filters or ():
        if len(f) != 3 or f[1] not in ("=", "!="):
            raise ValueError(f"a filter is (key, '=' or '!=', value); got {f!r}")
        out.append((str(f[0]), f[1], f[2]))
    return out


def _finish(rows, filters, limit, columns=None):
    from zray.head.events import matches
    out = [StateRow(r) for r in rows if matches(r, filters)]
    if limit is not None:
        out = out[:limit]
    if columns:
        out = [StateRow({k: r.get(k) for k in columns}) for r in out]
    return out


def decode_error(blob):
    """(error_type, error_message) of a failed attempt's error."""
    if blob is None:
        return None, None
    if isinstance(blob, str):
        return "Error", blob
    try:
        import cloudpickle  # noqa: F401  (registers what pickle needs for its classes)
        exc = pickle.loads(blob)
    except Exception as exc2:        # its class is not importable here
        return "UnknownError", f"(the error could not be decoded here: {exc2})"
    cause = getattr(exc, "cause", None)
    kind = type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
    return kind, str(exc)


def _task_rows(rows):
    for row in rows:
        row["error_type"], row["error_message"] = decode_error(row.pop("error", None))
    return rows


def list_tasks(address=None, filters=None, limit: int = DEFAULT_LIMIT, timeout=None,
               detail: bool = False, raise_on_missing_output: bool = True,
               _explain: bool = False) -> list:
    filters = _check_filters(filters)
    reply = _asker(address)("list_tasks", {"filters": filters, "limit": limit})
    rows = _task_rows(reply["rows"])
    return _finish(rows, filters, limit, None if detail else TASK_COLUMNS)


def get_task(id: str, address=None, timeout=None, _explain: bool = False):
    """The task's latest attempt (all attempts: ``list_tasks`` filtered by task_id)."""
    rows = _task_rows(_asker(address)("get_task", str(id)))
    return StateRow(rows[-1]) if rows else None


def list_actors(address=None, filters=None, limit: int = DEFAULT_LIMIT, timeout=None,
                detail: bool = False, raise_on_missing_output: bool = True,
                _explain: bool = False) -> list:
    filters = _check_filters(filters)
    rows = _asker(address)("list_actors", {"filters": filters, "limit": limit})
    for row in rows:
        row.setdefault("is_detached", row.get("detached"))
        row.setdefault("ray_namespace", row.get("namespace"))
    return _finish(rows, filters, limit)


def get_actor(id: str, address=None, timeout=None, _explain: bool = False):
    rows = list_actors(address, filters=[("actor_id", "=", id)], limit=1, detail=True)
    return rows[0] if rows else None


def _node_rows(ask):
    out = []
    for n in ask("nodes"):
        out.append({"node_id": n["NodeID"], "node_ip": n["NodeManagerAddress"],
                    "node_name": n.get("NodeManagerHostname", ""),
                    "state": "ALIVE" if n["Alive"] else "DEAD",
                    "resources_total": n["Resources"], "labels": n.get("Labels", {}),
                    "object_store": n.get("ObjectStore", {}),
                    "death_reason": n.get("DeathReason"),
                    # the ray.nodes() names, kept for callers of zray's first version
                    **n})
    return out


def list_nodes(address=None, filters=None, limit: int = DEFAULT_LIMIT, timeout=None,
               detail: bool = False, raise_on_missing_output: bool = True,
               _explain: bool = False) -> list:
    filters = _check_filters(filters)
    return _finish(_node_rows(_asker(address)), filters, limit)


def get_node(id: str, address=None, timeout=None, _explain: bool = False):
    rows = list_nodes(address, filters=[("node_id", "=", id)], limit=1)
    return rows[0] if rows else None


def list_objects(address=None, filters=None, limit: int = DEFAULT_LIMIT, timeout=None,
                 detail: bool = False, raise_on_missing_output: bool = True,
                 _explain: bool = False) -> list:
    filters = _check_filters(filters)
    rows = _asker(address)("list_objects", {"filters": filters, "limit": limit})
    return _finish(rows, filters, limit)


def list_placement_groups(address=None, filters=None, limit: int = DEFAULT_LIMIT,
                          timeout=None, detail: bool = False,
                          raise_on_missing_output: bool = True, _explain: bool = False):
    filters = _check_filters(filters)
    rows = _asker(address)("list_placement_groups", {"filters": filters, "limit": limit})
    return _finish(rows, filters, limit)


def _counts(rows, key, extra):
    summary = {}
    for row in rows:
        name = row.get(key) or "?"
        entry = summary.setdefault(name, {key: name, **extra(row), "state_counts": {}})
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return summary


def summarize_tasks(address=None, timeout=None, raise_on_missing_output=True,
                    _explain=False) -> dict:
    """Counts by function and state, as Ray's (``{"cluster": {"summary": ...}}``)."""
    reply = _asker(address)("list_tasks", {"filters": [], "limit": None})
    rows = reply["rows"]
    summary = _counts(rows, "func_or_class_name", lambda r: {"type": r["type"]})
    return {"cluster": {"summary": summary, "total_tasks": len(rows),
                        "total_actor_tasks": sum(r["type"] == "ACTOR_TASK" for r in rows),
                        "total_actor_scheduled": sum(
                            r["type"] == "ACTOR_CREATION_TASK" for r in rows),
                        "summary_by": "func_name", "dropped": reply["dropped"]}}


def summarize_actors(address=None, timeout=None, raise_on_missing_output=True,
                     _explain=False) -> dict:
    rows = _asker(address)("list_actors", {"filters": [], "limit": None})
    return {"cluster": {"summary": _counts(rows, "class_name", lambda r: {}),
                        "total_actors": len(rows), "summary_by": "class"}}


def summarize_objects(address=None, timeout=None, raise_on_missing_output=True,
                      _explain=False) -> dict:
    rows = _asker(address)("list_objects", {"filters": [], "limit": None})
    summary = {}
    for row in rows:
        where = "inline" if row["inline"] else "shared_memory"
        entry = summary.setdefault(where, {"total_objects": 0, "total_size_mb": 0.0,
                                           "state_counts": {}})
        entry["total_objects"] += 1
        entry["total_size_mb"] += row["size_bytes"] / 2 ** 20
        entry["state_counts"][row["state"]] = entry["state_counts"].get(row["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_objects": len(rows),
                        "total_size_mb": sum(r["size_bytes"] for r in rows) / 2 ** 20,
                        "summary_by": "storage"}}


__all__ = ["list_tasks", "get_task", "list_actors", "get_actor", "list_nodes", "get_node",
           "list_objects", "list_placement_groups", "summarize_tasks", "summarize_actors",
           "summarize_objects", "StateRow", "DEFAULT_LIMIT"]
