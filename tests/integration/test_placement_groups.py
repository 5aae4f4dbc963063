"""Placement groups on a cluster of node managers (zray.cluster_utils.Cluster):
where bundles land by strategy, bundle indexes, waiting for room, removal,
names and the table, and a node that dies with its bundles."""

from __future__ import annotations

import pytest

import zray
from zray.cluster_utils import Cluster
from zray.exceptions import RayActorError
from zray.util import (
    get_current_placement_group, get_placement_group, placement_group,
    placement_group_table, remove_placement_group,
)
from zray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}


# Tests with a cluster of their own come first: the module's cluster (three_nodes)
# holds this driver's connection from its first use to the end of the module.

def test_strict_spread_waits_for_a_third_node():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        zray.init(address=cluster.address)
        pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
        ready = pg.ready()
        done, _ = zray.wait([ready], timeout=0.5)
        assert not done and not pg.wait(0.5)
        assert placement_group_table(pg)["state"] == "PENDING"
        demands = zray._runtime.client().query("demands")
        assert any(d.get("placement_group_id") == pg.id.hex() for d in demands)
        cluster.add_node(num_cpus=1)
        assert zray.get(ready, timeout=30) == pg
        assert pg.wait(5)
        assert len(set(placement_group_table(pg)["bundles_to_node_id"].values())) == 3
    finally:
        zray.shutdown()
        cluster.shutdown()


def test_a_dead_node_takes_its_bundles_and_they_are_placed_again():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    try:
        doomed = cluster.add_node(num_cpus=1, resources={"slot": 1})
        zray.init(address=cluster.address)
        pg = placement_group([{"CPU": 1, "slot": 1}])
        assert pg.wait(30)
        actor = Member.options(scheduling_strategy=in_bundle(pg, 0), max_restarts=-1,
                               max_task_retries=-1).remote()
        assert zray.get(actor.where.remote(), timeout=30)[0] == doomed.node_id
        cluster.remove_node(doomed, allow_graceful=False)
        assert wait_for(lambda: placement_group_table(pg)["state"] == "RESCHEDULING", 30)
        spare = cluster.add_node(num_cpus=1, resources={"slot": 1})
        assert pg.wait(30)
        assert placement_group_table(pg)["bundles_to_node_id"][0] == spare.node_id
        assert zray.get(actor.where.remote(), timeout=60)[0] == spare.node_id
        remove_placement_group(pg)
    finally:
        zray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def three_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2, wait=False)
    cluster.add_node(num_cpus=2, wait=False)
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    yield cluster
    zray.shutdown()
    cluster.shutdown()


@zray.remote(num_cpus=1)
def where():
    pg = get_current_placement_group()
    return zray.get_runtime_context().get_node_id(), pg.id.hex() if pg else None


@zray.remote(num_cpus=1)
class Member:
    def where(self):
        pg = get_current_placement_group()
        return zray.get_runtime_context().get_node_id(), pg.id.hex() if pg else None


def in_bundle(pg, index=-1):
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)


def bundle_nodes(pg, count):
    return [zray.get(where.options(scheduling_strategy=in_bundle(pg, i)).remote(),
                     timeout=30)[0] for i in range(count)]


@pytest.mark.parametrize("strategy, distinct", [("PACK", 1), ("STRICT_PACK", 1),
                                                ("SPREAD", 2), ("STRICT_SPREAD", 2)])
def test_bundles_land_by_strategy(three_nodes, strategy, distinct):
    # PACK is a preference: it packs onto one node when one has room, so wait
    # until the earlier tests' workers have given their CPUs back
    assert wait_for(lambda: zray.available_resources().get("CPU", 0) ==
                    zray.cluster_resources().get("CPU"), 20)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy=strategy)
    try:
        assert zray.get(pg.ready(), timeout=30) == pg
        nodes = bundle_nodes(pg, 2)
        assert len(set(nodes)) == distinct
        table = placement_group_table(pg)
        assert [table["bundles_to_node_id"][i] for i in range(2)] == nodes
    finally:
        remove_placement_group(pg)


def test_tasks_and_actors_use_their_bundle_index(three_nodes):
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    try:
        assert pg.wait(30)
        placed = placement_group_table(pg)["bundles_to_node_id"]
        assert len(set(placed.values())) == 3
        for index in range(3):
            node, group = zray.get(where.options(
                scheduling_strategy=in_bundle(pg, index)).remote(), timeout=30)
            assert (node, group) == (placed[index], pg.id.hex())
            actor = Member.options(placement_group=pg,       # the older form
                                   placement_group_bundle_index=index).remote()
            assert zray.get(actor.where.remote(), timeout=30) == (placed[index],
                                                                   pg.id.hex())
            zray.kill(actor)
        anywhere = zray.get([where.options(scheduling_strategy=in_bundle(pg)).remote()
                             for _ in range(3)], timeout=30)
        assert {node for node, _ in anywhere} <= set(placed.values())
        assert zray.get(where.remote(), timeout=30)[1] is None
    finally:
        remove_placement_group(pg)


def test_bad_requests_raise_value_error(three_nodes):
    with pytest.raises(ValueError):
        placement_group([])
    with pytest.raises(ValueError):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    pg = placement_group([{"CPU": 1}])
    try:
        with pytest.raises(ValueError, match="index"):
            where.options(scheduling_strategy=in_bundle(pg, 1)).remote()
        with pytest.raises(ValueError, match="cannot fit"):
            where.options(num_cpus=2, scheduling_strategy=in_bundle(pg, 0)).remote()
    finally:
        remove_placement_group(pg)


def test_removal_frees_resources_and_kills_the_groups_actors(three_nodes):
    pg = placement_group([{"CPU": 2}] * 3, strategy="SPREAD")     # every CPU
    assert pg.wait(30)
    actor = Member.options(scheduling_strategy=in_bundle(pg, 0)).remote()
    zray.get(actor.where.remote(), timeout=30)
    blocked = where.remote()
    ready, _ = zray.wait([blocked], timeout=0.5)
    assert not ready                      # no CPU outside the group
    remove_placement_group(pg)
    assert zray.get(blocked, timeout=30)[1] is None
    with pytest.raises(RayActorError):
        zray.get(actor.where.remote(), timeout=30)
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert wait_for(lambda: zray.available_resources().get("CPU") == 6, 10)


def test_named_groups_and_the_table(three_nodes):
    pg = placement_group([{"CPU": 1}], name="trainers", strategy="PACK")
    try:
        assert pg.wait(30)
        found = get_placement_group("trainers")
        assert found.id == pg.id and found.bundle_specs == [{"CPU": 1.0}]
        row = placement_group_table(pg)
        assert row["name"] == "trainers" and row["strategy"] == "PACK"
        assert row["state"] == "CREATED" and row["bundles"] == {0: {"CPU": 1.0}}
        assert "scheduling_attempt" in row["stats"]
        assert pg.id.hex() in placement_group_table()
        with pytest.raises(ValueError, match="already exists"):
            placement_group([{"CPU": 1}], name="trainers")
    finally:
        remove_placement_group(pg)
    with pytest.raises(ValueError):
        get_placement_group("trainers")


def test_child_tasks_are_captured_when_asked(three_nodes):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")

    @zray.remote(num_cpus=0)
    def parent():
        return zray.get(where.remote(), timeout=30)

    try:
        assert pg.wait(30)
        captured = PlacementGroupSchedulingStrategy(pg, 0, True)
        node, group = zray.get(parent.options(scheduling_strategy=captured).remote(),
                               timeout=30)
        assert group == pg.id.hex() and node == placement_group_table(pg)[
            "bundles_to_node_id"][0]
        node, group = zray.get(parent.options(scheduling_strategy=in_bundle(pg, 0)).remote(),
                               timeout=30)
        assert group is None
    finally:
        remove_placement_group(pg)
