"""``zray.timeline``: task executions as a Chrome trace (chrome://tracing, Perfetto).

One complete ("X") slice per task attempt that ran, on a track per worker
(``tid``: the worker's pid) grouped per node (``pid``: the node id, named by
a metadata event), named after the function, its args holding the task id,
attempt and state.  A task submitted by another task gets a flow arrow
("s"/"f" events) from the submitter's slice to its own.

Times are the head's: each slice ends when the head heard the task finish and
lasts the run time the worker measured (see ``zray.head.events``).  Actor
method calls are in it too when actor workers report them
(``Config.actor_task_events``), on the actor's worker track, with the
worker's own times.
"""

from __future__ import annotations

import json


def build_trace(rows: list) -> list:
    """Chrome trace events from task rows (``zray.head.events.row_of``)."""
    events, nodes, threads = [], {}, set()
    for row in rows:
        start, end = row.get("start_time_ms"), row.get("end_time_ms")
        if start is None or end is None:
            continue
        node = row.get("node_id") or "unknown"
        tid = row.get("worker_pid") or 0
        nodes.setdefault(node, len(nodes))
        threads.add((node, tid))
        events.append({
            "cat": "task", "name": row.get("name") or "?", "ph": "X",
            "pid": node, "tid": tid, "ts": start * 1e3,
            "dur": max(0.0, end - start) * 1e3,
            "args": {"task_id": row["task_id"], "attempt": row.get("attempt_number", 0),
                     "state": row.get("state"), "job_id": row.get("job_id")},
        })
    meta = [{"name": "process_name", "ph": "M", "pid": node, "tid": 0,
             "args": {"name": f"node {node[:12]}"}} for node in nodes]
    meta += [{"name": "thread_name", "ph": "M", "pid": node, "tid": tid,
              "args": {"name": f"worker {tid}"}} for node, tid in sorted(threads, key=str)]
    return meta + events + _flows(rows, events)


def _flows(rows, slices) -> list:
    """Arrows from the slice of the task that submitted a task (on the worker
    whose pid is the row's ``submitter_pid``, running when it was submitted, or
    the nearest within a second) to the submitted task's slice."""
    by_tid = {}
    for ev in slices:
        by_tid.setdefault(ev["tid"], []).append(ev)
    mine = {(ev["args"]["task_id"], ev["args"]["attempt"]): ev for ev in slices}
    out = []
    for row in rows:
        pid, created = row.get("submitter_pid"), row.get("creation_time_ms")
        target = mine.get((row["task_id"], row.get("attempt_number", 0)))
        if not pid or created is None or target is None:
            continue
        ts = created * 1e3
        source = _nearest(by_tid.get(pid, ()), ts)
        if source is None:
            continue
        # the head's clock: its view of the submitter's slice may miss the submit
        # time by the messages' latency, so the arrow starts inside the slice
        ts = min(max(ts, source["ts"]), source["ts"] + source["dur"])
        flow = len(out) // 2 + 1
        out.append({"name": "submit", "cat": "flow", "ph": "s", "id": flow,
                    "pid": source["pid"], "tid": pid, "ts": ts})
        out.append({"name": "submit", "cat": "flow", "ph": "f", "bp": "e", "id": flow,
                    "pid": target["pid"], "tid": target["tid"], "ts": target["ts"]})
    return out


def _nearest(slices, ts, within_us=1e6):
    """The slice containing ``ts``, else the nearest within ``within_us``."""
    best, best_gap = None, within_us
    for ev in slices:
        gap = max(ev["ts"] - ts, ts - ev["ts"] - ev["dur"], 0.0)
        if gap <= best_gap:
            best, best_gap = ev, gap
            if gap == 0.0:
                break
    return best


def timeline(filename: str | None = None, address=None):
    """Ray's ``ray.timeline``: the trace events, or, with ``filename``, write
    them there as JSON (and return None)."""
    from zray.util.state import _asker
    trace = build_trace(_asker(address)("timeline"))
    if filename is None:
        return trace
    with open(filename, "w") as f:
        json.dump(trace, f)
    return None


__all__ = ["timeline", "build_trace"]
