"""The head's task-event store and the Chrome trace built from it (no sockets)."""

from __future__ import annotations

import pickle

import pytest

from zray._timeline import build_trace
from zray.exceptions import RayTaskError
from zray.head.events import TaskEvents, matches
from zray.task_spec import TaskSpec
from zray.util.state import decode_error

NODE = b"n" * 16


def spec(i, name="f", attempt=0):
    s = TaskSpec(i.to_bytes(16, "big"), b"j" * 4, name, b"F" * 16, b"")
    s.attempt = attempt
    return s


class FakeTask:
    """What the store reads of the head's Task record."""

    def __init__(self, i, created=0.0, state="PENDING_NODE_ASSIGNMENT"):
        self.spec = spec(i)
        self.owner = b"Dx"
        self.created = created
        self.node_id = None
        self.state = type("S", (), {"value": state})()


def test_a_task_goes_from_submitted_to_finished_with_its_run_time():
    store = TaskEvents(10, monotonic_now=100.0)
    task = FakeTask(1, created=100.0)
    assert store.select() == []
    assert [r["state"] for r in store.select(tasks={1: task})] == ["PENDING_NODE_ASSIGNMENT"]
    store.scheduled(task, NODE, 100.5)
    store.finished((1).to_bytes(16, "big"), 0, True, 102.0, run_s=0.25, node_id=NODE,
                   pid=4321)
    (row,) = store.select(tasks={1: task})      # its row now, not the live record
    assert row["state"] == "FINISHED" and row["worker_pid"] == 4321
    assert row["node_id"] == NODE.hex() and row["name"] == "f"
    assert row["duration_ms"] == pytest.approx(250.0)
    assert row["end_time_ms"] - row["creation_time_ms"] == pytest.approx(2000.0, abs=1)
    assert [e["state"] for e in row["events"]] == [
        "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED"]


def test_the_oldest_rows_go_first_and_are_counted():
    store = TaskEvents(3, monotonic_now=0.0)
    tasks = [FakeTask(i, created=float(i)) for i in range(5)]
    for task in tasks:
        store.scheduled(task, NODE, task.created)
    assert [r["task_id"] for r in store.select()] == [
        (i).to_bytes(16, "big").hex() for i in (2, 3, 4)]
    assert store.dropped == 2
    store.finished((0).to_bytes(16, "big"), 0, True, 9.0)    # dropped: ignored
    store.scheduled(tasks[2], NODE, 9.0)          # scheduled again: updated in place
    assert store.select()[0]["scheduled_time_ms"] == pytest.approx(store.wall(9.0) * 1e3)


def test_rows_are_plain_tuples_the_garbage_collector_lets_go():
    import gc
    store = TaskEvents(10, monotonic_now=0.0)
    task = FakeTask(1)
    store.scheduled(task, NODE, 0.1)
    store.finished((1).to_bytes(16, "big"), 0, True, 1.0, run_s=0.5, pid=3)
    gc.collect()
    assert not any(gc.is_tracked(t) for t in store.rows.values())


def test_a_retry_ends_the_attempt_and_the_next_one_gets_its_own_row():
    store = TaskEvents(10, monotonic_now=0.0)
    task = FakeTask(7)
    tid = task.spec.task_id
    store.scheduled(task, NODE, 0.5)
    store.finished(tid, 0, False, 1.0, run_s=0.5, error=b"blob")
    store.retried(task, 1.0)
    task.spec.attempt = 1
    store.scheduled(task, NODE, 1.5)
    store.finished(tid, 1, True, 2.0, run_s=0.1)
    first, second = store.select()
    assert (first["attempt_number"], first["state"], first["retried"]) == (0, "FAILED", True)
    assert first["error"] == b"blob"
    assert (second["attempt_number"], second["state"]) == (1, "FINISHED")


def test_a_cancel_after_the_workers_failure_report_says_cancelled():
    store = TaskEvents(10, monotonic_now=0.0)
    task = FakeTask(8)
    store.scheduled(task, NODE, 0.5)
    store.finished(task.spec.task_id, 0, False, 1.0, run_s=0.5)
    store.ended(task, "CANCELLED", 1.1)
    assert store.select()[0]["state"] == "CANCELLED"
    assert store.select()[0]["end_time_ms"] == pytest.approx(store.wall(1.0) * 1e3)


def test_a_task_that_ends_before_it_is_scheduled_gets_a_row():
    store = TaskEvents(10, monotonic_now=0.0)
    task = FakeTask(9, state="WAITING_FOR_DEPENDENCIES")
    assert store.select(tasks={9: task})[0]["state"] == "PENDING_ARGS_AVAIL"
    store.ended(task, "FAILED", 2.0, error=b"dep failed")
    (row,) = store.select()
    assert (row["state"], row["error"], row["start_time_ms"]) == ("FAILED", b"dep failed",
                                                                  None)


def test_filters_compare_as_text_and_refuse_other_predicates():
    row = {"state": "FAILED", "worker_pid": 12, "retried": False}
    assert matches(row, [("state", "=", "failed"), ("worker_pid", "=", "12")])
    assert matches(row, [("state", "!=", "FINISHED"), ("retried", "=", "false")])
    assert not matches(row, [("missing", "=", "x")])
    with pytest.raises(ValueError, match="predicate"):
        matches(row, [("state", ">", "A")])


def test_errors_decode_to_their_cause_type_and_traceback():
    err = RayTaskError("f", "Traceback (most recent call last):\nValueError: no",
                       ValueError("no"))
    kind, message = decode_error(pickle.dumps(err))
    assert kind == "ValueError" and "Traceback" in message
    assert decode_error(b"not a pickle")[0] == "UnknownError"
    assert decode_error(None) == (None, None)


def test_trace_has_a_slice_per_run_on_node_and_worker_tracks_and_flows():
    rows = [
        {"task_id": "aa", "attempt_number": 0, "name": "parent", "node_id": "n1",
         "worker_pid": 10, "start_time_ms": 1000.0, "end_time_ms": 1100.0,
         "creation_time_ms": 990.0, "state": "FINISHED"},
        {"task_id": "bb", "attempt_number": 0, "name": "child", "node_id": "n2",
         "worker_pid": 20, "start_time_ms": 1020.0, "end_time_ms": 1030.0,
         "creation_time_ms": 1010.0, "submitter_pid": 10, "state": "FINISHED"},
        {"task_id": "cc", "attempt_number": 0, "name": "never ran", "node_id": "n2",
         "start_time_ms": None, "end_time_ms": None},
    ]
    trace = build_trace(rows)
    slices = [e for e in trace if e["ph"] == "X"]
    assert [(e["name"], e["pid"], e["tid"], e["ts"], e["dur"]) for e in slices] == [
        ("parent", "n1", 10, 1e6, pytest.approx(1e5)),
        ("child", "n2", 20, 1.02e6, pytest.approx(1e4))]
    assert {e["pid"] for e in trace if e.get("name") == "process_name"} == {"n1", "n2"}
    s, f = [e for e in trace if e["ph"] in ("s", "f")]
    assert (s["pid"], s["tid"], s["ts"]) == ("n1", 10, 1.01e6)
    assert (f["pid"], f["tid"], f["ts"], f["id"]) == ("n2", 20, 1.02e6, s["id"])


def test_a_flow_starts_inside_the_submitters_slice_despite_message_latency():
    rows = [
        {"task_id": "aa", "name": "parent", "node_id": "n1", "worker_pid": 10,
         "start_time_ms": 1000.0, "end_time_ms": 1100.0, "creation_time_ms": 990.0},
        {"task_id": "bb", "name": "child", "node_id": "n2", "worker_pid": 20,
         "start_time_ms": 1020.0, "end_time_ms": 1030.0, "creation_time_ms": 998.0,
         "submitter_pid": 10},
    ]
    s, _f = [e for e in build_trace(rows) if e["ph"] in ("s", "f")]
    assert s["ts"] == 1e6


def test_log_buffer_keeps_the_last_chunks_and_filters():
    from zray.head.logs import LogBuffer
    buf = LogBuffer(3)
    for i in range(4):
        buf.add(NODE if i % 2 else None, 10 + i % 2, "stdout", f"line {i}\n", when=float(i))
    chunks, nxt = buf.read()
    assert [c[-1] for c in chunks] == ["line 1\n", "line 2\n", "line 3\n"] and nxt == 4
    assert [c[-1] for c in buf.read(pid=11)[0]] == ["line 1\n", "line 3\n"]
    assert [c[-1] for c in buf.read(node_id=NODE.hex(), tail=1)[0]] == ["line 3\n"]
    assert [c[-1] for c in buf.read(since_seq=3)[0]] == ["line 3\n"]
    assert [c[-1] for c in buf.read(start=1.5, end=2.5)[0]] == ["line 2\n"]


def test_newest_rows_come_first_and_only_as_many_as_asked():
    store = TaskEvents(100, monotonic_now=0.0)
    tasks = [FakeTask(i, created=float(i)) for i in range(6)]
    for task in tasks[:5]:
        store.scheduled(task, NODE, task.created)
    store.finished((1).to_bytes(16, "big"), 0, False, 9.0, run_s=0.1, error=b"x")
    waiting = {5: tasks[5]}
    ids = [int(r["task_id"], 16) for r in store.newest(limit=3, tasks=waiting)]
    assert ids == [5, 4, 3]                      # the waiting one is the newest
    failed = store.newest([("state", "=", "failed")], limit=10, tasks=waiting)
    assert [int(r["task_id"], 16) for r in failed] == [1]
    assert store.counts(waiting) == {"SUBMITTED_TO_WORKER": 4, "FAILED": 1,
                                     "PENDING_NODE_ASSIGNMENT": 1}
    assert store.counts() == {"SUBMITTED_TO_WORKER": 4, "FAILED": 1}


def test_an_actor_workers_report_makes_or_completes_rows():
    store = TaskEvents(10, monotonic_now=0.0)
    actor = b"a" * 16
    ran = [((7).to_bytes(16, "big"), 0, "A.f", b"j" * 4, actor, 50.0, 0.5, True, None),
           ((8).to_bytes(16, "big"), 0, "A.g", b"j" * 4, actor, 51.0, 0.25, False, b"err")]
    store.actor_calls_ran(NODE, 99, ran)
    rows = {r["name"]: r for r in store.select()}
    assert rows["A.f"]["state"] == "FINISHED" and rows["A.f"]["type"] == "ACTOR_TASK"
    assert rows["A.f"]["worker_pid"] == 99 and rows["A.f"]["node_id"] == NODE.hex()
    assert rows["A.f"]["start_time_ms"] == pytest.approx(49_500.0)
    assert rows["A.f"]["duration_ms"] == pytest.approx(500.0)
    assert rows["A.g"]["state"] == "FAILED" and rows["A.g"]["error"] == b"err"
    # a call the head registered keeps its row and gains its run
    task = FakeTask(9, created=10.0)
    store.scheduled(task, NODE, 10.5)
    store.finished((9).to_bytes(16, "big"), 0, True, 12.0)         # no run time known
    store.actor_calls_ran(NODE, 99, [((9).to_bytes(16, "big"), 0, "f", b"j" * 4, actor,
                                      store.wall(11.9), 0.4, True, None)])
    (row,) = [r for r in store.select() if r["name"] == "f"]
    assert row["state"] == "FINISHED" and row["duration_ms"] == pytest.approx(400.0)
    assert row["scheduled_time_ms"] is not None
    trace = build_trace(store.select())
    assert {e["name"] for e in trace if e["ph"] == "X"} == {"A.f", "A.g", "f"}
