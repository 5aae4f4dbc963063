"""Placement groups in the head (zray/head/placement.py): where bundles go, fed
messages directly; no sockets, no processes."""

import pytest

from zray import ids
from zray.head.placement import bundles_problem, place_bundles
from zray.head.records import (
    ActorState, IllegalTransition, PlacementGroup, PlacementGroupState, TaskState,
)
from zray.protocol import Msg, PROTOCOL_MAJOR, STATUS_OK
from zray.resources import base_amount, in_bundle
from zray.serialization import KIND_INLINE
from zray.task_spec import TaskSpec

from tests.unit.test_head_state import DRIVER, NODE_A, WORKER, Harness, executed

pytestmark = pytest.mark.timeout(10)

NODE_B = b"N" + b"b" * 16
NODE_C = b"N" + b"c" * 16
A, B, C = NODE_A[1:], NODE_B[1:], NODE_C[1:]


# --- place_bundles: a pure function of free resources --------------------------------

def free(*cpus):
    return {bytes([i + 1]) * 16: {"CPU": float(c)} for i, c in enumerate(cpus)}


def one_cpu(n):
    return [{"CPU": 1.0}] * n


def test_pack_fills_one_node_when_it_can_and_overflows_in_order():
    nodes = free(4, 4, 4)
    n1, n2, _ = nodes
    assert place_bundles(one_cpu(3), "PACK", nodes, [None] * 3) == [n1] * 3
    assert place_bundles(one_cpu(6), "PACK", nodes, [None] * 6) == [n1] * 4 + [n2] * 2


def test_strict_pack_needs_one_node_for_everything():
    nodes = free(2, 2)
    assert place_bundles(one_cpu(3), "STRICT_PACK", nodes, [None] * 3) is None
    assert len(set(place_bundles(one_cpu(2), "STRICT_PACK", nodes, [None] * 2))) == 1


def test_spread_prefers_distinct_nodes_but_may_share():
    nodes = free(4, 4, 4)
    assert len(set(place_bundles(one_cpu(3), "SPREAD", nodes, [None] * 3))) == 3
    placed = place_bundles(one_cpu(5), "SPREAD", free(4, 4), [None] * 5)
    assert sorted(placed.count(n) for n in set(placed)) == [2, 3]


def test_strict_spread_needs_a_node_per_bundle_and_backtracks():
    assert place_bundles(one_cpu(3), "STRICT_SPREAD", free(4, 4), [None] * 3) is None
    nodes = {b"s" * 16: {"CPU": 1.0}, b"l" * 16: {"CPU": 2.0}}
    # the big bundle must take the big node even though the small one comes first
    placed = place_bundles([{"CPU": 1.0}, {"CPU": 2.0}], "STRICT_SPREAD", nodes, [None] * 2)
    assert placed == [b"s" * 16, b"l" * 16]


def test_rescheduling_keeps_placed_bundles_and_the_strategy():
    nodes = free(4, 4, 4)
    n1, n2, n3 = nodes
    placed = place_bundles(one_cpu(3), "STRICT_SPREAD", nodes, [n1, None, n2])
    assert placed == [n1, n3, n2]
    assert place_bundles(one_cpu(2), "STRICT_PACK", {n2: {"CPU": 4.0}}, [n1, None]) is None


def test_bad_bundles_and_strategies_are_named():
    assert "strategy" in bundles_problem([{"CPU": 1}], "TIGHT")
    assert "empty list" in bundles_problem([], "PACK")
    assert "only 0 values" in bundles_problem([{"CPU": 0}], "PACK")
    assert "only 0 values" in bundles_problem([{}], "PACK")
    assert bundles_problem([{"CPU": 1, "GPU": 0}], "PACK") is None


def test_bundle_requests_are_renamed_and_gpus_still_counted():
    request = in_bundle({"CPU": 1.0, "GPU": 2.0}, "ab", 0)
    assert request["CPU_group_0_ab"] == request["CPU_group_ab"] == 1.0
    assert request["bundle_group_0_ab"] > 0 and "bundle_group_ab" in request
    assert base_amount(request, "GPU") == 2.0
    assert set(in_bundle({}, "ab", -1)) == {"bundle_group_ab"}


def test_group_states_move_only_by_their_table():
    group = PlacementGroup(b"p" * 16, one_cpu(1), "PACK", "", "", None, False, 0.0)
    with pytest.raises(IllegalTransition):
        group.move(PlacementGroupState.RESCHEDULING)
    group.move(PlacementGroupState.REMOVED)
    with pytest.raises(IllegalTransition):
        group.move(PlacementGroupState.CREATED)


# --- the head: creating, using, removing, losing a node ------------------------------

def cluster(*nodes, cpus=2.0):
    h = Harness()
    for identity in nodes:
        h.add_node(identity, cpus=cpus)
    h.connect_driver()
    return h


def create(h, bundles, strategy="PACK", name="", lifetime=None, request_id=1):
    pg_id = ids.new_task_id()
    out = h.send(DRIVER, Msg.CREATE_PLACEMENT_GROUP,
                 (pg_id, bundles, strategy, name, lifetime, request_id))
    return pg_id, out


def group(h, pg_id):
    return h.state.placement_groups[pg_id]


def in_group_spec(pg_id, index=-1, cpus=1.0):
    return TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", (), (), 1,
                    in_bundle({"CPU": cpus}, pg_id.hex(), index), 3,
                    strategy=("placement_group", pg_id, index, False))


def test_bundles_are_reserved_on_nodes_and_told_to_them():
    h = cluster(NODE_A, NODE_B)
    pg_id, out = create(h, one_cpu(2), "STRICT_SPREAD")
    assert out[(DRIVER, Msg.QUERY_REPLY)] == [(1, True, None)]
    assert group(h, pg_id).state is PlacementGroupState.CREATED
    assert set(group(h, pg_id).nodes) == {A, B}
    for identity, node_id in ((NODE_A, A), (NODE_B, B)):
        [(got_id, index, bundle)] = out[(identity, Msg.RESERVE_BUNDLES)]
        assert got_id == pg_id and bundle == {"CPU": 1.0}
        node = h.state.nodes[node_id]
        assert node.available["CPU"] == 1.0
        assert node.total[f"CPU_group_{index}_{pg_id.hex()}"] == 1.0


def test_a_task_in_a_bundle_runs_on_that_bundles_node():
    h = cluster(NODE_A, NODE_B)
    pg_id, _ = create(h, one_cpu(2), "STRICT_SPREAD")
    target = group(h, pg_id).nodes[1]
    task = in_group_spec(pg_id, index=1)
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    identity = NODE_A if target == A else NODE_B
    assert [s.task_id for s in executed(out, identity)] == [task.task_id]
    second = in_group_spec(pg_id, index=1)          # the bundle is full: it waits
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (second,))
    assert h.state.tasks[second.task_id].state in (TaskState.PENDING, TaskState.ASSIGNED)
    assert (DRIVER, Msg.WARNING) not in out


def test_strict_spread_waits_for_a_third_node_and_shows_as_a_demand():
    h = cluster(NODE_A, NODE_B)
    pg_id, out = create(h, one_cpu(3), "STRICT_SPREAD")
    assert group(h, pg_id).state is PlacementGroupState.PENDING
    assert not any(key[1] is Msg.RESERVE_BUNDLES for key in out)
    [demand] = h.state.queries["demands"](h.state, None)
    assert demand["kind"] == "placement_group" and len(demand["resources"]) == 3
    h.add_node(NODE_C)
    assert group(h, pg_id).state is PlacementGroupState.CREATED
    assert set(group(h, pg_id).nodes) == {A, B, C}


def test_removal_frees_bundles_cancels_tasks_and_kills_actors():
    h = cluster(NODE_A)
    h.connect_worker()
    pg_id, _ = create(h, [{"CPU": 2.0}])
    running = in_group_spec(pg_id, 0)
    h.send(DRIVER, Msg.SUBMIT_TASKS, (running,))
    actor_id = ids.new_task_id()
    actor = TaskSpec(actor_id, b"job1", "A.__init__", b"cid", b"", (), (), 0,
                     in_bundle({}, pg_id.hex(), 0), 0,
                     strategy=("placement_group", pg_id, 0, False), actor_id=actor_id,
                     method="__init__", actor_options={
                         "held": in_bundle({}, pg_id.hex(), 0), "methods": {},
                         "class_name": "A", "max_restarts": -1})
    h.send(DRIVER, Msg.CREATE_ACTOR, (actor, 0))
    out = h.send(DRIVER, Msg.REMOVE_PLACEMENT_GROUP, (pg_id, 2))
    assert out[(DRIVER, Msg.QUERY_REPLY)] == [(2, True, None)]
    assert out[(NODE_A, Msg.RELEASE_BUNDLES)] == [(pg_id, 0)]
    assert (running.task_id, True) in out[(NODE_A, Msg.CANCEL_TASKS)]
    assert h.state.actors[actor_id].state is ActorState.DEAD
    node = h.state.nodes[A]
    assert node.available["CPU"] == 2.0 and not any("_group_" in k for k in node.total)
    assert group(h, pg_id).state is PlacementGroupState.REMOVED
    # the killed task's report frees nothing twice
    h.send(WORKER, Msg.TASKS_FINISHED, (running.task_id, 0, STATUS_OK,
                                        [(running.return_ids()[0], KIND_INLINE, b"x", 1, ())],
                                        0.01))
    assert h.state.nodes[A].available["CPU"] == 2.0
    late = in_group_spec(pg_id, 0)                  # submitted after removal: fails
    h.send(DRIVER, Msg.SUBMIT_TASKS, (late,))
    assert late.task_id not in h.state.tasks or \
        h.state.tasks[late.task_id].state is TaskState.FAILED


def test_a_dead_node_takes_its_bundles_and_the_group_is_placed_again():
    h = cluster(NODE_A, NODE_B)
    pg_id, _ = create(h, one_cpu(2), "STRICT_SPREAD")
    h.send(NODE_B, Msg.SHUTDOWN, ("node manager stopping",))
    assert group(h, pg_id).state is PlacementGroupState.RESCHEDULING
    assert group(h, pg_id).nodes.count(None) == 1
    out = h.add_node(NODE_C)
    assert group(h, pg_id).state is PlacementGroupState.CREATED
    assert set(group(h, pg_id).nodes) == {A, C}
    assert len(out[(NODE_C, Msg.RESERVE_BUNDLES)]) == 1 and (NODE_A, Msg.RESERVE_BUNDLES) \
        not in out


def test_names_are_unique_per_namespace_and_bad_bundles_are_refused():
    h = cluster(NODE_A)
    create(h, one_cpu(1), name="g")
    _, out = create(h, one_cpu(1), name="g", request_id=5)
    [(request_id, ok, text)] = out[(DRIVER, Msg.QUERY_REPLY)]
    assert request_id == 5 and not ok and "already exists" in text
    _, out = create(h, [{"CPU": 0.0}], request_id=6)
    assert out[(DRIVER, Msg.QUERY_REPLY)][0][1] is False
    job_id = h.state.clients[DRIVER].job_id
    found = h.state.queries["get_placement_group"](h.state, ("g", None, job_id))
    assert found is not None and found[1] == one_cpu(1)


def test_a_gone_driver_removes_its_groups_but_not_detached_ones():
    h = cluster(NODE_A)
    mine, _ = create(h, one_cpu(1))
    kept, _ = create(h, one_cpu(1), lifetime="detached")
    h.send(DRIVER, Msg.SHUTDOWN, ("disconnect",))
    assert group(h, mine).state is PlacementGroupState.REMOVED
    assert group(h, kept).state is PlacementGroupState.CREATED


def test_a_waiting_group_gets_freed_resources_before_queued_tasks():
    h = cluster(NODE_A, cpus=1.0)
    h.connect_worker()
    busy = TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", (), (), 1, {"CPU": 1.0}, 3)
    h.send(DRIVER, Msg.SUBMIT_TASKS, (busy,))
    pg_id, _ = create(h, one_cpu(1))
    assert group(h, pg_id).state is PlacementGroupState.PENDING
    h.send(WORKER, Msg.TASKS_FINISHED, (busy.task_id, 0, STATUS_OK,
                                        [(busy.return_ids()[0], KIND_INLINE, b"x", 1, ())],
                                        0.01))
    assert group(h, pg_id).state is PlacementGroupState.CREATED


def test_table_rows_have_rays_keys():
    h = cluster(NODE_A)
    pg_id, _ = create(h, one_cpu(1), name="t")
    row = h.state.queries["placement_group_table"](h.state, pg_id)
    assert {"placement_group_id", "name", "bundles", "bundles_to_node_id", "strategy",
            "state", "stats"} <= set(row)
    assert row["state"] == "CREATED" and row["bundles"] == {0: {"CPU": 1.0}}
    every = h.state.queries["placement_group_table"](h.state, None)
    assert list(every) == [pg_id.hex()]


def test_a_lent_worker_is_asked_back_only_when_that_lets_a_group_fit():
    h = cluster(NODE_A, cpus=1.0)
    h.send(NODE_A, Msg.LEASE_OFFER, (b"w" * 8,))
    assert h.state.nodes[A].lease is not None
    big, out = create(h, [{"CPU": 2.0}])                 # never fits: the lease stays
    assert (NODE_A, Msg.LEASE_RETURN) not in out and h.state.nodes[A].lease is not None
    pg_id, out = create(h, one_cpu(1))
    assert out[(NODE_A, Msg.LEASE_RETURN)] == [(b"w" * 8,)]
    assert group(h, pg_id).state is PlacementGroupState.CREATED
    assert group(h, big).state is PlacementGroupState.PENDING


def test_bundles_go_only_to_nodes_that_speak_placement_groups():
    h = cluster()
    h.send(NODE_B, Msg.REGISTER_NODE, (B, PROTOCOL_MAJOR, 0, {"resources": {"CPU": 4.0}}))
    h.connect_driver()
    pg_id, out = create(h, one_cpu(1))
    assert group(h, pg_id).state is PlacementGroupState.PENDING
    assert not any(key[1] is Msg.RESERVE_BUNDLES for key in out)
    h.add_node(NODE_A)
    assert group(h, pg_id).nodes == [A]


def test_pack_asks_lent_workers_back_to_keep_the_group_on_one_node():
    # Every idle node lent one worker: no node has room for the whole group
    # until a lease comes back, and PACK prefers that to spreading.
    h = cluster(NODE_A, NODE_B)
    h.send(NODE_A, Msg.LEASE_OFFER, (b"a" * 8,))
    h.send(NODE_B, Msg.LEASE_OFFER, (b"b" * 8,))
    pg_id, out = create(h, one_cpu(2), "PACK")
    assert group(h, pg_id).state is PlacementGroupState.CREATED
    assert len(set(group(h, pg_id).nodes)) == 1
    assert (NODE_A, Msg.LEASE_RETURN) in out or (NODE_B, Msg.LEASE_RETURN) in out
