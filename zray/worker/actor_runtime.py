"""An actor inside its worker: the instance, its call queue, and how calls run.

Callers send ACTOR_CALLS straight to this worker's ROUTER socket.  Calls from
one caller arrive in the order sent; they run:

- sync actors (max_concurrency 1): one at a time on the main thread, in order;
  the main thread owns the ROUTER (call_inbox.py): it reads the calls and
  answers them itself, with no hand-off to the client's I/O thread;
- threaded actors (max_concurrency > 1): on a thread pool of that size;
- async actors (any ``async def`` method): on an asyncio loop in the main
  thread, at most max_concurrency at once.

Threaded and async actors are served by the client's I/O thread, which owns
their ROUTER and hands each call on.

Each finished call answers the caller (ACTOR_RESULTS).  The head hears of it
(ACTOR_TASKS_FINISHED) only when the results hold refs or live in shared
memory; otherwise the caller forwards them if their refs ever leave it.  A
generator method (streaming or dynamic) reports each item to the head as it is
yielded (zray.worker.streaming), and its end to the head as well.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import inspect
import logging
import os
import threading
import time
import traceback
from collections import deque

from zray.actor import ActorExit
from zray.exceptions import ActorDiedError, RayTaskError, TaskCancelledError
from zray.client import Reply
from zray.protocol import Msg, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK
from zray.serialization import KIND_ERROR, KIND_SHM, dumps_error
from zray.worker.call_events import CallEvents
from zray.worker.call_inbox import CallInbox
from zray.worker.streaming import StreamRun, run_async, run_sync

log = logging.getLogger("zray.worker")


class ActorRuntime:
    def __init__(self, worker, spec, instance):
        self.worker = worker
        self.client = worker.client
        self.spec = spec
        self.actor_id = spec.actor_id
        self.instance = instance
        options = spec.actor_options
        self.max_concurrency = options.get("max_concurrency") or 1
        self.mode = "async" if options.get("is_async") else (
            "threaded" if self.max_concurrency > 1 else "sync")
        self.calls = deque()        # sync: (caller, spec) read, not yet run
        self.inbox = None           # sync: the main thread's ROUTER (CallInbox)
        self.cancelled: set = set()
        self.running: dict = {}
        self.lock = threading.Lock()
        self.exit_requested = threading.Event()
        self.pool = None
        self.loop = None
        self.semaphore = None
        # the calls it ran, for the head's task events (Config.actor_task_events)
        self.call_events = CallEvents(self.client, worker.node_id) \
            if self.client.config.actor_task_events else None

    # --- start ------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode == "threaded":
            self.pool = concurrent.futures.ThreadPoolExecutor(
                self.max_concurrency, thread_name_prefix="zray-actor")
        elif self.mode == "async":
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.semaphore = asyncio.Semaphore(self.max_concurrency)
        tag = self.actor_id[:4].hex() + self.actor_id[8:].hex().lstrip("0")
        from zray._process import serve_endpoint
        endpoint = serve_endpoint(self.worker.session_dir, f"a-{tag}-{self.spec.attempt}",
                                  self.worker.host, self.client.endpoint)
        if self.mode == "sync":
            self.inbox = CallInbox(endpoint, self.client.config)
            address = self.inbox.endpoint
        else:
            address = self.client.serve(endpoint, self.on_message)
        self.client.send(Msg.ACTOR_READY, (self.actor_id, address, os.getpid()))

    def run_forever(self) -> None:
        if self.mode == "async":
            self.loop.run_forever()
        elif self.mode == "threaded":
            self.exit_requested.wait()
        else:
            calls, inbox = self.calls, self.inbox
            while not self.exit_requested.is_set():
                if not calls:
                    inbox.wait(self.on_message)
                    continue
                self.run_call(*calls.popleft())
                inbox.drain(self.on_message)    # what came meanwhile, cancels too
        self.finish_exit()

    # --- arrivals (the I/O thread; a sync actor's main thread) -------------------------

    def on_message(self, caller: bytes, message) -> None:
        if message.type is Msg.CANCEL_TASKS:
            for task_id, force in message.items:
                self.cancel(task_id)
            return
        if message.type is not Msg.ACTOR_CALLS:
            log.warning("actor ignored %s from a caller", message.type.name)
            return
        for (spec,) in message.items:
            if self.mode == "sync":
                self.calls.append((caller, spec))
            elif self.mode == "threaded":
                self.pool.submit(self.run_call, caller, spec)
            else:
                self.loop.call_soon_threadsafe(self._schedule_async, caller, spec)

    def cancel(self, task_id: bytes) -> None:
        with self.lock:
            self.cancelled.add(task_id)
            running = self.running.get(task_id)
        if running is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(running.cancel)

    # --- running calls ----------------------------------------------------------------

    def run_call(self, caller: bytes, spec) -> None:
        run = StreamRun(self.worker, spec) if spec.is_generator else None
        if self._take_cancelled(spec.task_id):
            self.reply(caller, spec, *self._cancelled(spec, run))
            return
        keep_alive = []
        started = time.perf_counter()
        try:
            args, kwargs = self.worker.resolve_args(spec)
            value = self.method(spec.method)(*args, **kwargs)
            if run is not None:
                status, results = run_sync(run, value,
                                           cancelled=lambda: self._is_cancelled(spec))
            else:
                keep_alive.append(value)
                status, results = STATUS_OK, self.worker.pack_returns(spec, value)
        except ActorExit:
            status, results = self._exit_results(spec, run)
        except Exception as exc:
            status, results = self._error_results(spec, exc, run)
        self.reply(caller, spec, status, results, started)

    def _schedule_async(self, caller, spec) -> None:
        task = self.loop.create_task(self.run_async(caller, spec))
        with self.lock:
            self.running[spec.task_id] = task

    async def run_async(self, caller, spec) -> None:
        run = StreamRun(self.worker, spec) if spec.is_generator else None
        keep_alive = []
        started = None
        try:
            async with self.semaphore:
                if self._take_cancelled(spec.task_id):
                    raise asyncio.CancelledError
                started = time.perf_counter()
                if spec.dep_ids:
                    args, kwargs = await self.loop.run_in_executor(
                        None, self.worker.resolve_args, spec)
                else:
                    args, kwargs = self.worker.resolve_args(spec)
                value = self.method(spec.method)(*args, **kwargs)
                if run is not None:
                    status, results = await self._run_stream_async(spec, value, run)
                else:
                    if asyncio.iscoroutine(value):
                        value = await value
                    keep_alive.append(value)
                    status, results = STATUS_OK, self.worker.pack_returns(spec, value)
        except asyncio.CancelledError:
            status, results = self._cancelled(spec, run)
        except ActorExit:
            status, results = self._exit_results(spec, run)
        except Exception as exc:
            status, results = self._error_results(spec, exc, run)
        finally:
            with self.lock:
                self.running.pop(spec.task_id, None)
        self.reply(caller, spec, status, results, started)

    def method(self, name: str):
        """The instance's method ``name``, or one that every actor has."""
        try:
            return getattr(self.instance, name)
        except AttributeError:
            builtin = _BUILTIN_METHODS.get(name)
            if builtin is None:
                raise
            return functools.partial(builtin, self.instance)

    async def _run_stream_async(self, spec, value, run):
        cancelled = lambda: self._is_cancelled(spec)       # noqa: E731
        if inspect.isasyncgen(value):
            return await run_async(run, value, cancelled)
        return run_sync(run, value, cancelled=cancelled)

    def _is_cancelled(self, spec) -> bool:
        if self.inbox is not None:      # a sync generator: read cancels sent meanwhile
            self.inbox.drain(self.on_message)
        return self._take_cancelled(spec.task_id)

    def _take_cancelled(self, task_id) -> bool:
        with self.lock:
            if task_id in self.cancelled:
                self.cancelled.discard(task_id)
                return True
        return False

    def reply(self, caller: bytes, spec, status: int, results: list,
              started: float | None = None) -> None:
        """Answer the caller; tell the head too when the results hold refs or live
        in shared memory (it must pin what they contain, or free the segment).
        Anything else the caller forwards to the head if the refs ever escape."""
        if spec.is_generator or any(result[4] or result[1] == KIND_SHM
                                    for result in results):
            # (a generator's items went to the head: its end goes there too)
            self.client.send(Msg.ACTOR_TASKS_FINISHED,
                             (spec.task_id, spec.attempt, status, results))
            if self.inbox is not None:
                # the head must have the report before the caller has the answer
                # (it may kill us or pass the result on at once): see is_bookkeeping
                self.client.wait_sent()
        answer = (spec.task_id, self.worker.node_id, results, status)
        if self.inbox is not None:
            self.inbox.send(caller, Msg.ACTOR_RESULTS, [answer])
        else:
            self.client.send(Msg.ACTOR_RESULTS, answer, Reply(caller))
        if self.call_events is not None and started is not None:
            self.call_events.note(spec, status, results, time.perf_counter() - started)

    # --- outcomes ---------------------------------------------------------------------

    def _error_results(self, spec, exc, run=None):
        if run is not None:             # a generator's error is its next item
            return run.fail(exc)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, RayTaskError):
            error = RayTaskError(exc.function_name, exc.traceback_str, exc.cause,
                                 exc.pid, exc.ip)
        else:
            error = RayTaskError(spec.name, text, exc, os.getpid(), self.worker.host)
        return STATUS_ERROR, self._same_error(spec, dumps_error(error))

    def _cancelled(self, spec, run=None):
        error = TaskCancelledError(spec.task_id.hex())
        if run is not None:
            return run.fail(error)
        return STATUS_CANCELLED, self._same_error(spec, dumps_error(error))

    def _exit_results(self, spec, run=None):
        self.exit_requested.set()
        if self.loop is not None:
            self.loop.call_soon(self.loop.stop)
        error = ActorDiedError("The actor exited by calling exit_actor().", self.actor_id)
        if run is not None:
            return run.fail(error)
        return STATUS_ERROR, self._same_error(spec, dumps_error(error))

    @staticmethod
    def _same_error(spec, blob):
        return [(oid, KIND_ERROR, blob, len(blob), ()) for oid in spec.return_ids()]

    def finish_exit(self) -> None:
        """exit_actor() ran: run the process's atexit handlers (as a Python
        process that exits does), tell the head and wait until it has handled
        that (worker.main: ``actor_died``), and end the process."""
        atexit._run_exitfuncs()
        if self.call_events is not None:
            self.call_events.flush()
        if self.inbox is not None:
            self.inbox.close()          # the last answers leave first
        self.worker.actor_died(self.actor_id, "The actor exited by calling exit_actor().")
        self.client.close()
        os._exit(0)


def _ray_ready(instance) -> bool:
    return True


def _ray_terminate(instance) -> None:
    raise ActorExit()


def _ray_call(instance, function, *args, **kwargs):
    return function(instance, *args, **kwargs)


#: What zray.actor.BUILTIN_METHODS names.
_BUILTIN_METHODS = {"__ray_ready__": _ray_ready, "__ray_terminate__": _ray_terminate,
                    "__ray_call__": _ray_call}
