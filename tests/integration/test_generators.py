"""Generator tasks and actor methods on a real local cluster, with Ray 2.x's
semantics: ObjectRefGenerator (streaming, the default for generator functions)
and DynamicObjectRefGenerator (num_returns="dynamic")."""

from __future__ import annotations

import asyncio
import os

import pytest

import zray
from zray import exceptions as zerr
from zray.cluster_utils import Cluster
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tests import actors as a
from tests import tasks as t
from tests.conftest import object_segments, wait_for

pytestmark = pytest.mark.timeout(60)


def values(gen) -> list:
    return [zray.get(ref) for ref in gen]


# --- two nodes (first: the other tests share one local cluster for the module) --------

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}
BIG = 200_000                        # float64: 1.6 MB, so items live in shared memory


@pytest.fixture
def two_nodes():
    assert not zray.is_initialized(), "run the Cluster tests before the local ones"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    other = cluster.add_node(num_cpus=1, resources={"other": 1})
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    yield cluster, other
    zray.shutdown()
    cluster.shutdown()


def test_large_items_from_another_node(two_nodes):
    _cluster, other = two_nodes
    here = zray.get_runtime_context().get_node_id()
    gen = t.yield_node_arrays.options(resources={"other": 1}).remote(2, BIG)
    for i, ref in enumerate(gen):
        node, array = zray.get(ref)
        assert node == other.node_id != here
        assert array.shape == (BIG,) and float(array[0]) == float(array[-1]) == i
    assert i == 1


def test_lost_item_is_rebuilt_from_lineage(two_nodes, tmp_path):
    cluster, other = two_nodes
    runs = str(tmp_path / "runs")
    on_other = NodeAffinitySchedulingStrategy(node_id=other.node_id, soft=True)
    gen = t.yield_node_arrays.options(scheduling_strategy=on_other).remote(2, BIG, runs)
    refs = list(gen)
    assert zray.get(gen.completed()) == 2
    cluster.remove_node(other, allow_graceful=False)
    node, array = zray.get(refs[1], timeout=60)       # made again on the head's node
    assert node != other.node_id and float(array[0]) == 1.0
    with open(runs) as f:
        assert f.read() == "xx"


# --- the basics ---------------------------------------------------------------------

def test_generator_function_streams_by_default(cluster):
    gen = t.count_up.remote(5)
    assert isinstance(gen, zray.ObjectRefGenerator)
    assert values(gen) == [0, 1, 2, 3, 4]


def test_num_returns_streaming_option(cluster):
    gen = t.count_up.options(num_returns="streaming").remote(3)
    assert isinstance(gen, zray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(ref, zray.ObjectRef) for ref in refs)
    assert zray.get(refs) == [0, 1, 2]


def test_next_then_stop_iteration(cluster):
    gen = t.count_up.remote(2)
    assert zray.get(next(gen)) == 0
    assert zray.get(next(gen)) == 1
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(StopIteration):      # and it stays stopped
        next(gen)
    assert gen.is_finished()
    assert zray.get(gen.completed()) == 2


def test_empty_generator(cluster):
    assert values(t.count_up.remote(0)) == []


def test_first_item_arrives_while_the_task_runs(cluster, tmp_path):
    """The task makes item 1 only once the driver has item 0 in hand: were items
    delivered at the end of the task, this would never finish."""
    paths = [str(tmp_path / "0"), str(tmp_path / "1")]
    open(paths[0], "w").close()
    gen = t.yield_after_files.remote(paths)
    assert zray.get(next(gen)) == 0
    open(paths[1], "w").close()
    assert zray.get(next(gen)) == 1
    with pytest.raises(StopIteration):
        next(gen)


def test_static_num_returns_with_a_generator_function(cluster):
    first, second = t.two_by_yield.remote()
    assert zray.get([first, second]) == ["a", "b"]


def test_large_items_live_in_shared_memory(cluster):
    gen = t.yield_arrays.remote(3, 200_000)        # 1.6 MB each
    arrays = values(gen)
    assert [float(x[0]) for x in arrays] == [0.0, 1.0, 2.0]
    assert all(x.shape == (200_000,) and not x.flags.writeable for x in arrays)


def test_items_can_be_passed_to_tasks(cluster):
    refs = list(t.count_up.remote(4))
    assert zray.get(t.add.remote(refs[1], refs[3])) == 4


def test_a_task_can_consume_a_stream(cluster):
    assert zray.get(t.sum_stream.remote(10)) == 45


def test_generator_is_not_serializable(cluster):
    gen = t.count_up.remote(1)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        t.echo.remote(gen)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        zray.get(gen)
    assert values(gen) == [0]


# --- asyncio ------------------------------------------------------------------------

def test_async_for_and_anext(cluster):
    async def main():
        seen = [await ref async for ref in t.count_up.remote(4)]
        gen = t.count_up.remote(1)
        first = await gen.__anext__()
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return seen, await first

    assert asyncio.run(main()) == ([0, 1, 2, 3], 0)


# --- errors -------------------------------------------------------------------------

def test_exception_is_the_item_where_it_happened(cluster):
    refs = list(t.yield_then_raise.remote(2))
    assert len(refs) == 3
    assert zray.get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="failed after 2 items") as info:
        zray.get(refs[2])
    assert isinstance(info.value, zerr.RayTaskError)


def test_exception_before_any_item(cluster):
    gen = t.yield_then_raise.remote(0)
    with pytest.raises(ValueError):
        zray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_worker_crash_without_retries_is_the_next_item(cluster, tmp_path):
    marker = str(tmp_path / "have-them")
    gen = t.yield_then_die.remote(2, marker)
    assert [zray.get(next(gen)), zray.get(next(gen))] == [0, 1]
    open(marker, "w").close()                # now the worker dies
    with pytest.raises(zerr.WorkerCrashedError):
        zray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_worker_crash_is_retried_and_items_come_once(cluster, tmp_path):
    marker = str(tmp_path / "crashed")
    assert values(t.yield_die_once.remote(6, marker)) == list(range(6))
    assert os.path.exists(marker)          # the first attempt did crash


def test_retry_exceptions_retries_and_items_come_once(cluster, tmp_path):
    marker = str(tmp_path / "raised")
    assert values(t.yield_raise_once.remote(4, marker)) == [0, 1, 2, 3]
    assert os.path.exists(marker)


# --- ray.wait and ray.cancel ----------------------------------------------------------

def test_wait_is_ready_when_the_next_item_is(cluster, tmp_path):
    paths = [str(tmp_path / "0"), str(tmp_path / "1")]
    gen = t.yield_after_files.remote(paths)
    ready, not_ready = zray.wait([gen], timeout=0)
    assert (ready, not_ready) == ([], [gen])
    open(paths[0], "w").close()
    ready, _ = zray.wait([gen], timeout=30)
    assert ready == [gen] and gen.next_ready()
    assert zray.get(next(gen)) == 0
    assert zray.wait([gen], timeout=0)[0] == []     # item 1 is not made yet
    open(paths[1], "w").close()
    assert zray.wait([gen], timeout=30)[0] == [gen]
    assert zray.get(next(gen)) == 1
    assert zray.wait([gen], timeout=30)[0] == [gen]  # ended: next() will not block
    with pytest.raises(StopIteration):
        next(gen)


def test_wait_mixes_refs_and_generators(cluster, tmp_path):
    path = str(tmp_path / "go")
    gen = t.yield_after_files.remote([path])
    ref = t.echo.remote(5)
    ready, not_ready = zray.wait([gen, ref], num_returns=1, timeout=30)
    assert ready == [ref] and not_ready == [gen]
    open(path, "w").close()
    ready, not_ready = zray.wait([gen, ref], num_returns=2, timeout=30)
    assert ready == [gen, ref] and not_ready == []
    assert values(gen) == [0]


def test_cancel_stops_the_generator(cluster, tmp_path):
    marker, started = str(tmp_path / "never"), str(tmp_path / "started")
    gen = t.yield_then_wait.remote(marker, started)
    assert zray.get(next(gen)) == 0
    assert wait_for(lambda: os.path.exists(started), 30)
    zray.cancel(gen)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_force_cancel_kills_the_generator_task(cluster, tmp_path):
    marker, started = str(tmp_path / "never"), str(tmp_path / "started")
    gen = t.yield_then_wait.remote(marker, started)
    assert zray.get(next(gen)) == 0
    assert wait_for(lambda: os.path.exists(started), 30)
    zray.cancel(gen, force=True)
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


# --- dynamic ------------------------------------------------------------------------

def test_dynamic_returns_one_ref_to_a_generator_of_refs(cluster):
    ref = t.dynamic_split.remote(4)
    assert isinstance(ref, zray.ObjectRef)
    generator = zray.get(ref)
    assert isinstance(generator, zray.DynamicObjectRefGenerator)
    assert len(generator) == 4
    assert zray.get(list(generator)) == [0, 10, 20, 30]


def test_dynamic_error_is_an_extra_last_ref(cluster):
    refs = list(zray.get(t.dynamic_split.remote(5, fail_at=2)))
    assert len(refs) == 3
    assert zray.get(refs[:2]) == [0, 10]
    with pytest.raises(KeyError):
        zray.get(refs[2])


def test_dynamic_generator_passed_to_a_task(cluster):
    assert zray.get(t.total_of_dynamic.remote(t.dynamic_split.remote(3))) == 30


# --- memory -------------------------------------------------------------------------

def test_dropping_the_generator_frees_items_not_taken(cluster, tmp_path):
    marker = str(tmp_path / "go")
    before = object_segments()
    gen = t.yield_arrays.remote(3, 200_000, marker)
    kept = next(gen)
    assert float(zray.get(kept)[0]) == 0.0
    open(marker, "w").close()
    assert zray.get(gen.completed()) == 3
    assert wait_for(lambda: len(object_segments() - before) == 3, 30)
    del gen                               # items 1 and 2 were never taken
    assert wait_for(lambda: len(object_segments() - before) == 1, 30)
    del kept
    assert wait_for(lambda: not (object_segments() - before), 30)


def test_items_made_after_the_generator_is_dropped_are_freed(cluster, tmp_path):
    marker, done = str(tmp_path / "go"), str(tmp_path / "done")
    before = object_segments()
    gen = t.yield_arrays.remote(3, 200_000, marker, done)
    kept = next(gen)
    del gen                               # while the task still runs
    open(marker, "w").close()
    assert wait_for(lambda: os.path.exists(done), 30)
    assert float(zray.get(kept)[0]) == 0.0
    assert wait_for(lambda: len(object_segments() - before) == 1, 30)
    del kept
    assert wait_for(lambda: not (object_segments() - before), 30)


# --- actors -------------------------------------------------------------------------

def test_actor_generator_method_streams(cluster):
    streamer = a.Streamer.remote()
    gen = streamer.count.remote(4)
    assert isinstance(gen, zray.ObjectRefGenerator)
    assert values(gen) == [0, 1, 2, 3]


def test_async_and_threaded_actor_generators(cluster):
    assert values(a.AsyncStreamer.remote().count.remote(3)) == [0, 1, 2]
    assert values(a.ThreadedStreamer.remote().count.remote(3)) == [0, 1, 2]


def test_actor_item_arrives_while_the_call_runs(cluster, tmp_path):
    marker, started = str(tmp_path / "go"), str(tmp_path / "started")
    gen = a.Streamer.remote().count_then_wait.remote(marker, started)
    assert zray.get(next(gen)) == "first"
    assert wait_for(lambda: os.path.exists(started), 30)
    open(marker, "w").close()
    assert values(gen) == ["second"]


def test_actor_generator_error_is_the_item_where_it_happened(cluster):
    refs = list(a.Streamer.remote().count_then_raise.remote(2))
    assert zray.get(refs[:2]) == [0, 1]
    with pytest.raises(KeyError):
        zray.get(refs[2])


def test_actor_dynamic_method(cluster):
    generator = zray.get(a.Streamer.remote().split.remote(3))
    assert zray.get(list(generator)) == [0, 1, 2]


def test_actor_death_is_the_next_item(cluster, tmp_path):
    marker = str(tmp_path / "have-them")
    gen = a.Streamer.remote().count_then_die.remote(2, marker)
    assert [zray.get(next(gen)), zray.get(next(gen))] == [0, 1]
    open(marker, "w").close()                # now the actor's process dies
    with pytest.raises(zerr.ActorDiedError) as info:
        zray.get(next(gen))
    assert isinstance(info.value, zerr.RayActorError)
    with pytest.raises(StopIteration):
        next(gen)


def test_actor_restart_retries_the_call(cluster, tmp_path):
    marker = str(tmp_path / "died")
    streamer = a.Streamer.options(max_restarts=1, max_task_retries=1).remote()
    assert values(streamer.count_die_once.remote(6, marker)) == list(range(6))
    assert os.path.exists(marker)


def test_actor_generator_cancel(cluster):
    """A sync actor's generator stops at its next item once the cancel lands."""
    streamer = a.Streamer.remote()
    gen = streamer.count_forever.remote()
    assert zray.get(next(gen)) == 0
    zray.cancel(gen)
    refs = list(gen)                       # the items made before the cancel landed
    assert zray.get(refs[:-1]) == list(range(1, len(refs)))
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(refs[-1])
    assert values(streamer.count.remote(2)) == [0, 1]


def test_async_actor_generator_cancel(cluster, tmp_path):
    started = str(tmp_path / "started")
    streamer = a.AsyncStreamer.remote()
    gen = streamer.count_forever.remote(started)
    assert zray.get(next(gen)) == 0
    assert wait_for(lambda: os.path.exists(started), 30)
    zray.cancel(gen)
    refs = list(gen)                       # the items made before the cancel landed
    assert zray.get(refs[:-1]) == list(range(1, len(refs)))
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(refs[-1])
    assert zray.get(streamer.ping.remote()) == "pong"


def test_exit_actor_inside_a_generator_is_its_last_item(cluster):
    refs = list(a.ExitingStreamer.remote().count_then_exit.remote(3))
    assert zray.get(refs[:3]) == [0, 1, 2]
    assert len(refs) == 4
    with pytest.raises(zerr.ActorDiedError):
        zray.get(refs[3])


@pytest.mark.timeout(180)
def test_exit_actor_after_many_items_keeps_every_item(cluster):
    """exit_actor() right after the last item, again and again: the caller gets
    every item, then the ActorDiedError.  (The node's report that the process
    ended reached the head before the worker's last items once, and the head
    failed the call in their place while the caller, holding the actor's count,
    waited forever for the rest.)"""
    for run in range(40):
        gen = a.ExitingStreamer.remote().count_then_exit.remote(10)
        refs = []
        while True:
            ready, _ = zray.wait([gen], timeout=15)
            assert ready, f"run {run}: the stream stalled after {len(refs)} items"
            try:
                refs.append(next(gen))
            except StopIteration:
                break
        assert zray.get(refs[:-1]) == list(range(10)), f"run {run}"
        with pytest.raises(zerr.ActorDiedError):
            zray.get(refs[-1])


def test_cancel_of_a_queued_actor_generator(cluster, tmp_path):
    """Cancelled while queued behind another call: it ends with the
    TaskCancelledError, before it starts or at its next item."""
    marker, started = str(tmp_path / "go"), str(tmp_path / "started")
    streamer = a.Streamer.remote()
    busy = streamer.count_then_wait.remote(marker, started)   # holds the actor
    assert zray.get(next(busy)) == "first"
    queued = streamer.count_forever.remote()
    zray.cancel(queued)
    open(marker, "w").close()
    assert values(busy) == ["second"]
    refs = list(queued)
    assert zray.get(refs[:-1]) == list(range(len(refs) - 1))
    with pytest.raises(zerr.TaskCancelledError):
        zray.get(refs[-1])
