"""ActorPool: schedule work over a fixed set of actors, as ``ray.util.ActorPool`` does.

Each actor runs at most one of the pool's calls at a time.  ``submit`` hands a
value to an idle actor (or queues it until one frees up); results come back in
submission order (``get_next``) or as they finish (``get_next_unordered``).
An actor returns to the idle list when its result is taken, and that is when a
queued submission starts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import zray

TIMEOUT_MESSAGE = "Timed out waiting for result"


class ActorPool:
    """A fixed pool of actor handles; ``fn(actor, value)`` must return an ObjectRef."""

    def __init__(self, actors: Iterable):
        self._idle_actors = list(actors)
        self._future_to_actor: dict = {}    # future key -> (task index, actor)
        self._index_to_future: dict = {}    # task index -> future
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list = []    # (fn, value) waiting for an idle actor

    # --- bulk ---------------------------------------------------------------------------

    def map(self, fn: Callable, values: Iterable) -> Iterator:
        """Apply ``fn`` over ``values``; iterate the result to get values in order.

        Results of earlier submissions that were never taken are dropped first."""
        self._discard_pending_results()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next()
        return results()

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterator:
        """Like ``map``, but yields each result as soon as it is ready."""
        self._discard_pending_results()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield self.get_next_unordered()
        return results()

    def _discard_pending_results(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # --- one at a time ------------------------------------------------------------------

    def submit(self, fn: Callable, value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or once one becomes idle."""
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = fn(actor, value)
        self._future_to_actor[_key(future)] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether any submitted work has a result still to be taken."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False):
        """The next result in submission order.

        Raises TimeoutError if it is not ready within ``timeout`` seconds; with
        ``ignore_if_timedout`` that task is dropped (its actor freed) before raising."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = timeout is not None and not zray.wait(
            _as_list(future), num_returns=len(_as_list(future)), timeout=timeout)[0]
        if timed_out and not ignore_if_timedout:
            raise TimeoutError(TIMEOUT_MESSAGE)
        self._release(self._next_return_index, future)
        if timed_out:
            raise TimeoutError(f"{TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return zray.get(future)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False):
        """Whichever pending result is ready first.

        Raises TimeoutError if none is ready within ``timeout`` seconds; with
        ``ignore_if_timedout`` the oldest pending task is dropped before raising."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready = self._first_ready(timeout)
        if ready is None and not ignore_if_timedout:
            raise TimeoutError(TIMEOUT_MESSAGE)
        if ready is None:
            index = min(self._index_to_future)
            future = self._index_to_future[index]
            self._release(index, future)
            raise TimeoutError(f"{TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        index, future = ready
        self._release(index, future)
        return zray.get(future)

    def _first_ready(self, timeout):
        """(index, future) of a finished submission, or None after ``timeout``."""
        by_ref = {}
        for index, future in self._index_to_future.items():
            for ref in _as_list(future):
                by_ref[ref] = (index, future)
        ready, _ = zray.wait(list(by_ref), num_returns=1, timeout=timeout)
        return by_ref[ready[0]] if ready else None

    def _release(self, index: int, future) -> None:
        """Forget a submission and give its actor back to the pool."""
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)

    def _return_actor(self, actor) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    # --- membership ---------------------------------------------------------------------

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self):
        """Take an idle actor out of the pool; None when none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor) -> None:
        """Add an actor to the pool (it may start a waiting submission at once)."""
        busy = [owner for _, owner in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


def _as_list(future) -> list:
    return list(future) if isinstance(future, (list, tuple)) else [future]


def _key(future):
    return tuple(future) if isinstance(future, list) else future
