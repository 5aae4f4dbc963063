"""What the dashboard shows, read from the head through the state API (no aiohttp).

Every method is blocking (the state API asks the head over its own short-lived
DEALER socket, CURVE-authenticated with the cluster key) and returns plain
JSON-able values; the server runs them in a thread pool.  ``Sampler`` keeps
the last minutes of resource usage, which the head does not remember.
"""

from __future__ import annotations

import collections
import time

from zray import _timeline
from zray._admin import query
from zray.util import state

STATES_ORDER = ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
                "RUNNING", "FINISHED", "FAILED", "CANCELLED")
TIMEOUT_S = 10.0


def _plain(rows) -> list:
    return [dict(r) for r in rows]


class StateReader:
    """The cluster at ``endpoint`` as the dashboard's API serves it."""

    def __init__(self, endpoint: str, config):
        self.endpoint = endpoint
        self.config = config

    def ask(self, name: str, args=None):
        return query(self.endpoint, name, args, timeout_s=TIMEOUT_S, config=self.config)

    # --- the state API ---------------------------------------------------------------

    def nodes(self) -> list:
        return _plain(state.list_nodes(self.endpoint, limit=None))

    def tasks(self, filters=(), limit: int | None = 1000) -> list:
        """``list_tasks(detail=True)``'s rows, newest first: the head builds only
        the newest ``limit`` (filters on the head's keys, as list_tasks')."""
        reply = self.ask("list_tasks", {"filters": list(filters), "limit": limit,
                                        "newest": True})
        rows = reply["rows"]
        for row in rows:
            row["error_type"], row["error_message"] = state.decode_error(row.pop("error", None))
        return rows

    def task_counts(self) -> dict:
        """Attempts by state, total kept and dropped (no row per task built)."""
        return self.ask("task_counts")

    def task(self, task_id: str) -> dict | None:
        row = state.get_task(task_id, self.endpoint)
        return dict(row) if row is not None else None

    def task_summary(self) -> dict:
        return state.summarize_tasks(self.endpoint)["cluster"]

    def actors(self, filters=(), limit: int | None = 1000) -> list:
        return _plain(state.list_actors(self.endpoint, filters=list(filters), limit=limit,
                                        detail=True))

    def placement_groups(self) -> list:
        return _plain(state.list_placement_groups(self.endpoint, limit=None, detail=True))

    def objects(self) -> dict:
        return state.summarize_objects(self.endpoint)["cluster"]

    def timeline(self) -> list:
        return _timeline.timeline(address=self.endpoint)

    # --- the head's other read-only queries ------------------------------------------

    def logs(self, node_id=None, pid=None, since: int = 0, tail: int | None = 1000) -> dict:
        reply = self.ask("logs", {"node_id": node_id, "pid": pid, "since": since,
                                  "tail": tail})
        chunks = [{"seq": seq, "time": when, "node_id": node, "pid": p, "stream": stream,
                   "text": text} for seq, when, node, p, stream, text in reply["chunks"]]
        return {"chunks": chunks, "next": reply["next"]}

    def log_sources(self) -> list:
        """Workers with output kept, newest output first, named by what ran there."""
        sources = self.ask("log_sources")
        actors = {(a.get("node_id"), a.get("pid")): a for a in self.actors(limit=None)}
        for source in sources:
            actor = actors.get((source["node_id"], source["pid"]))
            source["actor_id"] = actor["actor_id"] if actor else None
            source["label"] = actor["class_name"] if actor else "worker"
        sources.sort(key=lambda s: -s["last_time"])
        return sources

    def metrics_text(self) -> str:
        return self.ask("metrics")

    def usage(self) -> dict:
        """Nodes, resources in use and the object stores: three cheap queries."""
        nodes = self.ask("nodes")
        total = _plain_resources(self.ask("cluster_resources"))
        free = self.ask("available_resources")
        stores = [n.get("ObjectStore") or {} for n in nodes if n["Alive"]]
        return {
            "nodes_alive": sum(n["Alive"] for n in nodes),
            "nodes_dead": sum(not n["Alive"] for n in nodes),
            "resources_total": total,
            "resources_used": {k: max(0.0, v - free.get(k, 0.0)) for k, v in total.items()},
            "object_store_used_bytes": sum(s.get("used_bytes", 0) for s in stores),
            "object_store_bound_bytes": sum(s.get("bound_bytes", 0) for s in stores),
            "object_store_spilled_bytes": sum(s.get("spilled_bytes", 0) for s in stores),
            "time": time.time(),
        }

    def cluster(self) -> dict:
        """The overview's numbers: ``usage()``, and task and actor counts."""
        out = self.usage()
        tasks = self.task_counts()
        actors = collections.Counter(a["state"] for a in self.ask("list_actors",
                                                                  {"limit": None}))
        out.update(tasks_by_state=tasks["by_state"],
                   tasks_total=sum(tasks["by_state"].values()),
                   tasks_dropped=tasks["dropped"], actors_by_state=dict(actors))
        return out


def _plain_resources(resources: dict) -> dict:
    """Resources without the per-node markers and placement-group bundles."""
    return {k: v for k, v in resources.items()
            if not k.startswith("node:") and "_group_" not in k}


class Sampler:
    """The last ``keep`` samples of cluster usage, one every ``interval_s``."""

    def __init__(self, reader: StateReader, interval_s: float = 2.0, keep: int = 300):
        self.reader = reader
        self.interval_s = interval_s
        self.samples = collections.deque(maxlen=keep)

    def sample(self) -> None:
        c = self.reader.usage()
        self.samples.append({
            "time": c["time"],
            "cpu_used": c["resources_used"].get("CPU", 0.0),
            "cpu_total": c["resources_total"].get("CPU", 0.0),
            "gpu_used": c["resources_used"].get("GPU", 0.0),
            "gpu_total": c["resources_total"].get("GPU", 0.0),
            "store_used": c["object_store_used_bytes"],
            "store_bound": c["object_store_bound_bytes"],
        })

    def history(self) -> list:
        return list(self.samples)


def parse_metrics(text: str) -> list:
    """Prometheus text as families: ``[{"name", "type", "help", "samples":
    [{"name", "labels", "value"}]}]`` (the head writes a simple subset)."""
    families, by_name = [], {}

    def family(name):
        if name not in by_name:
            by_name[name] = {"name": name, "type": "untyped", "help": "", "samples": []}
            families.append(by_name[name])
        return by_name[name]
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) == 4:
                family(parts[2])["help" if parts[1] == "HELP" else "type"] = parts[3]
            continue
        if not line or line.startswith("#"):
            continue
        name, labels, value = _sample(line)
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in by_name:
                base = name[:-len(suffix)]
        family(base)["samples"].append({"name": name, "labels": labels, "value": value})
    return families


def _sample(line: str):
    labels = {}
    if "{" in line:
        name, _, rest = line.partition("{")
        body, _, value = rest.rpartition("}")
        for part in _split_labels(body):
            key, _, val = part.partition("=")
            labels[key.strip()] = val.strip().strip('"').replace('\\"', '"')
    else:
        name, _, value = line.partition(" ")
    try:
        number = float(value.split()[0])
    except (ValueError, IndexError):
        number = None
    return name.strip(), labels, number


def _split_labels(body: str) -> list:
    out, current, quoted, escaped = [], "", False, False
    for ch in body:
        if ch == "," and not quoted:
            out.append(current)
            current = ""
            continue
        if ch == '"' and not escaped:
            quoted = not quoted
        escaped = ch == "\\" and not escaped
        current += ch
    if current.strip():
        out.append(current)
    return out


__all__ = ["StateReader", "Sampler", "parse_metrics", "STATES_ORDER"]
