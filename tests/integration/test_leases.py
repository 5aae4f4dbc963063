"""The synchronous fast path: a driver granted a leased worker sends it tasks itself.

Each test starts its own cluster and first runs a few one-at-a-time tasks, so
the head has lent the driver a worker (see LEASE_GRANT in docs/protocol.md).
"""

import time

import pytest

import zray
from zray import _runtime
from zray import exceptions as zerr
from tests import tasks as t

pytestmark = pytest.mark.timeout(60)


def earn_grant():
    """Run one-at-a-time tasks until the head has lent this driver a worker
    (it does after a few; on a loaded machine the offer can take longer)."""
    client = _runtime.client()
    deadline = time.monotonic() + 30
    i = 0
    while not client.has_grant and time.monotonic() < deadline:
        assert zray.get(t.echo.remote(i)) == i
        i += 1
    assert client.has_grant, "one-at-a-time tasks should have earned a grant"
    return client


def granted_cluster(fresh_cluster):
    fresh_cluster(num_cpus=2)
    return earn_grant()


def dispatched(client):
    return client.query("summary")["dispatched"]


def test_one_at_a_time_tasks_go_straight_to_the_granted_worker(fresh_cluster):
    client = granted_cluster(fresh_cluster)
    before = dispatched(client)["granted"]
    pids = {zray.get(t.pid.remote()) for _ in range(30)}
    assert dispatched(client)["granted"] - before >= 25
    assert len(pids) == 1                                  # all on the granted worker
    assert zray.get([t.echo.remote(i) for i in range(50)]) == list(range(50))   # a burst


def test_a_burst_gives_the_grant_back_and_uses_every_worker(fresh_cluster, tmp_path):
    granted_cluster(fresh_cluster)
    counts = zray.get([t.concurrency_probe.remote(str(tmp_path), 0.3) for _ in range(6)])
    assert max(counts) == 2


def test_dependent_task_right_after_a_granted_one(fresh_cluster):
    granted_cluster(fresh_cluster)
    for i in range(20):     # the head waits on the granted task's report (REPORT_NOW)
        assert zray.get(t.add.remote(t.echo.remote(i), 1)) == i + 1


def test_granted_worker_crash_is_retried_and_the_fast_path_recovers(fresh_cluster, tmp_path):
    client = granted_cluster(fresh_cluster)
    assert zray.get(t.die_once.remote(str(tmp_path / "runs"))) == 2
    with pytest.raises(zerr.WorkerCrashedError):
        zray.get(t.die.options(max_retries=0).remote())
    for i in range(10):
        assert zray.get(t.echo.remote(i)) == i
    deadline = time.monotonic() + 10
    while not client.has_grant and time.monotonic() < deadline:   # granted again
        zray.get(t.echo.remote(0))
    assert client.has_grant


def test_cancel_a_running_granted_task(fresh_cluster):
    granted_cluster(fresh_cluster)
    ref = t.sleep_then.remote(30)
    time.sleep(0.3)
    zray.cancel(ref, force=True)
    with pytest.raises((zerr.TaskCancelledError, zerr.WorkerCrashedError)):
        zray.get(ref, timeout=20)
    assert zray.get(t.echo.remote("after")) == "after"


def test_errors_and_large_results_of_granted_tasks_reach_the_driver(fresh_cluster):
    granted_cluster(fresh_cluster)
    with pytest.raises(ValueError):
        zray.get(t.fail.remote("boom"))
    array = zray.get(t.make_array.remote(1_000_000, 2.0))     # 8 MB: shared memory
    assert array.sum() == 2_000_000.0
    assert zray.get(t.echo.remote("still")) == "still"


def test_a_granted_task_that_waits_on_its_own_children_on_one_cpu(fresh_cluster):
    fresh_cluster(num_cpus=1)
    earn_grant()
    for _ in range(5):          # the parent blocks in get: its CPU must be lent back
        assert zray.get(t.nested_sum.remote(4), timeout=30) == 12
