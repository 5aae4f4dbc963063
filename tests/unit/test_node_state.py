"""The node manager's state machine: dispatch, resources, prefetch, worker deaths."""

import pytest

from zray import ids
from zray.config import Config
from zray.node.state import HEAD, NodeManagerState, WorkerState
from zray.protocol import Msg
from zray.task_spec import TaskSpec

pytestmark = pytest.mark.timeout(10)


def spec(cpus=1.0, gpus=0, function_id=b"f", max_calls=0):
    resources = {"CPU": cpus}
    if gpus:
        resources["GPU"] = gpus
    return TaskSpec(ids.new_task_id(), b"job", "f", function_id, b"", (), (), 1, resources,
                    3, False, None, max_calls, function_blob=b"blob")


def started_node(cpus=2, gpus=0, **config):
    config.setdefault("lease_workers", False)
    config.setdefault("prestart_workers", -1)      # a full pool: these tests count on it
    config.setdefault("worker_preload_modules", "")   # no stale workers (see below)
    state = NodeManagerState(b"n" * 16, {"CPU": float(cpus), "GPU": float(gpus)},
                             Config(**config))
    state.start(0.0)
    spawned = [c[1] for c in state.commands if c[0] == "spawn"]
    state.commands = []
    for i, worker_id in enumerate(spawned):
        state.on_worker_started(worker_id, 100 + i)
        state.on_worker_hello(worker_id, 100 + i, 0.0)
    state.out.drain()
    return state, spawned


def sent_tasks(out):
    return {key[0]: [item[0] for item in items] for key, items in out.items()
            if key[1] is Msg.EXECUTE_TASKS}


def test_prestarts_one_worker_per_cpu():
    state, spawned = started_node(cpus=3)
    assert len(spawned) == 3
    assert all(w.state is WorkerState.IDLE for w in state.workers.values())


def test_prestarts_what_it_is_told_and_forks_the_rest_when_tasks_wait():
    state, spawned = started_node(cpus=3, prestart_workers=1, worker_prefetch=1)
    assert len(spawned) == 1                  # the default: one worker at start
    state.on_execute_tasks([spec() for _ in range(3)], 0.0)
    assert len(sent_tasks(state.out.drain())) == 1
    more = [c[1] for c in state.commands if c[0] == "spawn"]
    assert len(more) == 2                     # the two tasks waiting get a worker each
    state.commands = []
    for i, worker_id in enumerate(more):
        state.on_worker_hello(worker_id, 200 + i, 0.0)
    assert len(sent_tasks(state.out.drain())) == 2


def test_never_runs_more_than_resources_allow():
    state, _ = started_node(cpus=2, worker_prefetch=1)
    specs = [spec() for _ in range(5)]
    state.on_execute_tasks(specs, 0.0)
    running = sent_tasks(state.out.drain())
    assert sum(len(v) for v in running.values()) == 2
    assert len(state.queue) == 3
    assert not [c for c in state.commands if c[0] == "spawn"]


def test_function_blob_sent_once_per_worker():
    state, _ = started_node(cpus=1, worker_prefetch=1)
    first, second = spec(), spec()
    state.on_execute_tasks([first, second], 0.0)
    [(worker_id, [sent])] = sent_tasks(state.out.drain()).items()
    assert sent.function_blob == b"blob"
    state.on_task_done(worker_id, first.task_id, 0.1)
    [(_, [sent2])] = sent_tasks(state.out.drain()).items()
    assert sent2.task_id == second.task_id and sent2.function_blob is None


def test_blocked_worker_lends_cpu_and_more_workers_start():
    state, _ = started_node(cpus=1, worker_prefetch=1)
    parent, child = spec(), spec()
    state.on_execute_tasks([parent, child], 0.0)
    [(worker_id, _)] = sent_tasks(state.out.drain()).items()
    state.on_worker_blocked(worker_id, parent.task_id, (), 0.1)
    out = state.out.drain()
    assert out[(HEAD, Msg.WORKER_BLOCKED)] == [(parent.task_id, ())]
    assert [c for c in state.commands if c[0] == "spawn"], "a new worker must start"


def test_prefetch_only_short_known_functions_and_hand_back():
    state, _ = started_node(cpus=1, worker_prefetch=4, prefetch_max_task_s=0.01)
    warm = spec()
    state.on_execute_tasks([warm], 0.0)
    [(worker_id, _)] = sent_tasks(state.out.drain()).items()
    state.on_task_done(worker_id, warm.task_id, 0.001)     # learned: f is short
    batch = [spec() for _ in range(4)]
    state.on_execute_tasks(batch, 0.002)
    sent = sent_tasks(state.out.drain())[worker_id]
    assert [s.task_id for s in sent] == [s.task_id for s in batch]
    assert not state.queue
    state.on_worker_blocked(worker_id, batch[0].task_id,
                            (batch[2].task_id, batch[3].task_id), 0.003)
    assert [s.task_id for s in state.workers[worker_id].tasks] == \
        [batch[0].task_id, batch[1].task_id]
    assert [s.task_id for s in state.queue] == [batch[2].task_id, batch[3].task_id]
    assert [c for c in state.commands if c[0] == "spawn"], "the lent CPU needs a worker"


def test_worker_death_reports_running_task_and_requeues_prefetched():
    state, _ = started_node(cpus=1, worker_prefetch=4, prefetch_max_task_s=0.01)
    warm = spec()
    state.on_execute_tasks([warm], 0.0)
    [(worker_id, _)] = sent_tasks(state.out.drain()).items()
    state.on_task_done(worker_id, warm.task_id, 0.001)
    batch = [spec() for _ in range(3)]
    state.on_execute_tasks(batch, 0.002)
    state.out.drain()
    pid = state.workers[worker_id].pid
    state.on_worker_exited(pid, -9, 0.01)
    out = state.out.drain()
    [(dead_id, dead_pid, code, task_id, attempt)] = out[(HEAD, Msg.WORKER_DIED)]
    assert task_id == batch[0].task_id and dead_pid == pid and code == -9
    assert [s.task_id for s in state.queue] == [batch[1].task_id, batch[2].task_id]
    assert state.available["CPU"] == 1.0


def test_gpu_ids_assigned_and_returned():
    state, _ = started_node(cpus=2, gpus=2, worker_prefetch=1)
    a, b = spec(gpus=1), spec(gpus=1)
    state.on_execute_tasks([a, b], 0.0)
    sent = [s for specs in sent_tasks(state.out.drain()).values() for s in specs]
    assert sorted(s.gpu_ids for s in sent) == [(0,), (1,)]
    assert state.free_gpus == []


def test_cancel_queued_task_reports_cancelled():
    state, _ = started_node(cpus=1, worker_prefetch=1)
    first, second = spec(), spec()
    state.on_execute_tasks([first, second], 0.0)
    state.out.drain()
    state.on_cancel(second.task_id, False, 0.1)
    out = state.out.drain()
    assert out[(HEAD, Msg.TASKS_FAILED)][0][0] == second.task_id


def test_max_calls_retires_worker():
    state, _ = started_node(cpus=1, worker_prefetch=1)
    task = spec(max_calls=1)
    state.on_execute_tasks([task], 0.0)
    [(worker_id, _)] = sent_tasks(state.out.drain()).items()
    state.on_task_done(worker_id, task.task_id, 0.1)
    assert state.out.drain()[(worker_id, Msg.SHUTDOWN)] == [("retire",)]
    assert state.workers[worker_id].retiring


def test_idle_node_lends_one_worker_and_reserves_its_cpu():
    state, spawned = started_node(cpus=2, lease_workers=True)   # offered while starting
    worker_id = state.lease
    assert worker_id in spawned and state.workers[worker_id].leased
    assert state.available["CPU"] == 1.0
    tasks = [spec() for _ in range(3)]
    state.on_execute_tasks(tasks, 0.0)          # the node's own tasks avoid the lease
    sent = sent_tasks(state.out.drain())
    assert worker_id not in sent and sum(len(v) for v in sent.values()) == 1
    state.on_lease_return(worker_id, 0.1)
    assert not state.workers[worker_id].leased
    assert worker_id in sent_tasks(state.out.drain())


def test_leased_worker_death_frees_the_reserved_cpu():
    state, spawned = started_node(cpus=1, lease_workers=True)
    worker_id = state.lease
    assert worker_id is not None and state.available["CPU"] == 0.0
    state.on_worker_exited(state.workers[worker_id].pid, -9, 0.1)
    [(dead, _pid, _code, task_id, _attempt)] = state.out.drain()[(HEAD, Msg.WORKER_DIED)]
    assert dead == worker_id and task_id is None
    assert state.available["CPU"] == 1.0


def test_nested_blocking_gets_stop_spawning_workers_at_the_cap():
    state, _ = started_node(cpus=1, worker_prefetch=1, max_workers_per_node=4)
    for level in range(10):            # each task blocks on the next one
        state.on_execute_tasks([spec()], float(level))
        for worker_id, specs in sent_tasks(state.out.drain()).items():
            state.on_worker_blocked(worker_id, specs[0].task_id, (), float(level))
        for command in state.commands:
            if command[0] == "spawn":
                state.on_worker_started(command[1], 1000 + level)
                state.on_worker_hello(command[1], 1000 + level, float(level))
        state.commands = []
    assert len(state.workers) == 4
    assert len(state.queue) == 6       # they wait for a worker; nothing is lost
    assert state.snapshot()["workers"] == 4


def test_a_pull_of_an_absurd_size_fails_instead_of_raising(tmp_path):
    """ftruncate raised OverflowError, which escaped the pull and left it without a
    source, so every later timeout sweep raised on it."""
    from zray.node.transfer import Puller
    puller = Puller(str(tmp_path), b"n" * 16, 4 << 20, 4, 30.0)
    puller.request(b"o" * 18, 2**70, [b"p" * 16], b"waiter", 0.0)
    [(object_id, error, waiters, _)] = puller.finished
    assert object_id == b"o" * 18 and "could not make room" in error and waiters == [b"waiter"]
    assert not puller.pulls and not list(tmp_path.iterdir())
    puller.tick(100.0)


def test_a_bundle_is_set_aside_for_its_tasks_and_released():
    from zray.resources import in_bundle
    state, _ = started_node(cpus=2, gpus=1, worker_prefetch=1)
    pg_id = b"p" * 16
    in_pg = spec()
    in_pg.resources = in_bundle({"CPU": 1.0, "GPU": 1.0}, pg_id.hex(), 0)
    state.on_execute_tasks([in_pg], 0.0)                 # before its bundle: waits
    assert not sent_tasks(state.out.drain()) and len(state.queue) == 1
    state.on_reserve_bundle(pg_id, 0, {"CPU": 1.0, "GPU": 1.0}, 0.0)
    assert state.available["CPU"] == 1.0 and state.available["GPU"] == 0.0
    [started] = [s for specs in sent_tasks(state.out.drain()).values() for s in specs]
    assert started.gpu_ids == (0,)                        # a bundle's GPU gets an id
    plain = [spec(), spec()]                              # only one CPU is outside it
    state.on_execute_tasks(plain, 0.0)
    assert sum(len(v) for v in sent_tasks(state.out.drain()).values()) == 1
    state.on_release_bundle(pg_id, 0, 0.0)                # removed while its task runs
    assert not any("_group_" in name for name in state.total)
    worker = next(w for w in state.workers.values() if w.task is started)
    state.on_task_done(worker.worker_id, started.task_id, 1.0)
    assert state.available["GPU"] == 1.0 and "CPU_group_" + pg_id.hex() not in state.available


# --- the fork server's preload: workers forked before it are replaced ---------------


def preloading_node(cpus=2, **config):
    """A node whose fork server preloads numpy: its prestarted worker is up
    (forked before the preload), the preload not yet done."""
    config.setdefault("lease_workers", True)
    config.setdefault("worker_prefetch", 1)
    state = NodeManagerState(b"n" * 16, {"CPU": float(cpus)},
                             Config(worker_preload_modules="numpy", **config))
    state.start(0.0)
    assert [c[0] for c in state.commands] == ["spawn", "preload"]  # forked, then the import
    first = state.commands[0][1]
    state.commands = []
    state.on_worker_started(first, 100)
    state.on_worker_hello(first, 100, 0.0)
    return state, first


def hello_spawned(state, pid, now):
    """The workers the node asked for say hello; their ids."""
    spawned = [c[1] for c in state.commands if c[0] == "spawn"]
    state.commands = []
    for i, worker_id in enumerate(spawned):
        state.on_worker_started(worker_id, pid + i)
        state.on_worker_hello(worker_id, pid + i, now)
    return spawned


def test_a_worker_forked_before_the_preload_runs_tasks_but_is_never_leased():
    state, first = preloading_node()
    assert state.lease is None and not state.out.drain()     # no LEASE_OFFER
    task = spec()
    state.on_execute_tasks([task], 0.0)
    assert sent_tasks(state.out.drain()) == {first: [task]}
    state.on_task_done(first, task.task_id, 0.1)
    assert state.lease is None and (HEAD, Msg.LEASE_OFFER) not in state.out.drain()


def test_an_idle_stale_worker_retires_once_preloaded_and_its_replacement_is_leased():
    state, first = preloading_node()
    state.on_preloaded(0.2)
    out = state.out.drain()
    assert out[(first, Msg.SHUTDOWN)] == [("retire",)]
    task = spec()                           # sent once the node knew: not to the old one
    state.on_execute_tasks([task], 0.3)
    assert not sent_tasks(state.out.drain()) and list(state.queue) == [task]
    [replacement] = hello_spawned(state, 200, 0.4)        # forked after the preload
    assert sent_tasks(state.out.drain()) == {replacement: [task]}
    assert not state.commands                # the replacement was enough: no more forks
    state.on_task_done(replacement, task.task_id, 0.5)
    assert state.out.drain()[(HEAD, Msg.LEASE_OFFER)] == [(replacement,)]
    state.on_worker_exited(100, 0, 0.6)     # the retired one exits: nothing to requeue
    [(dead, _pid, _code, task_id, _attempt)] = state.out.drain()[(HEAD, Msg.WORKER_DIED)]
    assert dead == first and task_id is None
    assert set(state.workers) == {replacement} and not state.stale
    state.on_preloaded(0.7)                  # said twice: no second round
    assert not state.commands and not state.out.drain()


def test_a_busy_stale_worker_finishes_its_tasks_before_it_retires():
    state, first = preloading_node(cpus=1, worker_prefetch=4, prefetch_max_task_s=1.0)
    state.durations[b"f"] = 0.01             # short: a second task is prefetched
    running, prefetched = spec(), spec()
    state.on_execute_tasks([running, prefetched], 0.0)
    assert sent_tasks(state.out.drain()) == {first: [running, prefetched]}
    state.on_preloaded(0.1)
    assert (first, Msg.SHUTDOWN) not in state.out.drain()
    [replacement] = hello_spawned(state, 200, 0.15)
    state.on_task_done(first, running.task_id, 0.2)
    assert (first, Msg.SHUTDOWN) not in state.out.drain()    # its next task runs there
    later = spec()
    state.on_execute_tasks([later], 0.25)    # its CPU is taken: waits, for the new one
    assert not sent_tasks(state.out.drain())
    state.on_task_done(first, prefetched.task_id, 0.3)
    out = state.out.drain()
    assert out[(first, Msg.SHUTDOWN)] == [("retire",)]
    assert sent_tasks(out) == {replacement: [later]}         # never to the retiring one


def test_a_stale_worker_hosting_an_actor_stays():
    state, first = preloading_node(cpus=1)
    creation = spec()
    creation.actor_id = b"a" * 16
    state.on_execute_tasks([creation], 0.0)
    state.out.drain()
    state.on_preloaded(0.1)
    assert not state.commands and not state.stale          # no replacement, no retire
    assert (first, Msg.SHUTDOWN) not in state.out.drain()


def test_without_preloaded_modules_no_worker_is_stale():
    state = NodeManagerState(b"n" * 16, {"CPU": 2.0},
                             Config(worker_preload_modules="", lease_workers=True))
    state.start(0.0)
    assert [c[0] for c in state.commands] == ["spawn", "preload"]
    first = state.commands[0][1]
    state.commands = []
    state.on_worker_hello(first, 100, 0.0)
    assert state.lease == first
    state.on_preloaded(0.1)
    assert not state.commands and state.lease == first
