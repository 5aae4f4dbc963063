"""The consuming half of Dataset: methods that execute the plan and return
rows, batches, aggregates or files."""

from __future__ import annotations

import os
from collections import deque

import zray
from zray.data import _tasks, aggregate as A, block as B, plan as P
from zray.data.context import DataContext


class Schema:
    """A dataset's column names and types (Ray's ``ray.data.Schema``)."""

    def __init__(self, base_schema):
        self.base_schema = base_schema

    @property
    def names(self) -> list:
        return list(self.base_schema.names)

    @property
    def types(self) -> list:
        return list(self.base_schema.types)

    def __eq__(self, other):
        return isinstance(other, Schema) and self.base_schema == other.base_schema

    def __repr__(self):
        width = max((len(n) for n in self.names), default=0)
        lines = [f"{n:<{width}} {t}" for n, t in zip(self.names, self.types)]
        return "Column" + " " * max(width - 5, 1) + "Type\n" + "\n".join(lines)


class ConsumeMixin:
    _op: P.Op

    def _execution(self):
        from zray.data.executor import Execution
        execution = Execution(self._op)
        self._last_execution = execution
        return execution

    def _bundles(self):
        return self._execution().bundles()

    # --- inspecting ---------------------------------------------------------------------

    def count(self) -> int:
        """Rows in the dataset; from metadata alone when the plan allows."""
        known = self._op.known_num_rows()
        if known is not None:
            return known
        return B.num_rows(b.meta for b in self._bundles())

    def schema(self, fetch_if_missing: bool = True) -> Schema | None:
        schema = None
        for bundle in self.limit(1)._bundles() if fetch_if_missing else ():
            schema = bundle.meta.schema
            if bundle.meta.num_rows:
                break
        return Schema(schema) if schema is not None else None

    def columns(self, fetch_if_missing: bool = True) -> list | None:
        schema = self.schema(fetch_if_missing)
        return schema.names if schema is not None else None

    def num_blocks(self) -> int:
        op = self._op
        return len(op.tasks) if isinstance(op, P.Read) else sum(1 for _ in self._bundles())

    def size_bytes(self) -> int:
        return sum(b.meta.size_bytes for b in self._bundles())

    def input_files(self) -> list:
        files = []
        for bundle in self._bundles():
            files.extend(f for f in bundle.meta.input_files if f not in files)
        return files

    def stats(self) -> str:
        """What the last execution of this dataset did, operator by operator."""
        if self._last_execution is None:
            return "Dataset has not been executed yet; consume it (or materialize()) first."
        return self._last_execution.summary()

    # --- rows and batches -------------------------------------------------------------

    def take(self, limit: int = 20) -> list:
        return list(self.limit(limit).iter_rows(prefetch_batches=0))

    def take_all(self, limit: int | None = None) -> list:
        rows = list(self.iter_rows(prefetch_batches=0) if limit is None
                    else self.limit(limit + 1).iter_rows(prefetch_batches=0))
        if limit is not None and len(rows) > limit:
            raise ValueError(f"The dataset has more than the given limit of {limit} rows.")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default"):
        batch_format = B.check_batch_format(batch_format)
        tables = [zray.get(b.ref) for b in self.limit(batch_size)._bundles()]
        table = B.concat(tables)
        if table.num_rows == 0:
            raise ValueError("The dataset is empty.")
        return B.to_batch(table, batch_format)

    def show(self, limit: int = 20) -> None:
        for row in self.take(limit):
            print(row)

    def iterator(self):
        from zray.data.iterator import DataIterator
        return DataIterator(self._bundles, repr(self))

    def iter_rows(self, *, prefetch_batches: int = 1):
        return self.iterator().iter_rows(prefetch_batches=prefetch_batches)

    def iter_batches(self, *, prefetch_batches: int = 1, batch_size: int | None = 256,
                     batch_format: str | None = "default", drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None, _collate_fn=None):
        return self.iterator().iter_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size,
            batch_format=batch_format, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed, _collate_fn=_collate_fn)

    def iter_torch_batches(self, *, prefetch_batches: int = 1,
                           batch_size: int | None = 256, dtypes=None, device="auto",
                           collate_fn=None, drop_last: bool = False,
                           local_shuffle_buffer_size: int | None = None,
                           local_shuffle_seed: int | None = None):
        return self.iterator().iter_torch_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size, dtypes=dtypes,
            device=device, collate_fn=collate_fn, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed)

    # --- whole-dataset results ----------------------------------------------------------

    def to_pandas(self, limit: int | None = None):
        bundles = list(self._bundles())
        total = B.num_rows(b.meta for b in bundles)
        if limit is not None and total > limit:
            raise ValueError(f"the dataset has {total} rows, more than to_pandas(limit="
                             f"{limit}); raise the limit or call limit() first")
        return B.to_batch(B.concat(zray.get([b.ref for b in bundles])), "pandas")

    def to_arrow_refs(self) -> list:
        return [b.ref for b in self._bundles()]

    def to_numpy_refs(self, *, column: str | None = None) -> list:
        return [_tasks.to_numpy_batch.remote(b.ref, column) for b in self._bundles()]

    def to_pandas_refs(self) -> list:
        return [_tasks.to_numpy_batch.remote(b.ref, None) for b in self._bundles()]

    def aggregate(self, *aggs) -> dict:
        """{name: value} of each aggregation over the whole dataset."""
        for agg in aggs:
            if not isinstance(agg, A.AggregateFn):
                raise TypeError(f"aggregate() takes AggregateFn objects, got "
                                f"{type(agg).__name__}")
        # accumulated here, block by block as the run streams them (views of the
        # store on this host): tasks could wait forever for CPUs an actor pool
        # of this very run holds until the run ends
        totals = None
        for bundle in self._bundles():
            table = zray.get(bundle.ref)
            accs = [agg.accumulate_block(agg.init(None), table) for agg in aggs]
            del table
            totals = accs if totals is None else [
                agg.merge(t, a) for agg, t, a in zip(aggs, totals, accs)]
        if totals is None:
            totals = [agg.init(None) for agg in aggs]
        return {agg.name: agg.finalize(t) for agg, t in zip(aggs, totals)}

    def _unary(self, kind, on, ignore_nulls=True, **kwargs):
        # one run: an empty dataset's aggregates finalize to None by themselves
        # (a count() first would run a plan without known row counts twice)
        columns = self.columns() if on is None else ([on] if isinstance(on, str) else on)
        if columns is None:
            return None
        aggs = [kind(c, ignore_nulls=ignore_nulls, **kwargs) for c in columns]
        result = self.aggregate(*aggs)
        return result[aggs[0].name] if isinstance(on, str) else result

    def sum(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Sum, on, ignore_nulls)

    def min(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Min, on, ignore_nulls)

    def max(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Max, on, ignore_nulls)

    def mean(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Mean, on, ignore_nulls)

    def std(self, on=None, ddof: int = 1, ignore_nulls: bool = True):
        return self._unary(A.Std, on, ignore_nulls, ddof=ddof)

    def unique(self, column: str) -> list:
        """The distinct values of ``column`` (sorted when they can be)."""
        values = set()
        for found in zray.get([_block_unique.remote(b.ref, column)
                               for b in self._bundles()]):
            values.update(found)
        try:
            return sorted(values)
        except TypeError:
            return list(values)

    # --- writing ------------------------------------------------------------------------

    def write_parquet(self, path: str, **arrow_parquet_args) -> None:
        self._write(path, "parquet", arrow_parquet_args)

    def write_csv(self, path: str, **arrow_csv_args) -> None:
        self._write(path, "csv", {})

    def write_json(self, path: str, **pandas_json_args) -> None:
        self._write(path, "json", pandas_json_args)

    def _write(self, path: str, file_format: str, options: dict) -> None:
        """One file per block, ``{uuid}_{block:06d}_000000.{ext}``: block order
        is file-name order, so reading the directory back keeps row order."""
        os.makedirs(path, exist_ok=True)
        window = max(1, DataContext.get_current().max_tasks_in_flight_per_operator)
        pending: deque = deque()
        for i, bundle in enumerate(self._bundles()):
            if bundle.meta.num_rows:
                # a window of writes: the blocks they hold leave the store as they
                # finish, and the operators above run only as far ahead as this
                pending.append(_tasks.write_block.remote(
                    bundle.ref,
                    os.path.join(path, f"{self._uuid}_{i:06d}_000000.{file_format}"),
                    file_format, options))
            del bundle
            if len(pending) >= window:
                zray.get(pending.popleft())
        zray.get(list(pending))


@zray.remote
def _block_unique(table, column):
    B.check_columns(table, [column], "unique")
    return table.column(column).unique().to_pylist()
