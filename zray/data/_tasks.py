"""The remote functions and actor class zray.data runs.

Each task that makes a block returns two objects (``num_returns=2``): the
table, which lands in the shared-memory store, and its BlockMetadata, small
enough to travel inline to the driver, which plans from it without fetching
the table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import zray
from zray.data import block as B
from zray.data.plan import ReadTask
from zray.data.transforms import apply_all


def _source_table(source):
    if isinstance(source, ReadTask):
        table = source()
        return (B.concat(table) if isinstance(table, list) else table), source.input_files
    return source, ()


@zray.remote
def run_map(source, transforms):
    """Read (or take) one block and apply the fused transforms to it."""
    table, files = _source_table(source)
    table = apply_all(table, transforms, [t.instantiate() for t in transforms])
    return table, B.metadata(table, files)


class MapWorker:
    """An actor of a map_batches pool: builds the callable classes once."""

    def __init__(self, transforms):
        self.transforms = transforms
        self.udfs = [t.instantiate() for t in transforms]

    def ready(self) -> bool:
        return True

    @zray.method(num_returns=2)
    def run(self, source):
        table, files = _source_table(source)
        table = apply_all(table, self.transforms, self.udfs)
        return table, B.metadata(table, files)


@zray.remote
def slice_concat(spec, *tables):
    """Concatenate ``tables[i].slice(start, length)`` for each ``(i, start, length)``."""
    table = B.concat([tables[i].slice(start, length) for i, start, length in spec])
    if not spec:
        table = tables[0].schema.empty_table() if tables else pa.table({})
    return table, B.metadata(table)


@zray.remote
def zip_blocks(left, specs, *tables):
    """``left`` with the columns of each right-hand row range in ``specs``
    added; a name already taken gets a suffix (``id_1``), as in Ray."""
    names = list(left.column_names)
    for spec in specs:
        right = B.concat([tables[i].slice(start, length) for i, start, length in spec])
        for name in right.column_names:
            new, n = name, 1
            while new in names:
                new = f"{name}_{n}"
                n += 1
            names.append(new)
            left = left.append_column(new, right.column(name))
    return left, B.metadata(left)


@zray.remote
def to_numpy_batch(table, column):
    batch = B.to_batch(table, "numpy")
    return batch[column] if column is not None else batch


@zray.remote
def write_block(table, path: str, file_format: str, options: dict):
    import os
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    if file_format == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, tmp, **options)
    elif file_format == "csv":
        import pyarrow.csv as pcsv
        pcsv.write_csv(table, tmp)
    else:
        B.to_batch(table, "pandas").to_json(tmp, orient="records", lines=True, **options)
    os.replace(tmp, path)
    return path


@zray.remote
def sample_block(table, columns, count: int, seed: int):
    """Up to ``count`` rows of ``columns``, evenly spaced (the sort's sample)."""
    if table.num_rows == 0:
        return table.select(columns)
    positions = np.linspace(0, table.num_rows - 1, min(count, table.num_rows)).astype(int)
    return table.select(columns).take(pa.array(positions))
