"""The worker process: receives a task, runs it, stores its results.

A worker is forked by its node's fork server.  Its client (zray.client) owns two DEALER
sockets: to the node (identity = worker id: HELLO, EXECUTE_TASKS in,
TASKS_DONE and WORKER_BLOCKED/UNBLOCKED out) and to the head (identity ``W`` +
worker id: results, nested tasks, puts, references, gets), so everything
about objects travels on one ordered channel.  The I/O thread hands
EXECUTE_TASKS to the main thread, which runs the function: results up to the
inline limit travel in TASKS_FINISHED, larger ones are written to a
shared-memory segment of this node first.  ``print`` inside a task is sent to
the driver as LOG_LINES, prefixed with the task name and pid.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
import types

import cloudpickle

from zray import _runtime, protocol
from zray._process import setup_logging
from zray.config import Config
from zray.client import NODE, Client, Head, Owner
from zray.worker.blas import set_blas_threads
from zray.worker.reports import LazyReports
from zray.exceptions import RayTaskError
from zray.protocol import (Msg, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK,
                           STATUS_RETRIABLE_ERROR)
from zray.serialization import (KIND_ERROR, KIND_INLINE, KIND_SHM, dumps_error,
                                inline_bytes, serialize, spare_paths)
from zray.task_spec import ArgRef

log = logging.getLogger("zray.worker")

#: Seconds an actor that ends itself waits for the head to confirm its death.
ACTOR_DIED_REPLY_S = 10.0
#: What _apply_env saves when a task changes no environment variable.
_NO_CHANGES: dict = {}


def run_forked(worker_id: bytes, worker_args: str) -> int:
    args = json.loads(worker_args)
    config = Config.from_json(args["config"])
    setup_logging("worker", config.log_level)
    return WorkerProcess(worker_id, args, config).run()


class WorkerProcess:
    def __init__(self, worker_id: bytes, args: dict, config: Config):
        self.worker_id = worker_id
        self.config = config
        self.node_id = bytes.fromhex(args["node_id"])
        self.session_dir = args.get("session_dir", "/tmp")
        self.actor = None
        self.code_env = None            # code_env_key of its first task's runtime_env
        self.code_env_error = None      # why setting that up failed, if it did
        self.host = args.get("host", "127.0.0.1")
        self.pid = os.getpid()
        self.reports = LazyReports()
        self.client = Client(args["head_endpoint"], b"W" + worker_id, config, "worker",
                             local_node_id=self.node_id, node_endpoint=args["node_endpoint"],
                             node_identity=worker_id,
                             bookkeeping=self.reports.is_bookkeeping)
        self.reports.attach(self.client)
        self.client.message_handlers[Msg.EXECUTE_TASKS] = self._on_execute
        self.client.message_handlers[Msg.CANCEL_TASKS] = self._on_cancel
        self.client.message_handlers[Msg.SHUTDOWN] = lambda items: self.inbox.put(None)
        self.client.blocked_hook = self._hand_back_unstarted
        self.client.unblocked_hook = self._resume
        self.blocked_task = None
        self.inbox = queue.SimpleQueue()
        self.functions: dict[bytes, object] = {}
        self.function_blobs: dict[bytes, bytes] = {}
        self.current = None
        self.interruptible = False
        self.cancelled = set()
        self.grouped = False            # take_own_group ran (at the first task)
        self.spares = spare_paths(self.config.shm_dir, self.node_id)   # see SpareSegments
        self.leased_tasks = set()       # ids of tasks the head sent to this leased worker
        self.owners: dict[str, Owner] = {}     # owner address -> its route
        self.thread_vars = [name for name in os.environ.get(
            "ZRAY_DEFAULTED_THREAD_VARS", "").split(",") if name]
        self.thread_count = 1           # their value (see forkserver.default_thread_counts)
        self.lock = threading.Lock()
        self.main_thread = threading.main_thread().ident
        runtime = _runtime.Runtime(self.client, "worker")
        runtime.worker = self
        runtime.resolve_env = _lazy_resolver(config.runtime_env_max_package_bytes)
        self.runtime = runtime
        _runtime.set_runtime(runtime)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_sigint)
        sys.stdout = TaskOutput(self, "stdout")
        sys.stderr = TaskOutput(self, "stderr")
        hello = ("worker", protocol.PROTOCOL_MAJOR, protocol.PROTOCOL_MINOR, self.pid,
                 {"node_id": self.node_id})
        self.client.send(Msg.HELLO, hello)
        self.client.send(Msg.HELLO, hello, NODE)
        parent = os.getppid()
        while True:
            try:
                spec = self.inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:
                    return 0
                continue
            if spec is None:            # retired by the node
                self.client.close()
                return 0
            try:
                self.execute(spec)
            except KeyboardInterrupt:
                pass
            self.client.segment_maps.sweep()     # let go of maps of removed objects

    # --- I/O thread callbacks --------------------------------------------------------

    def _on_execute(self, items) -> None:
        source = self.client.message_source
        if type(source) is Owner:          # granted: its driver gets the results itself
            self.reports.hold(spec.task_id for (spec,) in items)
        if type(source) in (Head, Owner):   # leased: the node keeps no record
            with self.lock:
                self.leased_tasks.update(spec.task_id for (spec,) in items)
        for (spec,) in items:
            if spec.function_blob is not None:
                self.function_blobs[spec.function_id] = spec.function_blob
            with self.lock:
                blocked = self.blocked_task
                if blocked is None:
                    self.inbox.put(spec)
            if blocked is not None:   # prefetched while we block: the node runs it elsewhere
                self.client.send(Msg.WORKER_BLOCKED, (blocked, (spec.task_id,)), NODE)

    def _on_cancel(self, items) -> None:
        if self.actor is not None:
            for task_id, force in items:
                self.actor.cancel(task_id)
            return
        for task_id, force in items:
            with self.lock:
                self.cancelled.add(task_id)
                if self.current == task_id:
                    if force:          # only the head sends force here (a leased worker)
                        _die_with_children()
                    signal.pthread_kill(self.main_thread, signal.SIGINT)

    def _resume(self) -> None:
        with self.lock:
            self.blocked_task = None

    def _hand_back_unstarted(self) -> list:
        """The running task blocked: give prefetched tasks back to the node.

        Tasks the head or a driver sent on a lease stay: the node never had
        them and could not run them elsewhere."""
        with self.lock:
            self.blocked_task = self.current
            leased = self.leased_tasks
        returned, kept = [], []
        while True:
            try:
                spec = self.inbox.get_nowait()
            except queue.Empty:
                break
            (kept if spec.task_id in leased else returned).append(spec)
        for spec in kept:
            self.inbox.put(spec)
        return [spec.task_id for spec in returned]

    def _on_sigint(self, signum, frame):
        if self.interruptible:
            raise KeyboardInterrupt

    # --- running a task --------------------------------------------------------------

    def execute(self, spec) -> None:
        if not self.grouped:
            self.grouped = True
            take_own_group(spec.is_actor_creation)
        if spec.is_actor_creation:
            self.become_actor(spec)
            return
        client = self.client
        with self.lock:
            skip = spec.task_id in self.cancelled
            self.cancelled.discard(spec.task_id)
        if skip:
            self.reports.urgent(spec.task_id)
            client.send(Msg.TASKS_FINISHED,
                        (spec.task_id, spec.attempt, STATUS_CANCELLED, [], 0.0))
            self._tell_node_done(spec.task_id)
            return
        client.job_id = spec.job_id
        client.current_task.task_id = spec.task_id
        self.current_spec = spec
        with self.lock:
            self.current = spec.task_id
        saved_env = self._apply_env(spec)
        started = time.perf_counter()
        keep_alive = []   # the return value holds refs the head must see contained first
        try:
            status, results = self._run(spec, keep_alive)
        finally:
            with self.lock:
                self.current = None
                cancelled = spec.task_id in self.cancelled
                self.cancelled.discard(spec.task_id)
            self._restore_env(saved_env)
            client.current_task.task_id = None
            sys.stdout.flush()
            sys.stderr.flush()
        if cancelled and status != STATUS_OK:
            status, results = STATUS_CANCELLED, []
        if spec.owner_address and status == STATUS_OK:
            # The owner waits for these: they go first, and straight to it (the
            # head does not push inline results of such tasks again).
            owner = self.owners.get(spec.owner_address)
            if owner is None:          # one route per driver (a frozen dataclass)
                owner = self.owners[spec.owner_address] = Owner(spec.owner_address)
            for object_id, kind, data, size, contained in results:
                if kind == KIND_INLINE:     # large ones: the head's copy only
                    client.send(Msg.OBJECTS_READY, (object_id, kind, data, size, ()),
                                owner)
        if status != STATUS_OK or not spec.owner_address or \
                any(result[1] != KIND_INLINE for result in results):
            self.reports.urgent(spec.task_id)   # the head must push these
        client.send(Msg.TASKS_FINISHED, (spec.task_id, spec.attempt, status, results,
                                         time.perf_counter() - started))
        self._tell_node_done(spec.task_id)
        del keep_alive

    def _tell_node_done(self, task_id: bytes) -> None:
        """TASKS_DONE frees the task's resources at the node; a task the head
        sent to this worker on lease holds none there, so the node is not told."""
        with self.lock:
            leased = task_id in self.leased_tasks
            self.leased_tasks.discard(task_id)
        if not leased:
            self.client.send(Msg.TASKS_DONE, (task_id,), NODE)

    def _call_user_function(self, spec):
        """Load the task's function and arguments and call it; zray.cancel may
        interrupt it while it runs."""
        self._enter_code_env(spec)
        function = self._function(spec)
        args, kwargs = self.resolve_args(spec)
        self.interruptible = True
        try:
            return function(*args, **kwargs)
        finally:
            self.interruptible = False

    def _run(self, spec, keep_alive):
        if spec.is_generator:
            return self._run_generator(spec)
        try:
            value = self._call_user_function(spec)
            keep_alive.append(value)
            return STATUS_OK, self.pack_returns(spec, value)
        except KeyboardInterrupt as exc:
            return self._error_results(spec, exc)
        except Exception as exc:
            return self._error_results(spec, exc)

    def _run_generator(self, spec):
        """A streaming or dynamic generator task: each yielded value is stored and
        reported as it comes (see zray.worker.streaming); zray.cancel interrupts
        only the user's code between items."""
        from zray.worker.streaming import StreamRun, run_sync
        run = StreamRun(self, spec)
        try:
            value = self._call_user_function(spec)
            return run_sync(run, value, self._interruptible, self._uninterruptible)
        except KeyboardInterrupt as exc:
            if self._cancel_requested(spec.task_id):
                return STATUS_ERROR, []         # execute() turns this into CANCELLED
            return run.fail(RuntimeError(f"interrupted: {exc!r}"))
        except Exception as exc:
            return run.fail(exc)

    def _interruptible(self) -> None:
        self.interruptible = True

    def _uninterruptible(self) -> None:
        self.interruptible = False

    def _cancel_requested(self, task_id: bytes) -> bool:
        with self.lock:
            return task_id in self.cancelled

    def become_actor(self, spec) -> None:
        """Run the constructor, then serve method calls until the process ends."""
        from zray.worker.actor_runtime import ActorRuntime
        self.client.job_id = spec.job_id
        self.current_spec = spec
        self._apply_env(spec)
        try:
            self._enter_code_env(spec)
            cls = self._function(spec)
            args, kwargs = self.resolve_args(spec)
            instance = cls(*args, **kwargs)
        except Exception as exc:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.actor_died(spec.actor_id, "The actor's constructor raised an "
                                           f"exception:\n{text}")
            self.client.close()
            os._exit(1)
        self.actor = ActorRuntime(self, spec, instance)
        self.actor.start()
        self.actor.run_forever()

    def actor_died(self, actor_id: bytes, text: str) -> None:
        """Tell the head that this process's actor is dead for good, and return
        once the head has handled that and everything sent before it (the items
        and results of the last calls), so before the process ends.  The node's
        report of the end (WORKER_DIED) comes on another connection, which the
        head may read first: it would then take the actor for crashed and fail
        the calls whose answers their callers already hold, a generator's in
        place of the items still on their way (the caller, counting on the
        actor's count, would wait for those forever)."""
        self.client.send(Msg.ACTOR_DIED, (actor_id, text, True))
        try:
            self.client.query("barrier", timeout_s=ACTOR_DIED_REPLY_S)
        except Exception as exc:        # the head is gone or stuck: end regardless
            log.warning("the head did not confirm the actor's death: %s", exc)

    def _function(self, spec):
        function = self.functions.get(spec.function_id)
        if function is None:
            blob = self.function_blobs.pop(spec.function_id, None)
            if blob is None:
                raise RuntimeError(f"worker has no code for function {spec.name}")
            function = cloudpickle.loads(blob)
            self.functions[spec.function_id] = function
        return function

    def resolve_args(self, spec):
        if not spec.args_blob:
            return (), {}
        args, kwargs = pickle.loads(spec.args_blob)
        if spec.dep_ids:
            entries = spec.dep_values
            if entries is None:      # an actor call: fetch what the caller referred to
                from zray.object_ref import ObjectRef
                holding = [ObjectRef(object_id, _client=self.client)
                           for object_id in spec.dep_ids]
                entries = self.client.get_entries(list(spec.dep_ids), None)
                del holding
            values = [self.client.value_of(object_id, entry)
                      for object_id, entry in zip(spec.dep_ids, entries)]
            args = [values[a.index] if type(a) is ArgRef else a for a in args]
            kwargs = {k: values[v.index] if type(v) is ArgRef else v
                      for k, v in kwargs.items()}
        return args, kwargs

    def pack_returns(self, spec, value) -> list:
        count = spec.num_returns
        if count == 0:
            return []
        if count == 1 and type(value) is not types.GeneratorType:
            values = (value,)
        else:
            try:
                values = tuple(value)
            except TypeError:
                values = (value,)
            if len(values) != count:
                raise ValueError(f"Task {spec.name} returned {len(values)} objects, but "
                                 f"num_returns={count}.")
        what = f"return value of task {spec.name}"
        return [self.store_result(object_id, item, what)
                for object_id, item in zip(spec.return_ids(), values)]

    def store_result(self, object_id: bytes, value, what: str) -> tuple:
        """Serialize a result: inline when small, else into a segment of this
        node; return its (object_id, kind, data, size, contained_ids)."""
        obj = serialize(value, what)
        self.client.register_escaping(obj.contained_ids)
        if obj.size <= self.config.max_inline_object_bytes:
            return (object_id, KIND_INLINE, inline_bytes(obj), obj.size, obj.contained_ids)
        size = self.client.store.write_object(object_id, obj, self.spares)   # within the bound
        return (object_id, KIND_SHM, None, size, obj.contained_ids)

    def _error_results(self, spec, exc):
        if isinstance(exc, RayTaskError):
            error = RayTaskError(exc.function_name, exc.traceback_str, exc.cause,
                                 exc.pid, exc.ip)
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            error = RayTaskError(spec.name, text, exc, self.pid, self.host)
        blob = dumps_error(error)
        status = STATUS_RETRIABLE_ERROR if self.retriable(spec, exc) else STATUS_ERROR
        return status, [(oid, KIND_ERROR, blob, len(blob), ()) for oid in spec.return_ids()]

    @staticmethod
    def retriable(spec, exc) -> bool:
        """``retry_exceptions`` covers ``exc`` (whether retries are left is the
        head's to say)."""
        policy = spec.retry_exceptions
        if policy is True:
            return isinstance(exc, Exception)
        if isinstance(policy, bytes):
            return isinstance(exc, cloudpickle.loads(policy))
        return False

    def _enter_code_env(self, spec) -> None:
        """The task's working_dir and py_modules (see zray.runtime_env.setup): set
        up by a worker's first task; the node never sends this worker a task of
        another code environment."""
        if not spec.runtime_env and self.code_env == "" and self.code_env_error is None:
            return                 # the common case: no working_dir/py_modules/pip
        from zray.exceptions import RuntimeEnvSetupError
        from zray.runtime_env.keys import code_env_key
        key = code_env_key(spec.runtime_env)
        if key == self.code_env:
            if self.code_env_error is not None:
                raise self.code_env_error
            return
        if self.code_env is not None:
            raise RuntimeEnvSetupError(
                f"worker pid={self.pid} runs runtime_env {self.code_env!r} and was sent a "
                f"task of {key!r} (a zray bug: workers are pooled per environment)")
        self.code_env = key
        if key:
            from zray.runtime_env.setup import apply_code_env, cache_dir
            from zray.runtime_env.store import StoreClient
            try:
                apply_code_env(spec.runtime_env, cache_dir(self.session_dir, self.node_id),
                               StoreClient().fetch)
            except Exception as exc:
                self.code_env_error = RuntimeEnvSetupError(
                    f"could not set up runtime_env {spec.runtime_env!r} on node "
                    f"{self.node_id.hex()[:12]} (pid={self.pid}): {exc!r}")
                raise self.code_env_error from exc

    def _apply_env(self, spec):
        self.runtime.runtime_env = spec.runtime_env     # what its own tasks inherit
        if self.thread_vars:
            self._set_thread_count(spec)
        if not spec.runtime_env and not spec.gpu_ids:
            return _NO_CHANGES          # the common case: os.environ stays as it is
        changes = dict((spec.runtime_env or {}).get("env_vars") or {})
        if spec.gpu_ids:
            changes["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpu_ids)
        saved = {k: os.environ.get(k) for k in changes}
        os.environ.update(changes)
        return saved

    def _set_thread_count(self, spec) -> None:
        """OMP/MKL/OPENBLAS_NUM_THREADS (those the user did not set) = the task's
        num_cpus, at least 1, as in Ray; they stay until a task needs another
        count (one putenv per variable per change, not per task)."""
        count = max(1, int(spec.resources.get("CPU", 1)))
        if count != self.thread_count:
            self.thread_count = count
            for name in self.thread_vars:
                os.environ[name] = str(count)
            if "numpy" in sys.modules and "OPENBLAS_NUM_THREADS" in self.thread_vars:
                set_blas_threads(count)        # loaded already: it read the old count

    @staticmethod
    def _restore_env(saved):
        if not saved:
            return
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _lazy_resolver(max_bytes: int):
    """Runtime.resolve_env for a worker: zray.runtime_env.packaging (and what it
    imports) loads on the first runtime_env to resolve, not in every fork
    server's start-up; no runtime_env, the common case, passes straight on."""
    resolve = None

    def resolve_env(runtime_env):
        nonlocal resolve
        if not runtime_env:
            return runtime_env
        if resolve is None:
            from zray.runtime_env.packaging import resolver
            resolve = resolver(max_bytes)
        return resolve(runtime_env)
    return resolve_env


class TaskOutput(io.TextIOBase):
    """sys.stdout/sys.stderr of a worker: whole lines go to the driver."""

    def __init__(self, worker: WorkerProcess, stream: str):
        self.worker = worker
        self.stream = stream
        self.pending = ""

    def writable(self):
        return True

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            complete, _, self.pending = self.pending.rpartition("\n")
            self._send(complete)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            text, self.pending = self.pending, ""
            self._send(text)

    def _send(self, text: str) -> None:
        worker = self.worker
        spec = getattr(worker, "current_spec", None)
        name = spec.name if spec is not None else "worker"
        job_id = spec.job_id if spec is not None else None
        worker.client.send(Msg.LOG_LINES, (job_id, f"({name} pid={worker.pid})",
                                           self.stream, text))


def take_own_group(actor: bool) -> None:
    """Called once, at the worker's first task: lead a process group of its own,
    so that killing the worker (forkserver.kill_worker) takes what its tasks
    started.  A worker that hosts an actor also starts a session of its own:
    where the kernel shares CPU by session first (sched_autogroup, on by
    default on many distributions), a long-running actor such as a training
    rank gets its own share, as each rank torchrun starts does.  A task worker
    stays in its node manager's session, as Ray's workers stay in the raylet's:
    in sessions of their own, two busy task workers outweighed the node
    manager and head that feed them (map_reduce ran ~10% slower).  The node
    gives an actor a worker that has run nothing (NodeManagerState._pick_worker):
    the kernel refuses setsid to a group leader."""
    try:
        if actor:
            os.setsid()
        else:
            os.setpgid(0, 0)
    except OSError:          # already a group leader: it stays where it is
        pass


def _die_with_children() -> None:
    """Exit at once, taking what the running task started: a worker leads its
    own process group (take_own_group)."""
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


__all__ = ["run_forked", "take_own_group", "WorkerProcess"]
