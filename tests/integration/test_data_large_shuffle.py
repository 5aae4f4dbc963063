"""4x the object store's bound (64 MiB here): a full random_shuffle + sort
(the all-to-all stages hold their input, map outputs and reduce outputs at
once, so they spill through the store) is still exact, and a read_parquet ->
map_batches -> write_parquet pipeline (row groups of the bound's size, read as
slices that fit the budget) stays inside the bound."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402
from tests.integration.test_data_large import StorePeaks  # noqa: E402

pytestmark = pytest.mark.timeout(180)

BOUND = 64 * 2**20


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2, object_store_memory=BOUND,
              _system_config={"worker_preload_modules": "numpy,pyarrow,pandas"})
    yield
    zray.shutdown()


def _double(batch):
    return {name: values * 2 for name, values in batch.items()}


def test_parquet_pipeline_four_times_the_store_bound(cluster, tmp_path):
    # 4 files of one 200 MiB row group each: a row group is read as slices that
    # fit the budget, so the blocks in flight stay inside the bound
    source, out = tmp_path / "in", str(tmp_path / "out")
    source.mkdir()
    columns, rows = 25, BOUND // (8 * 25)
    for i in range(4):
        base = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        table = pa.table({f"c{c}": base + c for c in range(columns)})
        pq.write_table(table, str(source / f"part-{i}.parquet"), row_group_size=rows,
                       compression="none")
        del table
    ds = ray.data.read_parquet(str(source))
    assert ds.num_blocks() > 4 * 4                  # each row group split in 4 or more
    with StorePeaks() as peaks:
        ds.map_batches(_double, batch_size=None).write_parquet(out)
    assert peaks.spilled <= BOUND // 4, f"spilled {peaks.spilled / 2**20:.0f} MiB"
    back = pq.read_table(out)
    assert back.num_rows == 4 * rows
    first = back.column("c0").to_numpy()
    assert np.array_equal(first, np.arange(4 * rows, dtype=np.int64) * 2)
    assert np.array_equal(back.column(f"c{columns - 1}").to_numpy(),
                          first + 2 * (columns - 1))


def _with_key(batch, n):
    ids = batch["data"][:, 0]
    # a permutation of 0..n-1 (n = 2**k, odd multiplier), as floats
    return {"data": batch["data"], "key": ((ids * 40503) % n).astype(np.float64)}


def test_shuffle_and_sort_of_more_than_the_bound_are_exact(cluster):
    width = 32                               # 256-byte rows
    rows = 2**20                             # 256 MiB (4x the bound), plus the keys
    assert rows * width * 8 >= 4 * BOUND
    ds = ray.data.range_tensor(rows, shape=(width,)).map_batches(
        _with_key, batch_size=None, fn_args=(rows,)).random_shuffle(seed=7).sort("key")
    previous, count, total = -1.0, 0, 0
    with StorePeaks() as peaks:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            keys, data = batch["key"], batch["data"]
            assert keys[0] > previous and (np.diff(keys) > 0).all()
            assert ((data[:, 0] * 40503) % rows == keys).all()
            previous = keys[-1]
            count += len(keys)
            total += int(data[:, 0].sum())
    assert count == rows
    assert previous == rows - 1
    assert total == rows * (rows - 1) // 2
    assert peaks.spilled > 0                 # it did not fit: it went through spilling

