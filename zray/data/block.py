"""Blocks: pyarrow Tables, and the conversions between them and what users see.

A block is a ``pyarrow.Table``.  Users see rows (``dict``), or batches in one of
three formats: ``"numpy"`` (``dict[str, numpy.ndarray]``, the default),
``"pandas"`` (``pandas.DataFrame``) and ``"pyarrow"`` (``pyarrow.Table``).
Multi-dimensional numpy columns are stored as Arrow fixed-shape tensor columns
and come back as ``(rows, *shape)`` arrays.

Tables in the object store are read back zero-copy: their buffers pickle
out-of-band, so a table ``zray.get`` returns is a view into shared memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow")


@dataclass(frozen=True)
class BlockMetadata:
    """What the driver knows about a block without fetching it."""
    num_rows: int
    size_bytes: int
    schema: pa.Schema | None
    input_files: tuple = ()


def metadata(table: pa.Table, input_files=()) -> BlockMetadata:
    return BlockMetadata(table.num_rows, table.nbytes, table.schema, tuple(input_files))


def check_batch_format(batch_format) -> str:
    if batch_format is None:
        return "pyarrow"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"The given batch format {batch_format!r} isn't allowed (must be "
                         f"one of {list(BATCH_FORMATS)}).")
    return "numpy" if batch_format == "default" else batch_format


# --- values in -> tables ---------------------------------------------------------------

def column_array(values) -> pa.Array:
    """An Arrow array from a numpy array, list or Arrow array."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, list) and values and all(isinstance(v, np.ndarray) for v in values):
        shapes = {v.shape for v in values}
        if len(shapes) == 1 and values[0].ndim >= 1:
            values = np.stack(values)
        else:
            return pa.array([v.tolist() for v in values])
    if isinstance(values, np.ndarray):
        if values.ndim > 1:
            return _tensor_array(values)
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            return column_array(list(values))
        return pa.array(values)
    return pa.array(list(values) if not isinstance(values, list) else values)


def _tensor_array(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    value_type = pa.from_numpy_dtype(values.dtype)
    tensor_type = pa.fixed_shape_tensor(value_type, values.shape[1:])
    flat = pa.array(values.reshape(-1))
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
    return pa.ExtensionArray.from_storage(tensor_type, storage)


def table_from_columns(columns: dict) -> pa.Table:
    if not columns:
        return pa.table({})
    arrays = {str(name): column_array(values) for name, values in columns.items()}
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"The columns of a batch must all have the same length; got "
                         f"{lengths}")
    return pa.table(arrays)


def table_from_rows(rows: list) -> pa.Table:
    """A table from row dicts (all with the same keys)."""
    if not rows:
        return pa.table({})
    names = list(rows[0])
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"A row must be a dict of column name to value; got "
                             f"{type(row).__name__}: {row!r:.80}")
    return table_from_columns({name: [row.get(name) for row in rows] for name in names})


def to_block(batch, what: str = "the function") -> pa.Table:
    """A table from a batch a user function returned, or a clear error."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return table_from_columns(batch)
    import pandas as pd
    if isinstance(batch, pd.DataFrame):
        return _table_from_pandas(batch)
    raise ValueError(f"{what} returned a {type(batch).__name__}, which is not a batch. "
                     "Return a dict of column name to numpy array, a pandas.DataFrame or "
                     "a pyarrow.Table.")


def _table_from_pandas(frame) -> pa.Table:
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if series.dtype == object and len(series) and isinstance(series.iloc[0], np.ndarray):
            columns[str(name)] = column_array(list(series))
        else:
            columns[str(name)] = pa.Array.from_pandas(series)
    return pa.table(columns) if columns else pa.table({})


# --- tables out -> batches and rows ----------------------------------------------------

def column_to_numpy(column) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return _object_array([np.asarray(v) for v in column.to_pylist()])
    try:
        return column.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, NotImplementedError):
        return _object_array(column.to_pylist())


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def to_batch(table: pa.Table, batch_format: str):
    batch_format = check_batch_format(batch_format)
    if batch_format == "pyarrow":
        return table
    if batch_format == "pandas":
        return _to_pandas(table)
    return {name: column_to_numpy(table.column(name)) for name in table.column_names}


def _to_pandas(table: pa.Table):
    tensors = [name for name in table.column_names
               if isinstance(table.schema.field(name).type, pa.FixedShapeTensorType)]
    if not tensors:
        return table.to_pandas()
    frame = table.drop_columns(tensors).to_pandas()
    for name in tensors:
        frame[name] = list(column_to_numpy(table.column(name)))
    return frame[table.column_names]


def iter_rows(table: pa.Table):
    """Row dicts; tensor columns give numpy arrays, the rest Python values."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if isinstance(column.type, pa.FixedShapeTensorType):
            columns[name] = column_to_numpy(column)
        else:
            columns[name] = column.to_pylist()
    names = list(columns)
    for i in range(table.num_rows):
        yield {name: columns[name][i] for name in names}


# --- table helpers -------------------------------------------------------------------

def concat(tables: list) -> pa.Table:
    tables = [t for t in tables if t.num_columns or t.num_rows]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise ValueError(f"Blocks with different schemas cannot be combined: {exc}") from exc


def check_columns(table: pa.Table, names, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise KeyError(f"{what}: column(s) {missing} not found; the dataset's columns are "
                       f"{table.column_names}")


def num_rows(meta_list) -> int:
    return sum(m.num_rows for m in meta_list)
