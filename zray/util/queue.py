"""A first-in, first-out queue shared across the cluster, as ``ray.util.queue.Queue``.

The items live in an async actor (``_QueueActor``) around an ``asyncio.Queue``;
the ``Queue`` object is a thin client holding that actor's handle, so it can be
passed to tasks and actors and they all see the same queue.  Blocking ``put``
and ``get`` wait inside the actor (other calls keep running meanwhile); the
actor reports "full" or "empty" as a result, and the client raises ``Full`` or
``Empty`` in the caller.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable

import zray
from zray.actor import exit_actor

__all__ = ["Empty", "Full", "Queue"]

_OK, _EMPTY, _FULL = "ok", "empty", "full"


class Empty(queue.Empty):
    """Raised by a non-blocking get on an empty queue, or a get that timed out."""


class Full(queue.Full):
    """Raised by a non-blocking put on a full queue, or a put that timed out."""


class Queue:
    """A queue whose items live in an actor; ``maxsize <= 0`` means unbounded.

    ``actor_options`` are passed to ``.options()`` of the backing actor (for
    example ``num_cpus`` or ``name``)."""

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        self.maxsize = maxsize
        options = dict(actor_options or {})
        self.actor = zray.remote(_QueueActor).options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue now."""
        return zray.get(self._live_actor().qsize.remote())

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return zray.get(self._live_actor().empty.remote())

    def full(self) -> bool:
        return zray.get(self._live_actor().full.remote())

    # --- putting ------------------------------------------------------------------------

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; if full, wait (up to ``timeout`` s) or raise Full at once."""
        actor = self._live_actor()
        if not block:
            status = zray.get(actor.put_nowait.remote(item))
        else:
            _check_timeout(timeout)
            status = zray.get(actor.put.remote(item, timeout))
        _raise_for(status, None)

    async def put_async(self, item, block: bool = True, timeout: float | None = None):
        """``put`` for asyncio code: awaits the actor instead of blocking the thread."""
        actor = self._live_actor()
        if not block:
            status = await actor.put_nowait.remote(item)
        else:
            _check_timeout(timeout)
            status = await actor.put.remote(item, timeout)
        _raise_for(status, None)

    def put_nowait(self, item) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items) -> None:
        """Add all ``items`` at once, or none of them (raising Full) if they don't fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        status, detail = zray.get(self._live_actor().put_nowait_batch.remote(list(items)))
        _raise_for(status, detail)

    # --- getting ------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None):
        """Remove and return the oldest item; if empty, wait (up to ``timeout`` s)
        or raise Empty at once."""
        actor = self._live_actor()
        if not block:
            status, item = zray.get(actor.get_nowait.remote())
        else:
            _check_timeout(timeout)
            status, item = zray.get(actor.get.remote(timeout))
        _raise_for(status, None)
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None):
        """``get`` for asyncio code: awaits the actor instead of blocking the thread."""
        actor = self._live_actor()
        if not block:
            status, item = await actor.get_nowait.remote()
        else:
            _check_timeout(timeout)
            status, item = await actor.get.remote(timeout)
        _raise_for(status, None)
        return item

    def get_nowait(self):
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Remove and return ``num_items`` items, or raise Empty if there are fewer."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        status, items = zray.get(self._live_actor().get_nowait_batch.remote(num_items))
        _raise_for(status, items)
        return items

    # --- ending -------------------------------------------------------------------------

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """End the backing actor; the queue cannot be used afterwards.

        Without ``force`` the actor finishes the calls it already has, and is
        killed if that takes longer than ``grace_period_s``."""
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if force:
            zray.kill(actor, no_restart=True)
            return
        done, _ = zray.wait([actor.exit.remote()], timeout=grace_period_s)
        if not done:
            zray.kill(actor, no_restart=True)

    def _live_actor(self):
        if self.actor is None:
            raise RuntimeError("This Queue has been shut down.")
        return self.actor


def _check_timeout(timeout) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _raise_for(status: str, detail) -> None:
    if status == _EMPTY:
        raise Empty(*([detail] if detail else []))
    if status == _FULL:
        raise Full(*([detail] if detail else []))


class _QueueActor:
    """Holds the items.  Every method returns a status instead of raising, so the
    client raises Empty/Full itself, with a clean traceback, in the caller."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item, timeout=None) -> str:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return _FULL
        return _OK

    async def get(self, timeout=None) -> tuple:
        try:
            return _OK, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return _EMPTY, None

    def put_nowait(self, item) -> str:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return _FULL
        return _OK

    def put_nowait_batch(self, items: list) -> tuple:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return _FULL, (f"Cannot add {len(items)} items to queue of size "
                           f"{self.queue.qsize()} and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)
        return _OK, None

    def get_nowait(self) -> tuple:
        try:
            return _OK, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return _EMPTY, None

    def get_nowait_batch(self, num_items: int) -> tuple:
        if num_items > self.queue.qsize():
            return _EMPTY, (f"Cannot get {num_items} items from queue of size "
                            f"{self.queue.qsize()}.")
        return _OK, [self.queue.get_nowait() for _ in range(num_items)]

    def exit(self) -> None:
        exit_actor()
