"""Fault tolerance by lineage on a Cluster: objects lost with a killed node are
made again by re-running the tasks that made them; put objects cannot be."""

from __future__ import annotations

import os

import numpy as np
import pytest

import zray
from zray.cluster_utils import Cluster
from zray.exceptions import ObjectLostError
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}
N = 200_000                         # 1.6 MB of int64: lives in a node's shared memory


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    cluster.add_node(num_cpus=1)
    victim = cluster.add_node(num_cpus=1)
    zray.init(address=cluster.address)
    yield cluster, victim
    zray.shutdown()
    cluster.shutdown()


def on(node):
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=True)


def runs(path) -> int:
    try:
        with open(path) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


@zray.remote(max_retries=3)
def step(path, previous):
    with open(path, "a") as f:
        f.write("x")
    base = np.zeros(N, dtype=np.int64) if previous is None else previous
    return base + 1


@zray.remote
def node_of_task():
    return zray.get_runtime_context().get_node_id()


def test_lost_output_is_rebuilt_by_running_its_task_again(cluster, tmp_path):
    cluster, victim = cluster
    marker = str(tmp_path / "runs")
    ref = step.options(scheduling_strategy=on(victim)).remote(marker, None)
    zray.wait([ref])
    assert runs(marker) == 1
    cluster.remove_node(victim, allow_graceful=False)
    value = zray.get(ref, timeout=60)
    assert value.shape == (N,) and int(value.sum()) == N
    assert runs(marker) == 2


def test_chain_of_lost_intermediates_is_rebuilt(cluster, tmp_path):
    cluster, victim = cluster
    markers = [str(tmp_path / f"step{i}") for i in range(3)]
    first = step.options(scheduling_strategy=on(victim)).remote(markers[0], None)
    second = step.options(scheduling_strategy=on(victim)).remote(markers[1], first)
    third = step.options(scheduling_strategy=on(victim)).remote(markers[2], second)
    del first, second                     # only the lineage keeps them
    zray.wait([third])
    assert [runs(m) for m in markers] == [1, 1, 1]
    cluster.remove_node(victim, allow_graceful=False)
    value = zray.get(third, timeout=60)
    assert int(value[0]) == 3 and int(value.sum()) == 3 * N
    assert [runs(m) for m in markers] == [2, 2, 2]


@zray.remote
def put_there(n):
    return [zray.put(np.ones(n, dtype=np.int64))]


def test_lost_put_object_raises_object_lost_error(cluster):
    cluster, victim = cluster
    [inner] = zray.get(put_there.options(scheduling_strategy=on(victim)).remote(N))
    zray.wait([inner])
    cluster.remove_node(victim, allow_graceful=False)
    with pytest.raises(ObjectLostError) as info:
        zray.get(inner, timeout=60)
    assert inner.hex() in str(info.value) and victim.node_id in str(info.value)


@zray.remote(max_retries=3)
def slow_step(path, seconds):
    import time
    with open(path, "a") as f:
        f.write("x")
    time.sleep(seconds)
    return zray.get_runtime_context().get_node_id()


def test_task_running_on_a_killed_node_finishes_elsewhere(cluster, tmp_path):
    cluster, victim = cluster
    marker = str(tmp_path / "slow")
    ref = slow_step.options(scheduling_strategy=on(victim)).remote(marker, 3.0)
    import time
    deadline = time.monotonic() + 30
    while runs(marker) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.remove_node(victim, allow_graceful=False)
    assert zray.get(ref, timeout=60) != victim.node_id
    assert runs(marker) == 2


@zray.remote(max_restarts=1)
class Where:
    def node(self):
        return zray.get_runtime_context().get_node_id()


def test_actor_on_a_killed_node_restarts_elsewhere(cluster):
    cluster, victim = cluster
    actor = Where.options(scheduling_strategy=on(victim)).remote()
    assert zray.get(actor.node.remote()) == victim.node_id
    cluster.remove_node(victim, allow_graceful=False)
    import time
    deadline = time.monotonic() + 60
    while True:
        try:
            where = zray.get(actor.node.remote(), timeout=30)
            break
        except zray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert where != victim.node_id


@zray.remote
def sleeper(path, seconds):
    import time
    with open(path, "a") as f:
        f.write("x")
    time.sleep(seconds)
    return "woke"


def test_task_timeout_kills_retries_then_raises(tmp_path):
    from zray.exceptions import TaskTimeoutError
    zray.init(num_cpus=1)
    try:
        marker = str(tmp_path / "sleeps")
        quick = sleeper.options(timeout_s=5).remote(str(tmp_path / "quick"), 0.05)
        assert zray.get(quick, timeout=30) == "woke"
        slow = sleeper.options(timeout_s=0.5, max_retries=1).remote(marker, 30)
        with pytest.raises(TaskTimeoutError) as info:
            zray.get(slow, timeout=30)
        assert "timeout_s=0.5" in str(info.value)
        assert runs(marker) == 2                     # retried once, then gave up
        assert zray.get(sleeper.remote(str(tmp_path / "after"), 0)) == "woke"
    finally:
        zray.shutdown()
