"""Row and batch transforms: the steps a fused map task applies to one block.

Each transform is a small picklable object, ``apply(table, udf) -> table``.
Consecutive transforms run one after the other in one task (operator fusion);
``udf`` is the transform's user function, or for a callable class the
instance the actor built once (``instantiate``).
"""

from __future__ import annotations

import inspect

import numpy as np
import pyarrow as pa

from zray.data import block as B


def is_callable_class(fn) -> bool:
    return isinstance(fn, type)


class Transform:
    #: True when the output has as many rows as the input (count() may skip it).
    preserves_rows = False
    #: The user's function or class, or None.
    fn = None

    def instantiate(self):
        """What ``apply`` calls: the function, or an instance of the class."""
        return self.fn

    def apply(self, table: pa.Table, udf) -> pa.Table:
        raise NotImplementedError

    @property
    def name(self) -> str:
        fn = self.fn
        label = getattr(fn, "__name__", type(fn).__name__) if fn is not None else ""
        return f"{type(self).__name__}({label})" if label else type(self).__name__


class MapRows(Transform):
    preserves_rows = True

    def __init__(self, fn, fn_args=(), fn_kwargs=None):
        self.fn, self.fn_args, self.fn_kwargs = fn, tuple(fn_args or ()), fn_kwargs or {}

    def apply(self, table, udf):
        rows = []
        for row in B.iter_rows(table):
            out = udf(row, *self.fn_args, **self.fn_kwargs)
            if not isinstance(out, dict):
                raise ValueError(f"The function given to map() must return a dict (one "
                                 f"row); it returned a {type(out).__name__}: {out!r:.80}. "
                                 "To return many rows, use flat_map().")
            rows.append(out)
        return B.table_from_rows(rows)


class FlatMap(Transform):
    def __init__(self, fn, fn_args=(), fn_kwargs=None):
        self.fn, self.fn_args, self.fn_kwargs = fn, tuple(fn_args or ()), fn_kwargs or {}

    def apply(self, table, udf):
        rows = []
        for row in B.iter_rows(table):
            for out in udf(row, *self.fn_args, **self.fn_kwargs):
                if not isinstance(out, dict):
                    raise ValueError("The function given to flat_map() must return a list "
                                     f"of dicts; one item was a {type(out).__name__}")
                rows.append(out)
        if not rows:
            return table.schema.empty_table().select([]) if table.num_rows else table
        return B.table_from_rows(rows)


class Filter(Transform):
    def __init__(self, fn, fn_args=(), fn_kwargs=None):
        self.fn, self.fn_args, self.fn_kwargs = fn, tuple(fn_args or ()), fn_kwargs or {}

    def apply(self, table, udf):
        keep = [bool(udf(row, *self.fn_args, **self.fn_kwargs)) for row in B.iter_rows(table)]
        return table.filter(pa.array(keep, type=pa.bool_())) if keep else table


class MapBatches(Transform):
    def __init__(self, fn, batch_size, batch_format, fn_args=(), fn_kwargs=None,
                 fn_constructor_args=(), fn_constructor_kwargs=None):
        self.fn = fn
        self.batch_size = batch_size
        self.batch_format = batch_format
        self.fn_args, self.fn_kwargs = tuple(fn_args or ()), fn_kwargs or {}
        self.ctor_args = tuple(fn_constructor_args or ())
        self.ctor_kwargs = fn_constructor_kwargs or {}

    def instantiate(self):
        if is_callable_class(self.fn):
            return self.fn(*self.ctor_args, **self.ctor_kwargs)
        return self.fn

    def apply(self, table, udf):
        size = self.batch_size or max(table.num_rows, 1)
        if B.check_batch_format(self.batch_format) == "numpy" and table.num_rows > size:
            results = self._numpy_results(table, udf, size)
            columns = _concat_numpy(results)
            if columns is not None:
                return B.table_from_columns(columns)
            out = [self._block(result) for result in results]
        else:
            out = []
            for start in range(0, table.num_rows, size):
                batch = B.to_batch(table.slice(start, size), self.batch_format)
                result = udf(batch, *self.fn_args, **self.fn_kwargs)
                if inspect.isgenerator(result):
                    out.extend(self._block(item) for item in result)
                else:
                    out.append(self._block(result))
        if not out:
            return table
        if len(out) == 1:
            return out[0]
        # one chunk per column, not one per batch: a block of thousands of
        # chunks costs more to pickle, map back and filter than one copy here
        table = B.concat(out)
        try:
            return table.combine_chunks()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            return table                    # a column type Arrow cannot concatenate

    def _numpy_results(self, table, udf, size) -> list:
        """The function's results for each numpy batch of a block: the block is
        converted once and each batch is a dict of views of it (a slice
        converted anew per batch costs more than the function, for small ones)."""
        whole = B.to_batch(table, "numpy")
        results = []
        for start in range(0, table.num_rows, size):
            batch = {name: values[start:start + size] for name, values in whole.items()}
            result = udf(batch, *self.fn_args, **self.fn_kwargs)
            if inspect.isgenerator(result):
                results.extend(result)
            else:
                results.append(result)
        return results

    def _block(self, result) -> pa.Table:
        if isinstance(result, (pa.Table, dict)) or type(result).__name__ == "DataFrame":
            return B.to_block(result)
        raise ValueError(
            f"The fn you passed to map_batches ({self.name}) returned a value of type "
            f"{type(result).__name__}. This isn't allowed: map_batches expects fn to "
            "return a pandas.DataFrame, a pyarrow.Table or a dict of column name to "
            "numpy.ndarray (or to yield them).")


def _concat_numpy(results: list) -> dict | None:
    """One array per column from batch results that are all dicts, with the
    same keys, of numeric numpy arrays of one length each; None otherwise (the
    results then become tables one by one)."""
    if not results or not all(isinstance(result, dict) for result in results):
        return None
    names = list(results[0])
    for result in results:
        if list(result) != names or len({len(v) for v in result.values()
                                          if isinstance(v, np.ndarray)}) > 1:
            return None
        if not all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
                   for v in result.values()):
            return None
    try:
        return {name: np.concatenate([result[name] for result in results])
                for name in names}
    except ValueError:                       # shapes that do not stack
        return None


class AddColumn(Transform):
    preserves_rows = True

    def __init__(self, col, fn, batch_format):
        self.col, self.fn, self.batch_format = col, fn, batch_format

    def apply(self, table, udf):
        values = udf(B.to_batch(table, self.batch_format))
        if hasattr(values, "to_numpy") and not isinstance(values, (pa.Array,
                                                                   pa.ChunkedArray)):
            values = values.to_numpy()
        array = B.column_array(values)
        if len(array) != table.num_rows:
            raise ValueError(f"add_column({self.col!r}): the function returned "
                             f"{len(array)} values for a batch of {table.num_rows} rows")
        if self.col in table.column_names:
            return table.set_column(table.column_names.index(self.col), self.col, array)
        return table.append_column(self.col, array)


class DropColumns(Transform):
    preserves_rows = True

    def __init__(self, cols):
        self.cols = list(cols)

    def apply(self, table, udf):
        B.check_columns(table, self.cols, "drop_columns")
        return table.drop_columns(self.cols)


class SelectColumns(Transform):
    preserves_rows = True

    def __init__(self, cols):
        self.cols = list(cols)

    def apply(self, table, udf):
        B.check_columns(table, self.cols, "select_columns")
        return table.select(self.cols)


class RenameColumns(Transform):
    preserves_rows = True

    def __init__(self, names):
        self.names = names

    def apply(self, table, udf):
        if isinstance(self.names, dict):
            B.check_columns(table, list(self.names), "rename_columns")
            return table.rename_columns([self.names.get(n, n) for n in table.column_names])
        if len(self.names) != table.num_columns:
            raise ValueError(f"rename_columns got {len(self.names)} names for "
                             f"{table.num_columns} columns {table.column_names}")
        return table.rename_columns(list(self.names))


def apply_all(table: pa.Table, transforms, udfs) -> pa.Table:
    for transform, udf in zip(transforms, udfs):
        table = transform.apply(table, udf)
    return table
