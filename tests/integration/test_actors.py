"""Actors on a real local cluster: Ray's semantics."""

import os
import signal
import time

import pytest

import zray
from zray import exceptions as zerr
from tests import actors as a
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):     # reaped between the two looks
        return False


def restarted_pid(actor, old_pid, timeout_s=20.0):
    """Call until the actor answers from a new process (calls that were in flight
    to the dead one fail, as in Ray)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid = zray.get(actor.pid.remote(), timeout=timeout_s)
        except zerr.RayActorError:
            time.sleep(0.05)
            continue
        if pid != old_pid:
            return pid
    raise AssertionError("the actor was not restarted")


def test_seed_counter(cluster):
    counter = a.Counter.remote()
    zray.get(counter.increment.remote())
    zray.get(counter.increment.remote())
    assert zray.get(counter.get_count.remote()) == 2


def test_pipelined_calls_run_in_order(cluster):
    recorder = a.Recorder.remote()
    for i in range(1000):
        recorder.record.remote(i)
    assert zray.get(recorder.items.remote()) == list(range(1000))


def test_handles_passed_to_tasks_and_actors(cluster):
    counter = a.Counter.remote()
    assert zray.get(a.call_counter.remote(counter, 5)) == 5
    forwarder = a.Forwarder.remote()
    assert zray.get(forwarder.forward.remote(counter)) == 6
    assert zray.get(counter.get_count.remote()) == 6


def test_constructor_arguments_and_refs(cluster):
    counter = a.Counter.remote(zray.put(10))
    assert zray.get(counter.increment.remote(zray.put(5))) == 15


def test_method_exception_keeps_actor_alive(cluster):
    counter = a.Counter.remote()
    with pytest.raises(KeyError) as info:
        zray.get(counter.fail.remote("bad key"))
    assert isinstance(info.value, zerr.RayTaskError)
    assert zray.get(counter.increment.remote()) == 1


def test_num_returns(cluster):
    counter = a.Counter.remote(3)
    x, y = counter.pair.remote()
    assert zray.get([x, y]) == [3, -3]
    first, second = counter.pid.options(num_returns=1).remote(), None
    assert zray.get(first) > 0 and second is None


def test_default_actor_holds_no_cpu_but_num_cpus_does(cluster):
    before = zray.cluster_resources()["CPU"]      # once earlier tests' work has drained
    assert wait_for(lambda: zray.available_resources().get("CPU", 0) == before)
    idle = [a.Counter.remote() for _ in range(3)]
    zray.get([c.get_count.remote() for c in idle])
    assert zray.available_resources().get("CPU", 0) == before
    holder = a.Counter.options(num_cpus=1).remote()
    zray.get(holder.get_count.remote())
    assert wait_for(lambda: zray.available_resources().get("CPU", 0) == before - 1)
    zray.kill(holder)
    assert wait_for(lambda: zray.available_resources().get("CPU", 0) == before)


def test_anonymous_actor_exits_when_handles_are_gone(cluster):
    counter = a.Counter.remote()
    pid = zray.get(counter.pid.remote())
    assert pid_alive(pid)
    del counter
    assert wait_for(lambda: not pid_alive(pid))


def test_named_actor_get_actor_and_namespaces(cluster):
    counter = a.Counter.options(name="named-counter").remote()
    zray.get(counter.increment.remote())
    found = zray.get_actor("named-counter")
    assert zray.get(found.get_count.remote()) == 1
    with pytest.raises(ValueError):
        zray.get_actor("no-such-actor")
    with pytest.raises(ValueError):
        a.Counter.options(name="named-counter").remote()
    same = a.Counter.options(name="named-counter", get_if_exists=True).remote()
    assert zray.get(same.get_count.remote()) == 1
    other = a.Counter.options(name="named-counter", namespace="elsewhere").remote()
    assert zray.get(other.get_count.remote()) == 0
    assert zray.get(zray.get_actor("named-counter", namespace="elsewhere")
                    .get_count.remote()) == 0
    zray.kill(other)
    zray.kill(counter)


def test_named_actor_survives_dropped_handles(cluster):
    counter = a.Counter.options(name="kept").remote()
    pid = zray.get(counter.pid.remote())
    del counter
    time.sleep(0.5)
    assert pid_alive(pid)
    zray.kill(zray.get_actor("kept"))
    assert wait_for(lambda: not pid_alive(pid))


def test_kill_then_calls_raise_actor_died(cluster):
    counter = a.Counter.remote()
    zray.get(counter.increment.remote())
    zray.kill(counter)
    with pytest.raises(zerr.ActorDiedError) as info:
        zray.get(counter.increment.remote(), timeout=10)
    assert isinstance(info.value, zerr.RayActorError)
    assert "kill" in str(info.value)


@zray.remote
class BlockMaker:
    def make(self, n, value):
        import numpy as np
        return np.full(n, value, dtype=np.uint8)


@zray.remote
def total(block):
    return int(block.sum())


def test_results_outlive_their_actor(cluster):
    """The caller owns an actor call's results, as in Ray: a result in shared
    memory stays usable (here, passed to a task) after its actor is killed at
    once or stops because its last handle went.  Repeated: the actor's report
    of the result used to lose a race with the kill."""
    for round_ in range(5):
        maker = BlockMaker.remote()
        refs = [maker.make.remote(1_000_000, 3) for _ in range(3)]
        zray.wait(refs, num_returns=len(refs), timeout=20)
        if round_ % 2:
            zray.kill(maker)
        else:
            del maker
        assert zray.get([total.remote(ref) for ref in refs], timeout=20) == [3_000_000] * 3


def test_small_results_outlive_their_actor(cluster):
    """An inline result the caller holds, passed to a task only after its actor
    was killed: the head learns of the call then, with its result, and the
    task gets the value (it used to fail with ActorDiedError)."""
    for round_ in range(3):
        maker = BlockMaker.remote()
        refs = [maker.make.remote(10, 3) for _ in range(3)]
        zray.wait(refs, num_returns=len(refs), timeout=20)
        zray.kill(maker)
        assert zray.get([total.remote(ref) for ref in refs], timeout=20) == [30] * 3


def test_exit_actor(cluster):
    counter = a.Counter.remote()
    pid = zray.get(counter.pid.remote())
    with pytest.raises(zerr.RayActorError):
        zray.get(counter.exit.remote(), timeout=10)
    assert wait_for(lambda: not pid_alive(pid))
    with pytest.raises(zerr.ActorDiedError):
        zray.get(counter.increment.remote(), timeout=10)


def test_constructor_error_fails_every_call(cluster):
    broken = a.BrokenConstructor.remote()
    for _ in range(2):
        with pytest.raises(zerr.ActorDiedError, match="constructor exploded"):
            zray.get(broken.hello.remote(), timeout=10)


def test_sigkill_restarts_actor_with_fresh_state(cluster):
    counter = a.Counter.options(max_restarts=1).remote()
    zray.get([counter.increment.remote() for _ in range(3)])
    pid = zray.get(counter.pid.remote())
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid))
    new_pid = restarted_pid(counter, pid)
    assert zray.get(counter.get_count.remote(), timeout=20) == 0   # constructor re-ran
    os.kill(new_pid, signal.SIGKILL)            # restarts exhausted
    with pytest.raises(zerr.ActorDiedError):
        for _ in range(50):
            zray.get(counter.get_count.remote(), timeout=10)
            time.sleep(0.1)


def test_infinite_restarts_and_task_retries(cluster):
    counter = a.Counter.options(max_restarts=-1, max_task_retries=-1).remote()
    for _ in range(3):
        pid = zray.get(counter.pid.remote())
        slow = counter.sleep.remote(1.0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        assert zray.get(slow, timeout=30) == 1.0        # retried on the new instance


def test_calls_in_flight_fail_without_task_retries(cluster):
    counter = a.Counter.options(max_restarts=1).remote()
    pid = zray.get(counter.pid.remote())
    slow = counter.sleep.remote(5)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(zerr.RayActorError):
        zray.get(slow, timeout=20)
    restarted_pid(counter, pid)
    assert zray.get(counter.get_count.remote(), timeout=20) == 0


def test_async_actor_runs_calls_concurrently(cluster):
    worker = a.AsyncWorker.remote()
    start = time.monotonic()
    values = zray.get([worker.wait_then.remote(0.5, i) for i in range(20)])
    assert values == list(range(20))
    assert time.monotonic() - start < 5
    assert zray.get(worker.get_peak.remote()) >= 10


def test_async_actor_max_concurrency(cluster):
    worker = a.AsyncWorker.options(max_concurrency=2).remote()
    zray.get([worker.wait_then.remote(0.1, i) for i in range(6)])
    assert zray.get(worker.get_peak.remote()) == 2


def test_threaded_actor(cluster):
    worker = a.ThreadedWorker.options(max_concurrency=4).remote()
    zray.get([worker.busy.remote(0.3) for _ in range(8)])
    assert zray.get(worker.get_peak.remote()) >= 3


def test_cancel_queued_actor_call(cluster):
    counter = a.Counter.remote()
    busy = counter.sleep.remote(1.0)
    queued = counter.increment.remote()
    zray.cancel(queued)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(queued, timeout=10)
    zray.get(busy)
    assert zray.get(counter.get_count.remote()) == 0


def test_cancel_running_async_call(cluster):
    worker = a.AsyncWorker.remote()
    running = worker.wait_then.remote(30, "late")
    time.sleep(0.5)
    zray.cancel(running)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(running, timeout=10)
    assert zray.get(worker.wait_then.remote(0, "ok")) == "ok"


def test_max_pending_calls(cluster):
    counter = a.Counter.options(max_pending_calls=2).remote()
    zray.get(counter.get_count.remote())
    first = counter.sleep.remote(0.5)
    second = counter.sleep.remote(0.5)
    with pytest.raises(zerr.PendingCallsLimitExceeded):
        counter.sleep.remote(0.5)
    zray.get([first, second])
    zray.get(counter.sleep.remote(0))


def test_direct_call_errors(cluster):
    counter = a.Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        counter.increment()
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        a.Counter()
    with pytest.raises(AttributeError):
        counter.no_such_method
    with pytest.raises(ValueError, match="max_restarts"):
        a.Counter.options(max_restart=1)


def test_runtime_context_in_actor(cluster):
    @zray.remote
    class Who:
        def ids(self):
            ctx = zray.get_runtime_context()
            return ctx.get_actor_id(), ctx.get_job_id()

    who = Who.remote()
    actor_id, job_id = zray.get(who.ids.remote())
    assert actor_id == who._actor_id.hex()
    assert job_id == zray.get_runtime_context().get_job_id()


def test_actor_results_passed_to_tasks(cluster):
    from tests import tasks as t
    counter = a.Counter.remote(41)
    assert zray.get(t.add.remote(counter.increment.remote(), 0)) == 42


def test_dropping_last_handle_lets_pending_calls_finish(cluster):
    assert zray.get(a.Counter.remote(4).increment.remote()) == 5
    counter = a.Counter.remote()
    slow = counter.sleep.remote(0.5)
    pid = zray.get(counter.pid.remote())
    del counter
    assert zray.get(slow, timeout=10) == 0.5
    assert wait_for(lambda: not pid_alive(pid))


def test_exit_actor_answers_calls_sent_before_it(cluster):
    for _ in range(10):
        counter = a.Counter.remote()
        zray.get(counter.pid.remote())
        before = counter.increment.remote()
        leaving = counter.exit.remote()
        assert zray.get(before, timeout=10) == 1
        with pytest.raises(zerr.RayActorError):
            zray.get(leaving, timeout=10)
