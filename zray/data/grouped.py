"""GroupedData: ``ds.groupby(key)`` and its aggregations, with Ray's names.

Rows are split into ranges of the first key (``shuffle.groupby``, boundaries
sampled as for sort); each reduce task aggregates the groups of its range
(pyarrow's group_by for the built-ins, the AggregateFn's own functions
otherwise) or calls the user's ``map_groups`` function once per group, and
returns them in key order: the output is sorted by key, as Ray's is.
``groupby(None)`` aggregates the whole dataset into one row (each block
accumulated where it lives, the accumulators merged in the driver);
``groupby(None).map_groups(fn)`` calls ``fn`` once on the whole dataset.
"""

from __future__ import annotations

import pyarrow as pa

import zray
from zray.data import aggregate as A, block as B, shuffle
from zray.data.plan import AllToAll, Bundle


class GroupedData:
    def __init__(self, dataset, key, num_partitions: int | None = None):
        self._dataset = dataset
        self._keys = [] if key is None else [key] if isinstance(key, str) else list(key)
        self._num_partitions = num_partitions

    def __repr__(self):
        return f"GroupedData(dataset={self._dataset!r}, key={self._keys!r})"

    def _all_to_all(self, name: str, reducer):
        keys, partitions = self._keys, self._num_partitions
        return self._dataset._with_op(AllToAll(
            name, self._dataset._op,
            lambda bundles: shuffle.groupby(bundles, keys, reducer, partitions),
            preserves_rows=False))

    def aggregate(self, *aggs):
        """One row per group: the key columns, then one column per aggregation."""
        for agg in aggs:
            if not isinstance(agg, A.AggregateFn):
                raise TypeError(f"aggregate() takes AggregateFn objects (Count(), "
                                f"Sum('x'), ...), got {type(agg).__name__}")
        name = f"Aggregate[{', '.join(a.name for a in aggs)}]"
        if not self._keys:
            return self._dataset._with_op(AllToAll(
                name, self._dataset._op, lambda bundles: global_aggregate(bundles, aggs),
                preserves_rows=False))
        if _Combining.applies(aggs):
            keys, partitions = self._keys, self._num_partitions
            combining = _Combining(list(aggs))
            return self._dataset._with_op(AllToAll(
                name, self._dataset._op,
                lambda bundles: shuffle.groupby(bundles, keys, combining, partitions,
                                                combine=combining.partial),
                preserves_rows=False))
        return self._all_to_all(name, _Aggregator(list(aggs)))

    def count(self):
        return self.aggregate(A.Count())

    def sum(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Sum, on, ignore_nulls)

    def min(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Min, on, ignore_nulls)

    def max(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Max, on, ignore_nulls)

    def mean(self, on=None, ignore_nulls: bool = True):
        return self._unary(A.Mean, on, ignore_nulls)

    def std(self, on=None, ddof: int = 1, ignore_nulls: bool = True):
        columns = self._value_columns(on)
        return self.aggregate(*[A.Std(c, ddof=ddof, ignore_nulls=ignore_nulls)
                                for c in columns])

    def _unary(self, kind, on, ignore_nulls):
        return self.aggregate(*[kind(c, ignore_nulls=ignore_nulls)
                                for c in self._value_columns(on)])

    def _value_columns(self, on) -> list:
        if on is None:
            return [c for c in self._dataset.columns() if c not in self._keys]
        return [on] if isinstance(on, str) else list(on)

    def map_groups(self, fn, *, compute=None, batch_format: str | None = "default",
                   fn_args=None, fn_kwargs=None, **_ray_remote_args):
        """Call ``fn`` on each group (one batch per group); concatenate the results."""
        B.check_batch_format(batch_format)
        return self._all_to_all(f"MapGroups({getattr(fn, '__name__', 'fn')})",
                                _GroupMapper(fn, batch_format, fn_args or (),
                                             fn_kwargs or {}))


class _Aggregator:
    """A reduce task's work: aggregate each group of a key-sorted table."""

    def __init__(self, aggs: list):
        self.aggs = aggs

    def __call__(self, table: pa.Table, keys: list) -> pa.Table:
        if all(agg.arrow is not None for agg in self.aggs):
            return self._arrow(table, keys)
        table = table.sort_by([(k, "ascending") for k in keys])
        groups = shuffle.group_slices(table, keys)
        columns = {k: [] for k in keys}
        columns.update({agg.name: [] for agg in self.aggs})
        for start, length in groups:
            part = table.slice(start, length)
            key_values = [part.column(k)[0].as_py() for k in keys]
            for k, value in zip(keys, key_values):
                columns[k].append(value)
            for agg in self.aggs:
                init = agg.init(key_values[0] if len(keys) == 1 else tuple(key_values))
                columns[agg.name].append(agg.finalize(agg.accumulate_block(init, part)))
        if not groups:
            return _empty(table, keys, self.aggs)
        types = {k: table.schema.field(k).type for k in keys}
        return pa.table({name: pa.array(values, type=types.get(name))
                         for name, values in columns.items()})

    def _arrow(self, table: pa.Table, keys: list) -> pa.Table:
        import pyarrow.compute as pc
        specs = [(agg.arrow[0], agg.arrow[1], pc.VarianceOptions(ddof=agg.arrow[2]))
                 if agg.arrow[2] is not None else (agg.arrow[0], agg.arrow[1])
                 for agg in self.aggs]
        for agg in self.aggs:
            if agg.arrow[0]:
                B.check_columns(table, [agg.arrow[0]], agg.name)
        result = table.group_by(keys, use_threads=False).aggregate(specs)
        names = [f"{a.arrow[0]}_{a.arrow[1]}" if a.arrow[0] else a.arrow[1]
                 for a in self.aggs]
        out = result.select(keys + names).rename_columns(keys + [a.name for a in self.aggs])
        return out.sort_by([(k, "ascending") for k in keys])


class _Combining:
    """Count, Sum, Min, Max and Mean in two steps: each map task reduces its
    block to one row per group (``partial``), the reduce merges those rows
    (``__call__``), so a shuffle moves groups, not rows."""

    #: per kind: the partial aggregates (pyarrow hash functions) and how each
    #: merges in the reduce
    STEPS = {"count_all": [("count_all", "sum")], "sum": [("sum", "sum")],
             "min": [("min", "min")], "max": [("max", "max")],
             "mean": [("sum", "sum"), ("count", "sum")]}

    def __init__(self, aggs: list):
        self.aggs = aggs

    @staticmethod
    def applies(aggs) -> bool:
        return bool(aggs) and all(type(agg) in (A.Count, A.Sum, A.Min, A.Max, A.Mean)
                                  for agg in aggs)

    def _specs(self, merging: bool) -> list:
        specs = []
        for j, agg in enumerate(self.aggs):
            column, kind = agg.arrow[0], agg.arrow[1]
            for step, (partial, merge) in enumerate(self.STEPS[kind]):
                if merging:
                    specs.append((f"p{j}_{step}", merge))
                else:
                    specs.append((column, partial) if column else ([], partial))
        return specs

    def partial(self, table: pa.Table, keys: list) -> pa.Table:
        for agg in self.aggs:
            if agg.arrow[0]:
                B.check_columns(table, [agg.arrow[0]], agg.name)
        result = table.group_by(keys, use_threads=False).aggregate(self._specs(False))
        names = [f"p{j}_{step}" for j, agg in enumerate(self.aggs)
                 for step in range(len(self.STEPS[agg.arrow[1]]))]
        return result.rename_columns(keys + names)       # keys come first

    def __call__(self, table: pa.Table, keys: list) -> pa.Table:
        import pyarrow.compute as pc
        merged = table.group_by(keys, use_threads=False).aggregate(self._specs(True))
        columns = {k: merged.column(i) for i, k in enumerate(keys)}
        position = len(keys)
        for agg in self.aggs:
            if agg.arrow[1] == "mean":
                total, count = merged.column(position), merged.column(position + 1)
                columns[agg.name] = pc.divide(pc.cast(total, pa.float64()),
                                              pc.cast(count, pa.float64()))
                position += 2
            else:
                columns[agg.name] = merged.column(position)
                position += 1
        return pa.table(columns).sort_by([(k, "ascending") for k in keys])


def _empty(table, keys, aggs) -> pa.Table:
    columns = {k: table.column(k).slice(0, 0) for k in keys}
    columns.update({agg.name: pa.array([]) for agg in aggs})
    return pa.table(columns)


class _GroupMapper:
    def __init__(self, fn, batch_format, fn_args, fn_kwargs):
        self.fn, self.batch_format = fn, batch_format
        self.fn_args, self.fn_kwargs = fn_args, fn_kwargs

    def __call__(self, table: pa.Table, keys: list) -> pa.Table:
        if keys:
            table = table.sort_by([(k, "ascending") for k in keys])
        out = []
        for start, length in shuffle.group_slices(table, keys):
            batch = B.to_batch(table.slice(start, length), self.batch_format)
            out.append(B.to_block(self.fn(batch, *self.fn_args, **self.fn_kwargs),
                                  "The function given to map_groups()"))
        return B.concat(out) if out else table.slice(0, 0)


@zray.remote
def _accumulate(table, aggs):
    return [agg.accumulate_block(agg.init(None), table) for agg in aggs]


def global_aggregate(bundles: list, aggs) -> list:
    """One block of one row: each aggregation over every block, accumulated
    by a task per block and merged here."""
    totals = [agg.init(None) for agg in aggs]
    for accs in zray.get([_accumulate.remote(b.ref, aggs) for b in bundles
                          if b.meta.num_rows]):
        totals = [agg.merge(t, a) for agg, t, a in zip(aggs, totals, accs)]
    table = pa.table({agg.name: pa.array([agg.finalize(t)])
                      for agg, t in zip(aggs, totals)})
    return [Bundle(zray.put(table), B.metadata(table))]
