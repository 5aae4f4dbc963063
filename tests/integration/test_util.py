"""zray.util on a real local cluster: ActorPool, Queue and multiprocessing.Pool,
with Ray's semantics."""

import asyncio
import multiprocessing
import queue as std_queue
import time

import pytest

import zray
from tests import tasks as t
from zray import exceptions as zerr
from zray.util import ActorPool
from zray.util.multiprocessing import Pool
from zray.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.timeout(60)


def double(actor, value):
    return actor.double.remote(value)


def slow_double(actor, value_and_seconds):
    value, seconds = value_and_seconds
    return actor.slow_double.remote(value, seconds)


# --- Pool starts zray by itself (first, before the shared cluster exists) ------------------

def test_pool_initializes_zray_when_needed():
    if zray.is_initialized():
        pytest.skip("needs a process where zray is not running yet")
    try:
        with Pool(processes=1) as pool:
            assert zray.is_initialized()
            assert zray.cluster_resources()["CPU"] == 1
            assert pool.map(t.square, [1, 2, 3]) == [1, 4, 9]
    finally:
        zray.shutdown()


# --- ActorPool -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def doublers(cluster):
    return [t.Doubler.remote(), t.Doubler.remote()]


def test_actor_pool_map_keeps_submission_order(doublers):
    pool = ActorPool(doublers)
    values = [(1, 0.3), (2, 0.0), (3, 0.1), (4, 0.0), (5, 0.0)]
    assert list(pool.map(slow_double, values)) == [2, 4, 6, 8, 10]
    assert not pool.has_next()


def test_actor_pool_map_unordered_yields_fast_results_first(doublers):
    pool = ActorPool(doublers)
    results = list(pool.map_unordered(slow_double, [(1, 0.5), (2, 0), (3, 0), (4, 0)]))
    assert sorted(results) == [2, 4, 6, 8]
    assert results[-1] == 2


def test_actor_pool_map_drops_results_never_taken(doublers):
    pool = ActorPool(doublers)
    pool.submit(double, 100)
    assert list(pool.map(double, [1, 2, 3])) == [2, 4, 6]


def test_actor_pool_submit_get_next_has_next(doublers):
    pool = ActorPool(doublers)
    assert not pool.has_next()
    for value in (1, 2, 3):     # the third waits for an idle actor
        pool.submit(double, value)
    assert pool.has_next()
    assert [pool.get_next() for _ in range(3)] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_actor_pool_get_next_timeout_leaves_the_task(doublers):
    pool = ActorPool(doublers)
    pool.submit(slow_double, (21, 0.5))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert time.monotonic() - started < 0.4
    assert pool.has_next()
    assert pool.get_next(timeout=10) == 42


def test_actor_pool_get_next_ignore_if_timedout_skips_the_task(doublers):
    pool = ActorPool(doublers)
    pool.submit(slow_double, (1, 0.5))
    pool.submit(double, 2)
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert pool.get_next() == 4
    assert not pool.has_next()


def test_actor_pool_get_next_unordered_timeout(doublers):
    pool = ActorPool(doublers)
    pool.submit(slow_double, (5, 0.5))
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.get_next_unordered(timeout=10) == 10
    pool.submit(slow_double, (6, 0.5))
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next_unordered(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next()


def test_actor_pool_get_next_after_unordered_is_refused(doublers):
    pool = ActorPool(doublers)
    pool.submit(slow_double, (1, 0.3))
    pool.submit(double, 2)
    assert pool.get_next_unordered() == 4
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    assert pool.get_next_unordered() == 2


def test_actor_pool_has_free_pop_idle_push(doublers):
    first, second = doublers
    pool = ActorPool([first])
    assert pool.has_free()
    taken = pool.pop_idle()
    assert taken == first
    assert not pool.has_free() and pool.pop_idle() is None
    pool.submit(double, 1)          # no actor: waits
    assert not pool.has_next()
    pool.push(second)               # the waiting submission starts at once
    assert pool.has_next() and not pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(second)
    pool.push(first)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(first)
    assert pool.get_next() == 2
    assert pool.has_free()


def test_actor_pool_over_object_refs(doublers):
    """A top-level ObjectRef argument reaches the actor as its value, as in Ray."""
    pool = ActorPool(doublers)
    pool.submit(double, zray.put(21))
    assert pool.get_next(timeout=5) == 42


# --- Queue ---------------------------------------------------------------------------------

def test_queue_fifo_and_sizes(cluster):
    q = Queue()
    assert q.empty() and not q.full() and q.size() == 0
    for item in ("a", "b", {"c": 3}):
        q.put(item)
    assert q.qsize() == 3 and q.size() == 3 and len(q) == 3 and not q.empty()
    assert [q.get(), q.get(), q.get()] == ["a", "b", {"c": 3}]
    assert q.empty()
    q.shutdown(force=True)


def test_queue_nowait_raises_empty_and_full(cluster):
    q = Queue(maxsize=1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(std_queue.Empty):
        q.get(block=False)
    q.put_nowait(1)
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait(2)
    with pytest.raises(std_queue.Full):
        q.put(2, block=False)
    assert q.get_nowait() == 1
    q.shutdown(force=True)


def test_queue_blocking_timeouts_raise(cluster):
    q = Queue(maxsize=1)
    started = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    q.put(1)
    started = time.monotonic()
    with pytest.raises(Full):
        q.put(2, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    assert q.get(timeout=1) == 1
    q.shutdown(force=True)


def test_queue_batches_are_all_or_nothing(cluster):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])
    assert q.size() == 2
    q.put_nowait_batch(iter([3]))
    with pytest.raises(Empty):
        q.get_nowait_batch(4)
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("1")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    q.shutdown(force=True)


def test_queue_passed_to_a_task_that_puts(cluster):
    q = Queue()
    done = t.put_range.remote(q, 5)
    assert [q.get(timeout=10) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert zray.get(done) == 5
    q.shutdown(force=True)


def test_queue_blocking_put_waits_for_a_consumer_actor(cluster):
    q = Queue(maxsize=1)
    consumer = t.QueueConsumer.remote(q)
    taken = consumer.take.remote(3)
    for item in range(3):       # each put waits until the actor took the last one
        q.put(item, timeout=10)
    assert zray.get(taken, timeout=10) == [0, 1, 2]
    q.shutdown(force=True)


def test_queue_async_put_and_get(cluster):
    q = Queue(maxsize=1)

    async def exchange():
        await q.put_async("x")
        with pytest.raises(Full):
            await q.put_async("y", timeout=0.1)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        return first

    assert asyncio.run(exchange()) == "x"
    q.shutdown(force=True)


def test_queue_shutdown_ends_the_actor(cluster):
    q = Queue()
    q.put(1)
    actor = q.actor
    q.shutdown()
    assert q.actor is None
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(2)
    with pytest.raises(zerr.RayActorError):
        zray.get(actor.qsize.remote(), timeout=10)
    forced = Queue()
    forced_actor = forced.actor
    forced.shutdown(force=True)
    with pytest.raises(zerr.RayActorError):
        zray.get(forced_actor.qsize.remote(), timeout=10)
    forced.shutdown()           # a second shutdown does nothing


# --- multiprocessing.Pool ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(cluster):
    with Pool(processes=2) as shared:
        yield shared


def test_pool_map_with_and_without_chunks(pool):
    assert pool.map(t.square, range(20)) == [x * x for x in range(20)]
    assert pool.map(t.square, range(7), chunksize=3) == [x * x for x in range(7)]
    assert pool.map(t.square, []) == []
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(t.square, range(3), chunksize=0)


def test_pool_map_async_with_callback(pool):
    seen = []
    result = pool.map_async(t.square, range(5), callback=seen.append)
    assert result.get(timeout=10) == [0, 1, 4, 9, 16]
    assert result.ready() and result.successful()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [[0, 1, 4, 9, 16]]


def test_pool_imap_in_order_with_next_timeout(pool):
    assert list(pool.imap(t.sleep_inverse, range(5))) == [0, 1, 2, 3, 4]
    assert list(pool.imap(t.square, range(10), chunksize=4)) == [x * x for x in range(10)]
    results = pool.imap(t.sleep_identity, [7])
    with pytest.raises(multiprocessing.TimeoutError):
        results.next(timeout=0.05)
    assert results.next(timeout=10) == 7
    with pytest.raises(StopIteration):
        next(results)


def test_pool_imap_unordered(pool):
    results = list(pool.imap_unordered(t.sleep_inverse, range(5)))
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert results != [0, 1, 2, 3, 4]       # 0 sleeps longest
    assert sorted(pool.imap_unordered(t.square, range(9), chunksize=2)) == \
        sorted(x * x for x in range(9))


def test_pool_starmap(pool):
    pairs = [(1, 2), (3, 4), (5, 6)]
    assert pool.starmap(t.add_pair, pairs) == [3, 7, 11]
    assert pool.starmap_async(t.add_pair, pairs, chunksize=2).get(timeout=10) == [3, 7, 11]


def test_pool_apply_and_apply_async(pool):
    assert pool.apply(t.add_pair, (2, 3)) == 5
    assert pool.apply(t.add_pair, (), {"a": 1, "b": 2}) == 3
    slow = pool.apply_async(t.sleep_identity, (9,))
    with pytest.raises(ValueError, match="not ready"):
        slow.successful()
    assert not slow.ready()
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.05)
    slow.wait(timeout=10)
    assert slow.ready() and slow.successful()
    assert slow.get() == 9


def test_pool_errors_reach_the_caller(pool):
    with pytest.raises(ValueError, match="three"):
        pool.map(t.fail_on_three, range(6))
    with pytest.raises(ValueError, match="three"):
        pool.starmap(t.fail_on_three, [(3,)])
    errors = []
    failed = pool.apply_async(t.fail_on_three, (3,), error_callback=errors.append)
    with pytest.raises(ValueError, match="three"):
        failed.get(timeout=10)
    assert failed.ready() and not failed.successful()
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_pool_imap_raises_at_the_failing_item_and_goes_on(pool):
    results = pool.imap(t.fail_on_three, range(5))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)
    assert list(results) == [4]
    unordered = pool.imap_unordered(t.fail_on_three, [3])
    with pytest.raises(ValueError, match="three"):
        next(unordered)


def test_pool_initializer_runs_in_each_process(cluster):
    with Pool(2, initializer=t.set_pool_init_value, initargs=("ready",)) as own:
        assert own.map(t.read_pool_init_value, range(4)) == ["ready"] * 4


def test_pool_initializer_error_reaches_the_caller(cluster):
    with pytest.raises(zerr.RayActorError, match="initializer failed"):
        Pool(1, initializer=t.failing_initializer)


def test_pool_maxtasksperchild_replaces_the_process(cluster):
    with Pool(1, maxtasksperchild=1) as own:
        pids = {own.apply(t.worker_pid) for _ in range(3)}
    assert len(pids) == 3


def test_pool_close_join_and_terminate(cluster):
    own = Pool(2)
    result = own.map_async(t.square, range(4))
    with pytest.raises(ValueError, match="still running"):
        own.join()
    own.close()
    with pytest.raises(ValueError, match="not running"):
        own.apply(t.square, (2,))
    own.join()
    assert result.get(timeout=10) == [0, 1, 4, 9]

    with Pool(2) as scoped:
        assert scoped.map(t.square, [3]) == [9]
    with pytest.raises(ValueError, match="not running"):
        scoped.map(t.square, [3])


def test_pool_rejects_more_processes_than_cpus(cluster):
    with pytest.raises(ValueError, match="CPUs"):
        Pool(processes=64)
    with pytest.raises(ValueError, match=">0"):
        Pool(processes=0)

