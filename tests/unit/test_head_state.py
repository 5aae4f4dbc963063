"""The head's state machine, fed messages directly: no sockets, no processes."""

import pickle

import pytest

from zray import ids, protocol
from zray.config import Config
from zray.head.records import (
    ActorState, Lease, LeaseState, Node, NodeState, ObjectRecord,
)
from zray.head.state import HeadState, IllegalTransition, ObjectState, TaskState
from zray.protocol import (Message, Msg, PROTOCOL_MAJOR, PROTOCOL_MINOR, STATUS_ERROR,
                           STATUS_OK,
                           STATUS_RETRIABLE_ERROR)
from zray.serialization import KIND_ERROR, KIND_INLINE, KIND_SHM
from zray.task_spec import TaskSpec

pytestmark = pytest.mark.timeout(10)

DRIVER = b"Ddriver"
NODE_A = b"N" + b"a" * 16
WORKER = b"Wworker1"


def msg(kind, *items):
    """A message as decode hands it over: typed items (not checked here)."""
    return Message(kind, [protocol.ITEMS[kind]._make(item) for item in items], [])


class Harness:
    def __init__(self, cpus=2.0, **config):
        self.state = HeadState(Config(**config), "test", 0.0)
        self.now = 0.0

    def send(self, identity, kind, *items):
        self.state.handle(identity, msg(kind, *items), self.now)
        self.state.after_batch(self.now)
        self.state.validate()
        return self.state.out.drain()

    def add_node(self, identity=NODE_A, cpus=2.0, extra=None):
        resources = {"CPU": cpus, **(extra or {})}
        return self.send(identity, Msg.REGISTER_NODE,
                  (identity[1:], PROTOCOL_MAJOR, PROTOCOL_MINOR, {"resources": resources}))

    def connect_driver(self):
        return self.send(DRIVER, Msg.HELLO, ("driver", PROTOCOL_MAJOR, 0, 1, {}))

    def connect_worker(self, node=NODE_A):
        self.send(WORKER, Msg.HELLO, ("worker", PROTOCOL_MAJOR, 0, 2,
                                      {"node_id": node[1:]}))


def spec(deps=(), cpus=1.0, max_retries=3, name="f"):
    return TaskSpec(ids.new_task_id(), b"job1", name, b"fid", b"", tuple(deps), (), 1,
                    {"CPU": cpus} if cpus else {}, max_retries)


def executed(out, node=NODE_A):
    return [item[0] for item in out.get((node, Msg.EXECUTE_TASKS), [])]


def test_welcome_waits_for_nodes():
    h = Harness()
    out = h.send(DRIVER, Msg.HELLO, ("driver", PROTOCOL_MAJOR, 0, 1, {"wait_for_nodes": 1}))
    assert (DRIVER, Msg.WELCOME) not in out
    out = h.add_node()
    [(info,)] = out[(DRIVER, Msg.WELCOME)]
    assert info["job_id"] and len(info["nodes"]) == 1


def test_version_mismatch_is_refused_with_both_versions():
    h = Harness()
    out = h.send(DRIVER, Msg.HELLO, ("driver", PROTOCOL_MAJOR + 1, 0, 1, {}))
    [(text,)] = out[(DRIVER, Msg.PROTOCOL_ERROR)]
    assert str(PROTOCOL_MAJOR + 1) in text and str(PROTOCOL_MAJOR) in text


def test_task_is_placed_and_result_pushed_to_owner():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    task = spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    assert [s.task_id for s in executed(out)] == [task.task_id]
    [oid] = task.return_ids()
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (task.task_id, 0, STATUS_OK, [(oid, KIND_INLINE, b"data", 4, ())], 0.001))
    assert out[(DRIVER, Msg.OBJECTS_READY)] == [(oid, KIND_INLINE, b"data", 4, ())]
    assert h.state.tasks[task.task_id].state is TaskState.FINISHED
    h.send(DRIVER, Msg.REMOVE_REFS, (oid,))
    assert oid not in h.state.objects and task.task_id not in h.state.tasks


def test_results_sent_straight_to_the_owner_are_not_pushed_again():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    small, large = spec(), spec()
    for task in (small, large):
        task.owner_address = "ipc:///tmp/driver.sock"   # the worker sends inline results there
        h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    [small_id], [large_id] = small.return_ids(), large.return_ids()
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (small.task_id, 0, STATUS_OK, [(small_id, KIND_INLINE, b"data", 4, ())], 0.001))
    assert (DRIVER, Msg.OBJECTS_READY) not in out
    assert h.state.objects[small_id].state is ObjectState.READY
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (large.task_id, 0, STATUS_OK, [(large_id, KIND_SHM, None, 10**6, ())], 0.001))
    assert [item[0] for item in out[(DRIVER, Msg.OBJECTS_READY)]] == [large_id]
    out = h.send(DRIVER, Msg.SUBSCRIBE_OBJECTS, (small_id,))      # the driver's safety net
    assert out[(DRIVER, Msg.OBJECTS_READY)] == [(small_id, KIND_INLINE, b"data", 4, ())]


def test_dependency_waits_then_runs_with_value():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    first = spec()
    [first_out] = first.return_ids()
    second = spec(deps=[first_out])
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (first,), (second,))
    assert [s.task_id for s in executed(out)] == [first.task_id]
    assert h.state.tasks[second.task_id].state is TaskState.WAITING
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (first.task_id, 0, STATUS_OK, [(first_out, KIND_INLINE, b"v", 1, ())], 0.001))
    [sent] = executed(out)
    assert sent.task_id == second.task_id
    assert sent.dep_values == [(KIND_INLINE, b"v", 1, ())]


def test_dependency_error_fails_dependent_without_running():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    first = spec(max_retries=0)
    [first_out] = first.return_ids()
    second = spec(deps=[first_out])
    h.send(DRIVER, Msg.SUBMIT_TASKS, (first,), (second,))
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (first.task_id, 0, STATUS_ERROR, [(first_out, KIND_ERROR, b"err", 3, ())], 0.001))
    assert executed(out) == []
    [second_out] = second.return_ids()
    assert h.state.objects[second_out].kind == KIND_ERROR
    assert h.state.objects[second_out].data == b"err"


def test_resources_bound_commitment_and_free_on_finish():
    h = Harness(node_overcommit_factor=0.0, long_task_overcommit_factor=0.0)
    h.add_node(cpus=2.0)
    h.connect_driver()
    h.connect_worker()
    tasks = [spec() for _ in range(3)]
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, *[(s,) for s in tasks])
    assert len(executed(out)) == 2
    oid = tasks[0].return_ids()[0]
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (tasks[0].task_id, 0, STATUS_OK, [(oid, KIND_INLINE, b"", 0, ())], 0.001))
    assert [s.task_id for s in executed(out)] == [tasks[2].task_id]


def test_overcommit_queues_more_at_node():
    h = Harness(node_overcommit_factor=1.0, long_task_overcommit_factor=1.0)
    h.add_node(cpus=2.0)
    h.connect_driver()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, *[(spec(),) for _ in range(10)])
    assert len(executed(out)) == 4


def test_short_functions_get_deep_queues_long_ones_shallow():
    h = Harness(node_overcommit_factor=4.0, long_task_overcommit_factor=0.5,
                short_task_s=0.01)
    h.add_node(cpus=2.0)
    h.connect_driver()
    h.connect_worker()
    first = spec()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (first,))
    [oid] = first.return_ids()
    h.send(WORKER, Msg.TASKS_FINISHED,
           (first.task_id, 0, STATUS_OK, [(oid, KIND_INLINE, b"", 0, ())], 0.0005))
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, *[(spec(),) for _ in range(20)])
    assert len(executed(out)) == 2 + 8          # known short: 2 + 4 x 2 CPUs
    h2 = Harness(node_overcommit_factor=4.0, long_task_overcommit_factor=0.5)
    h2.add_node(cpus=2.0)
    h2.connect_driver()
    out = h2.send(DRIVER, Msg.SUBMIT_TASKS, *[(spec(),) for _ in range(20)])
    assert len(executed(out)) == 2 + 1          # not seen yet: 2 + 0.5 x 2 CPUs


def test_retriable_error_is_retried_then_fails():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    task = spec(max_retries=1)
    [oid] = task.return_ids()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (task.task_id, 0, STATUS_RETRIABLE_ERROR, [(oid, KIND_ERROR, b"e", 1, ())], 0.001))
    [again] = executed(out)
    assert again.attempt == 1
    out = h.send(WORKER, Msg.TASKS_FINISHED,
                 (task.task_id, 1, STATUS_RETRIABLE_ERROR, [(oid, KIND_ERROR, b"e", 1, ())], 0.001))
    assert executed(out) == []
    assert h.state.objects[oid].kind == KIND_ERROR


def test_worker_death_retries_and_stale_result_is_ignored():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    task = spec()
    [oid] = task.return_ids()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    out = h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 123, -9, task.task_id, 0))
    [again] = executed(out)
    assert again.attempt == 1
    out = h.send(WORKER, Msg.TASKS_FINISHED,       # the dead attempt's late result
                 (task.task_id, 0, STATUS_OK, [(oid, KIND_SHM, None, 10, ())], 0.001))
    assert out[(NODE_A, Msg.FREE_OBJECTS)] == [(oid,)]
    assert h.state.objects[oid].state is ObjectState.PENDING


def test_infeasible_task_warns_owner_once():
    h = Harness()
    h.add_node(cpus=1.0)
    h.connect_driver()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (spec(cpus=8.0, name="big"),))
    [(text,)] = out[(DRIVER, Msg.WARNING)]
    assert "big" in text and "CPU" in text
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (spec(cpus=8.0, name="big"),))
    assert (DRIVER, Msg.WARNING) not in out
    out = h.send(b"N" + b"b" * 16, Msg.REGISTER_NODE,
                 (b"b" * 16, PROTOCOL_MAJOR, 0, {"resources": {"CPU": 8.0}}))
    assert len(executed(out, b"N" + b"b" * 16)) == 1


def test_contained_objects_pinned_by_container():
    h = Harness()
    h.add_node()
    h.connect_driver()
    inner, outer = ids.new_put_id(), ids.new_put_id()
    h.send(DRIVER, Msg.PUT_OBJECTS, (inner, KIND_INLINE, b"i", 1, None, ()))
    h.send(DRIVER, Msg.PUT_OBJECTS, (outer, KIND_INLINE, b"o", 1, None, (inner,)))
    h.send(DRIVER, Msg.REMOVE_REFS, (inner,))
    assert inner in h.state.objects
    h.send(DRIVER, Msg.REMOVE_REFS, (outer,))
    assert inner not in h.state.objects and outer not in h.state.objects


def test_freeing_shm_object_tells_its_node():
    h = Harness()
    h.add_node()
    h.connect_driver()
    oid = ids.new_put_id()
    h.send(DRIVER, Msg.PUT_OBJECTS, (oid, KIND_SHM, None, 10, NODE_A[1:], ()))
    out = h.send(DRIVER, Msg.REMOVE_REFS, (oid,))
    assert out[(NODE_A, Msg.FREE_OBJECTS)] == [(oid,)]


def test_cancel_pending_task():
    h = Harness(node_overcommit_factor=0.0, long_task_overcommit_factor=0.0)
    h.add_node(cpus=1.0)
    h.connect_driver()
    first, second = spec(), spec()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (first,), (second,))
    h.send(DRIVER, Msg.CANCEL_TASKS, (second.task_id, False))
    assert h.state.tasks[second.task_id].state is TaskState.CANCELLED
    out = h.send(DRIVER, Msg.CANCEL_TASKS, (first.task_id, True))
    assert out[(NODE_A, Msg.CANCEL_TASKS)] == [(first.task_id, True)]


def test_dead_driver_releases_objects_and_tasks():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_missed_limit=2)
    h.add_node()
    h.connect_driver()
    oid = ids.new_put_id()
    h.send(DRIVER, Msg.PUT_OBJECTS, (oid, KIND_INLINE, b"x", 1, None, ()))
    h.state.tick(1.0)
    assert oid in h.state.objects
    h.state.nodes[NODE_A[1:]].last_seen = 10.0
    h.state.tick(10.0)
    assert oid not in h.state.objects and DRIVER not in h.state.clients


def test_missed_heartbeats_mark_node_dead_and_retry_elsewhere():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_missed_limit=2)
    h.add_node()
    node_b = b"N" + b"b" * 16
    h.connect_driver()
    task = spec()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    first_node = h.state.tasks[task.task_id].node_id
    survivor = node_b if first_node == NODE_A[1:] else NODE_A
    h.send(node_b, Msg.REGISTER_NODE, (node_b[1:], PROTOCOL_MAJOR, 0,
                                       {"resources": {"CPU": 2.0}}))
    h.state.clients[DRIVER].last_seen = 3.0
    h.state.nodes[survivor[1:]].last_seen = 3.0
    h.state.tick(3.0)
    h.state.validate()
    assert h.state.nodes[first_node].state is NodeState.DEAD
    assert h.state.tasks[task.task_id].node_id == survivor[1:]


def test_illegal_transition_raises():
    h = Harness()
    h.add_node()
    h.connect_driver()
    task = spec()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    record = h.state.tasks[task.task_id]
    with pytest.raises(IllegalTransition):
        record.move(TaskState.WAITING)
    assert record.state is TaskState.ASSIGNED


def test_objects_nodes_actors_and_leases_move_only_by_their_tables():
    obj = ObjectRecord(b"o" * 20)
    with pytest.raises(IllegalTransition):
        obj.move(ObjectState.LOST)          # nothing stored yet: it cannot be lost
    obj.move(ObjectState.READY)
    node = Node(b"n" * 16, NODE_A, {"resources": {"CPU": 1.0}}, 0.0)
    node.move(NodeState.DEAD)
    with pytest.raises(IllegalTransition):
        node.move(NodeState.ALIVE)          # a dead node registers anew
    lease = Lease(b"w" * 16, 0.0)
    with pytest.raises(IllegalTransition):
        lease.recall()                      # only a granted lease is recalled
    lease.grant(DRIVER)
    lease.recall()
    lease.take_back()
    assert lease.state is LeaseState.HEAD and lease.granted_to is None


def test_a_dead_actor_stays_dead():
    h = Harness()
    h.add_node()
    h.connect_driver()
    creation = actor_spec()
    h.send(DRIVER, Msg.CREATE_ACTOR, (creation, 0))
    h.send(DRIVER, Msg.KILL_ACTOR, (creation.actor_id, True))
    actor = h.state.actors[creation.actor_id]
    assert actor.state is ActorState.DEAD
    with pytest.raises(IllegalTransition):
        actor.move(ActorState.ALIVE)


def test_lease_task_finishing_before_its_unblock_keeps_cpu_count():
    # A leased worker's task blocks in get; its result (straight from the worker)
    # overtakes the unblock (relayed by the node). The CPU lent back must be taken
    # back once, or the head would count a CPU that does not exist.
    h = Harness()
    h.add_node(cpus=2.0)
    h.connect_driver()
    h.connect_worker()
    h.send(NODE_A, Msg.LEASE_OFFER, (WORKER[1:],))
    node = h.state.nodes[NODE_A[1:]]
    assert node.available["CPU"] == 1.0 and node.lease is not None
    task = spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    assert (b"W" + WORKER[1:], Msg.EXECUTE_TASKS) in out
    h.send(NODE_A, Msg.WORKER_BLOCKED, (task.task_id, ()))
    assert node.available["CPU"] == 2.0
    [oid] = task.return_ids()
    h.send(WORKER, Msg.TASKS_FINISHED,
           (task.task_id, 0, STATUS_OK, [(oid, KIND_INLINE, b"", 0, ())], 0.001))
    h.send(NODE_A, Msg.WORKER_UNBLOCKED, (task.task_id,))
    assert node.available["CPU"] == 1.0 and node.lease.task_id is None


def test_dead_node_outputs_are_rebuilt_from_lineage_and_puts_are_lost():
    h = Harness()
    h.add_node()
    node_b = b"N" + b"b" * 16
    h.send(node_b, Msg.REGISTER_NODE, (node_b[1:], PROTOCOL_MAJOR, 0,
                                       {"resources": {"CPU": 2.0}}))
    h.connect_driver()
    h.connect_worker()
    first = spec()
    h.send(DRIVER, Msg.SUBMIT_TASKS, (first,))
    victim = h.state.tasks[first.task_id].node_id
    survivor = node_b if victim == NODE_A[1:] else NODE_A
    [oid] = first.return_ids()
    h.send(WORKER, Msg.TASKS_FINISHED,
           (first.task_id, 0, STATUS_OK, [(oid, KIND_SHM, None, 1 << 20, ())], 0.001))
    second = spec(deps=(oid,))           # keeps the lineage of ``first`` pinned
    h.send(DRIVER, Msg.SUBMIT_TASKS, (second,))
    put_id = ids.new_put_id()
    h.send(DRIVER, Msg.PUT_OBJECTS, (put_id, KIND_SHM, None, 1 << 20, victim, ()))
    assert h.state.objects[oid].state is ObjectState.READY
    out = h.send(b"N" + victim, Msg.SHUTDOWN, ("killed",))
    record = h.state.tasks[first.task_id]
    assert record.spec.attempt == 1 and record.node_id == survivor[1:]
    assert [s.task_id for s in executed(out, survivor)] == [first.task_id]
    assert h.state.objects[oid].state is ObjectState.PENDING
    assert h.state.objects[put_id].kind == KIND_ERROR        # a put cannot be rebuilt
    assert h.state.tasks[second.task_id].state is TaskState.WAITING


def test_dead_node_heard_again_is_told_to_rejoin_and_ignored():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_missed_limit=2)
    h.add_node()
    h.connect_driver()
    h.state.clients[DRIVER].last_seen = 3.0
    h.state.tick(3.0)
    assert h.state.nodes[NODE_A[1:]].state is NodeState.DEAD
    out = h.send(NODE_A, Msg.HEARTBEAT, (3.1,))
    assert out[(NODE_A, Msg.SHUTDOWN)] == [(protocol.REJOIN,)]
    h.send(NODE_A, Msg.LEASE_OFFER, (WORKER[1:],))
    assert h.state.nodes[NODE_A[1:]].lease is None     # nothing from its old life


# --- leases granted to a driver ------------------------------------------------------

OWNER = "ipc:///tmp/driver-results.sock"


def granted_harness():
    """A node lending WORKER, and a driver that was granted it with its first task."""
    h = Harness()
    h.add_node(cpus=2.0)
    h.connect_driver()
    h.connect_worker()
    h.send(NODE_A, Msg.LEASE_OFFER, (WORKER[1:],))
    first = owned_spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (first,))
    assert (WORKER, Msg.EXECUTE_TASKS) in out
    assert out[(DRIVER, Msg.LEASE_GRANT)] == [(WORKER[1:], first.task_id)]
    finish(h, first)
    return h, h.state.nodes[NODE_A[1:]]


def owned_spec():
    task = spec()
    task.owner_address = OWNER
    return task


def finish(h, task, status=STATUS_OK):
    [oid] = task.return_ids()
    return h.send(WORKER, Msg.TASKS_FINISHED,
                  (task.task_id, task.attempt, status, [(oid, KIND_INLINE, b"v", 1, ())],
                   0.001))


def test_granted_tasks_are_recorded_on_the_lease_in_either_order():
    h, node = granted_harness()
    on_time, early = owned_spec(), owned_spec()
    h.send(DRIVER, Msg.SUBMIT_LEASED, (on_time, WORKER[1:]))
    assert h.state.tasks[on_time.task_id].state is TaskState.ASSIGNED
    assert node.lease.tasks == {on_time.task_id}
    out = finish(h, on_time)
    assert (DRIVER, Msg.OBJECTS_READY) not in out          # the worker sent it straight
    assert h.state.tasks[on_time.task_id].state is TaskState.FINISHED and not node.lease.tasks
    finish(h, early)                 # the worker's report overtakes the driver's
    assert early.task_id in h.state.early_granted
    h.send(DRIVER, Msg.SUBMIT_LEASED, (early, WORKER[1:]))
    assert h.state.tasks[early.task_id].state is TaskState.FINISHED
    assert h.state.objects[early.return_ids()[0]].state is ObjectState.READY
    assert not h.state.early_granted and h.state.dispatch_counts["granted"] == 2
    assert node.available["CPU"] == 1.0                     # the lease still holds its CPU


def test_granted_worker_death_retries_its_task_and_recalls_the_grant():
    h, node = granted_harness()
    task = owned_spec()
    h.send(DRIVER, Msg.SUBMIT_LEASED, (task, WORKER[1:]))
    out = h.send(NODE_A, Msg.WORKER_DIED, (WORKER[1:], 99, -9, None, 0))
    assert out[(DRIVER, Msg.LEASE_RECALL)] == [(WORKER[1:],)]
    assert node.lease is None and node.available["CPU"] == 1.0    # the retry holds one
    assert [s.task_id for s in executed(out)] == [task.task_id]    # retried on the node
    assert h.state.tasks[task.task_id].spec.attempt == 1
    late = owned_spec()              # sent to the worker just before it died
    out = h.send(DRIVER, Msg.SUBMIT_LEASED, (late, WORKER[1:]))
    assert [s.task_id for s in executed(out)] == [late.task_id]


def test_a_burst_recalls_the_grant_and_the_return_frees_the_worker():
    h, node = granted_harness()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (owned_spec(),), (owned_spec(),))
    assert out[(DRIVER, Msg.LEASE_RECALL)] == [(WORKER[1:],)]
    assert node.lease.granted_to == DRIVER            # until the driver gives it back
    h.send(DRIVER, Msg.LEASE_RETURN, (WORKER[1:],))
    assert node.lease.granted_to is None
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (owned_spec(),), (owned_spec(),))
    assert (NODE_A, Msg.LEASE_RETURN) in out and node.lease is None


def test_a_gone_driver_leaves_its_grant_to_the_head():
    h, node = granted_harness()
    h.send(DRIVER, Msg.SHUTDOWN, ("driver exiting",))
    assert node.lease.granted_to is None


def test_a_granted_task_blocking_before_its_registration_lends_its_cpu():
    h, node = granted_harness()
    task = owned_spec()
    h.send(NODE_A, Msg.WORKER_BLOCKED, (task.task_id, ()))    # overtakes SUBMIT_LEASED
    assert node.available["CPU"] == 1.0
    h.send(DRIVER, Msg.SUBMIT_LEASED, (task, WORKER[1:]))
    assert node.available["CPU"] == 2.0 and h.state.tasks[task.task_id].blocked
    h.send(NODE_A, Msg.WORKER_UNBLOCKED, (task.task_id,))
    assert node.available["CPU"] == 1.0


def test_an_early_report_from_a_worker_that_died_credits_no_cpu():
    h, node = granted_harness()
    task = owned_spec()
    finish(h, task)                                     # kept: not registered yet
    h.send(NODE_A, Msg.WORKER_DIED, (WORKER[1:], 99, -9, None, 0))
    assert node.lease is None and node.available["CPU"] == 2.0
    h.send(DRIVER, Msg.SUBMIT_LEASED, (task, WORKER[1:]))    # validate() checks the books
    assert h.state.tasks[task.task_id].state is TaskState.FINISHED
    assert node.available["CPU"] == 2.0


def test_a_returned_lease_is_not_reused_while_a_granted_task_runs_there():
    h, node = granted_harness()
    running = owned_spec()
    h.send(DRIVER, Msg.SUBMIT_LEASED, (running, WORKER[1:]))
    h.send(DRIVER, Msg.LEASE_RETURN, (WORKER[1:],))
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (owned_spec(),))
    assert (WORKER, Msg.EXECUTE_TASKS) not in out and (DRIVER, Msg.LEASE_GRANT) not in out
    assert len(executed(out)) == 1                      # the node runs it


def actor_spec(max_restarts=-1):
    actor_id = ids.new_task_id()
    return TaskSpec(actor_id, b"job1", "A.__init__", b"cid", b"", (), (), 0, {"CPU": 1.0},
                    0, actor_id=actor_id, method="__init__",
                    actor_options={"held": {}, "methods": {}, "class_name": "A",
                                   "max_restarts": max_restarts})


def test_actor_restarting_while_its_creation_waits_for_room_survives_its_node_dying():
    """A creation already PENDING (restarted, no room yet) is not moved to PENDING
    again when the actor's node then dies (that raised IllegalTransition)."""
    h = Harness()
    h.add_node(cpus=1.0)
    h.connect_driver()
    h.connect_worker()
    creation = actor_spec()
    out = h.send(DRIVER, Msg.CREATE_ACTOR, (creation, 0))
    assert [s.task_id for s in executed(out)] == [creation.task_id]
    h.send(WORKER, Msg.ACTOR_READY, (creation.actor_id, "ipc:///tmp/a.sock", 42))
    busy = spec()                                   # takes the node's only CPU
    assert [s.task_id for s in executed(h.send(DRIVER, Msg.SUBMIT_TASKS, (busy,)))] == \
        [busy.task_id]
    h.send(NODE_A, Msg.WORKER_DIED, (WORKER[1:], 42, -9, creation.task_id, 0))
    assert h.state.tasks[creation.task_id].state is TaskState.PENDING   # waits for room
    h.send(NODE_A, Msg.SHUTDOWN, ("node manager stopping",))
    assert h.state.actors[creation.actor_id].state is ActorState.RESTARTING
    assert h.state.tasks[creation.task_id].state is TaskState.PENDING
    assert sum(list(q).count(creation.task_id) for q in h.state.queues.values()) == 1


# --- generator tasks (zray/head/generators.py) ---------------------------------------

def generator_spec(num_returns=-1, max_retries=0):
    return TaskSpec(ids.new_task_id(), b"job1", "gen", b"fid", b"", (), (), num_returns,
                    {"CPU": 1.0}, max_retries)


def started_generator(num_returns=-1, max_retries=0):
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    task = generator_spec(num_returns, max_retries)
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    return h, task


def item(task, index, kind=KIND_INLINE, attempt=0):
    object_id = ids.object_id_for_item(task.task_id, index)
    data = None if kind == KIND_SHM else b"v%d" % index
    return (task.task_id, attempt, object_id, kind, data, 8, ())


def test_generator_items_are_pushed_as_they_come_and_pinned_by_the_completion():
    h, task = started_generator()
    [completion] = task.return_ids()
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 0))
    first = ids.object_id_for_item(task.task_id, 0)
    assert [i[0] for i in out[(DRIVER, Msg.OBJECTS_READY)]] == [first]
    h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 1))
    count = pickle.dumps(2, 5)
    h.send(WORKER, Msg.TASKS_FINISHED, (task.task_id, 0, STATUS_OK,
                                        [(completion, KIND_INLINE, count, len(count), ())],
                                        0.01))
    assert h.state.objects[first].pins == 1
    h.send(DRIVER, Msg.ADD_REFS, (first,))          # the driver took item 0 with next()
    h.send(DRIVER, Msg.REMOVE_REFS, (completion,))  # ...and dropped the generator
    assert first in h.state.objects
    assert ids.object_id_for_item(task.task_id, 1) not in h.state.objects
    assert task.task_id in h.state.tasks            # the lineage of item 0
    h.send(DRIVER, Msg.REMOVE_REFS, (first,))
    assert not h.state.objects and task.task_id not in h.state.tasks


def test_generator_replayed_items_are_ignored_and_stale_attempts_dropped():
    h, task = started_generator(max_retries=1)
    h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 0))
    h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 2, -9, task.task_id, 0))   # retried
    h.connect_worker()
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 1, attempt=0))       # stale
    assert (DRIVER, Msg.OBJECTS_READY) not in out
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 0, attempt=1))       # a replay
    assert (DRIVER, Msg.OBJECTS_READY) not in out
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 1, attempt=1))
    assert [i[0] for i in out[(DRIVER, Msg.OBJECTS_READY)]] == \
        [ids.object_id_for_item(task.task_id, 1)]


def test_generator_failure_is_the_next_item_and_counted():
    h, task = started_generator()
    [completion] = task.return_ids()
    h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 0))
    out = h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 2, -9, task.task_id, 0))
    ready = {i[0]: i for i in out[(DRIVER, Msg.OBJECTS_READY)]}
    error = ready[ids.object_id_for_item(task.task_id, 1)]
    assert error[1] == KIND_ERROR
    assert pickle.loads(ready[completion][2]) == 2


def test_dynamic_generator_failure_is_on_its_one_ref():
    h, task = started_generator(num_returns=-2)
    [completion] = task.return_ids()
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(task, 0))
    assert (DRIVER, Msg.OBJECTS_READY) not in out      # dynamic: nothing streams
    out = h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 2, -9, task.task_id, 0))
    assert [i[:2] for i in out[(DRIVER, Msg.OBJECTS_READY)]] == [(completion, KIND_ERROR)]


def test_actor_generator_items_before_the_registration_wait_for_it():
    h = Harness()
    h.add_node()
    h.connect_driver()
    call = generator_spec()
    call.actor_id, call.method = b"a" * 16, "count"
    out = h.send(WORKER, Msg.ITEMS_YIELDED, item(call, 0))
    assert not out and call.task_id in h.state.early_items
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (call,))
    assert not h.state.early_items
    assert ids.object_id_for_item(call.task_id, 0) in h.state.objects


def test_a_lease_is_not_used_before_its_worker_said_hello():
    # The node's offer can overtake the worker's own HELLO to the head; a task
    # sent to a worker the head's socket does not know yet would be dropped.
    h = Harness()
    h.add_node(cpus=2.0)
    h.connect_driver()
    h.send(NODE_A, Msg.LEASE_OFFER, (WORKER[1:],))
    first = spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (first,))
    assert (WORKER, Msg.EXECUTE_TASKS) not in out
    assert [t.task_id for t in executed(out)] == [first.task_id]
    h.connect_worker()
    second = spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (second,))
    assert [item[0].task_id for item in out[(WORKER, Msg.EXECUTE_TASKS)]] == [second.task_id]


def test_a_task_sent_to_a_node_gets_its_event_row_when_it_ends():
    """No row while it runs (its record answers, with its node and time); one
    row, made once, when it ends; a retry's first attempt keeps its node."""
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    events = h.state.events
    task = spec()
    h.now = 1.0
    h.send(DRIVER, Msg.SUBMIT_TASKS, (task,))
    assert not events.rows
    (live,) = events.pending(h.state.tasks)
    assert live["state"] == "SUBMITTED_TO_WORKER" and live["node_id"] == NODE_A[1:].hex()
    assert live["scheduled_time_ms"] == pytest.approx(events.wall(1.0) * 1e3)
    h.now = 2.0
    h.send(NODE_A, Msg.WORKER_DIED, (b"worker1", 123, -9, task.task_id, 0))
    (first,) = events.select()
    assert first["attempt_number"] == 0 and first["state"] == "FAILED" and first["retried"]
    assert first["node_id"] == NODE_A[1:].hex()
    assert first["scheduled_time_ms"] == pytest.approx(events.wall(1.0) * 1e3)
    [oid] = task.return_ids()
    h.connect_worker()
    h.now = 3.0
    h.send(WORKER, Msg.TASKS_FINISHED,
           (task.task_id, 1, STATUS_OK, [(oid, KIND_INLINE, b"data", 4, ())], 0.5))
    first, second = events.select()
    assert second["attempt_number"] == 1 and second["state"] == "FINISHED"
    assert second["node_id"] == NODE_A[1:].hex() and second["worker_pid"] == 2
    assert second["duration_ms"] == pytest.approx(500.0)
    assert [e["state"] for e in second["events"]] == [
        "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED"]
    assert not events.pending(h.state.tasks)
