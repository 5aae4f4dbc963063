"""Creating datasets: ``range``, ``from_*`` (data in the driver, put into the
store now) and ``read_*`` (files, read lazily by one task per file or row group)."""

from __future__ import annotations

import builtins

import numpy as np
import pyarrow as pa

import zray
from zray.data import block as B, datasource as S, plan as P
from zray.data.budget import target_block_bytes
from zray.data.context import DataContext
from zray.data.dataset import Dataset, MaterializedDataset


def _num_blocks(rows: int, override_num_blocks, row_bytes: int = 0) -> int:
    """``override_num_blocks``, else ``read_op_min_num_blocks``, more when
    blocks of ``row_bytes``-byte rows would pass ``target_block_bytes()``."""
    if override_num_blocks is not None:
        if override_num_blocks < 1:
            raise ValueError(f"override_num_blocks must be >= 1, got {override_num_blocks}")
        return override_num_blocks
    count = DataContext.get_current().read_op_min_num_blocks
    if row_bytes:
        count = builtins.max(count, -(-rows * row_bytes // target_block_bytes()))
    return max(1, builtins.min(rows, count))


def _row_ranges(rows: int, count: int) -> list:
    return [(rows * i // count, rows * (i + 1) // count) for i in builtins.range(count)]


class _RangeBlock:
    def __init__(self, start, end, tensor_shape=None):
        self.start, self.end, self.tensor_shape = start, end, tensor_shape

    def __call__(self):
        ids = np.arange(self.start, self.end, dtype=np.int64)
        if self.tensor_shape is None:
            return pa.table({"id": ids})
        shape = tuple(self.tensor_shape)
        data = ids.reshape((-1,) + (1,) * len(shape)) * np.ones(shape, dtype=np.int64)
        return B.table_from_columns({"data": data})


def range(n: int, *, override_num_blocks: int | None = None, parallelism: int = -1,
          concurrency=None) -> Dataset:
    """Rows ``{"id": 0}`` ... ``{"id": n-1}``."""
    count = _num_blocks(n, override_num_blocks, 8)
    tasks = [P.ReadTask(_RangeBlock(lo, hi), hi - lo) for lo, hi in _row_ranges(n, count)]
    return Dataset(P.Read("ReadRange", tasks))


def range_tensor(n: int, *, shape: tuple = (1,), override_num_blocks: int | None = None,
                 parallelism: int = -1, concurrency=None) -> Dataset:
    """Rows ``{"data": i * ones(shape)}`` for i in 0..n-1."""
    count = _num_blocks(n, override_num_blocks, 8 * int(np.prod(shape)))
    tasks = [P.ReadTask(_RangeBlock(lo, hi, shape), hi - lo)
             for lo, hi in _row_ranges(n, count)]
    return Dataset(P.Read("ReadRangeTensor", tasks))


# --- data already in the driver -------------------------------------------------------

def _from_tables(name: str, tables: list) -> MaterializedDataset:
    bundles = [P.Bundle(zray.put(t), B.metadata(t)) for t in tables]
    return MaterializedDataset(P.FromBlocks(name, bundles))


def from_items(items: list, *, override_num_blocks: int | None = None,
               parallelism: int = -1) -> MaterializedDataset:
    """A dataset of ``items``: dicts are rows; anything else becomes ``{"item": x}``."""
    if not isinstance(items, list):
        raise TypeError(f"from_items takes a list, got {type(items).__name__}")
    rows = [i if isinstance(i, dict) else {"item": i} for i in items]
    count = _num_blocks(len(rows), override_num_blocks)
    tables = [B.table_from_rows(rows[lo:hi]) for lo, hi in _row_ranges(len(rows), count)]
    return _from_tables("FromItems", tables)


def from_numpy(ndarrays) -> MaterializedDataset:
    """One block per array, in column ``"data"``."""
    arrays = [ndarrays] if isinstance(ndarrays, np.ndarray) else list(ndarrays)
    return _from_tables("FromNumpy", [B.table_from_columns({"data": a}) for a in arrays])


def from_pandas(dfs) -> MaterializedDataset:
    import pandas as pd
    frames = [dfs] if isinstance(dfs, pd.DataFrame) else list(dfs)
    return _from_tables("FromPandas", [B.to_block(f) for f in frames])


def from_arrow(tables) -> MaterializedDataset:
    tables = [tables] if isinstance(tables, pa.Table) else list(tables)
    return _from_tables("FromArrow", tables)


# --- files ----------------------------------------------------------------------------

def read_parquet(paths, *, columns: list | None = None, filter=None, filters=None,
                 include_paths: bool = False, file_extensions=None,
                 override_num_blocks: int | None = None, parallelism: int = -1,
                 ray_remote_args=None, concurrency=None, **_arrow_parquet_args) -> Dataset:
    """Parquet files, one read task per row group (a row group bigger than
    ``target_block_bytes()`` is read as row slices that fit).  ``columns`` is
    pushed into the scan; ``filter`` (a ``pyarrow.dataset.Expression``; ``filters`` also
    takes pyarrow's DNF list form) is evaluated by the scan."""
    expr = _filter_expression(filter if filter is not None else filters)
    files = S.expand_paths(paths, file_extensions)
    tasks = S.parquet_tasks(files, columns, expr, override_num_blocks, include_paths,
                            target_block_bytes())
    return Dataset(P.Read("ReadParquet", tasks))


def _filter_expression(value):
    if value is None:
        return None
    import pyarrow.dataset as pds
    if isinstance(value, pds.Expression):
        return value
    import pyarrow.parquet as pq
    return pq.filters_to_expression(value)


def read_csv(paths, *, include_paths: bool = False, file_extensions=None,
             override_num_blocks: int | None = None, parallelism: int = -1,
             ray_remote_args=None, concurrency=None, **arrow_csv_args) -> Dataset:
    files = S.expand_paths(paths, file_extensions)
    return Dataset(P.Read("ReadCSV", S.file_tasks(files, S.ReadCSV(arrow_csv_args),
                                                  override_num_blocks, include_paths)))


def read_json(paths, *, lines: bool = True, include_paths: bool = False,
              file_extensions=None, override_num_blocks: int | None = None,
              parallelism: int = -1, ray_remote_args=None, concurrency=None,
              **_arrow_json_args) -> Dataset:
    """JSON lines files (one object per line)."""
    if not lines:
        raise NotImplementedError("read_json reads JSON lines (one object per line) only "
                                  "so far; convert a JSON array file to lines first")
    files = S.expand_paths(paths, file_extensions)
    return Dataset(P.Read("ReadJSON", S.file_tasks(files, S.read_json_lines,
                                                   override_num_blocks, include_paths)))


def read_text(paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              include_paths: bool = False, file_extensions=None,
              override_num_blocks: int | None = None, parallelism: int = -1,
              ray_remote_args=None, concurrency=None) -> Dataset:
    """One row ``{"text": line}`` per line."""
    files = S.expand_paths(paths, file_extensions)
    return Dataset(P.Read("ReadText", S.file_tasks(
        files, S.ReadText(encoding, drop_empty_lines), override_num_blocks, include_paths)))


def read_numpy(paths, *, include_paths: bool = False, file_extensions=None,
               override_num_blocks: int | None = None, parallelism: int = -1,
               ray_remote_args=None, concurrency=None) -> Dataset:
    """``.npy`` files; each array's rows become rows ``{"data": row}``."""
    files = S.expand_paths(paths, file_extensions)
    return Dataset(P.Read("ReadNumpy", S.file_tasks(files, S.read_numpy_file,
                                                    override_num_blocks, include_paths)))


def read_binary_files(paths, *, include_paths: bool = False, file_extensions=None,
                      override_num_blocks: int | None = None, parallelism: int = -1,
                      ray_remote_args=None, concurrency=None) -> Dataset:
    """One row ``{"bytes": contents}`` per file (plus ``"path"`` with include_paths)."""
    files = S.expand_paths(paths, file_extensions)
    return Dataset(P.Read("ReadBinary", S.file_tasks(files, S.read_binary,
                                                     override_num_blocks, include_paths)))
