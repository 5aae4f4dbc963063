"""The node manager's decisions: which worker runs which task, and when.

Fed events (tasks from the head, worker hello/finish/block/exit, cancels) and
the time; answers with messages in ``out`` (identity ``HEAD`` for the head,
else a worker id) and process commands in ``commands`` (``("spawn",
worker_id)``, ``("kill", pid)``) for the loop to carry out.

The node enforces resources locally: the head may queue more tasks here than
fit (so workers never wait on a round trip), but a task starts only when its
resources are free.  A worker blocked in ``get`` lends its CPUs back.

Prefetch: a busy worker may be handed a few more tasks of the same resource
shape that could not start anyway, when that function's tasks are known to be
short.  It runs them back to back under the resources it already holds, which
turns one round trip per task into one per batch.  A worker that blocks in
``get`` hands back what it has not started, so nested tasks cannot deadlock
behind their parent.
"""

from __future__ import annotations

import enum
import logging
import os
from collections import deque

from zray.outbox import Outbox
from zray.protocol import Msg, REASON_CANCELLED, REASON_TIMEOUT
from zray.resources import (add_resources, base_amount, bundle_resources, fits, held,
                            local_placeable)
from zray.runtime_env.keys import code_env_key

log = logging.getLogger("zray.node")

HEAD = b""


class WorkerState(str, enum.Enum):
    STARTING = "STARTING"
    IDLE = "IDLE"
    BUSY = "BUSY"
    DEAD = "DEAD"


WORKER_TRANSITIONS = {
    WorkerState.STARTING: {WorkerState.IDLE, WorkerState.DEAD},
    WorkerState.IDLE: {WorkerState.BUSY, WorkerState.DEAD},
    WorkerState.BUSY: {WorkerState.IDLE, WorkerState.DEAD},
    WorkerState.DEAD: set(),
}


class Worker:
    __slots__ = ("worker_id", "pid", "state", "tasks", "known_functions", "blocked",
                 "calls", "idle_since", "started_at", "retiring", "task_started_at",
                 "leased", "timed_out", "env_key", "stale")

    def __init__(self, worker_id, now):
        self.worker_id = worker_id
        self.pid = None
        self.state = WorkerState.STARTING
        self.tasks = deque()
        self.known_functions = set()
        self.blocked = False
        self.calls = {}
        self.idle_since = now
        self.started_at = now
        self.retiring = False
        self.task_started_at = None
        self.leased = False     # the head sends it tasks directly (see offer_lease)
        self.timed_out = False  # its task ran past timeout_s; it is being killed
        #: code_env_key of the tasks it runs, fixed by its first (None: none yet)
        self.env_key = None
        #: forked before the fork server's preload (see NodeManagerState.on_preloaded)
        self.stale = False

    @property
    def task(self):
        """The task running now (the first of those handed to the worker)."""
        return self.tasks[0] if self.tasks else None

    def move(self, new_state):
        if new_state not in WORKER_TRANSITIONS[self.state]:
            raise RuntimeError(f"worker {self.worker_id.hex()}: {self.state.value} -> "
                               f"{new_state.value}")
        self.state = new_state


class NodeManagerState:
    def __init__(self, node_id: bytes, resources: dict, config, now: float = 0.0):
        self.node_id = node_id
        self.config = config
        self.total = dict(resources)
        self.available = dict(resources)
        self.free_gpus = list(range(int(resources.get("GPU", 0))))
        self.queue: deque = deque()
        self.workers: dict[bytes, Worker] = {}
        self.by_pid: dict[int, Worker] = {}
        self.functions: dict[bytes, bytes] = {}
        self.out = Outbox()
        self.commands: list = []
        self.pool_size = max(0, int(resources.get("CPU", 0)))
        self.max_workers = config.max_workers_per_node or max(32, 8 * self.pool_size)
        self.at_worker_cap = False      # warned that tasks wait for a worker
        self.durations: dict[bytes, float] = {}   # function id -> recent run time (s)
        self.lease = None       # worker id leased to the head, if any
        #: ids of workers forked before the fork server imported
        #: worker_preload_modules, to be replaced once it has (on_preloaded)
        self.stale: set[bytes] = set()
        self.preloaded = False  # the fork server reported its preload done
        #: (pg_id, bundle index) -> the resources set aside for that bundle
        self.bundles: dict[tuple, dict] = {}
        #: tasks of our own workers placed here (PLACE_TASKS) / spilled to the head
        self.placed_locally = 0
        self.spilled = 0

    # --- events ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Prestart workers, then have the fork server import the preloaded
        modules: the first workers need not wait for numpy's import (~60 ms of
        a cluster's start); they are replaced once it is done (on_preloaded)."""
        prestart = self.config.prestart_workers
        stale = bool(self.config.worker_preload_modules.strip(", "))
        for _ in range(self.pool_size if prestart < 0 else min(prestart, self.pool_size)):
            worker = self._spawn(now)
            if stale:
                worker.stale = True
                self.stale.add(worker.worker_id)
        self.commands.append(("preload",))

    def on_preloaded(self, now: float) -> None:
        """The fork server has imported worker_preload_modules: each worker
        forked before gets a replacement forked now (with them), and takes no
        new task: an idle one retires at once, a busy one when its tasks are
        done (dispatch).  A stale worker is never leased (_offer_lease), so
        nothing but the node sends it tasks.  A worker hosting an actor stays."""
        if self.preloaded:
            return
        self.preloaded = True
        for worker_id in list(self.stale):
            worker = self.workers[worker_id]
            if worker.retiring or worker.task is not None and worker.task.actor_id is not None:
                self.stale.discard(worker_id)
                worker.stale = False
            else:
                self._spawn(now)
        self.dispatch(now)

    def _retire_stale(self) -> None:
        for worker_id in list(self.stale):
            worker = self.workers[worker_id]
            if worker.retiring:
                self.stale.discard(worker_id)
            elif worker.state is WorkerState.IDLE and not worker.leased:
                self.stale.discard(worker_id)
                self._retire(worker)

    def on_execute_tasks(self, specs, now: float) -> None:
        for spec in specs:
            if spec.function_blob is not None:
                self.functions[spec.function_id] = spec.function_blob
                spec.function_blob = None
            self.queue.append(spec)
        self.dispatch(now)

    def on_place_tasks(self, worker_id: bytes, specs, now: float) -> None:
        """Tasks our worker ``worker_id`` submitted (PLACE_TASKS; it also registers
        each with the head, SUBMIT_LOCAL): queue each that fits what is free now,
        counting what waits in the queue as taken, as if the head had sent it;
        spill the others back to the head (TASKS_SPILLED), which places them, and
        tell the worker, which then stops offering for a while."""
        free = None
        spilled = []
        for spec in specs:
            if spec.function_blob is not None:
                self.functions[spec.function_id] = spec.function_blob
                spec.function_blob = None
            if free is None:
                free = self._free_now()
            if self.config.local_placement and local_placeable(spec) \
                    and spec.function_id in self.functions and fits(spec.resources, free):
                for name, amount in spec.resources.items():
                    free[name] = free.get(name, 0.0) - amount
                self.queue.append(spec)
                self.placed_locally += 1
            else:
                spilled.append((spec.task_id, spec.attempt))
        for item in spilled:
            self.out.send(HEAD, Msg.TASKS_SPILLED, item)
        if spilled:
            self.spilled += len(spilled)
            self.out.send(worker_id, Msg.TASKS_SPILLED, spilled[-1])   # offer no more now
        self.dispatch(now)

    def _free_now(self) -> dict:
        """What is free once every queued task has started."""
        free = dict(self.available)
        for spec in self.queue:
            for name, amount in spec.resources.items():
                free[name] = free.get(name, 0.0) - amount
        return free

    def on_reserve_bundle(self, pg_id: bytes, index: int, resources: dict,
                          now: float) -> None:
        """Set a placement group's bundle aside: its resources leave the free pool
        and come back as the bundle's own (which the group's tasks ask for)."""
        if (pg_id, index) in self.bundles:
            return
        self.bundles[(pg_id, index)] = dict(resources)
        for name, amount in resources.items():
            self.available[name] = self.available.get(name, 0.0) - amount
        add_resources(self.total, self.available,
                      bundle_resources(pg_id.hex(), index, resources), 1.0)
        self.dispatch(now)

    def on_release_bundle(self, pg_id: bytes, index: int, now: float) -> None:
        resources = self.bundles.pop((pg_id, index), None)
        if resources is None:
            return
        add_resources(self.total, self.available,
                      bundle_resources(pg_id.hex(), index, resources), -1.0)
        for name, amount in resources.items():
            self.available[name] = self.available.get(name, 0.0) + amount
        self.dispatch(now)

    def on_worker_started(self, worker_id: bytes, pid: int) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.pid = pid
            self.by_pid[pid] = worker

    def on_worker_hello(self, worker_id: bytes, pid: int, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.STARTING:
            return
        if worker.pid is None:
            self.on_worker_started(worker_id, pid)
        worker.move(WorkerState.IDLE)
        worker.idle_since = now
        self.dispatch(now)

    def on_task_done(self, worker_id: bytes, task_id: bytes, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.task is None or worker.task.task_id != task_id:
            return
        spec = worker.task
        self._record_duration(spec.function_id, now - worker.task_started_at)
        calls = worker.calls.get(spec.function_id, 0) + 1
        worker.calls[spec.function_id] = calls
        if len(worker.tasks) > 1 and not worker.blocked:
            worker.tasks.popleft()              # the next one runs on the same resources
            worker.task_started_at = now
        else:
            self._release(worker)
            worker.tasks.clear()
            worker.move(WorkerState.IDLE)
            worker.idle_since = now
        if spec.max_calls and calls >= spec.max_calls:
            self._retire(worker)
        self.dispatch(now)

    def _record_duration(self, function_id: bytes, seconds: float) -> None:
        previous = self.durations.get(function_id)
        self.durations[function_id] = seconds if previous is None else \
            0.8 * previous + 0.2 * seconds

    def on_worker_blocked(self, worker_id: bytes, task_id: bytes, returned, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.leased:
            self._lease_blocked(worker, task_id, True, now)
            return
        if worker is None or worker.task is None or worker.task.task_id != task_id:
            return
        if not worker.blocked:
            worker.blocked = True
            self.available["CPU"] = self.available.get("CPU", 0.0) + \
                worker.task.resources.get("CPU", 0.0)
            self.out.send(HEAD, Msg.WORKER_BLOCKED, (task_id, ()))
        if returned:
            returned = set(returned)
            handed_back = [t for t in list(worker.tasks)[1:] if t.task_id in returned]
            for spec in handed_back:
                worker.tasks.remove(spec)
            self.queue.extendleft(reversed(handed_back))
        self.dispatch(now)

    def on_worker_unblocked(self, worker_id: bytes, task_id: bytes, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.leased:
            self._lease_blocked(worker, task_id, False, now)
            return
        if worker is None or worker.task is None or worker.task.task_id != task_id \
                or not worker.blocked:
            return
        worker.blocked = False
        self.available["CPU"] = self.available.get("CPU", 0.0) - \
            worker.task.resources.get("CPU", 0.0)
        self.out.send(HEAD, Msg.WORKER_UNBLOCKED, (task_id,))

    def on_worker_exited(self, pid: int, exit_code: int, now: float) -> None:
        worker = self.by_pid.pop(pid, None)
        if worker is None or worker.state is WorkerState.DEAD:
            return
        if worker.leased:            # the head knows what it ran there
            self._end_lease(worker)
        spec = worker.task
        if spec is not None:
            unstarted = list(worker.tasks)[1:]
            self._release(worker)
            self.queue.extendleft(reversed(unstarted))
        worker.move(WorkerState.DEAD)
        del self.workers[worker.worker_id]
        self.stale.discard(worker.worker_id)
        self.out.send(HEAD, Msg.WORKER_DIED, (
            worker.worker_id, pid, exit_code,
            spec.task_id if spec is not None else None,
            spec.attempt if spec is not None else 0))
        self.dispatch(now)

    def on_cancel(self, task_id: bytes, force: bool, now: float) -> None:
        for spec in self.queue:
            if spec.task_id == task_id:
                self.queue.remove(spec)
                self.out.send(HEAD, Msg.TASKS_FAILED,
                              (task_id, spec.attempt, REASON_CANCELLED, "cancelled"))
                return
        for worker in self.workers.values():
            queued = [t for t in list(worker.tasks)[1:] if t.task_id == task_id]
            if queued:
                self.out.send(worker.worker_id, Msg.CANCEL_TASKS, (task_id, False))
                return
            if worker.task is not None and worker.task.task_id == task_id:
                if force and worker.pid is not None:
                    self.commands.append(("kill", worker.pid))
                else:
                    self.out.send(worker.worker_id, Msg.CANCEL_TASKS, (task_id, force))
                return

    def tick(self, now: float) -> None:
        self._enforce_timeouts(now)
        idle = [w for w in self.workers.values()
                if w.state is WorkerState.IDLE and not w.leased]
        pool = [w for w in self.workers.values()
                if w.task is None or w.task.actor_id is None]
        surplus = len(pool) - self.pool_size
        for worker in sorted(idle, key=lambda w: w.idle_since):
            if surplus <= 0:
                break
            if now - worker.idle_since > self.config.idle_worker_timeout_s:
                self._retire(worker)
                surplus -= 1

    def _enforce_timeouts(self, now: float) -> None:
        """A task past its ``timeout_s`` fails (retriably) and its worker is killed."""
        for worker in self.workers.values():
            spec = worker.task
            if spec is None or not spec.timeout_s or spec.actor_id is not None or \
                    worker.state is not WorkerState.BUSY or worker.timed_out or \
                    worker.task_started_at is None or \
                    now - worker.task_started_at <= spec.timeout_s:
                continue
            worker.timed_out = True
            self.out.send(HEAD, Msg.TASKS_FAILED, (
                spec.task_id, spec.attempt, REASON_TIMEOUT,
                f"Task {spec.name} ran longer than its timeout_s={spec.timeout_s:g} s; "
                f"its worker (pid {worker.pid}) was killed."))
            if worker.pid:
                self.commands.append(("kill", worker.pid))

    # --- dispatch --------------------------------------------------------------------

    def dispatch(self, now: float) -> None:
        """Start every queued task whose resources are free on an idle worker."""
        if self.preloaded and self.stale:
            self._retire_stale()
        if not self.queue:
            self._offer_lease()
            return
        idle = [w for w in self.workers.values()
                if w.state is WorkerState.IDLE and not w.retiring and not w.leased]
        shortfall = actor_shortfall = 0
        kept = deque()
        available = self.available
        unstarted = None
        while self.queue:
            spec = self.queue.popleft()
            if not fits(spec.resources, available if unstarted is None else unstarted):
                kept.append(spec)
                continue
            worker = self._pick_worker(idle, spec) if idle else None
            if worker is None:
                if unstarted is None:
                    unstarted = dict(available)
                for name, amount in spec.resources.items():
                    unstarted[name] = unstarted.get(name, 0.0) - amount
                if spec.actor_id is None:
                    shortfall += 1
                else:
                    actor_shortfall += 1
                kept.append(spec)
                continue
            self._start(worker, spec, now)
        self.queue = kept
        if self.queue and self.config.worker_prefetch > 1:
            self._prefetch(now)
        if not shortfall and not actor_shortfall:
            return
        starting = sum(1 for w in self.workers.values() if w.state is WorkerState.STARTING)
        wanted = shortfall + actor_shortfall - starting
        if wanted <= 0:
            return
        if idle:
            self._retire_unmatched(idle, wanted)
        for _ in range(min(wanted, actor_shortfall + self._room_for_task_workers())):
            self._spawn(now)

    def _room_for_task_workers(self) -> int:
        """How many more task workers fit under ``max_workers``; warn once at the cap."""
        in_use = sum(1 for w in self.workers.values()
                     if w.state is not WorkerState.DEAD
                     and (w.task is None or w.task.actor_id is None))
        room = self.max_workers - in_use
        if room <= 0 and not self.at_worker_cap:
            log.warning(
                "this node runs %d task workers (max_workers_per_node), most of them "
                "blocked in get/wait on other tasks; new tasks wait for one to finish. "
                "Deeply nested blocking gets start a worker per level: restructure them, "
                "or raise ZRAY_MAX_WORKERS_PER_NODE", in_use)
        self.at_worker_cap = room <= 0
        return max(0, room)

    # --- leases: the synchronous fast path ------------------------------------------

    def _offer_lease(self) -> None:
        """With nothing queued or running, lend one idle worker (and one CPU) to
        the head so it can send the next 1-CPU task straight to it, skipping a hop."""
        if self.lease is not None or not self.config.lease_workers \
                or self.available.get("CPU", 0.0) < 1.0 - 1e-9:
            return
        if any(w.state is WorkerState.BUSY and w.task is not None
               and w.task.actor_id is None for w in self.workers.values()):
            return      # only a fully idle node lends: bursts keep every CPU
        for worker in self.workers.values():
            if worker.state is WorkerState.IDLE and not worker.retiring \
                    and not worker.leased and not worker.env_key and not worker.stale:
                worker.leased = True
                worker.env_key = ""     # the head sends it plain tasks only
                self.lease = worker.worker_id
                self.available["CPU"] -= 1.0
                self.out.send(HEAD, Msg.LEASE_OFFER, (worker.worker_id,))
                return

    def on_lease_return(self, worker_id: bytes, now: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.leased:
            self._end_lease(worker)
        self.dispatch(now)

    def _end_lease(self, worker) -> None:
        worker.leased = False
        if self.lease == worker.worker_id:
            self.lease = None
        self.available["CPU"] = self.available.get("CPU", 0.0) + 1.0 - \
            (1.0 if worker.blocked else 0.0)
        worker.blocked = False

    def _lease_blocked(self, worker, task_id: bytes, blocked: bool, now: float) -> None:
        """A lease task waits in get: lend its CPU back, as for any task."""
        if blocked == worker.blocked:
            return
        worker.blocked = blocked
        self.available["CPU"] = self.available.get("CPU", 0.0) + (1.0 if blocked else -1.0)
        if blocked:
            self.out.send(HEAD, Msg.WORKER_BLOCKED, (task_id, ()))
            self.dispatch(now)
        else:
            self.out.send(HEAD, Msg.WORKER_UNBLOCKED, (task_id,))

    def _prefetch(self, now):
        """Hand queued short tasks to busy workers running the same resource shape."""
        limit = self.config.worker_prefetch
        short = self.config.prefetch_max_task_s
        busy = [w for w in self.workers.values() if w.state is WorkerState.BUSY
                and not w.blocked and not w.retiring and len(w.tasks) < limit
                and not w.task.max_calls and not w.task.actor_id
                and not (w.stale and self.preloaded)]
        if not busy:
            return
        kept = deque()
        durations = self.durations
        for spec in self.queue:
            duration = durations.get(spec.function_id)
            target = None
            if duration is not None and duration <= short and not spec.max_calls \
                    and "GPU" not in spec.resources:
                key = code_env_key(spec.runtime_env) if spec.runtime_env else ""
                for worker in busy:
                    if len(worker.tasks) < limit and worker.task.resources == spec.resources \
                            and worker.env_key == key:
                        target = worker
                        break
            if target is None:
                kept.append(spec)
                continue
            target.tasks.append(spec)
            self._send_task(target, spec)
            busy.sort(key=lambda w: len(w.tasks))
        self.queue = kept

    def _pick_worker(self, idle, spec):
        """An idle worker for ``spec``: one of its code environment (or a fresh
        one), preferably one that has its function; None if there is none.
        An actor gets a worker that never ran anything (as in Ray, where each
        actor has a worker of its own): its first task is the actor's creation,
        so it starts a session of its own (worker.main.take_own_group); a
        worker that ran tasks could not leave its process group for one."""
        key = code_env_key(spec.runtime_env)
        fresh_only = spec.actor_id is not None
        fallback = None
        for i in range(len(idle) - 1, -1, -1):
            worker = idle[i]
            if worker.env_key is not None and (fresh_only or worker.env_key != key):
                continue
            if spec.function_id in worker.known_functions:
                return idle.pop(i)
            if fallback is None:
                fallback = i
        return None if fallback is None else idle.pop(fallback)

    def _retire_unmatched(self, idle, wanted) -> None:
        """Idle workers of another code environment make room for the ``wanted``
        new ones when the pool is full (else they stay, for their next task)."""
        live = sum(1 for w in self.workers.values()
                   if w.state is not WorkerState.DEAD and not w.retiring)
        excess = live + wanted - max(self.pool_size, 1)
        for worker in [w for w in idle if w.env_key is not None][:max(0, excess)]:
            idle.remove(worker)
            self._retire(worker)

    def _start(self, worker, spec, now):
        for name, amount in held(spec).items():
            self.available[name] = self.available.get(name, 0.0) - amount
        gpus = int(base_amount(spec.resources, "GPU") + 0.999)
        if gpus:
            spec.gpu_ids = tuple(self.free_gpus[:gpus])
            del self.free_gpus[:gpus]
        worker.move(WorkerState.BUSY)
        worker.env_key = code_env_key(spec.runtime_env)
        worker.tasks.append(spec)
        worker.task_started_at = now
        self._send_task(worker, spec)

    def _send_task(self, worker, spec):
        if spec.function_id not in worker.known_functions:
            spec.function_blob = self.functions.get(spec.function_id)
            worker.known_functions.add(spec.function_id)
        self.out.send(worker.worker_id, Msg.EXECUTE_TASKS, (spec,))

    def _release(self, worker):
        spec = worker.task
        for name, amount in held(spec).items():
            if worker.blocked and name == "CPU" or name not in self.total:
                continue       # (not in total: its bundle was released meanwhile)
            self.available[name] = self.available.get(name, 0.0) + amount
        self.free_gpus.extend(spec.gpu_ids or ())
        self.free_gpus.sort()
        worker.blocked = False

    def _spawn(self, now):
        worker_id = os.urandom(8)
        worker = self.workers[worker_id] = Worker(worker_id, now)
        self.commands.append(("spawn", worker_id))
        return worker

    def _retire(self, worker):
        """Ask the worker to exit once its messages are flushed (a kill could
        lose the results it has just sent)."""
        worker.retiring = True
        self.out.send(worker.worker_id, Msg.SHUTDOWN, ("retire",))

    def snapshot(self) -> dict:
        return {"queued": len(self.queue), "workers": len(self.workers),
                "available": dict(self.available), "placed_locally": self.placed_locally,
                "spilled": self.spilled}
