"""Aggregations with Ray's names: AggregateFn and the built-ins Count, Sum,
Min, Max, Mean, Std.  An aggregation is init / accumulate_block (or
accumulate_row) / merge / finalize, so each block is reduced where it lives and
only the small accumulators travel.  Built-ins also name the pyarrow group_by
aggregation that computes them in one pass (``arrow``)."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc


class AggregateFn:
    def __init__(self, init, merge, accumulate_row=None, accumulate_block=None,
                 finalize=None, name: str | None = None):
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError("AggregateFn needs exactly one of accumulate_row and "
                             "accumulate_block")
        self.init = init
        self.merge = merge
        self.accumulate_row = accumulate_row
        self._accumulate_block = accumulate_block
        self.finalize = finalize or (lambda a: a)
        self.name = name or "agg"

    #: (column, pyarrow function, options) for a group_by fast path, or None.
    arrow = None

    def accumulate_block(self, acc, table: pa.Table):
        if self._accumulate_block is not None:
            return self._accumulate_block(acc, table)
        from zray.data.block import iter_rows
        for row in iter_rows(table):
            acc = self.accumulate_row(acc, row)
        return acc


def _column(table: pa.Table, on: str):
    if on not in table.column_names:
        raise KeyError(f"column {on!r} not found; the dataset's columns are "
                       f"{table.column_names}")
    return table.column(on)


def _scalar(value):
    return value.as_py() if hasattr(value, "as_py") else value


class Count(AggregateFn):
    def __init__(self):
        super().__init__(init=lambda k: 0, merge=lambda a, b: a + b,
                         accumulate_block=lambda a, t: a + t.num_rows, name="count()")
        self.arrow = ([], "count_all", None)


class _Unary(AggregateFn):
    """Sum, Min, Max: one value per block, merged with ``combine``; nulls skipped."""
    combine = None
    kind = ""

    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None):
        self.on = on
        super().__init__(init=lambda k: None, merge=self._merge,
                         accumulate_block=self._block,
                         name=alias_name or f"{self.kind}({on})")
        self.arrow = (on, self.kind, None)

    def _block(self, acc, table):
        column = _column(table, self.on)
        value = _scalar(getattr(pc, self.kind if self.kind != "sum" else "sum")(column))
        return self._merge(acc, value)

    def _merge(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return type(self).combine(a, b)


class Sum(_Unary):
    kind = "sum"
    combine = staticmethod(lambda a, b: a + b)


class Min(_Unary):
    kind = "min"
    combine = staticmethod(min)


class Max(_Unary):
    kind = "max"
    combine = staticmethod(max)


class Mean(AggregateFn):
    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None):
        self.on = on
        super().__init__(init=lambda k: [0, 0], merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                         accumulate_block=self._block,
                         finalize=lambda a: a[0] / a[1] if a[1] else None,
                         name=alias_name or f"mean({on})")
        self.arrow = (on, "mean", None)

    def _block(self, acc, table):
        column = _column(table, self.on)
        total = _scalar(pc.sum(column)) or 0
        return [acc[0] + total, acc[1] + len(column) - column.null_count]


class Std(AggregateFn):
    """Standard deviation (``ddof=1`` by default, as in Ray), merged with
    Chan et al.'s parallel update of (count, mean, M2)."""

    def __init__(self, on: str, ddof: int = 1, ignore_nulls: bool = True,
                 alias_name: str | None = None):
        self.on, self.ddof = on, ddof
        super().__init__(init=lambda k: [0, 0.0, 0.0], merge=_merge_moments,
                         accumulate_block=self._block, finalize=self._finalize,
                         name=alias_name or f"std({on})")
        self.arrow = (on, "stddev", ddof)     # options made where used: they don't pickle

    def _block(self, acc, table):
        column = _column(table, self.on)
        count = len(column) - column.null_count
        if count == 0:
            return acc
        mean = _scalar(pc.mean(column))
        m2 = _scalar(pc.variance(column, ddof=0)) * count
        return _merge_moments(acc, [count, mean, m2])

    def _finalize(self, acc):
        count, _, m2 = acc
        if count == 0:
            return None
        if count == 1:
            return 0.0
        return math.sqrt(m2 / (count - self.ddof))


def _merge_moments(a, b):
    if a[0] == 0:
        return list(b)
    if b[0] == 0:
        return list(a)
    count = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * b[0] / count
    m2 = a[2] + b[2] + delta * delta * a[0] * b[0] / count
    return [count, mean, m2]
