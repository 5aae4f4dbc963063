"""Running a generator task (or actor method) inside a worker.

Each value the generator yields is stored the way a task result is (inline, or
in a shared-memory segment of this node) under the id ``task_id + item + 2``
and reported to the head at once (ITEMS_YIELDED); the head pushes it on to the
caller, whose ObjectRefGenerator hands out its ref while the task still runs.
When the generator ends, the task's one return, its *completion*, holds the
number of items (or, for ``num_returns="dynamic"``, a DynamicObjectRefGenerator
of them) and travels in TASKS_FINISHED / ACTOR_TASKS_FINISHED as usual.

An exception raised by the generator becomes one more item holding the error
(so the items before it keep their values, as in Ray), unless the task will be
retried (``retry_exceptions`` with retries left): then nothing is reported and
the retry yields the items again; the head ignores those it already has.
"""

from __future__ import annotations

import os
import pickle
import traceback

from zray.exceptions import RayActorError, RayTaskError, TaskCancelledError
from zray.ids import MAX_GENERATOR_ITEMS, object_id_for_item
from zray.protocol import Msg, STATUS_OK, STATUS_RETRIABLE_ERROR
from zray.serialization import KIND_ERROR, KIND_INLINE, dumps_error, serialize
from zray.task_spec import DYNAMIC


class StreamRun:
    """One run of one generator task: reports items, then gives the completion."""

    def __init__(self, worker, spec):
        self.worker = worker
        self.client = worker.client
        self.spec = spec
        self.count = 0

    def report(self, value) -> None:
        """Store the next item and tell the head (a value that cannot be stored
        raises, and the caller reports that error as the item instead)."""
        if self.count >= MAX_GENERATOR_ITEMS:
            raise ValueError(f"{self.spec.name} yielded more than {MAX_GENERATOR_ITEMS} "
                             "items, the most a zray generator task may yield")
        object_id = object_id_for_item(self.spec.task_id, self.count)
        result = self.worker.store_result(object_id, value,
                                          f"item {self.count} of {self.spec.name}")
        self._send(result)

    def report_error(self, exc: BaseException) -> None:
        """The generator raised: the error is the last item."""
        if self.count >= MAX_GENERATOR_ITEMS:
            self.count -= 1         # no index left: the error replaces the last item
        blob = self.error_blob(exc)
        object_id = object_id_for_item(self.spec.task_id, self.count)
        self._send((object_id, KIND_ERROR, blob, len(blob), ()))

    def _send(self, result) -> None:
        self.client.send(Msg.ITEMS_YIELDED, (self.spec.task_id, self.spec.attempt) + result)
        self.count += 1

    def fail(self, exc: BaseException):
        """(status, results) for a generator that raised ``exc``."""
        if self.retriable(exc):
            return STATUS_RETRIABLE_ERROR, []
        self.report_error(exc)
        return self.finish()

    def retriable(self, exc: BaseException) -> bool:
        spec = self.spec
        if not isinstance(exc, Exception) or spec.actor_id is not None:
            return False
        retries_left = spec.max_retries < 0 or spec.attempt < spec.max_retries
        return retries_left and self.worker.retriable(spec, exc)

    def finish(self):
        """(STATUS_OK, [completion]): the item count, or the dynamic generator."""
        [completion_id] = self.spec.return_ids()
        if self.spec.num_returns == DYNAMIC:
            from zray.generators import DynamicObjectRefGenerator
            ids = [object_id_for_item(self.spec.task_id, i) for i in range(self.count)]
            from zray.serialization import inline_bytes
            data = inline_bytes(serialize(DynamicObjectRefGenerator(ids)))
        else:
            data = pickle.dumps(self.count, 5)
        # contained_ids stay empty: the head pins the items by the completion itself
        return STATUS_OK, [(completion_id, KIND_INLINE, data, len(data), ())]

    def error_blob(self, exc: BaseException) -> bytes:
        if isinstance(exc, (TaskCancelledError, RayActorError)):
            return dumps_error(exc)          # zray's own verdicts, raised as they are
        if isinstance(exc, RayTaskError):
            error = RayTaskError(exc.function_name, exc.traceback_str, exc.cause,
                                 exc.pid, exc.ip)
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            error = RayTaskError(self.spec.name, text, exc, os.getpid(), self.worker.host)
        return dumps_error(error)


def iterate(value):
    """The iterator a generator task's return value is driven through."""
    if hasattr(value, "__next__"):
        return value
    try:
        return iter(value)
    except TypeError:
        raise TypeError(f"a task with num_returns='streaming' or 'dynamic' must be a "
                        f"generator function, but it returned {type(value).__name__}") \
            from None


def run_sync(run: StreamRun, value, before_next=None, after_next=None, cancelled=None):
    """Drive a (sync) generator to its end; return (status, results).

    ``before_next``/``after_next`` bracket each step of the user's code (the
    worker makes only those interruptible by zray.cancel); ``cancelled()`` is
    asked before each item is stored (actors stop a cancelled call there)."""
    try:
        iterator = iterate(value)
        while True:
            if before_next is not None:
                before_next()
            try:
                item = next(iterator)
            except StopIteration:
                break
            finally:
                if after_next is not None:
                    after_next()
            if cancelled is not None and cancelled():
                raise TaskCancelledError(run.spec.task_id.hex())
            run.report(item)
    except Exception as exc:
        return run.fail(exc)
    return run.finish()


async def run_async(run: StreamRun, agen, cancelled=None):
    """Drive an async generator (an async actor's method) to its end."""
    import asyncio
    try:
        async for item in agen:
            if cancelled is not None and cancelled():
                raise TaskCancelledError(run.spec.task_id.hex())
            run.report(item)
    except asyncio.CancelledError:
        return run.fail(TaskCancelledError(run.spec.task_id.hex()))
    except Exception as exc:
        return run.fail(exc)
    return run.finish()


__all__ = ["StreamRun", "iterate", "run_sync", "run_async"]
