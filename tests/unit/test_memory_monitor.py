"""Out-of-memory protection without processes: the node's kill policy
(zray.node.memory_monitor) fed readings and candidates, and the head's
handling of WORKER_KILLED + WORKER_DIED (OutOfMemoryError, retry backoff)."""

import time
import os
import pickle

import pytest

from zray import exceptions as zerr
from zray.config import Config
from zray.node.memory_monitor import (
    Candidate, MemoryMonitor, MemoryReading, candidates_of, oom_message, pick_victim,
)
from zray.node.state import NodeManagerState
from zray.protocol import Msg, REASON_OOM
from zray.serialization import KIND_ERROR
from tests.unit.test_head_state import DRIVER, NODE_A, Harness, executed, spec

pytestmark = pytest.mark.timeout(10)

GB = 1024 ** 3
HIGH = MemoryReading(int(9.6 * GB), 10 * GB)     # 0.96
LOW = MemoryReading(5 * GB, 10 * GB)


def cand(name, started_at, retriable=True, actor=False):
    return Candidate(name.encode(), 100 + int(started_at), started_at, retriable, actor, name)


def test_below_the_threshold_nobody_is_killed():
    monitor = MemoryMonitor(0.95)
    assert monitor.decide(LOW, [cand("a", 1.0)]) is None
    assert monitor.decide(MemoryReading(int(9.5 * GB), 10 * GB), [cand("a", 1.0)]) is None


def test_the_newest_retriable_task_goes_first():
    victims = [cand("old", 1.0), cand("new", 3.0), cand("newest_final", 5.0, retriable=False),
               cand("actor", 6.0, retriable=False, actor=True)]
    assert pick_victim(victims).name == "new"


def test_non_retriable_tasks_and_actors_only_when_nothing_else_is_left():
    assert pick_victim([cand("final", 2.0, retriable=False),
                        cand("actor", 1.0, retriable=False, actor=True)]).name == "final"
    assert pick_victim([cand("actor", 1.0, retriable=False, actor=True)]).name == "actor"
    assert pick_victim([]) is None


def test_one_kill_at_a_time_until_the_victim_is_gone():
    monitor = MemoryMonitor(0.95)
    first = monitor.decide(HIGH, [cand("a", 1.0), cand("b", 2.0)])
    assert first.name == "b"
    assert monitor.decide(HIGH, [cand("a", 1.0), cand("b", 2.0)]) is None   # b still exits
    assert monitor.decide(HIGH, [cand("a", 1.0)]).name == "a"               # b gone
    monitor.forget(b"a")
    assert monitor.decide(LOW, [cand("c", 3.0)]) is None


def test_a_bad_threshold_is_refused_with_the_field_name():
    with pytest.raises(ValueError, match="memory_usage_threshold"):
        MemoryMonitor(1.5)
    with pytest.raises(ValueError, match="memory_usage_threshold"):
        Config(memory_usage_threshold=0.0)


def test_the_message_says_what_where_how_much_and_what_to_do():
    text = oom_message(cand("hungry", 1.0), HIGH, 0.95, "ab" * 20, "10.0.0.7")
    for part in ("hungry", "10.0.0.7", "ab" * 20, "9.60GB / 10.00GB", "0.95",
                 "max_retries", "memory_usage_threshold", "memory_monitor_refresh_ms"):
        assert part in text, part


def test_candidates_are_the_node_s_busy_and_leased_workers():
    node = NodeManagerState(b"n" * 16, {"CPU": 3.0}, Config(lease_workers=False,
                                                                     prestart_workers=-1), 0.0)
    node.start(0.0)
    ids = list(node.workers)
    for i, worker_id in enumerate(ids):
        node.on_worker_started(worker_id, 1000 + i)
        node.on_worker_hello(worker_id, 1000 + i, 0.0)
    retriable, final = spec(name="retriable"), spec(name="final", max_retries=0)
    node.on_execute_tasks([retriable], 1.0)
    node.on_execute_tasks([final], 2.0)
    found = {c.name: c for c in candidates_of(node.workers.values())}
    assert set(found) == {"retriable", "final"}          # the idle worker is not one
    assert found["retriable"].retriable and not found["final"].retriable
    assert pick_victim(found.values()).name == "retriable"


# --- the head ----------------------------------------------------------------------

def started(h, max_retries):
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    task = spec(max_retries=max_retries, name="hungry")
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    return task


def oom_death(h, task, attempt):
    h.send(NODE_A, Msg.WORKER_KILLED, (b"worker1", REASON_OOM, "out of memory: hungry"))
    return h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 7, -9, task.task_id, attempt))


def test_an_oom_kill_is_retried_after_a_doubling_backoff():
    h = Harness(task_oom_retry_delay_base_ms=1000)
    task = started(h, max_retries=-1)
    out = oom_death(h, task, 0)
    assert executed(out) == []                      # not at once: after the backoff
    h.now = 0.9
    h.state.tick(h.now)
    assert executed(h.state.out.drain()) == []
    h.now = 1.0
    h.state.tick(h.now)
    [again] = executed(h.state.out.drain())
    assert again.attempt == 1
    oom_death(h, task, 1)
    h.now = 2.9                                     # the second kill waits 2 s
    h.state.tick(h.now)
    assert executed(h.state.out.drain()) == []
    h.now = 3.0
    h.state.tick(h.now)
    assert [t.attempt for t in executed(h.state.out.drain())] == [2]


def test_oom_kills_consume_max_retries_then_fail_with_out_of_memory_error():
    h = Harness(task_oom_retry_delay_base_ms=0)
    task = started(h, max_retries=1)
    [oid] = task.return_ids()
    oom_death(h, task, 0)
    h.state.tick(h.now)
    assert executed(h.state.out.drain())[0].attempt == 1
    out = oom_death(h, task, 1)
    assert executed(out) == []
    ready = {i[0]: i for i in out[(DRIVER, Msg.OBJECTS_READY)]}
    assert ready[oid][1] == KIND_ERROR
    error = pickle.loads(ready[oid][2])
    assert isinstance(error, zerr.OutOfMemoryError) and isinstance(error, zerr.RayError)
    assert "out of memory: hungry" in str(error)


def test_a_crash_without_a_kill_cause_is_still_a_worker_crash():
    h = Harness()
    task = started(h, max_retries=0)
    [oid] = task.return_ids()
    out = h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 7, -9, task.task_id, 0))
    ready = {i[0]: i for i in out[(DRIVER, Msg.OBJECTS_READY)]}
    assert isinstance(pickle.loads(ready[oid][2]), zerr.WorkerCrashedError)


# --- blank spare segments (zray.serialization.SpareFiller) ------------------------

def test_the_filler_makes_blank_spares_within_the_budget_and_leaves_a_slot(tmp_path):
    from zray.serialization import SpareFiller, SpareSegments, spare_paths
    node_id = b"n" * 16
    blank = 1024 * 1024
    spares = SpareSegments(str(tmp_path), node_id, 10 * blank)
    filler = SpareFiller(spares, blank)
    made = 0
    while filler.fill():
        made += 1
    slots = [p for p in spare_paths(str(tmp_path), node_id) if os.path.exists(p)]
    assert made == len(slots) == len(spare_paths(str(tmp_path), node_id)) - 1
    assert all(os.stat(p).st_size == blank for p in slots)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in slots)
    tight = SpareFiller(SpareSegments(str(tmp_path / ".."), b"m" * 16, blank // 2), blank)
    assert not tight.fill()                       # over the budget: nothing made


def test_a_freed_segment_takes_a_blank_s_slot_and_a_writer_takes_neither_too_big(tmp_path):
    """Blanks are remade in idle time; a freed segment's pages are not: when the
    slots are full of blanks, adopting a freed segment removes one.  A spare
    over 4x an object's size is left for a larger one."""
    from zray.serialization import (SpareFiller, SpareSegments, claim_spare,
                                    spare_paths, write_segment, serialize)
    import numpy as np
    node_id = b"n" * 16
    blank = 1024 * 1024
    spares = SpareSegments(str(tmp_path), node_id, 10 * blank)
    filler = SpareFiller(spares, blank)
    while filler.fill():
        pass
    slots = spare_paths(str(tmp_path), node_id)
    free = [p for p in slots if not os.path.exists(p)][0]
    write_segment(free, serialize(np.zeros(blank // 8)))    # a recycled one, as adopt does
    assert all(os.path.exists(p) for p in slots)
    freed = str(tmp_path / "freed")
    write_segment(freed, serialize(np.ones(blank // 8)))
    assert spares.adopt(freed)                         # a blank made room for it
    assert sum(1 for p in slots if spares.blanks.get(p) == os.stat(p).st_ino) == 2
    assert claim_spare(str(tmp_path / "small"), blank // 5, slots) is None   # > 4x
    fd = claim_spare(str(tmp_path / "fits"), blank // 2, slots)
    assert fd is not None
    os.close(fd)


def test_idle_cpu_says_idle_only_after_a_window_of_idle_ticks(tmp_path):
    from zray.serialization import IdleCpu
    stat = tmp_path / "stat"
    ticks = [1000]

    def write(idle_ticks):
        stat.write_text(f"cpu  10 0 10 {idle_ticks} 0 0 0 0 0 0\ncpu0 1 2 3\n")

    write(ticks[0])
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.50 0.40 0.30 1/120 4242\n")       # only the caller runs
    idle = IdleCpu(cores=0.5, window_s=0.05, stat_path=str(stat),
                   loadavg_path=str(loadavg))
    hz = idle.ticks_per_s
    assert idle() is False                   # no window yet
    time.sleep(0.06)
    write(ticks[0] + int(0.06 * hz * 2) + 1)   # two CPUs idle through it
    assert idle() is True
    time.sleep(0.06)
    assert idle() is False                   # busy since: no idle ticks came
    assert IdleCpu(stat_path=str(tmp_path / "none"))() is True   # no /proc/stat: always


def test_idle_cpu_waits_a_window_after_others_queued_for_a_cpu(tmp_path):
    """Idle ticks cannot see demand (the filler's own page clearing counts as
    idle): more runnable threads than CPUs, the caller aside, close the gate
    for a whole window."""
    from zray.serialization import IdleCpu
    stat, loadavg = tmp_path / "stat", tmp_path / "loadavg"
    idle_ticks = [1000]

    def advance(seconds):
        time.sleep(seconds)
        idle_ticks[0] += int(seconds * idle.ticks_per_s * 2) + 1   # both CPUs idle
        stat.write_text(f"cpu  10 0 10 {idle_ticks[0]} 0 0 0 0 0 0\n")

    stat.write_text(f"cpu  10 0 10 {idle_ticks[0]} 0 0 0 0 0 0\n")
    loadavg.write_text("1.0 1.0 1.0 1/100 1\n")
    idle = IdleCpu(cores=0.5, window_s=0.05, stat_path=str(stat),
                   loadavg_path=str(loadavg))
    idle.cpus = 2
    advance(0.06)
    assert idle() is True
    loadavg.write_text("3.0 1.0 1.0 4/100 1\n")      # the caller and three others
    advance(0.01)
    assert idle() is False
    loadavg.write_text("1.0 1.0 1.0 2/100 1\n")      # one other: two CPUs suffice
    advance(0.02)
    assert idle() is False                           # not a window since the crowd
    advance(0.05)
    assert idle() is True
