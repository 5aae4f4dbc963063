"""The head's bounded history of task events (socket-free; unit-tested).

One row per (task id, attempt), as Ray's task events are kept per attempt:
its state, the times it was submitted, scheduled, started and ended, its node
and worker pid, and an error blob when it failed.  A task the scheduler sends
to a node gets its row when its attempt ends (``assigned`` only notes the
time on its record); others (leased, actor calls) when first scheduled, or
when they end before that.  Until then the head's live task record answers for
it (``pending``), which spares the hot path a row per task in flight (~0.25
KB each) and one of the two tuples per task.  At most
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

import collections
import itertools
import operator
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

# the head's TaskState values of a task not scheduled yet -> Ray's state
_WAITING_STATES = {"WAITING_FOR_DEPENDENCIES": PENDING_ARGS_AVAIL,
                   "PENDING_NODE_ASSIGNMENT": PENDING_NODE_ASSIGNMENT}

NORMAL_TASK = "NORMAL_TASK"
ACTOR_TASK = "ACTOR_TASK"
ACTOR_CREATION_TASK = "ACTOR_CREATION_TASK"


# A row is a tuple of these fields (ids as bytes, times wall-clock seconds):
# a tuple of plain values is soon untracked by the cyclic garbage collector, so
# 100,000 kept rows cost its full collections nothing (objects with slots or
# lists cost about 5 us a task in the head, as each collection scans them).
FIELDS = ("task_id", "attempt", "name", "kind", "job_id", "actor_id", "submitter",
          "state", "node_id", "worker_pid", "submitted", "scheduled", "start", "end",
          "error", "retried")
(TASK_ID, ATTEMPT, NAME, KIND, JOB_ID, ACTOR_ID, SUBMITTER, STATE, NODE_ID, WORKER_PID,
 SUBMITTED, SCHEDULED, START, END, ERROR, RETRIED) = range(len(FIELDS))


# row keys whose value is a tuple field of text, as is (for newest's quick filter)
_TEXT_FIELDS = {"state": STATE, "name": NAME, "func_or_class_name": NAME, "type": KIND}


def _changed(t, changes):
    out = list(t)
    for index, value in changes:
        out[index] = value
    return tuple(out)


def _key(task_id, attempt):
    """A row's key: the task id itself for a first attempt (no new bytes per
    task), with the attempt appended for the others."""
    return task_id if not attempt else task_id + attempt.to_bytes(8, "big")


def row_of(t) -> dict:
    """Ray's field names (``ray.util.state.common.TaskState``); ids as hex."""
    start, end = t[START], t[END]
    events = [(PENDING_NODE_ASSIGNMENT, t[SUBMITTED])]
    if t[SCHEDULED] is not None:
        events.append((SUBMITTED_TO_WORKER, t[SCHEDULED]))
    if start is not None:
        events.append((RUNNING, start))
    if end is not None:
        events.append((t[STATE], end))
    return {
        "task_id": t[TASK_ID].hex(), "attempt_number": t[ATTEMPT],
        "name": t[NAME], "func_or_class_name": t[NAME], "type": t[KIND],
        "state": t[STATE],
        "job_id": t[JOB_ID].hex() if t[JOB_ID] else None,
        "actor_id": t[ACTOR_ID].hex() if t[ACTOR_ID] else None,
        "node_id": t[NODE_ID].hex() if t[NODE_ID] else None,
        "worker_pid": t[WORKER_PID],
        "creation_time_ms": _ms(t[SUBMITTED]),
        "scheduled_time_ms": _ms(t[SCHEDULED]),
        "start_time_ms": _ms(start), "end_time_ms": _ms(end),
        "duration_ms": (end - start) * 1e3 if start is not None and end is not None
        else None,
        "retried": t[RETRIED],
        "submitter": _peer(t[SUBMITTER]),
        "events": [{"state": s, "time_ms": _ms(w)} for s, w in events],
        "error": t[ERROR],
    }


def kind_of(spec) -> str:
    if spec.actor_options is not None:      # a creation carries its actor's id too
        return ACTOR_CREATION_TASK
    return ACTOR_TASK if spec.actor_id is not None else NORMAL_TASK


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
        # _key(task id, attempt) -> row tuple, oldest first; keys are bytes and
        # rows change by one new tuple each, as every tracked allocation brings
        # the next garbage collection nearer.  A plain dict and a deque of its
        # keys in order (what to drop first): 45 bytes a row less than an
        # OrderedDict, and dropping a plain dict's first key would cost a scan
        # past every key dropped before.
        self.rows = {}
        self.order = collections.deque()
        self.dropped = 0
        # the last few monotonic times turned into wall time (a row's submit,
        # schedule and end times), and the results: the tasks of one batch
        # share one float instead of 24 bytes each
        self._walls = {}

    def wall(self, now: float) -> float:
        out = self._walls.get(now)
        if out is None:
            if len(self._walls) >= 8:
                self._walls.clear()
            out = self._walls[now] = now + self.offset
        return out

    def clear(self) -> None:
        self.rows.clear()
        self.order.clear()

    def _add(self, key, row):
        rows = self.rows
        while len(rows) >= self.max_rows:
            if rows.pop(self.order.popleft(), None) is not None:
                self.dropped += 1
        rows[key] = row
        self.order.append(key)

    def _make(self, task, state, node_id, scheduled):
        """A new row for ``task`` (a head Task record): made when it is first
        scheduled (or ends before that), not when submitted, to spare the hot
        path one row per task; until then list_tasks reads the live record.
        A task sent to a node (``assigned``) gives its node and time here."""
        spec = task.spec
        since = getattr(task, "scheduled", None)
        if since is not None:
            task.scheduled = None
            if scheduled is None:
                scheduled = self.wall(since)
            if node_id is None:
                node_id = task.node_id
        self._add(_key(spec.task_id, spec.attempt), (
            spec.task_id, spec.attempt, spec.name, kind_of(spec), spec.job_id,
            spec.actor_id, task.owner, state, node_id, None, self.wall(task.created),
            scheduled, None, None, None, False))

    def assigned(self, task, node_id, now):
        """The scheduler sent the task to a node: its row waits for its end
        (its record keeps ``now`` in ``scheduled``), unless its attempt has one."""
        spec = task.spec
        if _key(spec.task_id, spec.attempt) in self.rows:
            self.scheduled(task, node_id, now)
        else:
            task.scheduled = now

    def keep(self, task):
        """Make the row of an assigned task now (before its record forgets its
        node or attempt: a release, a re-run)."""
        if getattr(task, "scheduled", None) is not None:
            spec = task.spec
            if _key(spec.task_id, spec.attempt) in self.rows:
                task.scheduled = None
            else:
                self._make(task, SUBMITTED_TO_WORKER, task.node_id, None)

    def scheduled(self, task, node_id, now):
        spec = task.spec
        key = _key(spec.task_id, spec.attempt)
        t = self.rows.get(key)
        if t is None:
            self._make(task, SUBMITTED_TO_WORKER, node_id, self.wall(now))
        else:        # one new tuple (each allocation brings the next GC nearer)
            self.rows[key] = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], SUBMITTED_TO_WORKER,
                              node_id, t[9], t[10], self.wall(now), t[12], t[13], t[14],
                              t[15])

    def finished(self, task_id, attempt, ok, now, run_s=None, node_id=None, pid=None,
                 error=None, task=None):
        """The attempt ended: ``ok`` FINISHED, else FAILED with ``error``.  With
        ``run_s`` it also started (``run_s`` before the end).  ``task``: its
        record, whose row is made here if ``assigned`` put it off."""
        key = _key(task_id, attempt)
        t = self.rows.get(key)
        if t is None:
            if task is None or getattr(task, "scheduled", None) is None:
                return
            spec = task.spec
            end = self.wall(now)
            scheduled, task.scheduled = task.scheduled, None
            self._add(key, (
                spec.task_id, spec.attempt, spec.name, kind_of(spec), spec.job_id,
                spec.actor_id, task.owner, FINISHED if ok else FAILED,
                task.node_id if node_id is None else node_id, pid, self.wall(task.created),
                self.wall(scheduled), None if run_s is None else end - max(0.0, float(run_s)),
                end, error, False))
            return
        end = self.wall(now)
        start = t[START] if run_s is None else end - max(0.0, float(run_s))
        self.rows[key] = (t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                          FINISHED if ok else FAILED, t[8] if node_id is None else node_id,
                          t[9] if pid is None else pid, t[10], t[11], start, end,
                          t[14] if error is None else error, t[15])

    def ended(self, task, state, now, error=None):
        """Failed or cancelled without a worker's report (node's word, a dependency's
        error, a cancel); a row that already ended keeps its first end."""
        spec = task.spec
        key = _key(spec.task_id, spec.attempt)
        t = self.rows.get(key)
        if t is None:
            self._make(task, state, task.node_id, None)
            t = self.rows[key]
        elif t[END] is not None:       # a worker's failure report, then the cancel
            if state == CANCELLED:
                self.rows[key] = _changed(t, ((STATE, CANCELLED),))
            return
        changes = [(STATE, state), (END, now + self.offset)]
        if error is not None:
            changes.append((ERROR, error))
        self.rows[key] = _changed(t, changes)

    def retried(self, task, now):
        """The task's current attempt failed and will run again as the next one
        (whose row is made when it is scheduled)."""
        spec = task.spec
        key = _key(spec.task_id, spec.attempt)
        t = self.rows.get(key)
        if t is None:
            self._make(task, FAILED, task.node_id, None)
            t = self.rows[key]
        changes = [(RETRIED, True)]
        if t[END] is None:
            changes += [(STATE, FAILED), (END, now + self.offset)]
        self.rows[key] = _changed(t, changes)

    def actor_calls_ran(self, node_id, pid, calls, submitter=None) -> None:
        """An actor worker's report of method calls it ran (``zray.worker.call_events``):
        each ``(task_id, attempt, name, job_id, actor_id, end, run_s, ok, error)``
        with the worker's wall-clock ``end``.  A call the head registered keeps
        its row (its submit time) and gains its run; others get a row here."""
        for task_id, attempt, name, job_id, actor_id, end, run_s, ok, error in calls:
            key = _key(task_id, attempt)
            start = end - max(0.0, float(run_s))
            t = self.rows.get(key)
            if t is None:
                self._add(key, (task_id, attempt, name, ACTOR_TASK, job_id, actor_id,
                                submitter, FINISHED if ok else FAILED, node_id, pid,
                                start, None, start, end, error, False))
                continue
            state = t[STATE] if t[END] is not None else (FINISHED if ok else FAILED)
            self.rows[key] = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], state, node_id, pid,
                              t[10], t[11], start, end, t[14] if error is None else error,
                              t[15])

    def has(self, task_id, attempt) -> bool:
        return _key(task_id, attempt) in self.rows

    def live_row(self, task, state) -> dict:
        """The row of a task without one yet (from its head record)."""
        spec = task.spec
        since = getattr(task, "scheduled", None)
        node_id = task.node_id if since is not None else None
        return row_of((spec.task_id, spec.attempt, spec.name, kind_of(spec), spec.job_id,
                       spec.actor_id, task.owner, state, node_id, None,
                       task.created + self.offset,
                       None if since is None else since + self.offset,
                       None, None, None, False))

    def pending(self, tasks) -> list:
        """Rows of the head's live task records (``tasks``: id -> Task) that have
        no row yet: waiting for arguments or a node, or sent to one (``assigned``)."""
        out = []
        for task in tasks.values():
            state = _WAITING_STATES.get(task.state.value)
            if state is None and getattr(task, "scheduled", None) is not None:
                state = SUBMITTED_TO_WORKER
            if state is not None and not self.has(task.spec.task_id, task.spec.attempt):
                out.append(self.live_row(task, state))
        return out

    def newest(self, filters=(), limit=None, tasks=None) -> list:
        """Rows passing every filter, newest first (the waiting live records of
        ``tasks`` before the rest), building only the rows looked at: the newest
        ``limit`` cost the same however long the history is."""
        out = []
        waiting = self.pending(tasks) if tasks is not None else []
        # "=" on a text field is checked on the tuple first: a row is built only
        # for candidates (a search for the few FAILED in 100,000 builds few rows)
        quick = [(_TEXT_FIELDS[key], str(value).lower()) for key, op, value in filters or ()
                 if op == "=" and key in _TEXT_FIELDS]
        candidates = (t for t in reversed(self.rows.values())
                      if all(t[i] is not None and t[i].lower() == v for i, v in quick))
        for row in itertools.chain(reversed(waiting), map(row_of, candidates)):
            if matches(row, filters):
                out.append(row)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def counts(self, tasks=None) -> dict:
        """Attempts by state (with ``tasks``, the waiting live records too),
        without building rows."""
        out = dict(collections.Counter(map(operator.itemgetter(STATE), self.rows.values())))
        for row in self.pending(tasks) if tasks is not None else ():
            out[row["state"]] = out.get(row["state"], 0) + 1
        return out

    def select(self, filters=(), limit=None, tasks=None) -> list:
        """Rows (as dicts) passing every ``(key, op, value)`` filter, oldest first
        (with ``limit``: the newest ``limit``); with ``tasks`` (the head's live
        records), those not scheduled yet come last."""
        rows = list(map(row_of, self.rows.values()))
        if tasks is not None:
            rows += self.pending(tasks)
        out = [row for row in rows if matches(row, filters)]
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

