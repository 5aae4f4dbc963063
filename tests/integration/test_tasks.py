"""Remote functions on a real local cluster: semantics as in Ray."""

import os
import time

import numpy as np
import pytest

import zray
from zray import exceptions as zerr
from tests import tasks as t
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def test_seed_average(cluster):
    @zray.remote
    def calculate_average(numbers):
        return sum(numbers) / len(numbers)

    assert zray.get(calculate_average.remote([1, 2, 3, 4, 5])) == 3.0


def test_put_ref_argument_arrives_as_value(cluster):
    matrix = np.random.rand(1000, 1000)
    ref = zray.put(matrix)
    assert zray.get(t.array_sum.remote(ref)) == pytest.approx(float(matrix.sum()))


def test_nested_refs_stay_refs(cluster):
    inner = zray.put(41)
    assert zray.get(t.get_nested.remote([inner])) == 41

    @zray.remote
    def kind(x):
        return type(x[0]).__name__

    assert zray.get(kind.remote([inner])) == "ObjectRef"


def test_get_list_preserves_order(cluster):
    refs = [t.sleep_then.remote(0.05 * (5 - i), i) for i in range(5)]
    assert zray.get(refs) == [0, 1, 2, 3, 4]


def test_chained_dependencies(cluster):
    assert zray.get(t.add.remote(t.add.remote(1, 2), t.add.remote(3, 4))) == 10


def test_kwargs_and_refs_in_kwargs(cluster):
    assert zray.get(t.add.remote(a=zray.put(1), b=2)) == 3


def test_get_timeout_raises_get_timeout_error(cluster):
    ref = t.sleep_then.remote(2)
    with pytest.raises(zerr.GetTimeoutError):
        zray.get(ref, timeout=0.1)
    with pytest.raises(TimeoutError):
        zray.get(ref, timeout=0)


def test_wait_splits_and_preserves_order(cluster):
    fast = [t.echo.remote(i) for i in range(3)]
    slow = t.sleep_then.remote(3)
    refs = [fast[0], slow, fast[1], fast[2]]
    ready, not_ready = zray.wait(refs, num_returns=3, timeout=10)
    assert ready == [fast[0], fast[1], fast[2]]
    assert not_ready == [slow]
    ready, not_ready = zray.wait(refs, num_returns=4, timeout=0.2)
    assert slow in not_ready and len(ready) == 3
    with pytest.raises(ValueError):
        zray.wait([fast[0], fast[0]])


def test_task_exception_is_ray_task_error_and_original_class(cluster):
    with pytest.raises(ValueError) as info:
        zray.get(t.fail.remote("bad input"))
    err = info.value
    assert isinstance(err, zerr.RayTaskError)
    assert "bad input" in str(err)
    assert "Traceback" in str(err)


def test_error_flows_through_dependencies(cluster):
    with pytest.raises(ValueError, match="upstream"):
        zray.get(t.add.remote(t.fail.remote("upstream"), 1))


def test_nested_fanout_does_not_deadlock(cluster):
    # more parents than CPUs, each blocking on children: blocked workers lend CPUs back
    assert zray.get([t.nested_sum.remote(20) for _ in range(6)]) == [380] * 6


def test_calling_remote_function_directly_is_a_type_error(cluster):
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        t.noop()


def test_unknown_option_names_valid_ones(cluster):
    with pytest.raises(ValueError, match="num_cpus"):
        t.noop.options(num_cpu=1)
    with pytest.raises(ValueError):
        zray.remote(bogus=1)(lambda: None)


def test_unpicklable_argument_is_a_clear_error(cluster):
    import threading
    lock = threading.Lock()
    with pytest.raises(TypeError, match="Could not serialize"):
        t.echo.remote(lock)


def test_unpicklable_return_is_a_clear_error(cluster):
    @zray.remote
    def returns_lock():
        import threading
        return threading.Lock()

    with pytest.raises(TypeError, match="Could not serialize the return value"):
        zray.get(returns_lock.remote(), timeout=30)


def test_num_returns(cluster):
    @zray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    a, b, c = three.remote()
    assert zray.get([a, b, c]) == [1, 2, 3]
    x, y = t.echo.options(num_returns=2).remote((5, 6))
    assert zray.get(y) == 6


def test_options_resources_and_name(cluster):
    ref = t.echo.options(num_cpus=0.5, resources={"custom": 1}, name="named").remote(7)
    assert zray.get(ref) == 7


def test_gpu_task_sees_cuda_visible_devices(cluster):
    assert zray.get(t.env.options(num_gpus=1).remote("CUDA_VISIBLE_DEVICES")) == "0"


def test_runtime_env_env_vars(cluster):
    ref = t.env.options(runtime_env={"env_vars": {"ZRAY_TEST_VAR": "hello"}}).remote(
        "ZRAY_TEST_VAR")
    assert zray.get(ref) == "hello"
    assert zray.get(t.env.remote("ZRAY_TEST_VAR")) is None


def test_resource_limits_concurrency(cluster, tmp_path):
    # num_cpus=2: never more than two 1-CPU tasks at once (once earlier tests'
    # slow tasks, which still hold a CPU, have finished)
    assert wait_for(lambda: zray.available_resources().get("CPU") == 2.0)
    counts = zray.get([t.concurrency_probe.remote(str(tmp_path), 0.2) for _ in range(6)])
    assert max(counts) <= 2
    assert max(counts) == 2


def test_worker_crash_is_retried(cluster, tmp_path):
    marker = str(tmp_path / "runs")
    assert zray.get(t.die_once.remote(marker)) == 2


def test_worker_crash_exhausts_retries(cluster):
    with pytest.raises(zerr.WorkerCrashedError):
        zray.get(t.die.options(max_retries=1).remote())


def test_retry_exceptions(cluster, tmp_path):
    marker = str(tmp_path / "flaky")
    ok = t.flaky_app_error.options(retry_exceptions=True, max_retries=5).remote(marker)
    assert zray.get(ok) == "ok"
    marker2 = str(tmp_path / "flaky2")
    with pytest.raises(KeyError):
        zray.get(t.flaky_app_error.remote(marker2))
    marker3 = str(tmp_path / "flaky3")
    listed = t.flaky_app_error.options(retry_exceptions=[KeyError], max_retries=5)
    assert zray.get(listed.remote(marker3)) == "ok"


def test_cancel_running_task(cluster):
    ref = t.sleep_then.remote(30)
    time.sleep(0.5)
    zray.cancel(ref)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(ref, timeout=10)


def test_cancel_force_kills_worker(cluster):
    ref = t.sleep_then.remote(30)
    time.sleep(0.5)
    zray.cancel(ref, force=True)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(ref, timeout=10)


def test_a_killed_worker_takes_the_processes_its_task_started(cluster, tmp_path):
    import psutil
    marker = str(tmp_path / "child")
    ref = t.start_child_then_sleep.remote(marker)
    assert wait_for(lambda: os.path.exists(marker), timeout_s=30)
    with open(marker) as f:
        child = int(f.read())

    def gone():
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    assert not gone()
    zray.cancel(ref, force=True)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(ref, timeout=10)
    assert wait_for(gone, timeout_s=10)


def test_cancel_queued_task_never_runs(cluster, tmp_path):
    blockers = [t.sleep_then.remote(1.0) for _ in range(2)]
    marker = str(tmp_path / "ran")
    queued = t.count_run.remote(marker)
    zray.cancel(queued)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(queued, timeout=10)
    zray.get(blockers)
    assert not os.path.exists(marker)


def test_max_calls_restarts_worker(cluster):
    once = t.pid.options(max_calls=1)
    pids = {zray.get(once.remote()) for _ in range(3)}
    assert len(pids) == 3


def test_worker_output_reaches_driver(cluster, capfd):
    zray.get(t.shout.remote("hello from a worker"))
    deadline = time.monotonic() + 5
    seen = ""
    while time.monotonic() < deadline and "hello from a worker" not in seen:
        time.sleep(0.05)
        seen += capfd.readouterr().out
    assert "hello from a worker" in seen
    assert "(shout pid=" in seen


def test_runtime_context(cluster):
    job, node, task = zray.get(t.context_ids.remote())
    ctx = zray.get_runtime_context()
    assert job == ctx.get_job_id()
    assert node == ctx.get_node_id()
    assert task and ctx.get_task_id() is None


def test_object_ref_future_and_await(cluster):
    import asyncio
    assert t.echo.remote(3).future().result(timeout=10) == 3

    async def main():
        return await t.echo.remote(4)

    assert asyncio.run(main()) == 4
    ref = t.echo.remote(1)
    assert len(ref.hex()) == 36


def test_cluster_views(cluster):
    total = zray.cluster_resources()
    assert total["CPU"] == 2 and total["GPU"] == 1 and total["custom"] == 2
    nodes = zray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"]
    assert zray.available_resources()["CPU"] <= 2


def test_tasks_submit_tasks(cluster):
    @zray.remote
    def spawner():
        return zray.get(t.add.remote(1, 1))

    assert zray.get(spawner.remote()) == 2
