"""Local placement on real clusters: nested tasks a worker submits run on its
own node when they fit there now, spill back to the head when they do not
(more CPUs than are free, a resource only another node has), give the right
results either way, and a locally placed task's lost result is rebuilt from
lineage after its node dies.  What happened is read from the head's counters
(the ``summary`` query's ``dispatched``: ``local`` and ``spilled``)."""

from __future__ import annotations

import numpy as np
import pytest

import zray
from zray import _runtime
from zray.cluster_utils import Cluster
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}
N = 200_000                         # 1.6 MB of int64: lives in a node's shared memory


def dispatched() -> dict:
    return _runtime.client().query("summary")["dispatched"]


@zray.remote
def node_id_of(value):
    return value, zray.get_runtime_context().get_node_id()


@zray.remote
def fan_out(n, child_options=None):
    """Submit ``n`` children (with ``child_options``) and return their answers and
    this task's node."""
    child = node_id_of.options(**child_options) if child_options else node_id_of
    refs = [child.remote(i) for i in range(n)]
    return zray.get(refs), zray.get_runtime_context().get_node_id()


def test_nested_tasks_that_fit_run_on_their_node(fresh_cluster):
    fresh_cluster(num_cpus=4)
    before = dispatched()
    children, parent_node = zray.get(fan_out.remote(2), timeout=60)
    assert [value for value, _ in children] == [0, 1]
    assert {node for _, node in children} == {parent_node}
    after = dispatched()
    assert after["local"] - before["local"] == 2       # neither went through the head
    assert after["spilled"] == before["spilled"]


def test_a_nested_task_needing_more_cpus_than_are_free_spills_back(fresh_cluster):
    fresh_cluster(num_cpus=4)
    before = dispatched()
    # The parent holds one CPU: a 4-CPU child cannot start now. The head places
    # it once the parent waits in get (and lends its CPU back).
    children, _ = zray.get(fan_out.remote(1, {"num_cpus": 4}), timeout=60)
    assert [value for value, _ in children] == [0]
    after = dispatched()
    assert after["spilled"] - before["spilled"] == 1
    assert after["local"] == before["local"]


@pytest.fixture
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "_system_config": FAST_FAILURE})
    other = cluster.add_node(num_cpus=3, resources={"special": 1})
    zray.init(address=cluster.address)
    yield cluster, other
    zray.shutdown()
    cluster.shutdown()


def on(node):
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)


def test_a_resource_only_another_node_has_spills_there(two_nodes):
    cluster, other = two_nodes
    before = dispatched()
    parent = fan_out.options(scheduling_strategy=on(cluster.head_node))
    children, parent_node = zray.get(parent.remote(1, {"resources": {"special": 1}}),
                                     timeout=60)
    assert parent_node == cluster.head_node.node_id
    assert children == [(0, other.node_id)]
    after = dispatched()
    assert after["spilled"] - before["spilled"] == 1
    # and one that fits stays where its parent runs
    children, parent_node = zray.get(parent.remote(1), timeout=60)
    assert children == [(0, cluster.head_node.node_id)]
    assert dispatched()["local"] - after["local"] == 1


@zray.remote(max_retries=3)
def array_counting_runs(path):
    """A large result (in its node's shared memory); each run appends its node id."""
    with open(path, "a") as f:
        f.write(zray.get_runtime_context().get_node_id() + "\n")
    return np.ones(N, dtype=np.int64)


@zray.remote
def submit_array_task(path):
    """Returns the ref of a nested task (it escapes to the driver, in a list)."""
    ref = array_counting_runs.remote(path)
    zray.wait([ref])
    return [ref]


def test_a_locally_placed_tasks_lost_result_is_rebuilt_from_lineage(two_nodes, tmp_path):
    cluster, victim = two_nodes
    marker = tmp_path / "runs"
    before = dispatched()
    [ref] = zray.get(submit_array_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=victim.node_id, soft=True)).remote(str(marker)), timeout=60)
    assert dispatched()["local"] - before["local"] == 1
    assert marker.read_text().split() == [victim.node_id]
    cluster.remove_node(victim, allow_graceful=False)
    value = zray.get(ref, timeout=60)
    assert value.shape == (N,) and int(value.sum()) == N
    assert marker.read_text().split() == [victim.node_id, cluster.head_node.node_id]
