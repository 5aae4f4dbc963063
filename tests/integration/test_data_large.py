"""zray.data over more data than the object store holds: the streaming
executor's memory budget keeps a read -> map_batches -> write pipeline of 4x
the store's bound inside the bound (no mass spilling); test_data_large_shuffle.py
does the same from Parquet files, and a full shuffle and sort of 4x the bound."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BOUND = 200 * 2**20


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2, object_store_memory=BOUND,
              _system_config={"worker_preload_modules": "numpy,pyarrow,pandas"})
    yield
    zray.shutdown()


class StorePeaks:
    """Highest store use and spilled bytes the nodes reported while running."""

    def __init__(self):
        self.used = self.spilled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            for node in zray.nodes():
                store = node.get("ObjectStore") or {}
                self.used = max(self.used, store.get("used_bytes", 0))
                self.spilled = max(self.spilled, store.get("spilled_bytes", 0))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(1.2)             # one more heartbeat's numbers
        self._stop.set()
        self._thread.join()


def _add_one(batch):
    return {"data": batch["data"] + 1}


def test_pipeline_four_times_the_store_bound_streams_without_spilling(cluster, tmp_path):
    width = 128                              # int64s per row: 1 KiB rows
    rows = 4 * BOUND // (8 * width)          # 800 MiB in all
    out = str(tmp_path / "out")
    with StorePeaks() as peaks:
        ray.data.range_tensor(rows, shape=(width,)).map_batches(
            _add_one, batch_size=None).write_parquet(out)
    # blocks left the store as they were written: little or nothing spilled
    assert peaks.spilled <= BOUND // 4, f"spilled {peaks.spilled / 2**20:.0f} MiB"
    files = sorted(os.listdir(out))
    assert len(files) > 8                    # reads split to fit the budget
    count, total, expect_first = 0, 0, 1
    for name in files:
        table = pq.read_table(os.path.join(out, name))
        values = table.column("data").combine_chunks().to_numpy_ndarray()
        assert (values == values[:, :1]).all()
        first = values[:, 0]
        assert np.array_equal(first, np.arange(expect_first, expect_first + len(first)))
        expect_first += len(first)
        count += len(values)
        total += int(first.sum())
    assert count == rows
    assert total == rows * (rows + 1) // 2

