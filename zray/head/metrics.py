"""Metrics at the head, in Prometheus' text format (socket-free; unit-tested).

Two kinds:

- **Cluster metrics**, read from the head's tables when scraped: tasks and
  actors by state, nodes alive, resources used and total per node, each
  node's object store (from its ``STORE_STATS``), the scheduler's queue.
- **User metrics** (``zray.util.metrics.Counter/Gauge/Histogram``, recorded in
  any driver or worker): each record reaches the head in a ``record_metrics``
  query (no reply) and is aggregated here per (name, tags): counters add,
  gauges keep the last value, histograms count per bucket.

The exposition format is written by hand (a few lines: ``# HELP``, ``# TYPE``,
``name{label="value"} number``) rather than with ``prometheus_client``: the
head would otherwise import a dependency, and keep a second registry, to print
numbers it already holds.
"""

from __future__ import annotations

import bisect
import math
import re

from zray.head.events import STATE

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
_NAME_OK = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str) -> str:
    """A Prometheus-safe name: other characters become ``_``."""
    name = _NAME_OK.sub("_", str(name))
    return "_" + name if name[:1].isdigit() else name


def _labels(tags) -> str:
    if not tags:
        return ""
    inner = ",".join(f'{metric_name(k)}="{_escape(v)}"' for k, v in tags)
    return "{" + inner + "}"


def _escape(value) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _number(value) -> str:
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class UserMetrics:
    """User metrics from every process, by name then by sorted tag tuple."""

    def __init__(self, max_series: int = 10_000):
        self.metrics = {}       # name -> [kind, description, boundaries, {tags: value}]
        self.max_series = max_series
        self.refused = 0        # records of a name recorded before as another kind, etc.

    def record(self, records) -> None:
        """``records``: (name, kind, description, tags dict, value, boundaries)."""
        for record in records or ():
            try:
                self._record(*record)
            except (TypeError, ValueError):
                self.refused += 1

    def _record(self, name, kind, description, tags, value, boundaries):
        name = metric_name(name)
        if kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(kind)
        value = float(value)
        entry = self.metrics.get(name)
        if entry is None:
            bounds = tuple(sorted(float(b) for b in boundaries or ()))
            entry = self.metrics[name] = [kind, str(description or ""), bounds, {}]
        if entry[0] != kind:
            raise ValueError(f"{name} is a {entry[0]}")
        series = entry[3]
        key = tuple(sorted((str(k), str(v)) for k, v in (tags or {}).items()))
        if key not in series and len(series) >= self.max_series:
            raise ValueError("too many series")
        if kind == COUNTER:
            if value < 0:
                raise ValueError("a counter only goes up")
            series[key] = series.get(key, 0.0) + value
        elif kind == GAUGE:
            series[key] = value
        else:
            counts = series.get(key)
            if counts is None:     # a count per boundary, +Inf last, then sum and count
                counts = series[key] = [0] * (len(entry[2]) + 1) + [0.0, 0]
            counts[bisect.bisect_left(entry[2], value)] += 1
            counts[-2] += value
            counts[-1] += 1

    def lines(self) -> list:
        out = []
        for name, (kind, description, bounds, series) in sorted(self.metrics.items()):
            out.append(f"# HELP {name} {_escape(description)}")
            out.append(f"# TYPE {name} {kind}")
            for tags, value in series.items():
                if kind != HISTOGRAM:
                    out.append(f"{name}{_labels(tags)} {_number(value)}")
                    continue
                running = 0
                for bound, count in zip(bounds + (math.inf,), value):
                    running += count
                    out.append(f"{name}_bucket{_labels(tags + (('le', _number(bound)),))} "
                               f"{running}")
                out.append(f"{name}_sum{_labels(tags)} {_number(value[-2])}")
                out.append(f"{name}_count{_labels(tags)} {value[-1]}")
        return out


def _family(out, name, kind, help_text, samples):
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for tags, value in samples:
        out.append(f"{name}{_labels(tags)} {_number(value)}")


def cluster_lines(head) -> list:
    """The cluster's metrics from the head's tables (``head``: a HeadState)."""
    from zray.head.records import NodeState
    out = []
    task_states = {}
    for row in head.events.rows.values():
        task_states[row[STATE]] = task_states.get(row[STATE], 0) + 1
    for row in head.events.pending(head.tasks):
        task_states[row["state"]] = task_states.get(row["state"], 0) + 1
    _family(out, "zray_tasks", GAUGE, "Task attempts in the head's event history (and "
            "tasks waiting to be scheduled), by state.",
            [((("State", s),), n) for s, n in sorted(task_states.items())])
    _family(out, "zray_task_events_dropped_total", COUNTER,
            "Task attempts dropped from the event history (task_events_max).",
            [((), head.events.dropped)])
    actor_states = {}
    for actor in head.actors.values():
        actor_states[actor.state.value] = actor_states.get(actor.state.value, 0) + 1
    _family(out, "zray_actors", GAUGE, "Actors by state.",
            [((("State", s),), n) for s, n in sorted(actor_states.items())])
    nodes = list(head.nodes.values())
    alive = [n for n in nodes if n.state is NodeState.ALIVE]
    _family(out, "zray_cluster_active_nodes", GAUGE, "Nodes alive.", [((), len(alive))])
    _family(out, "zray_cluster_dead_nodes", GAUGE, "Nodes dead.",
            [((), len(nodes) - len(alive))])
    total, used = [], []
    store = {"used_bytes": [], "bound_bytes": [], "spilled_bytes": [], "spilled_objects": []}
    for node in alive:
        node_id = node.node_id.hex()
        for name, amount in sorted(node.total.items()):
            tags = (("Name", name), ("NodeId", node_id))
            total.append((tags, amount))
            free = max(0.0, min(node.available.get(name, 0.0), amount))
            used.append((tags, amount - free))
        stats = node.info.get("object_store") or {}
        for key, samples in store.items():
            if key in stats:
                samples.append(((("NodeId", node_id),), stats[key]))
    _family(out, "zray_resources_total", GAUGE, "Resources of alive nodes.", total)
    _family(out, "zray_resources_used", GAUGE, "Resources held by tasks and actors.", used)
    for key, samples in store.items():
        _family(out, f"zray_object_store_{key}", GAUGE,
                f"The node's object store: {key.replace('_', ' ')} (STORE_STATS).", samples)
    _family(out, "zray_scheduler_queue_length", GAUGE,
            "Tasks waiting in the head's queues for a node.",
            [((), sum(len(q) for q in head.queues.values()))])
    return out


def render(head) -> str:
    """The whole exposition: cluster metrics, then user metrics."""
    return "\n".join(cluster_lines(head) + head.user_metrics.lines()) + "\n"


__all__ = ["UserMetrics", "render", "cluster_lines", "metric_name"]
