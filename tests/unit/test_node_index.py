"""The scheduler's node index (zray.head.node_index) on its own and through the
scheduler: kept incrementally, it always equals a full recomputation, and the
picks it gives are those of a scan over every node."""

import random
from types import SimpleNamespace

import pytest

from zray import ids
from zray.config import Config
from zray.head.node_index import NodeIndex, free_fraction, has_room, shape_key
from zray.head.records import Node, NodeState, ObjectRecord, ObjectState, Task
from zray.head.scheduling import Scheduler, pick_node
from zray.outbox import Outbox
from zray.protocol import Msg
from zray.resources import fits
from zray.task_spec import TaskSpec
from tests.unit.test_head_state import DRIVER, Harness, spec

pytestmark = pytest.mark.timeout(30)

SHAPES = [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0},
          {"CPU": 1.0, "memory": 100.0}, {}]


def _spec(resources=None, strategy=None, deps=()):
    spec = TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", tuple(deps), (), 1,
                    dict(resources if resources is not None else {"CPU": 1.0}), 3)
    spec.strategy = strategy
    return spec


def _scheduler():
    head = SimpleNamespace(out=Outbox(), config=Config(), dirty=False, functions={},
                           nodes={}, objects={}, tasks={}, leases=None, task_flow=None)
    scheduler = Scheduler(head)
    scheduler.bind(head)
    return head, scheduler


def _join(head, scheduler, resources, seq):
    node_id = seq.to_bytes(4, "big") + b"n" * 12
    node = head.nodes[node_id] = Node(node_id, b"N" + node_id, {"resources": resources},
                                      float(seq))
    scheduler.node_joined(node)
    return node


def _scan_default(scheduler, spec):
    """The placement the head made before the index: a scan over every node."""
    alive = [n for n in scheduler.nodes.values() if n.state is NodeState.ALIVE]
    candidates = [n for n in alive if fits(spec.resources, n.available)]
    if not candidates:
        factor = Config().long_task_overcommit_factor
        room = [n for n in alive if has_room(shape_key(spec.resources), n, factor)]
        return max(room, key=free_fraction) if room else None
    if spec.dep_ids:
        local = {n.node_id: 0 for n in candidates}
        for dep_id in spec.dep_ids:
            obj = scheduler.objects.get(dep_id)
            for node_id in (obj.locations if obj else ()):
                if node_id in local:
                    local[node_id] += obj.size
        best = max(local.values())
        if best > 0:
            candidates = [n for n in candidates if local[n.node_id] == best]
    for node in candidates:
        if free_fraction(node) > 0.5:
            return node
    return max(candidates, key=free_fraction)


def test_incremental_index_equals_recomputation_after_random_changes():
    rng = random.Random(19)
    head, scheduler = _scheduler()
    index = scheduler.index
    for key in map(shape_key, SHAPES):
        index.shape(key)
    seq = 0
    for step in range(3000):
        alive = [n for n in head.nodes.values() if n.state is NodeState.ALIVE]
        action = rng.random()
        if action < 0.05 or not alive:           # join
            resources = {"CPU": float(rng.choice([1, 2, 4, 8]))}
            if rng.random() < 0.3:
                resources["GPU"] = float(rng.choice([1, 2]))
            _join(head, scheduler, resources, seq)
            seq += 1
        elif action < 0.07:                      # leave
            node = rng.choice(alive)
            node.move(NodeState.DEAD)
            scheduler.node_changed(node)
        elif action < 0.55:                      # grant (overcommit allowed)
            node = rng.choice(alive)
            for name, amount in rng.choice(SHAPES).items():
                node.available[name] = node.available.get(name, 0.0) - amount
            scheduler.node_changed(node)
        else:                                    # release up to the totals
            node = rng.choice(alive)
            name = rng.choice(list(node.total))
            node.available[name] = min(node.total[name],
                                       node.available.get(name, 0.0) + rng.choice([0.5, 1]))
            scheduler.node_changed(node)
        if step % 10 == 0:
            index.validate(head.nodes)
            spec = _spec(rng.choice(SHAPES[:3]))
            assert pick_node(scheduler, Task(spec, b"D")) is _scan_default(scheduler, spec)
    index.validate(head.nodes)
    for shape in index.shapes.values():       # stale heap entries stay bounded
        for ordered in (shape.fit, *shape.room.values()):
            assert ordered.heap is None or len(ordered.heap) <= 2 * len(index.nodes) + 64


def test_spread_rotates_over_the_nodes_in_join_order():
    head, scheduler = _scheduler()
    nodes = [_join(head, scheduler, {"CPU": 4.0}, i) for i in range(4)]
    picked = []
    for _ in range(8):
        task = Task(_spec(strategy="SPREAD"), b"D")
        node = pick_node(scheduler, task)
        node.available["CPU"] -= 1.0
        scheduler.node_changed(node)
        picked.append(nodes.index(node))
    assert picked == [0, 1, 2, 3, 0, 1, 2, 3]
    nodes[1].move(NodeState.DEAD)           # a dead node drops out of the rotation
    scheduler.node_changed(nodes[1])
    assert [nodes.index(pick_node(scheduler, Task(_spec(strategy="SPREAD"), b"D")))
            for _ in range(3)] == [0, 2, 3]


def test_an_infeasible_shape_is_known_without_a_scan_and_warned_once():
    h = Harness()
    h.add_node(cpus=1.0)
    h.connect_driver()
    warnings = 0
    for _ in range(5):
        out = h.send(DRIVER, Msg.SUBMIT_TASKS, (spec(cpus=8.0, name="big"),))
        warnings += len(out.get((DRIVER, Msg.WARNING), []))
    assert warnings == 1
    shape = h.state.scheduler.index.shape(shape_key({"CPU": 8.0}))
    assert not shape.feasible
    h.add_node(b"N" + b"b" * 16, cpus=64.0)
    assert shape.feasible and not h.state.queues     # the new node took them all


def test_locality_costs_the_locations_not_the_nodes():
    head, scheduler = _scheduler()
    nodes = [_join(head, scheduler, {"CPU": 8.0}, i) for i in range(2000)]
    obj = head.objects[b"o" * 18] = ObjectRecord(b"o" * 18, ObjectState.READY)
    obj.size = 1 << 20
    obj.add_location(nodes[1500].node_id)
    obj.add_location(nodes[1700].node_id)
    small = head.objects[b"p" * 18] = ObjectRecord(b"p" * 18, ObjectState.READY)
    small.size = 10
    small.add_location(nodes[1700].node_id)
    spec = _spec(deps=(obj.object_id, small.object_id))
    assert pick_node(scheduler, Task(spec, b"D")) is nodes[1700]   # the most bytes
    nodes[1700].available["CPU"] = 0.0          # full: the next best holder
    scheduler.node_changed(nodes[1700])
    assert pick_node(scheduler, Task(spec, b"D")) is nodes[1500]
    scheduler.index.validate(head.nodes)


def test_node_affinity_is_a_direct_lookup_and_hard_affinity_waits_for_room():
    head, scheduler = _scheduler()
    nodes = [_join(head, scheduler, {"CPU": 1.0}, i) for i in range(3)]
    target = nodes[2]
    spec = _spec(strategy=("node_affinity", target.node_id, False))
    assert pick_node(scheduler, Task(spec, b"D")) is target
    target.available["CPU"] = -0.5 - Config().long_task_overcommit_factor
    scheduler.node_changed(target)
    assert pick_node(scheduler, Task(spec, b"D")) is None           # hard: it waits
    soft = _spec(strategy=("node_affinity", target.node_id, True))
    assert pick_node(scheduler, Task(soft, b"D")) is None     # soft: waits for it too
    target.move(NodeState.DEAD)
    scheduler.node_changed(target)
    assert pick_node(scheduler, Task(soft, b"D")) is nodes[0]       # gone: elsewhere


def test_unused_shapes_are_forgotten_and_rebuilt_exactly():
    from zray.head.node_index import SHAPE_IDLE_PASSES
    head, scheduler = _scheduler()
    _join(head, scheduler, {"CPU": 2.0}, 0)
    index = scheduler.index
    index.shape(shape_key({"CPU": 2.0}))
    for _ in range(SHAPE_IDLE_PASSES + 200):
        index.end_pass(set())
    assert not index.shapes
    assert index.shape(shape_key({"CPU": 2.0})).fit.members == {0}
    index.validate(head.nodes)

