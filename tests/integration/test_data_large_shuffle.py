"""A full random_shuffle + sort of a dataset 4x the object store's bound:
the all-to-all stages hold their input, map outputs and reduce outputs at once,
so they spill through the store, and the result is still exact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
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
