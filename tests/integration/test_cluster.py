"""Many node managers on one machine (zray.cluster_utils.Cluster): placement,
SPREAD, chunked object transfer, nodes joining and leaving."""

from __future__ import annotations

import os

import numpy as np
import pytest

import zray
from zray.cluster_utils import Cluster
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}


@pytest.fixture(scope="module")
def three_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head": 1}, "_system_config": FAST_FAILURE})
    b = cluster.add_node(num_cpus=1, resources={"nodeB": 1}, wait=False)
    c = cluster.add_node(num_cpus=1, resources={"nodeC": 1}, wait=False)
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    yield cluster, {"head": cluster.head_node, "nodeB": b, "nodeC": c}
    zray.shutdown()
    cluster.shutdown()


@zray.remote
def node_id():
    return zray.get_runtime_context().get_node_id()


@zray.remote
def make_array(n):
    return np.arange(n, dtype=np.int64)


@zray.remote
def checksum(array):
    return int(array.sum()), int(array[-1]), zray.get_runtime_context().get_node_id()


def test_nodes_and_resources_cover_every_node(three_nodes):
    cluster, nodes = three_nodes
    alive = [n for n in zray.nodes() if n["Alive"]]
    assert {n["NodeID"] for n in alive} == {h.node_id for h in nodes.values()}
    total = zray.cluster_resources()
    assert total["CPU"] == 3 and total["nodeB"] == 1 and total["nodeC"] == 1
    assert len(cluster.list_all_nodes()) == 3


def test_custom_resources_place_tasks(three_nodes):
    _, nodes = three_nodes
    for resource, handle in nodes.items():
        where = zray.get([node_id.options(resources={resource: 0.5}).remote()
                          for _ in range(4)])
        assert set(where) == {handle.node_id}, resource


def test_spread_uses_every_node(three_nodes):
    _, nodes = three_nodes
    where = zray.get([node_id.options(scheduling_strategy="SPREAD").remote()
                      for _ in range(30)])
    assert set(where) == {h.node_id for h in nodes.values()}


def test_node_affinity(three_nodes):
    _, nodes = three_nodes
    target = nodes["nodeC"].node_id
    strategy = NodeAffinitySchedulingStrategy(node_id=target, soft=False)
    assert set(zray.get([node_id.options(scheduling_strategy=strategy).remote()
                         for _ in range(3)])) == {target}


def test_large_array_moves_between_nodes_and_to_driver(three_nodes):
    _, nodes = three_nodes
    n = 25_000_000                                  # 200 MB of int64
    ref = make_array.options(resources={"nodeB": 1}).remote(n)
    expected = n * (n - 1) // 2
    total, last, where = zray.get(checksum.options(resources={"nodeC": 1}).remote(ref))
    assert (total, last, where) == (expected, n - 1, nodes["nodeC"].node_id)
    array = zray.get(ref)                       # the driver's node is the head node
    assert array.shape == (n,) and int(array[-1]) == n - 1 and int(array[12345]) == 12345
    # The head hears of each node's new copy from that node, beside the answer
    # the reader gets: the directory catches up (it can lag under load).
    everywhere = {h.node_id for h in nodes.values()}

    def located():
        rows = {o["object_id"]: o["locations"] for o in zray.util.state.list_objects()}
        return set(rows.get(ref.hex(), ())) == everywhere
    assert wait_for(located, timeout_s=20)


def test_one_pull_serves_many_tasks_on_a_node(three_nodes):
    _, nodes = three_nodes
    ref = make_array.options(resources={"nodeB": 1}).remote(2_000_000)
    results = zray.get([checksum.options(resources={"nodeC": 0.1}).remote(ref)
                        for _ in range(6)])
    assert {r[0] for r in results} == {2_000_000 * 1_999_999 // 2}
    objects = {o["object_id"]: o for o in zray.util.state.list_objects()}
    assert set(objects[ref.hex()]["locations"]) == {nodes["nodeB"].node_id,
                                                    nodes["nodeC"].node_id}


def test_put_on_driver_read_on_other_node(three_nodes):
    _, nodes = three_nodes
    array = np.random.default_rng(1).random(2_000_000)
    ref = zray.put(array)
    total, _, where = zray.get(checksum.options(resources={"nodeB": 1}).remote(ref))
    assert where == nodes["nodeB"].node_id
    assert total == int(array.sum())


@zray.remote
class Holder:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return len(self.items)

    def where(self):
        return zray.get_runtime_context().get_node_id()


def test_actor_on_another_node_is_called_directly(three_nodes):
    _, nodes = three_nodes
    holder = Holder.options(resources={"nodeC": 1}).remote()
    assert zray.get(holder.where.remote()) == nodes["nodeC"].node_id
    assert zray.get([holder.add.remote(i) for i in range(50)]) == list(range(1, 51))
    zray.kill(holder)


def test_task_goes_where_its_argument_bytes_are(three_nodes):
    _, nodes = three_nodes
    for resource in ("nodeB", "nodeC"):
        ref = make_array.options(resources={resource: 1}).remote(1_000_000)   # 8 MB
        zray.wait([ref])
        where = {zray.get(checksum.remote(ref))[2] for _ in range(3)}   # one at a time:
        assert where == {nodes[resource].node_id}, resource      # resources allow it
