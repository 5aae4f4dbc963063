"""What a generator task returns to its caller: ObjectRefGenerator (streaming)
and DynamicObjectRefGenerator (``num_returns="dynamic"``), with Ray's names.

    worker: yield v ──ITEMS_YIELDED──► head: stores item i ──OBJECTS_READY──► caller
            ...                             (lineage: the task)               │
            end ──TASKS_FINISHED──► head: completion = count ─────────────────┤
                                                                              ▼
    ObjectRefGenerator.__next__ / __anext__ / ray.wait: ref i once item i is
    here; StopIteration once the completion says there are no more.

Item i of task T has the object id ``T + (i + 2)``, known in advance, so the
caller only waits for it to arrive.  The generator holds each item's reference
from its arrival until next() hands it out; dropping the generator drops the
items it never handed out (and its completion, which pins them at the head).
"""

from __future__ import annotations

import time

from zray import _runtime
from zray.exceptions import GetTimeoutError
from zray.object_ref import ObjectRef
from zray.serialization import record_contained_ref


class ObjectRefGenerator:
    """The ObjectRefs a streaming generator task yields, as they are produced.

    Iterate it (``for ref in gen``, ``async for ref in gen``), call
    ``next(gen)``, or pass it to ``ray.wait`` (ready when its next ref is
    available, or when it has ended).  An error the task raised is the item at
    the place it happened: ``ray.get`` of that ref raises it, and iteration
    stops after it.  Not serializable: it belongs to the process that called
    ``.remote()``.
    """

    def __init__(self, completion_ref: ObjectRef, client=None):
        self._completion = completion_ref
        self._client = client or _runtime.client()
        self._stream = self._client.open_stream(completion_ref.binary())

    # --- sync -------------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self) -> ObjectRef:
        return self._next(None)

    def _next(self, timeout_s) -> ObjectRef:
        client = self._client
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            object_id = self._stream.next()      # StopIteration at the end
            if object_id is not None:
                return ObjectRef(object_id, _client=client, _registered=True)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise GetTimeoutError(f"the next item of {self!r} did not arrive within "
                                      f"{timeout_s} s")
            client.wait_entries((), 1, left, streams=(self._stream.stream,))

    # --- asyncio ----------------------------------------------------------------------

    def __aiter__(self):
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio
        client = self._client
        while True:
            try:
                object_id = self._stream.next()
            except StopIteration:
                raise StopAsyncIteration from None
            if object_id is not None:
                return ObjectRef(object_id, _client=client, _registered=True)
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._stream.when_ready(_AsyncWaiter(loop, future))
            await future

    # --- state --------------------------------------------------------------------------

    def completed(self) -> ObjectRef:
        """A ref that is ready when the task has finished (its value: the number
        of items, the error item included)."""
        return self._completion

    def next_ready(self) -> bool:
        """Whether next() would return (or stop) without waiting."""
        return self._stream.ready()

    def is_finished(self) -> bool:
        """Whether every item has been handed out and the task has ended."""
        return self._stream.finished()

    def _wait_handle(self):
        """What ``ray.wait`` waits on (zray.api)."""
        return self._stream.stream

    def task_id(self) -> bytes:
        return self._completion.task_id()

    # --- lifetime -----------------------------------------------------------------------

    def __del__(self):
        client = getattr(self, "_client", None)
        stream = getattr(self, "_stream", None)
        if stream is not None and not client.closed:
            try:
                stream.close()
            except Exception:
                pass

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be serialized or passed to another "
                        "task or actor; iterate it here and pass the ObjectRefs it yields.")

    def __repr__(self):
        return f"ObjectRefGenerator({self._completion.task_id().hex()})"


class _AsyncWaiter:
    """Resolves an asyncio future from the client's I/O thread."""

    __slots__ = ("loop", "future")

    def __init__(self, loop, future):
        self.loop = loop
        self.future = future

    def hit(self) -> None:
        self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future) -> None:
    if not future.done():
        future.set_result(None)


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task's one ObjectRef: the refs
    of the values it yielded, in order (an error it raised is the last one)."""

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __reduce__(self):
        ids = [r.binary() if isinstance(r, ObjectRef) else r for r in self._refs]
        for object_id in ids:      # a value holding this pins the items it names
            record_contained_ref(object_id)
        return (_rebuild_dynamic, (ids,))

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def _rebuild_dynamic(ids) -> DynamicObjectRefGenerator:
    return DynamicObjectRefGenerator([ObjectRef(object_id) for object_id in ids])


__all__ = ["ObjectRefGenerator", "DynamicObjectRefGenerator"]
