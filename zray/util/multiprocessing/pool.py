"""``multiprocessing.Pool`` on actors, as ``ray.util.multiprocessing.Pool``.

    Pool.map(func, items) ──chunks──▶ _PoolActor.run_batch(func, chunk)  (round robin)
            │                                   │ one list of results per chunk;
            ▼                                   │ a raising item becomes _PoolTaskError
    AsyncResult / IMapIterator ◀──ObjectRef─────┘
            │
            ▼ the caller gets values, or the item's own exception (multiprocessing's way)

Each "process" is a ``_PoolActor`` that ran ``initializer(*initargs)`` when it
started.  Calls from this driver to one actor run in the order sent, so once
the last chunk sent to an actor is done, all of its chunks are: that is when a
retired actor (``maxtasksperchild``) is stopped, and what ``join`` waits for.
"""

from __future__ import annotations

import threading
import traceback
from multiprocessing import TimeoutError
from multiprocessing.pool import RemoteTraceback
from typing import Callable, Iterable

import cloudpickle

import zray

__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]


class _PoolTaskError:
    """The exception one item raised, carried back inside its chunk's results."""

    def __init__(self, underlying: BaseException, traceback_str: str):
        self.underlying = underlying
        self.traceback_str = traceback_str

    def reraise(self):
        raise self.underlying from RemoteTraceback(self.traceback_str)


def _task_error(exc: Exception) -> _PoolTaskError:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cloudpickle.dumps(exc)
    except Exception:   # the caller still learns what was raised, by text
        exc = RuntimeError(f"{type(exc).__name__}: {exc} (the exception itself could "
                           "not be pickled)")
    return _PoolTaskError(exc, text)


class _PoolActor:
    """One worker "process" of the pool."""

    def __init__(self, initializer, initargs):
        if initializer is not None:
            initializer(*initargs)

    def ping(self) -> None:
        return None

    def run_batch(self, func, batch: list) -> list:
        results = []
        for args, kwargs in batch:
            try:
                results.append(func(*args, **kwargs))
            except Exception as exc:
                results.append(_task_error(exc))
        return results


class _Process:
    """The pool's record of one actor: its handle, how many chunks it was sent,
    and the ref of the last one."""

    __slots__ = ("actor", "chunks_sent", "last_ref")

    def __init__(self, actor):
        self.actor = actor
        self.chunks_sent = 0
        self.last_ref = None


def _value_or_raise(result):
    if isinstance(result, _PoolTaskError):
        result.reraise()
    return result


def _chunks(batch: list, chunksize: int) -> list:
    return [batch[i:i + chunksize] for i in range(0, len(batch), chunksize)]


def _all_ready(refs: list, timeout) -> bool:
    if not refs:
        return True
    ready, _ = zray.wait(refs, num_returns=len(refs), timeout=timeout)
    return len(ready) == len(refs)


class AsyncResult:
    """The result of ``apply_async``/``map_async``/``starmap_async``.

    With a ``callback`` or ``error_callback``, a thread waits for the result and
    calls one of them, as multiprocessing does."""

    def __init__(self, chunk_refs: list, single_result: bool = False,
                 callback: Callable | None = None, error_callback: Callable | None = None):
        self._chunk_refs = chunk_refs
        self._single_result = single_result
        self._outcome = None        # (value, error) once known
        self._lock = threading.Lock()
        if callback is not None or error_callback is not None:
            threading.Thread(target=self._run_callbacks, args=(callback, error_callback),
                             name="zray-pool-callback", daemon=True).start()

    def ready(self) -> bool:
        """Whether the call has finished (successfully or not)."""
        return self._outcome is not None or _all_ready(self._chunk_refs, 0)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the result is ready or ``timeout`` seconds have passed."""
        if self._outcome is None:
            _all_ready(self._chunk_refs, timeout)

    def get(self, timeout: float | None = None):
        """The result; raises the call's exception, or TimeoutError after ``timeout``."""
        if self._outcome is None and not _all_ready(self._chunk_refs, timeout):
            raise TimeoutError
        value, error = self._collect()
        if error is not None:
            if isinstance(error, _PoolTaskError):
                error.reraise()
            raise error
        return value

    def successful(self) -> bool:
        """Whether the call finished without raising (ValueError if not ready yet)."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._collect()[1] is None

    def _collect(self) -> tuple:
        with self._lock:
            if self._outcome is None:
                self._outcome = self._gather()
            return self._outcome

    def _gather(self) -> tuple:
        try:
            chunks = zray.get(self._chunk_refs)
        except Exception as exc:    # an actor died, or the pool was terminated
            return None, exc
        results = [result for chunk in chunks for result in chunk]
        for result in results:
            if isinstance(result, _PoolTaskError):
                return None, result
        return (results[0] if self._single_result else results), None

    def _run_callbacks(self, callback, error_callback) -> None:
        _all_ready(self._chunk_refs, None)
        value, error = self._collect()
        if error is None and callback is not None:
            callback(value)
        elif error is not None and error_callback is not None:
            error_callback(error.underlying if isinstance(error, _PoolTaskError) else error)


class IMapIterator:
    """What ``imap`` returns: results in the order of the inputs.

    ``next(timeout)`` raises TimeoutError if the next result is not ready in time."""

    def __init__(self, chunk_refs: list):
        self._pending = list(chunk_refs)
        self._buffer: list = []

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self, timeout: float | None = None):
        while not self._buffer:
            if not self._pending:
                raise StopIteration
            self._buffer = self._next_chunk(timeout)
        return _value_or_raise(self._buffer.pop(0))

    def _next_chunk(self, timeout) -> list:
        ref = self._pending[0]
        if not _all_ready([ref], timeout):
            raise TimeoutError
        self._pending.pop(0)
        return zray.get(ref)


class IMapUnorderedIterator(IMapIterator):
    """What ``imap_unordered`` returns: each chunk's results as soon as it is done."""

    def _next_chunk(self, timeout) -> list:
        ready, _ = zray.wait(self._pending, num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError
        self._pending.remove(ready[0])
        return zray.get(ready[0])


class Pool:
    """A pool of ``processes`` actors (default: the cluster's CPUs) with
    ``multiprocessing.Pool``'s API.  ``context`` is ignored; ``ray_remote_args``
    are options for the actors.  Starts zray if it is not running."""

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: Iterable = (), maxtasksperchild: int | None = None,
                 context=None, ray_address: str | None = None,
                 ray_remote_args: dict | None = None):
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._processes = _init_zray(processes, ray_address)
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasksperchild = maxtasksperchild
        self._actor_class = zray.remote(_PoolActor).options(**(ray_remote_args or {}))
        self._lock = threading.Lock()
        self._closed = False
        self._next_index = 0
        self._retiring: list = []   # _Process records still finishing their chunks
        self._workers = [self._new_process() for _ in range(self._processes)]
        try:    # the initializer runs now; its error is the caller's
            zray.get([worker.actor.ping.remote() for worker in self._workers])
        except BaseException:
            self.terminate()
            raise

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc_info):
        self.terminate()

    def __repr__(self):
        state = "CLOSE" if self._closed else "RUN"
        return f"<{type(self).__name__} state={state} pool_size={self._processes}>"

    # --- one call -----------------------------------------------------------------------

    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None):
        """Call ``func(*args, **kwds)`` in the pool and return its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict | None = None,
                    callback: Callable | None = None,
                    error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        ref = self._submit(func, [(tuple(args), dict(kwds or {}))])
        return AsyncResult([ref], True, callback, error_callback)

    # --- many calls ---------------------------------------------------------------------

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None,
                  error_callback: Callable | None = None) -> AsyncResult:
        calls = [((item,), {}) for item in iterable]
        return AsyncResult(self._submit_all(func, calls, chunksize), False, callback,
                           error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None,
                      error_callback: Callable | None = None) -> AsyncResult:
        calls = [(tuple(args), {}) for args in iterable]
        return AsyncResult(self._submit_all(func, calls, chunksize), False, callback,
                           error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        calls = [((item,), {}) for item in iterable]
        return IMapIterator(self._submit_all(func, calls, chunksize))

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int = 1) -> IMapUnorderedIterator:
        calls = [((item,), {}) for item in iterable]
        return IMapUnorderedIterator(self._submit_all(func, calls, chunksize))

    # --- ending -------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work; what was submitted still runs."""
        self._closed = True

    def terminate(self) -> None:
        """Stop the actors now; unfinished results raise when fetched."""
        self._closed = True
        for worker in self._take_all():
            zray.kill(worker.actor)

    def join(self) -> None:
        """Wait for the submitted work to finish, then stop the actors
        (after ``close`` or ``terminate``)."""
        if not self._closed:
            raise ValueError("Pool is still running")
        workers = self._take_all()
        _all_ready([w.last_ref for w in workers if w.last_ref is not None], None)
        for worker in workers:
            zray.kill(worker.actor)

    def _take_all(self) -> list:
        with self._lock:
            workers = self._workers + self._retiring
            self._workers, self._retiring = [], []
        return workers

    # --- dispatch -----------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    def _new_process(self) -> _Process:
        return _Process(self._actor_class.remote(self._initializer, self._initargs))

    def _submit_all(self, func: Callable, calls: list, chunksize: int | None) -> list:
        self._check_running()
        if chunksize is None:
            chunksize = self._default_chunksize(len(calls))
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        return [self._submit(func, chunk) for chunk in _chunks(calls, chunksize)]

    def _default_chunksize(self, count: int) -> int:
        chunksize, extra = divmod(count, self._processes * 4)
        return max(1, chunksize + (1 if extra else 0))

    def _submit(self, func, chunk: list):
        """Send one chunk to the next actor in turn; replace it when it has done
        ``maxtasksperchild`` chunks."""
        with self._lock:
            index = self._next_index % len(self._workers)
            self._next_index = index + 1
            worker = self._workers[index]
            worker.last_ref = worker.actor.run_batch.remote(func, chunk)
            worker.chunks_sent += 1
            if worker.chunks_sent == self._maxtasksperchild:
                self._retiring.append(worker)
                self._workers[index] = self._new_process()
            self._stop_finished_retirees()
        return worker.last_ref

    def _stop_finished_retirees(self) -> None:
        """Stop retired actors whose chunks are all done.  Their handles are held
        until then, since dropping an actor's last handle stops it at once."""
        if not self._retiring:
            return
        refs = [worker.last_ref for worker in self._retiring]
        done, _ = zray.wait(refs, num_returns=len(refs), timeout=0)
        for worker in [w for w in self._retiring if w.last_ref in done]:
            zray.kill(worker.actor)
            self._retiring.remove(worker)


def _init_zray(processes: int | None, ray_address: str | None) -> int:
    """Start zray if needed; the number of processes the pool will have."""
    if not zray.is_initialized():
        if ray_address is not None:
            zray.init(address=ray_address)
        else:
            zray.init(num_cpus=processes)
    cluster_cpus = int(zray.cluster_resources().get("CPU", 0))
    if processes is None:
        processes = cluster_cpus
    if not isinstance(processes, int) or processes <= 0:
        raise ValueError("Processes in the pool must be >0.")
    if processes > cluster_cpus:
        raise ValueError(f"Tried to start a pool with {processes} processes on an existing "
                         f"cluster, but there are only {cluster_cpus} CPUs in the cluster.")
    return processes

