"""A part of the head on its own: built on a bare stand-in for HeadState that
holds only the tables and parts it binds to."""

from types import SimpleNamespace

import pytest

from zray import ids
from zray.config import Config
from zray.head.records import Node, ObjectRecord, ObjectState, Task
from zray.head.scheduling import Scheduler, pick_node
from zray.outbox import Outbox
from zray.task_spec import TaskSpec

pytestmark = pytest.mark.timeout(10)


def _spec(cpus=1.0, strategy=None):
    spec = TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", (), (), 1,
                    {"CPU": cpus}, 3)
    spec.strategy = strategy
    return spec


def _scheduler(*cpus):
    head = SimpleNamespace(out=Outbox(), config=Config(), dirty=False, functions={},
                           nodes={}, objects={}, tasks={}, leases=None, task_flow=None)
    scheduler = Scheduler(head)
    scheduler.bind(head)
    for i, amount in enumerate(cpus):
        node_id = bytes([i + 1]) * 16
        node = head.nodes[node_id] = Node(node_id, b"N" + node_id,
                                          {"resources": {"CPU": amount}}, float(i))
        scheduler.node_joined(node)
    return head, scheduler


def test_enqueue_groups_by_scheduling_class_and_marks_the_head_dirty():
    head, scheduler = _scheduler(4.0)
    one, two, big = (Task(_spec(), b"D"), Task(_spec(), b"D"), Task(_spec(2.0), b"D"))
    for task in (one, two, big):
        scheduler.enqueue(task)
    assert head.dirty
    assert sorted(len(q) for q in scheduler.queues.values()) == [1, 2]


def test_default_packs_onto_the_first_node_and_spread_goes_round():
    head, scheduler = _scheduler(4.0, 4.0)
    first = min(head.nodes.values(), key=lambda n: n.registered_at)
    assert pick_node(scheduler, Task(_spec(), b"D")) is first
    picked = {pick_node(scheduler, Task(_spec(strategy="SPREAD"), b"D")).node_id
              for _ in range(2)}
    assert picked == set(head.nodes)


def test_locality_wins_over_packing():
    head, scheduler = _scheduler(4.0, 4.0)
    second = max(head.nodes.values(), key=lambda n: n.registered_at)
    obj = head.objects[b"o" * 20] = ObjectRecord(b"o" * 20, ObjectState.READY)
    obj.add_location(second.node_id)
    obj.size = 1 << 20
    spec = _spec()
    spec.dep_ids = (obj.object_id,)
    assert pick_node(scheduler, Task(spec, b"D")) is second
