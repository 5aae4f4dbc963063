"""File sources: finding the files a read names, and the read functions its
tasks run (one per file, or per Parquet row group)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa

from zray.data import block as B
from zray.data.plan import ReadTask

_GLOB_CHARS = set("*?[")


def expand_paths(paths, file_extensions=None) -> list:
    """Local files named by ``paths`` (files, directories walked recursively,
    globs), in sorted order; a missing path raises FileNotFoundError naming it."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        for prefix in ("local://", "file://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        if "://" in path:
            raise ValueError(f"{path}: only local paths are supported by zray.data so far")
        if _GLOB_CHARS & set(path):
            found = sorted(glob.glob(path, recursive=True))
            if not found:
                raise FileNotFoundError(f"No files match the pattern {path!r}")
            for match in found:
                files.extend(_walk(match) if os.path.isdir(match) else [match])
        elif os.path.isdir(path):
            files.extend(_walk(path))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"No such file or directory: {path!r}")
    if file_extensions is not None:
        wanted = tuple(f".{e.lstrip('.')}" for e in file_extensions)
        files = [f for f in files if f.endswith(wanted)]
    return files


def _walk(directory: str) -> list:
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found.extend(os.path.join(root, n) for n in sorted(names)
                     if not n.startswith((".", "_")) and not n.endswith(".tmp"))
    return found


def groups(items: list, count: int | None) -> list:
    """``items`` in ``count`` contiguous groups (one group per item by default)."""
    if not count or count >= len(items):
        return [[item] for item in items]
    return [items[len(items) * i // count:len(items) * (i + 1) // count]
            for i in range(count)]


def file_tasks(files: list, read_one, override_num_blocks, include_paths=False) -> list:
    """ReadTasks reading groups of whole files with ``read_one(path) -> Table``."""
    return [ReadTask(_ReadFiles(group, read_one, include_paths), None, tuple(group))
            for group in groups(files, override_num_blocks)]


class _ReadFiles:
    def __init__(self, files, read_one, include_paths):
        self.files, self.read_one, self.include_paths = files, read_one, include_paths

    def __call__(self):
        tables = []
        for path in self.files:
            table = self.read_one(path)
            if self.include_paths:
                table = table.append_column("path", pa.array([path] * table.num_rows,
                                                             pa.string()))
            tables.append(table)
        return B.concat(tables)


# --- formats ----------------------------------------------------------------------------

class ReadCSV:
    def __init__(self, options: dict):
        self.options = options

    def __call__(self, path):
        import pyarrow.csv as pcsv
        return pcsv.read_csv(path, **self.options)


def read_json_lines(path):
    import pyarrow.json as pjson
    return pjson.read_json(path)


class ReadText:
    def __init__(self, encoding: str, drop_empty_lines: bool):
        self.encoding, self.drop_empty_lines = encoding, drop_empty_lines

    def __call__(self, path):
        with open(path, "rb") as f:
            lines = f.read().decode(self.encoding).splitlines()
        if self.drop_empty_lines:
            lines = [line for line in lines if line.strip()]
        return pa.table({"text": pa.array(lines, pa.string())})


def read_numpy_file(path):
    return B.table_from_columns({"data": np.load(path, allow_pickle=False)})


def read_binary(path):
    with open(path, "rb") as f:
        return pa.table({"bytes": pa.array([f.read()], pa.binary())})


# --- parquet ---------------------------------------------------------------------------

class ReadRowGroups:
    """Read some row groups of one Parquet file through pyarrow.dataset, so the
    column projection and filter expression are pushed into the scan (row
    groups whose statistics rule the filter out are skipped)."""

    def __init__(self, path, row_groups, columns, filter_expr, include_paths):
        self.path, self.row_groups = path, row_groups
        self.columns, self.filter_expr = columns, filter_expr
        self.include_paths = include_paths

    def __call__(self):
        import pyarrow.dataset as pds
        import pyarrow.fs as pfs
        fragment = pds.ParquetFileFormat().make_fragment(
            self.path, filesystem=pfs.LocalFileSystem(), row_groups=self.row_groups)
        if self.columns is not None:
            missing = [c for c in self.columns if c not in fragment.physical_schema.names]
            if missing:
                raise KeyError(f"read_parquet: column(s) {missing} not in {self.path} "
                               f"(its columns: {fragment.physical_schema.names})")
        table = fragment.to_table(columns=self.columns, filter=self.filter_expr)
        if self.include_paths:
            table = table.append_column("path", pa.array([self.path] * table.num_rows,
                                                         pa.string()))
        return table


class ReadRowGroupSlice:
    """Rows ``[start, end)`` of one row group, for a row group bigger than a
    block should be: read in batches (so at most about one slice is decoded
    at a time), keeping the slice's rows; the filter applies to them after."""

    def __init__(self, path, row_group, start, end, columns, filter_expr, include_paths):
        self.path, self.row_group, self.start, self.end = path, row_group, start, end
        self.columns, self.filter_expr = columns, filter_expr
        self.include_paths = include_paths

    def __call__(self):
        import pyarrow.parquet as pq
        source = pq.ParquetFile(self.path)
        names = source.schema_arrow.names
        if self.columns is not None and [c for c in self.columns if c not in names]:
            raise KeyError(f"read_parquet: column(s) "
                           f"{[c for c in self.columns if c not in names]} not in "
                           f"{self.path} (its columns: {names})")
        batches, position = [], 0
        for batch in source.iter_batches(batch_size=self.end - self.start,
                                         row_groups=[self.row_group], columns=self.columns,
                                         use_threads=False):
            lo, hi = max(self.start, position), min(self.end, position + batch.num_rows)
            if lo < hi:
                batches.append(batch.slice(lo - position, hi - lo))
            position += batch.num_rows
            if position >= self.end:
                break
        schema = source.schema_arrow if self.columns is None else pa.schema(
            [source.schema_arrow.field(c) for c in self.columns])
        table = pa.Table.from_batches(batches, schema=schema)
        if self.filter_expr is not None:
            table = table.filter(self.filter_expr)
        if self.include_paths:
            table = table.append_column("path", pa.array([self.path] * table.num_rows,
                                                         pa.string()))
        return table


def _row_group_bytes(meta, index: int, columns) -> int:
    """Uncompressed bytes of the ``columns`` (all when None) of a row group."""
    group = meta.row_group(index)
    if columns is None:
        return group.total_byte_size
    wanted = set(columns)
    return sum(group.column(j).total_uncompressed_size for j in range(group.num_columns)
               if group.column(j).path_in_schema.split(".")[0] in wanted)


def parquet_tasks(files: list, columns, filter_expr, override_num_blocks,
                  include_paths, target_bytes: int | None = None) -> list:
    """One ReadTask per row group, a row group of more than ``target_bytes``
    split into row slices that fit (or, with ``override_num_blocks``, row
    groups merged down to that many tasks, each within one file)."""
    import pyarrow.parquet as pq
    pieces = []                               # (path, row group, rows, bytes)
    for path in files:
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc
        pieces.extend((path, i, meta.row_group(i).num_rows,
                       _row_group_bytes(meta, i, columns))
                      for i in range(meta.num_row_groups))
    known = filter_expr is None
    if override_num_blocks and override_num_blocks < len(pieces):
        merged = []
        for group in groups(pieces, override_num_blocks):
            by_file: dict = {}
            for path, index, rows, _ in group:
                by_file.setdefault(path, []).append((index, rows))
            merged.extend((path, [i for i, _ in found], sum(r for _, r in found))
                          for path, found in by_file.items())
        return [ReadTask(ReadRowGroups(path, row_groups, columns, filter_expr,
                                       include_paths), rows if known else None, (path,))
                for path, row_groups, rows in merged]
    tasks = []
    for path, index, rows, size in pieces:
        count = 1 if not target_bytes or override_num_blocks else min(
            max(rows, 1), -(-size // target_bytes))
        if count <= 1:
            tasks.append(ReadTask(ReadRowGroups(path, [index], columns, filter_expr,
                                                include_paths), rows if known else None,
                                  (path,)))
            continue
        step = -(-rows // count)
        for start in range(0, rows, step):
            end = min(rows, start + step)
            tasks.append(ReadTask(ReadRowGroupSlice(path, index, start, end, columns,
                                                    filter_expr, include_paths),
                                  end - start if known else None, (path,)))
    return tasks
