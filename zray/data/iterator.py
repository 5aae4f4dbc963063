"""Consuming blocks: DataIterator (Ray's name), batching, prefetching and
``streaming_split``.

    bundles (executor, or a split coordinator) ─► prefetch thread: zray.get the
    next ``prefetch_batches`` blocks ─► re-batch to ``batch_size`` rows ─► format

A DataIterator is picklable: a training worker gets one from
``streaming_split`` and pulls its share of blocks from the SplitCoordinator
actor, which runs the dataset once per epoch.
"""

from __future__ import annotations

from collections import deque

import numpy as np

import zray
from zray.data import block as B
from zray.data.plan import Bundle, row_range

def prefetched_tables(bundles, prefetch: int):
    """The tables of ``bundles`` in order, with ``prefetch`` blocks being
    fetched ahead by a thread.  The bundles themselves are pulled here, in the
    consumer's thread (the executor submits tasks, a split asks its
    coordinator); the thread only maps or pulls the blocks."""
    if prefetch <= 0:
        for bundle in bundles:
            yield zray.get(bundle.ref)
        return
    from concurrent.futures import ThreadPoolExecutor
    ahead: deque = deque()
    source = iter(bundles)
    with ThreadPoolExecutor(1, thread_name_prefix="zray-data-prefetch") as pool:
        try:
            for bundle in source:
                ahead.append(pool.submit(zray.get, bundle.ref))
                if len(ahead) > prefetch:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()
            close = getattr(source, "close", None)
            if close is not None:
                close()


def iter_batches(bundles, *, batch_size=256, batch_format="default", drop_last=False,
                 prefetch_batches=1, local_shuffle_buffer_size=None,
                 local_shuffle_seed=None):
    batch_format = B.check_batch_format(batch_format)
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    rng = np.random.default_rng(local_shuffle_seed)
    minimum = max(local_shuffle_buffer_size or 0, batch_size or 0)
    buffer, buffered = [], 0
    for table in prefetched_tables(bundles, prefetch_batches):
        if batch_size is None and not local_shuffle_buffer_size:
            if table.num_rows:
                yield B.to_batch(table, batch_format)
            continue
        buffer.append(table)
        buffered += table.num_rows
        while buffered >= minimum and buffered >= (batch_size or 1) and buffered:
            batch, rest = _take(B.concat(buffer), batch_size or buffered,
                                rng if local_shuffle_buffer_size else None)
            buffer, buffered = [rest], rest.num_rows
            yield B.to_batch(batch, batch_format)
    while buffered and not (drop_last and batch_size and buffered < batch_size):
        batch, rest = _take(B.concat(buffer), batch_size or buffered,
                            rng if local_shuffle_buffer_size else None)
        buffer, buffered = [rest], rest.num_rows
        yield B.to_batch(batch, batch_format)


def _take(table, count: int, rng):
    if rng is None:
        return table.slice(0, count), table.slice(count)
    import pyarrow as pa
    order = rng.permutation(table.num_rows)
    return table.take(pa.array(order[:count])), table.take(pa.array(order[count:]))


def torch_batches(batches, dtypes=None, device="auto", collate_fn=None):
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for batch in batches:
        if collate_fn is not None:
            yield collate_fn(batch)
            continue
        out = {}
        for name, values in batch.items():
            dtype = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
            tensor = torch.as_tensor(np.array(values, copy=not values.flags.writeable),
                                     dtype=dtype)
            out[name] = tensor.to(device) if device is not None else tensor
        yield out


class DataIterator:
    """Iterate a dataset (or one split of it) by rows or batches, once per call."""

    def __init__(self, source, name: str = "dataset"):
        self._source = source            # () -> iterator of Bundles, one epoch
        self._name = name

    def __repr__(self):
        return f"DataIterator({self._name})"

    def iter_batches(self, *, prefetch_batches: int = 1, batch_size: int | None = 256,
                     batch_format: str | None = "default", drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None, _collate_fn=None):
        batches = iter_batches(self._source(), batch_size=batch_size,
                               batch_format=batch_format, drop_last=drop_last,
                               prefetch_batches=prefetch_batches,
                               local_shuffle_buffer_size=local_shuffle_buffer_size,
                               local_shuffle_seed=local_shuffle_seed)
        return map(_collate_fn, batches) if _collate_fn is not None else batches

    def iter_rows(self, *, prefetch_batches: int = 1):
        for table in prefetched_tables(self._source(), prefetch_batches):
            yield from B.iter_rows(table)

    def iter_torch_batches(self, *, prefetch_batches: int = 1,
                           batch_size: int | None = 256, dtypes=None, device="auto",
                           collate_fn=None, drop_last: bool = False,
                           local_shuffle_buffer_size: int | None = None,
                           local_shuffle_seed: int | None = None):
        batches = self.iter_batches(prefetch_batches=prefetch_batches,
                                    batch_size=batch_size, batch_format="numpy",
                                    drop_last=drop_last,
                                    local_shuffle_buffer_size=local_shuffle_buffer_size,
                                    local_shuffle_seed=local_shuffle_seed)
        return torch_batches(batches, dtypes, device, collate_fn)


# --- streaming_split ------------------------------------------------------------------

def split_bundles(bundles: list, bounds: list) -> list:
    """Bundles holding rows ``[lo, hi)`` for each ``(lo, hi)`` in ``bounds``:
    whole blocks are shared, partial ones sliced by a task."""
    from zray.data import _tasks
    out = []
    for lo, hi in bounds:
        spec, refs = row_range(bundles, lo, hi - lo)
        parts = []
        for (i, start, length), ref in zip(spec, refs):
            whole = next(b for b in bundles if b.ref is ref)
            if start == 0 and length == whole.meta.num_rows:
                parts.append(whole)
                continue
            block, meta = _tasks.slice_concat.options(num_returns=2).remote(
                [(0, start, length)], ref)
            parts.append(Bundle(block, zray.get(meta)))
        out.append(parts)
    return out


def equal_bounds(total: int, n: int, equal: bool) -> list:
    """Row ranges of n splits: equal sizes (dropping the remainder) or sizes
    that differ by at most one row."""
    if equal:
        size = total // n
        return [(i * size, (i + 1) * size) for i in range(n)]
    return [(total * i // n, total * (i + 1) // n) for i in range(n)]


class SplitCoordinator:
    """An actor that runs a dataset once per epoch and hands each of n splits
    its blocks.  ``equal=True``: the epoch's blocks are all made first, then cut
    into n equal row ranges.  ``equal=False``: blocks go, as they are made, to
    whichever split asks next."""

    def __init__(self, op, n: int, equal: bool):
        self.op, self.n, self.equal = op, n, equal
        self.epochs: dict = {}          # epoch -> {"splits"/"stream", "finished"}

    def ready(self) -> bool:
        return True

    def next_bundles(self, split: int, epoch: int):
        """The next bundles for ``split`` in ``epoch``; [] when it has all of them."""
        state = self.epochs.get(epoch)
        if state is None:
            state = self.epochs[epoch] = self._start(epoch)
        if self.equal:
            got = state["splits"][split]
            state["splits"][split] = []
        else:
            got = [b for b in [next(state["stream"], None)] if b is not None]
        if not got:
            state["finished"].add(split)
            if len(state["finished"]) == self.n:
                del self.epochs[epoch]
        return got

    def _start(self, epoch: int) -> dict:
        from zray.data.executor import Execution
        stream = Execution(self.op).bundles()
        if not self.equal:
            return {"stream": stream, "finished": set()}
        bundles = list(stream)
        bounds = equal_bounds(B.num_rows(b.meta for b in bundles), self.n, True)
        return {"splits": split_bundles(bundles, bounds), "finished": set()}


class _SplitSource:
    """The bundles of one split, one epoch per call (picklable)."""

    def __init__(self, coordinator, split: int):
        self.coordinator, self.split = coordinator, split
        self.epoch = 0

    def __call__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        while True:
            got = zray.get(self.coordinator.next_bundles.remote(self.split, epoch))
            if not got:
                return
            yield from got


def streaming_split(op, n: int, equal: bool) -> list:
    if n <= 0:
        raise ValueError(f"streaming_split needs n >= 1, got {n}")
    coordinator = zray.remote(SplitCoordinator).options(num_cpus=0).remote(op, n, equal)
    zray.get(coordinator.ready.remote())    # known to the head before its handle travels
    return [DataIterator(_SplitSource(coordinator, i), f"split {i} of {n}")
            for i in range(n)]
