"""Local placement without sockets: the node's admission and spillback rule
(NodeManagerState.on_place_tasks), the head's registration of tasks a node
placed itself (SUBMIT_LOCAL, TASKS_SPILLED; zray.head.local), in every order
their reports can arrive, and the worker's client sending them."""

import pytest

from zray import ids
from zray.client.routes import HEAD, NODE
from zray.client.local import LOCAL_PAUSE_S
from zray.client.state import ClientState
from zray.head.records import NodeState
from zray.head.state import ObjectState, TaskState
from zray.node.state import HEAD as NODE_HEAD
from zray.protocol import Msg, PROTOCOL_MAJOR, STATUS_OK
from zray.resources import local_placeable
from zray.serialization import KIND_INLINE, KIND_SHM
from zray.task_spec import STREAMING, TaskSpec
from tests.unit.test_head_state import DRIVER, NODE_A, WORKER, Harness, executed
from tests.unit.test_node_state import sent_tasks, started_node

pytestmark = pytest.mark.timeout(10)

NODE_B = b"N" + b"b" * 16
RUNNER = b"Wworker2"
WORKER_ID = b"w" * 8          # the node's worker that offers tasks          # the worker of NODE_A that runs the placed task


def plain(cpus=1.0, blob=None, **fields):
    spec = TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", (), (), 1,
                    {"CPU": cpus}, 3, function_blob=blob)
    for name, value in fields.items():
        setattr(spec, name, value)
    return spec


# --- which tasks may be placed by their node --------------------------------------------

def test_only_plain_tasks_are_placeable():
    assert local_placeable(plain())
    assert local_placeable(plain(cpus=0.0))
    oid = ids.object_id_for_return(ids.new_task_id(), 1)
    for fields in ({"dep_ids": (oid,)}, {"nested_ids": (oid,)}, {"actor_id": b"a" * 16},
                   {"strategy": "SPREAD"}, {"num_returns": STREAMING},
                   {"runtime_env": {"env_vars": {"A": "1"}}}, {"timeout_s": 1.0},
                   {"max_calls": 1}, {"resources": {"CPU": 1.0, "GPU": 1.0}},
                   {"resources": {"CPU_group_0_" + "ab" * 8: 1.0}}):
        assert not local_placeable(plain(**fields)), fields


# --- the node: admit what fits now, spill the rest ---------------------------------------

def test_node_runs_what_fits_now_and_spills_the_rest():
    state, _ = started_node(cpus=2, worker_prefetch=1)
    first, second, third = plain(blob=b"code"), plain(), plain()
    state.on_place_tasks(WORKER_ID, [first, second, third], 0.0)
    out = state.out.drain()
    started = [s.task_id for specs in sent_tasks(out).values() for s in specs]
    assert sorted(started) == sorted([first.task_id, second.task_id])
    assert out[(NODE_HEAD, Msg.TASKS_SPILLED)] == [(third.task_id, 0)]
    assert out[(WORKER_ID, Msg.TASKS_SPILLED)] == [(third.task_id, 0)]   # it pauses
    assert state.placed_locally == 2 and state.spilled == 1
    assert state.snapshot()["placed_locally"] == 2


def test_node_counts_queued_tasks_as_taken():
    state, _ = started_node(cpus=2, worker_prefetch=1)
    state.on_execute_tasks([plain(blob=b"code") for _ in range(3)], 0.0)   # one waits
    state.out.drain()
    offered = plain()
    state.on_place_tasks(WORKER_ID, [offered], 0.0)
    assert state.out.drain()[(NODE_HEAD, Msg.TASKS_SPILLED)] == [(offered.task_id, 0)]


def test_node_spills_unknown_functions_unplaceable_tasks_and_when_turned_off():
    state, _ = started_node(cpus=4, worker_prefetch=1)
    no_code, gpu = plain(), plain(blob=b"code", resources={"CPU": 1.0, "GPU": 1.0})
    state.on_place_tasks(WORKER_ID, [no_code], 0.0)       # no code for its function yet
    state.on_place_tasks(WORKER_ID, [gpu], 0.0)
    out = state.out.drain()
    assert out[(NODE_HEAD, Msg.TASKS_SPILLED)] == [(no_code.task_id, 0), (gpu.task_id, 0)]
    assert not sent_tasks(out)
    off, _ = started_node(cpus=4, worker_prefetch=1, local_placement=False)
    task = plain(blob=b"code")
    off.on_place_tasks(WORKER_ID, [task], 0.0)
    assert off.out.drain()[(NODE_HEAD, Msg.TASKS_SPILLED)] == [(task.task_id, 0)]
    assert off.functions == {b"fid": b"code"}   # kept for the next ones anyway


def test_node_spills_a_custom_resource_it_lacks():
    state, _ = started_node(cpus=2, worker_prefetch=1)
    task = plain(blob=b"code", resources={"CPU": 1.0, "special": 1.0})
    state.on_place_tasks(WORKER_ID, [task], 0.0)
    assert state.out.drain()[(NODE_HEAD, Msg.TASKS_SPILLED)] == [(task.task_id, 0)]


# --- the worker's client ----------------------------------------------------------------

def test_worker_offers_plain_tasks_to_its_node_and_registers_them():
    client = ClientState("worker")
    client.local.enabled = True
    client.register_function(b"fid", b"code")
    first, second = plain(), plain()
    dependent = plain(dep_ids=(first.return_ids()[0],))
    for task in (first, second, dependent):
        client.submit(task, 0.0)
    out = [(route, kind, item[0]) for route, kind, item in client.out]
    assert out[1:] == [
        (NODE, Msg.PLACE_TASKS, out[1][2]), (HEAD, Msg.SUBMIT_LOCAL, first),
        (NODE, Msg.PLACE_TASKS, second), (HEAD, Msg.SUBMIT_LOCAL, second),
        (HEAD, Msg.SUBMIT_TASKS, dependent)]
    assert out[1][2].task_id == first.task_id and out[1][2].function_blob == b"code"
    assert first.function_blob is None          # the head's copy carries no code


def test_worker_offers_nothing_for_a_while_after_a_spill():
    client = ClientState("worker")
    client.local.enabled = True
    client.register_function(b"fid", b"code")
    special = plain(resources={"CPU": 1.0, "special": 1.0})
    client.submit(special, 1.0)
    client.release(special.return_ids()[0])
    client.local.spilled([(special.task_id, 0)], 1.0)   # TASKS_SPILLED from the node
    paused, other_shape, later = plain(resources=dict(special.resources)), plain(), \
        plain(resources=dict(special.resources))
    for task, now in ((paused, 1.0 + LOCAL_PAUSE_S / 2), (other_shape, 1.0),
                      (later, 1.0 + LOCAL_PAUSE_S)):
        client.submit(task, now)
        client.release(task.return_ids()[0])
    out = [(route, kind, item[0].task_id) for route, kind, item in client.out
           if kind in (Msg.PLACE_TASKS, Msg.SUBMIT_LOCAL, Msg.SUBMIT_TASKS)][2:]
    assert out == [(HEAD, Msg.SUBMIT_TASKS, paused.task_id),
                   (NODE, Msg.PLACE_TASKS, other_shape.task_id),
                   (HEAD, Msg.SUBMIT_LOCAL, other_shape.task_id),
                   (NODE, Msg.PLACE_TASKS, later.task_id),
                   (HEAD, Msg.SUBMIT_LOCAL, later.task_id)]


def test_a_burst_offers_its_first_few_and_sends_the_rest_to_the_head():
    client = ClientState("worker")
    client.local.enabled = True
    client.local.max_awaited = 2
    client.register_function(b"fid", b"code")
    for _ in range(4):
        client.submit(plain(), 0.0)
    kinds = [kind for _, kind, _ in client.out][1:]
    assert kinds == [Msg.PLACE_TASKS, Msg.SUBMIT_LOCAL, Msg.PLACE_TASKS, Msg.SUBMIT_LOCAL,
                     Msg.SUBMIT_TASKS, Msg.SUBMIT_TASKS]


# --- the head: registration in every order -----------------------------------------------

def local_harness(two_nodes=False):
    h = Harness()
    h.add_node(cpus=2.0)
    if two_nodes:
        h.add_node(NODE_B, cpus=2.0)
    h.connect_driver()
    h.connect_worker()                               # the submitter, on NODE_A
    h.send(RUNNER, Msg.HELLO, ("worker", PROTOCOL_MAJOR, 0, 3, {"node_id": NODE_A[1:]}))
    return h, h.state.nodes[NODE_A[1:]]


def finish(h, task, kind=KIND_INLINE, size=1):
    [oid] = task.return_ids()
    data = b"x" if kind == KIND_INLINE else None
    return h.send(RUNNER, Msg.TASKS_FINISHED,
                  (task.task_id, 0, STATUS_OK, [(oid, kind, data, size, ())], 0.001))


def test_registered_task_runs_on_its_node_and_its_result_goes_to_the_submitter():
    h, node = local_harness()
    task = plain()
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    record = h.state.tasks[task.task_id]
    assert record.state is TaskState.ASSIGNED and record.node_id == NODE_A[1:]
    assert not executed(out)                         # the node has it already
    assert node.available["CPU"] == 1.0 and h.state.dispatch_counts["local"] == 1
    out = finish(h, task)
    assert out[(WORKER, Msg.OBJECTS_READY)] == [(task.return_ids()[0], KIND_INLINE, b"x", 1, ())]
    assert record.state is TaskState.FINISHED and node.available["CPU"] == 2.0


def test_a_finish_that_overtakes_the_registration_waits_for_it():
    h, node = local_harness()
    task = plain()
    finish(h, task)
    assert task.task_id in h.state.local.early_finished
    assert task.task_id not in h.state.tasks
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    assert h.state.tasks[task.task_id].state is TaskState.FINISHED
    assert h.state.objects[task.return_ids()[0]].state is ObjectState.READY
    assert (WORKER, Msg.OBJECTS_READY) in out
    assert node.available["CPU"] == 2.0 and not h.state.local.early_finished


def test_a_spilled_task_is_placed_by_the_head_in_either_order():
    h, node = local_harness(two_nodes=True)
    node.available["CPU"] = 0.0                      # (the node is full now)
    h.state.scheduler.node_changed(node)
    late, early = plain(), plain()
    h.send(WORKER, Msg.SUBMIT_LOCAL, (late,))
    out = h.send(NODE_A, Msg.TASKS_SPILLED, (late.task_id, 0))
    assert [s.task_id for s in executed(out, NODE_B)] == [late.task_id]
    assert h.state.tasks[late.task_id].node_id == NODE_B[1:]
    h.send(NODE_A, Msg.TASKS_SPILLED, (early.task_id, 0))
    assert early.task_id in h.state.local.early_spilled
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (early,))
    assert [s.task_id for s in executed(out, NODE_B)] == [early.task_id]
    assert h.state.dispatch_counts["spilled"] == 2 and h.state.dispatch_counts["local"] == 0
    assert node.available["CPU"] == 0.0              # nothing committed there by either


def test_a_cancelled_task_that_was_spilled_is_cancelled():
    h, _node = local_harness()
    task = plain()
    h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    out = h.send(WORKER, Msg.CANCEL_TASKS, (task.task_id, False))
    assert out[(NODE_A, Msg.CANCEL_TASKS)] == [(task.task_id, False)]
    h.send(NODE_A, Msg.TASKS_SPILLED, (task.task_id, 0))
    assert h.state.tasks[task.task_id].state is TaskState.CANCELLED


def test_node_death_retries_registered_tasks_and_reroutes_late_registrations():
    h, node = local_harness(two_nodes=True)
    registered, late, finished_there = plain(), plain(), plain()
    h.send(WORKER, Msg.SUBMIT_LOCAL, (registered,))
    finish(h, finished_there)                        # its registration comes after the death
    h.send(DRIVER, Msg.ADD_REFS, (late.return_ids()[0],))   # a ref that escaped first
    out = h.send(NODE_A, Msg.SHUTDOWN, ("killed",))   # NODE_A dies
    assert node.state is NodeState.DEAD
    assert registered.task_id in [s.task_id for s in executed(out, NODE_B)]
    assert h.state.tasks[registered.task_id].spec.attempt == 1
    # A registration the dead node's worker sent before dying: run it elsewhere,
    # and not with a result from the dead node.
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (late,), (finished_there,))
    assert {s.task_id for s in executed(out, NODE_B)} == {late.task_id,
                                                          finished_there.task_id}
    assert h.state.objects[late.return_ids()[0]].state is ObjectState.PENDING  # the driver's
    assert finished_there.return_ids()[0] not in h.state.objects     # nobody holds it
    assert WORKER not in h.state.clients           # the dead submitter holds nothing


def test_a_worker_death_before_the_registration_retries_the_task():
    h, _node = local_harness()
    task = plain()
    h.send(NODE_A, Msg.WORKER_DIED, (RUNNER[1:], 77, -9, task.task_id, 0))
    assert task.task_id in h.state.local.early_died
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    record = h.state.tasks[task.task_id]
    assert record.spec.attempt == 1 and record.state is TaskState.ASSIGNED
    assert [s.task_id for s in executed(out)] == [task.task_id]


def test_a_registration_of_an_unplaceable_task_is_queued_like_any():
    h, _node = local_harness()
    task = plain(strategy="SPREAD")
    out = h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    assert [s.task_id for s in executed(out)] == [task.task_id]
    assert h.state.dispatch_counts["node"] == 1


def test_early_reports_whose_registration_never_comes_expire():
    h, _node = local_harness()
    lost, spilled, died = plain(), plain(), plain()
    finish(h, lost, kind=KIND_SHM, size=1 << 20)
    h.send(NODE_A, Msg.TASKS_SPILLED, (spilled.task_id, 0))
    h.send(NODE_A, Msg.WORKER_DIED, (RUNNER[1:], 77, -9, died.task_id, 0))
    h.now = 61.0
    h.send(NODE_A, Msg.HEARTBEAT, (0.0,))
    out = None
    for sweep in h.state.sweeps():
        sweep(h.now)
    out = h.state.out.drain()
    local = h.state.local
    assert not local.early_finished and not local.early_spilled and not local.early_died
    assert out[(NODE_A, Msg.FREE_OBJECTS)] == [(lost.return_ids()[0],)]


def test_a_lost_result_of_a_locally_placed_task_is_rebuilt_from_lineage():
    h, node = local_harness(two_nodes=True)
    task = plain()
    h.send(WORKER, Msg.SUBMIT_LOCAL, (task,))
    [oid] = task.return_ids()
    finish(h, task, kind=KIND_SHM, size=1 << 20)
    h.send(DRIVER, Msg.ADD_REFS, (oid,))              # the ref escaped to the driver
    assert h.state.objects[oid].locations == {NODE_A[1:]}
    out = h.send(NODE_A, Msg.SHUTDOWN, ("killed",))   # NODE_A (and the submitter) died
    assert [s.task_id for s in executed(out, NODE_B)] == [task.task_id]
    record = h.state.tasks[task.task_id]
    assert record.state is TaskState.ASSIGNED and record.node_id == NODE_B[1:]
    out = h.send(b"Wworker3", Msg.HELLO, ("worker", PROTOCOL_MAJOR, 0, 4,
                                          {"node_id": NODE_B[1:]}))
    out = h.send(b"Wworker3", Msg.TASKS_FINISHED,
                 (task.task_id, record.spec.attempt, STATUS_OK,
                  [(oid, KIND_SHM, None, 1 << 20, ())], 0.001))
    assert h.state.objects[oid].state is ObjectState.READY
    assert h.state.objects[oid].locations == {NODE_B[1:]}
    out = h.send(DRIVER, Msg.SUBSCRIBE_OBJECTS, (oid,))
    assert [item[0] for item in out[(DRIVER, Msg.OBJECTS_READY)]] == [oid]
