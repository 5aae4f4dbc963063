"""Dataset: a lazy plan of operators over Arrow blocks, with Ray Data's API.

Transforms (this module) return a new Dataset whose plan has one more
operator; nothing runs until a consuming method (``consume.py``) or
``materialize()`` executes the plan (``executor.py``).
"""

from __future__ import annotations

import uuid

from zray.data import block as B, plan as P, shuffle, transforms as T
from zray.data.consume import ConsumeMixin
from zray.data.grouped import GroupedData
from zray.data.plan import ActorPoolStrategy


def _compute_strategy(fn, compute, concurrency, what: str):
    """The ActorPoolStrategy for a callable class, or None for a function."""
    if compute is not None and not isinstance(compute, ActorPoolStrategy):
        if compute == "tasks":
            compute = None
        elif compute == "actors":
            compute = ActorPoolStrategy()
        else:
            raise ValueError(f"compute must be an ActorPoolStrategy, 'tasks' or 'actors'; "
                             f"got {compute!r}")
    if not T.is_callable_class(fn):
        if compute is not None:
            raise ValueError(f"{what}: an ActorPoolStrategy (compute) is only for a "
                             "callable class; plain functions run as tasks.")
        return None
    if compute is not None:
        return compute
    if concurrency is None:
        raise ValueError(f"{what}: ``concurrency`` must be specified when using a callable "
                         "class, e.g. concurrency=2 (a pool of 2 actors) or (1, 4).")
    if isinstance(concurrency, int):
        return ActorPoolStrategy(size=concurrency)
    if isinstance(concurrency, tuple) and len(concurrency) == 2:
        return ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    raise ValueError(f"concurrency must be an int or a (min, max) tuple, got {concurrency!r}")


def _remote_args(num_cpus, num_gpus, memory, extra) -> dict:
    args = dict(extra)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
                        ("memory", memory)):
        if value is not None:
            args[name] = value
    return args


class Dataset(ConsumeMixin):
    """A distributed collection of rows held as Arrow blocks in the object store."""

    def __init__(self, op: P.Op):
        self._op = op
        self._uuid = uuid.uuid4().hex[:12]
        self._last_execution = None

    def __repr__(self):
        return f"{type(self).__name__}(plan={P.describe(self._op)})"

    def _with_op(self, op: P.Op) -> "Dataset":
        return Dataset(op)

    def _map(self, transform, fn=None, compute=None, concurrency=None, remote_args=None,
             what="map"):
        strategy = _compute_strategy(fn, compute, concurrency, what) if fn is not None \
            else None
        return self._with_op(P.add_map(self._op, transform, strategy, remote_args))

    # --- row and batch transforms -----------------------------------------------------

    def map(self, fn, *, compute=None, fn_args=None, fn_kwargs=None,
            fn_constructor_args=None, fn_constructor_kwargs=None, num_cpus=None,
            num_gpus=None, memory=None, concurrency=None, **ray_remote_args):
        """Apply ``fn`` (row dict -> row dict) to every row."""
        transform = _class_aware(T.MapRows(fn, fn_args, fn_kwargs), fn,
                                 fn_constructor_args, fn_constructor_kwargs)
        return self._map(transform, fn, compute, concurrency,
                         _remote_args(num_cpus, num_gpus, memory, ray_remote_args), "map")

    def map_batches(self, fn, *, batch_size="default", compute=None,
                    batch_format: str | None = "default", zero_copy_batch: bool = False,
                    fn_args=None, fn_kwargs=None, fn_constructor_args=None,
                    fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, memory=None,
                    concurrency=None, **ray_remote_args):
        """Apply ``fn`` to batches of ``batch_size`` rows (``"default"``: the
        context's target_batch_size; None: whole blocks)."""
        from zray.data.context import DataContext
        B.check_batch_format(batch_format)
        if batch_size == "default":
            batch_size = DataContext.get_current().target_batch_size
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, None or 'default'; "
                             f"got {batch_size!r}")
        if not callable(fn):
            raise TypeError(f"map_batches needs a function or callable class, got "
                            f"{type(fn).__name__}")
        transform = T.MapBatches(fn, batch_size, batch_format, fn_args, fn_kwargs,
                                 fn_constructor_args, fn_constructor_kwargs)
        return self._map(transform, fn, compute, concurrency,
                         _remote_args(num_cpus, num_gpus, memory, ray_remote_args),
                         "map_batches")

    def flat_map(self, fn, *, compute=None, fn_args=None, fn_kwargs=None,
                 fn_constructor_args=None, fn_constructor_kwargs=None, num_cpus=None,
                 num_gpus=None, memory=None, concurrency=None, **ray_remote_args):
        """Apply ``fn`` (row -> list of rows) to every row."""
        transform = _class_aware(T.FlatMap(fn, fn_args, fn_kwargs), fn,
                                 fn_constructor_args, fn_constructor_kwargs)
        return self._map(transform, fn, compute, concurrency,
                         _remote_args(num_cpus, num_gpus, memory, ray_remote_args),
                         "flat_map")

    def filter(self, fn, *, compute=None, fn_args=None, fn_kwargs=None,
               fn_constructor_args=None, fn_constructor_kwargs=None, num_cpus=None,
               num_gpus=None, memory=None, concurrency=None, **ray_remote_args):
        """Keep the rows for which ``fn(row)`` is true."""
        transform = _class_aware(T.Filter(fn, fn_args, fn_kwargs), fn,
                                 fn_constructor_args, fn_constructor_kwargs)
        return self._map(transform, fn, compute, concurrency,
                         _remote_args(num_cpus, num_gpus, memory, ray_remote_args),
                         "filter")

    def add_column(self, col: str, fn, *, batch_format: str | None = "pandas",
                   compute=None, concurrency=None, **ray_remote_args):
        """Add (or replace) column ``col`` with ``fn(batch)``'s values."""
        B.check_batch_format(batch_format)
        return self._map(T.AddColumn(col, fn, batch_format), remote_args=ray_remote_args)

    def drop_columns(self, cols, *, compute=None, concurrency=None, **ray_remote_args):
        return self._map(T.DropColumns(_names(cols)), remote_args=ray_remote_args)

    def select_columns(self, cols, *, compute=None, concurrency=None, **ray_remote_args):
        return self._map(T.SelectColumns(_names(cols)), remote_args=ray_remote_args)

    def rename_columns(self, names, *, concurrency=None, **ray_remote_args):
        """``names``: {old: new}, or a list of new names for every column."""
        if not isinstance(names, (dict, list)):
            raise TypeError(f"rename_columns takes a dict or a list, got "
                            f"{type(names).__name__}")
        return self._map(T.RenameColumns(names), remote_args=ray_remote_args)

    # --- structure ----------------------------------------------------------------------

    def limit(self, limit: int) -> "Dataset":
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        return self._with_op(P.Limit(self._op, limit))

    def union(self, *other) -> "Dataset":
        return self._with_op(P.Union([self._op, *[o._op for o in other]]))

    def zip(self, *other) -> "Dataset":
        """Columns of this dataset and the others side by side (same row counts);
        duplicate names get suffixes like ``_1``."""
        return self._with_op(P.Zip([self._op, *[o._op for o in other]]))

    def repartition(self, num_blocks: int, *, shuffle: bool = False) -> "Dataset":
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
        run = ((lambda bundles: _shuffle(bundles, None, num_blocks)) if shuffle
               else (lambda bundles: _repartition(bundles, num_blocks)))
        return self._with_op(P.AllToAll(f"Repartition[{num_blocks}]", self._op, run, True))

    def random_shuffle(self, *, seed: int | None = None,
                       num_blocks: int | None = None, **ray_remote_args) -> "Dataset":
        return self._with_op(P.AllToAll(
            "RandomShuffle", self._op, lambda bundles: _shuffle(bundles, seed, num_blocks),
            True))

    def sort(self, key, descending=False) -> "Dataset":
        """Sort by ``key`` (a column or list of columns); ``descending`` is a bool
        or one bool per key."""
        keys = shuffle.sort_keys(key, descending)
        return self._with_op(P.AllToAll(f"Sort[{', '.join(k for k, _ in keys)}]",
                                        self._op, lambda bundles: shuffle.sort(bundles, keys),
                                        True))

    def groupby(self, key, num_partitions: int | None = None) -> GroupedData:
        """Group rows by ``key`` (a column, a list of columns, or None: the whole
        dataset is one group)."""
        return GroupedData(self, key, num_partitions)

    # --- splitting (these execute) ------------------------------------------------------

    def materialize(self) -> "MaterializedDataset":
        """Run the plan and keep its blocks in the object store."""
        execution = self._execution()
        bundles = list(execution.bundles())
        return MaterializedDataset(P.FromBlocks(P.describe(self._op), bundles), execution)

    def split_at_indices(self, indices: list) -> list:
        """Datasets of rows ``[0, i0)``, ``[i0, i1)``, ..., ``[ik, n)``."""
        if any(i < 0 for i in indices) or list(indices) != sorted(indices):
            raise ValueError(f"indices must be non-negative and sorted, got {indices}")
        bundles = self.materialize()._op.bundles
        total = B.num_rows(b.meta for b in bundles)
        edges = [0, *[min(i, total) for i in indices], total]
        return self._from_splits(bundles, list(zip(edges[:-1], edges[1:])))

    def split(self, n: int, *, equal: bool = False, locality_hints=None) -> list:
        """n datasets of contiguous rows; ``equal=True`` makes them the same size
        (dropping up to n-1 rows at the end), otherwise sizes differ by at most one."""
        from zray.data.iterator import equal_bounds
        if n <= 0:
            raise ValueError(f"split needs n >= 1, got {n}")
        bundles = self.materialize()._op.bundles
        total = B.num_rows(b.meta for b in bundles)
        return self._from_splits(bundles, equal_bounds(total, n, equal))

    def _from_splits(self, bundles: list, bounds: list) -> list:
        from zray.data.iterator import split_bundles
        name = P.describe(self._op)
        return [MaterializedDataset(P.FromBlocks(f"{name}[split {i}]", parts))
                for i, parts in enumerate(split_bundles(bundles, bounds))]

    def train_test_split(self, test_size, *, shuffle: bool = False, seed=None) -> tuple:
        """(train, test): the last ``test_size`` rows (a fraction or a count) are test."""
        dataset = self.random_shuffle(seed=seed) if shuffle else self
        total = dataset.count()
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(f"a float test_size must be in (0, 1), got {test_size}")
            test_size = int(total * test_size)
        if not isinstance(test_size, int) or not 0 <= test_size <= total:
            raise ValueError(f"test_size must be in [0, {total}], got {test_size!r}")
        train, test = dataset.split_at_indices([total - test_size])
        return train, test

    def streaming_split(self, n: int, *, equal: bool = False, locality_hints=None) -> list:
        """n DataIterators over disjoint parts of this dataset, usable from other
        processes (training workers); each runs the dataset once per epoch."""
        from zray.data.iterator import streaming_split
        return streaming_split(self._op, n, equal)


class MaterializedDataset(Dataset):
    """A Dataset whose blocks exist in the object store (``materialize()``)."""

    def __init__(self, op: P.FromBlocks, execution=None):
        super().__init__(op)
        self._last_execution = self._made_by = execution

    def stats(self) -> str:
        """How the blocks were made (when this came from ``materialize()``)."""
        if self._made_by is not None:
            return self._made_by.summary()
        return super().stats()

    def num_blocks(self) -> int:
        return len(self._op.bundles)


def _class_aware(transform, fn, ctor_args, ctor_kwargs):
    """Row transforms with a callable class: build it with the constructor args."""
    if T.is_callable_class(fn):
        transform.instantiate = lambda: fn(*(ctor_args or ()), **(ctor_kwargs or {}))
    return transform


def _names(cols) -> list:
    return [cols] if isinstance(cols, str) else list(cols)


def _shuffle(bundles, seed, num_blocks):
    return shuffle.random_shuffle(bundles, seed, num_blocks)


def _repartition(bundles, num_blocks):
    return shuffle.repartition(bundles, num_blocks)
