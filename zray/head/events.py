"""The head's bounded history of task events (socket-free; unit-tested).

One ``TaskAttempt`` row per (task id, attempt), as Ray's task events are kept
per attempt: its state, the times it was submitted, scheduled, started and
ended, its node and worker pid, and an error blob when it failed.  At most
``Config.task_events_max`` rows are kept; the oldest go first and are counted
(``dropped``), as Ray's GCS does with ``task_events_max_num_task_in_gcs``.

Times are wall-clock seconds.  The head calls with its monotonic ``now``; the
store turns it into wall time with one offset taken when it was made.  Start
and end come from the head too: the end is when the head heard of the finish,
the start that minus the ``run_s`` the worker measured, so durations are the
worker's own.

Rows hold no reference to the head's task records: a record goes when its
task is done and its results are gone, but its row stays for the state API,
the timeline and ``zray summary``.  Error blobs are kept as bytes and only
unpickled by the client that asks (``zray.util.state``), never in the head.
"""

from __future__ import annotations

import time

from zray.serialization import KIND_ERROR

# Ray's task states (ray.util.state.common.TaskState values) this store uses.
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"   # zray's own (Ray reports FAILED with a TaskCancelledError)

NORMAL_TASK = "NORMAL_TASK"
ACTOR_TASK = "ACTOR_TASK"
ACTOR_CREATION_TASK = "ACTOR_CREATION_TASK"


class TaskAttempt:
    __slots__ = ("task_id", "attempt", "name", "kind", "job_id", "actor_id", "submitter",
                 "state", "node_id", "worker_pid", "submitted", "scheduled", "start",
                 "end", "error", "retried", "events")

    def __init__(self, task_id, attempt, name, kind, job_id, actor_id, submitter, when):
        self.task_id = task_id
        self.attempt = attempt
        self.name = name
        self.kind = kind
        self.job_id = job_id
        self.actor_id = actor_id
        self.submitter = submitter      # the submitting peer's socket identity
        self.state = PENDING_NODE_ASSIGNMENT
        self.node_id = None
        self.worker_pid = None
        self.submitted = when
        self.scheduled = None
        self.start = None
        self.end = None
        self.error = None               # pickled exception (bytes) or text (str)
        self.retried = False
        self.events = [(PENDING_NODE_ASSIGNMENT, when)]

    def row(self) -> dict:
        """Ray's field names (``ray.util.state.common.TaskState``); ids as hex."""
        start, end = self.start, self.end
        return {
            "task_id": self.task_id.hex(), "attempt_number": self.attempt,
            "name": self.name, "func_or_class_name": self.name, "type": self.kind,
            "state": self.state,
            "job_id": self.job_id.hex() if self.job_id else None,
            "actor_id": self.actor_id.hex() if self.actor_id else None,
            "node_id": self.node_id.hex() if self.node_id else None,
            "worker_pid": self.worker_pid,
            "creation_time_ms": _ms(self.submitted),
            "scheduled_time_ms": _ms(self.scheduled),
            "start_time_ms": _ms(start), "end_time_ms": _ms(end),
            "duration_ms": (end - start) * 1e3 if start is not None and end is not None
            else None,
            "retried": self.retried,
            "submitter": _peer(self.submitter),
            "events": [{"state": s, "time_ms": _ms(t)} for s, t in self.events],
            "error": self.error,
        }


def error_of(results):
    """A failed task's pickled error (its first error result), for its event."""
    for _object_id, kind, data, _size, _contained in results:
        if kind == KIND_ERROR:
            return data
    return None


def _ms(t):
    return None if t is None else t * 1e3


def _peer(identity):
    """A socket identity as text: its role letter and the rest in hex."""
    if not identity:
        return None
    return identity[:1].decode("ascii", "replace") + identity[1:].hex()


class TaskEvents:
    """Per-attempt rows, in the order they were made, at most ``max_rows``."""

    def __init__(self, max_rows: int, monotonic_now: float | None = None):
        self.max_rows = max(1, int(max_rows))
        now = time.monotonic() if monotonic_now is None else monotonic_now
        self.offset = time.time() - now     # monotonic -> wall clock
        self.rows = {}                      # (task id, attempt) -> TaskAttempt
        self.dropped = 0

    def wall(self, now: float) -> float:
        return now + self.offset

    def _get(self, task_id, attempt):
        return self.rows.get((task_id, attempt))

    def submitted(self, spec, submitter, now, kind=NORMAL_TASK):
        key = (spec.task_id, spec.attempt)
        rows = self.rows
        if key in rows:          # resubmitted (lineage rebuild): the same attempt again
            rows[key] = rows.pop(key)
            return rows[key]
        if len(rows) >= self.max_rows:
            del rows[next(iter(rows))]
            self.dropped += 1
        row = rows[key] = TaskAttempt(spec.task_id, spec.attempt, spec.name, kind,
                                      spec.job_id, spec.actor_id, submitter, now + self.offset)
        return row

    def waiting(self, task_id, attempt, now):
        row = self._get(task_id, attempt)
        if row is not None:
            row.state = PENDING_ARGS_AVAIL
            row.events.append((PENDING_ARGS_AVAIL, now + self.offset))

    def scheduled(self, task_id, attempt, node_id, now):
        row = self._get(task_id, attempt)
        if row is not None:
            when = now + self.offset
            row.state, row.node_id, row.scheduled = SUBMITTED_TO_WORKER, node_id, when
            row.events.append((SUBMITTED_TO_WORKER, when))

    def finished(self, task_id, attempt, ok, now, run_s=None, node_id=None, pid=None,
                 error=None):
        """The attempt ended: ``ok`` FINISHED, else FAILED with ``error``.  With
        ``run_s`` it also started (``run_s`` before the end)."""
        row = self._get(task_id, attempt)
        if row is None:
            return None
        end = now + self.offset
        if run_s is not None:
            row.start = end - max(0.0, float(run_s))
            row.events.append((RUNNING, row.start))
        row.end = end
        row.state = FINISHED if ok else FAILED
        row.events.append((row.state, end))
        if node_id is not None:
            row.node_id = node_id
        if pid is not None:
            row.worker_pid = pid
        if error is not None:
            row.error = error
        return row

    def ended(self, task_id, attempt, state, now, error=None):
        """Failed or cancelled without a worker's report (node's word, a dependency's
        error, a cancel); a row that already ended keeps its first end."""
        row = self._get(task_id, attempt)
        if row is None:
            return
        if row.end is not None:      # a worker's failure report, then the cancel
            if state == CANCELLED:
                row.state = CANCELLED
            return
        row.end = now + self.offset
        row.state = state
        row.events.append((state, row.end))
        if error is not None:
            row.error = error

    def retried(self, task_id, attempt, now, error=None):
        """Attempt ``attempt`` failed and attempt+1 was made (same name and submitter)."""
        row = self._get(task_id, attempt)
        if row is None:
            return
        if row.end is None:
            row.end = now + self.offset
            row.state = FAILED
            row.events.append((FAILED, row.end))
        if error is not None and row.error is None:
            row.error = error
        row.retried = True
        key = (task_id, attempt + 1)
        if key not in self.rows:
            if len(self.rows) >= self.max_rows:
                del self.rows[next(iter(self.rows))]
                self.dropped += 1
            self.rows[key] = TaskAttempt(task_id, attempt + 1, row.name, row.kind,
                                         row.job_id, row.actor_id, row.submitter,
                                         now + self.offset)

    def select(self, filters=(), limit=None) -> list:
        """Rows (as dicts) passing every ``(key, op, value)`` filter, newest last."""
        out = []
        for attempt in self.rows.values():
            row = attempt.row()
            if matches(row, filters):
                out.append(row)
        if limit is not None and len(out) > limit:
            out = out[-limit:]
        return out


# --- filters (shared with the other lists) ------------------------------------------

def matches(row: dict, filters) -> bool:
    """Ray's state-API filters: ``(key, "=" or "!=", value)``, compared as text
    (case-insensitive for states), and a missing key never matches ``=``."""
    for key, op, value in filters or ():
        if op not in ("=", "!="):
            raise ValueError(f"unsupported filter predicate {op!r}: use '=' or '!='")
        have = row.get(key)
        equal = have is not None and _text(have).lower() == _text(value).lower()
        if op == "=" and not equal or op == "!=" and equal:
            return False
    return True


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

