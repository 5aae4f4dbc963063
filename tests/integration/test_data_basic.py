"""zray.data on a local cluster and on 2 nodes (tests/data_clusters.py):
blocks, batch formats, in-memory sources, row and batch transforms,
consumption, stats, progress bars, retries.  Every result is checked against
the same computation done with numpy/pandas/pyarrow here."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pd = pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402
from tests.conftest import wait_for  # noqa: E402
from tests.data_clusters import cluster  # noqa: E402,F401  (the fixture)

pytestmark = pytest.mark.timeout(60)




# --- blocks in the store ------------------------------------------------------------------

def test_import_zray_does_not_import_pyarrow():
    import subprocess
    code = ("import sys, zray; assert 'pyarrow' not in sys.modules; "
            "zray.data.range; assert 'pyarrow' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_a_table_read_back_is_a_view_of_shared_memory(cluster):
    column = np.arange(4_000_000, dtype=np.int64)
    ref = zray.put(pa.table({"x": column}))
    table = zray.get(ref)
    address = table.column("x").chunk(0).buffers()[1].address
    mapped = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "zray_" in line:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                mapped.append((lo, hi))
    assert any(lo <= address < hi for lo, hi in mapped), "the column was copied out of shm"
    assert np.array_equal(table.column("x").to_numpy(), column)


def test_blocks_made_by_tasks_come_back_zero_copy(cluster):
    ds = ray.data.range(2_000_000, override_num_blocks=1)
    (ref,) = ds.to_arrow_refs()
    table = zray.get(ref)
    address = table.column("id").chunk(0).buffers()[1].address
    with open("/proc/self/maps") as f:
        spans = [[int(x, 16) for x in line.split()[0].split("-")] for line in f
                 if "zray_" in line]
    assert any(lo <= address < hi for lo, hi in spans)


# --- sources -------------------------------------------------------------------------------

def test_range_and_count_from_metadata(cluster):
    ds = ray.data.range(1000, override_num_blocks=7)
    assert ds.count() == 1000
    assert ds.num_blocks() == 7
    assert ds.take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert [r["id"] for r in ds.take_all()] == list(range(1000))
    assert ds.schema().names == ["id"] and ds.columns() == ["id"]
    assert ds.schema().types == [pa.int64()]


def test_range_tensor(cluster):
    ds = ray.data.range_tensor(10, shape=(2, 3), override_num_blocks=3)
    batch = ds.take_batch(10)
    expected = np.arange(10).reshape(-1, 1, 1) * np.ones((2, 3), dtype=np.int64)
    assert batch["data"].shape == (10, 2, 3)
    assert np.array_equal(batch["data"], expected)
    assert np.array_equal(ds.take(2)[1]["data"], expected[1])


def test_from_items_plain_values_and_dicts(cluster):
    assert ray.data.from_items([3, 1, 2]).take_all() == [{"item": 3}, {"item": 1},
                                                         {"item": 2}]
    rows = [{"a": i, "b": str(i)} for i in range(50)]
    ds = ray.data.from_items(rows, override_num_blocks=4)
    assert ds.num_blocks() == 4 and ds.take_all() == rows


def test_from_numpy_pandas_arrow(cluster):
    arrays = [np.arange(6).reshape(3, 2), np.arange(6, 10).reshape(2, 2)]
    batch = ray.data.from_numpy(arrays).take_batch(10)
    assert np.array_equal(batch["data"], np.concatenate(arrays))
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5], "y": ["a", "b", "c"]})
    pd.testing.assert_frame_equal(ray.data.from_pandas([frame, frame]).to_pandas(),
                                  pd.concat([frame, frame], ignore_index=True))
    table = pa.table({"x": [1, 2], "y": ["p", "q"]})
    assert ray.data.from_arrow(table).take_batch(batch_format="pyarrow").equals(table)


# --- batch formats ---------------------------------------------------------------------

def test_batch_formats(cluster):
    ds = ray.data.from_items([{"x": i, "y": float(i) / 2} for i in range(10)])
    numpy_batch = ds.take_batch(4)
    assert set(numpy_batch) == {"x", "y"}
    assert np.array_equal(numpy_batch["x"], np.arange(4))
    assert np.array_equal(ds.take_batch(4, batch_format="numpy")["y"], np.arange(4) / 2)
    frame = ds.take_batch(4, batch_format="pandas")
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"x": range(4),
                                                       "y": np.arange(4) / 2}))
    table = ds.take_batch(4, batch_format="pyarrow")
    assert isinstance(table, pa.Table) and table.column("x").to_pylist() == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", ["numpy", "pandas", "pyarrow", "default"])
def test_map_batches_in_each_format(cluster, fmt):
    def double(batch):
        if isinstance(batch, pa.Table):
            return pa.table({"id": pa.compute.multiply(batch.column("id"), 2)})
        batch["id"] = batch["id"] * 2
        return batch
    ds = ray.data.range(100, override_num_blocks=3).map_batches(double, batch_size=7,
                                                                  batch_format=fmt)
    assert [r["id"] for r in ds.take_all()] == list(range(0, 200, 2))


def test_wrong_batch_format_is_refused(cluster):
    with pytest.raises(ValueError, match="batch format"):
        ray.data.range(3).map_batches(lambda b: b, batch_format="arrow")
    with pytest.raises(ValueError, match="batch format"):
        ray.data.range(3).take_batch(batch_format="torch")


# --- transforms ----------------------------------------------------------------------

def test_map_filter_flat_map_fused_into_one_stage(cluster):
    ds = (ray.data.range(60, override_num_blocks=4)
          .map(lambda r: {"id": r["id"], "sq": r["id"] ** 2})
          .filter(lambda r: r["id"] % 3 == 0)
          .flat_map(lambda r: [r, {"id": -r["id"], "sq": 0}]))
    expected = []
    for i in range(0, 60, 3):
        expected += [{"id": i, "sq": i * i}, {"id": -i, "sq": 0}]
    assert ds.take_all() == expected
    assert ds.stats().count("Operator") == 1          # read and the 3 maps: one stage
    assert "ReadRange->MapRows" in ds.stats() and "4 tasks" in ds.stats()


def test_map_batches_batch_size_and_args(cluster):
    sizes = []

    def record(batch, offset, *, scale):
        return {"id": batch["id"] * scale + offset, "n": np.full(len(batch["id"]),
                                                                 len(batch["id"]))}
    ds = ray.data.range(25, override_num_blocks=2).map_batches(
        record, batch_size=5, fn_args=(1,), fn_kwargs={"scale": 10})
    batch = ds.take_batch(25)
    assert np.array_equal(batch["id"], np.arange(25) * 10 + 1)
    # blocks of 12 and 13 rows: batches of 5 within each block
    assert list(batch["n"]) == [5] * 10 + [2] * 2 + [5] * 10 + [3] * 3
    assert not sizes


def test_map_batches_generator_and_pandas_output(cluster):
    def split_in_two(batch):
        half = len(batch["id"]) // 2
        yield {"id": batch["id"][:half]}
        yield pd.DataFrame({"id": batch["id"][half:]})
    ds = ray.data.range(20, override_num_blocks=2).map_batches(split_in_two)
    assert [r["id"] for r in ds.take_all()] == list(range(20))


def test_map_batches_unsupported_return_type_is_a_clear_error(cluster):
    ds = ray.data.range(10).map_batches(lambda b: [1, 2, 3])
    with pytest.raises(ValueError, match="returned a value of type list"):
        ds.take_all()
    with pytest.raises(ValueError, match="must return a dict"):
        ray.data.range(3).map(lambda r: r["id"]).take_all()


class AddOffset:
    def __init__(self, offset):
        self.offset = offset
        import os
        self.pid = os.getpid()

    def __call__(self, batch):
        return {"id": batch["id"] + self.offset, "pid": np.full(len(batch["id"]), self.pid)}


def test_map_batches_callable_class_on_an_actor_pool(cluster):
    ds = ray.data.range(40, override_num_blocks=8).map_batches(
        AddOffset, concurrency=2, fn_constructor_args=(100,), batch_size=None)
    batch = ds.take_batch(40)
    assert np.array_equal(batch["id"], np.arange(40) + 100)
    assert 1 <= len(set(batch["pid"])) <= 2           # built once per actor
    with pytest.raises(ValueError, match="concurrency"):
        ray.data.range(3).map_batches(AddOffset)


def test_map_batches_actor_pool_with_min_max(cluster):
    ds = ray.data.range(30, override_num_blocks=6).map(lambda r: {"id": r["id"] + 1}) \
        .map_batches(AddOffset, concurrency=(1, 2), fn_constructor_kwargs={"offset": -1})
    assert list(ds.take_batch(30)["id"]) == list(range(30))


def test_column_operations(cluster):
    frame = pd.DataFrame({"a": np.arange(10), "b": np.arange(10) * 2.0, "c": list("abcdefghij")})
    ds = ray.data.from_pandas(frame)
    added = ds.add_column("d", lambda df: df["a"] + df["b"])
    pd.testing.assert_series_equal(added.to_pandas()["d"], (frame["a"] + frame["b"]),
                                   check_names=False)
    assert ds.drop_columns(["b"]).columns() == ["a", "c"]
    assert ds.select_columns(["c", "a"]).columns() == ["c", "a"]
    assert ds.rename_columns({"a": "A"}).columns() == ["A", "b", "c"]
    assert ds.rename_columns(["x", "y", "z"]).take(1) == [{"x": 0, "y": 0.0, "z": "a"}]
    with pytest.raises(KeyError, match="nope"):
        ds.select_columns(["nope"]).take_all()
    with pytest.raises(KeyError, match="nope"):
        ds.drop_columns("nope").count() and ds.drop_columns("nope").take_all()


def test_limit_union_zip(cluster):
    ds = ray.data.range(100, override_num_blocks=10)
    assert [r["id"] for r in ds.limit(15).take_all()] == list(range(15))
    assert ds.limit(15).count() == 15
    assert ds.limit(0).take_all() == []
    union = ds.limit(3).union(ray.data.range(2), ray.data.from_items([{"id": 9}]))
    assert [r["id"] for r in union.take_all()] == [0, 1, 2, 0, 1, 9]
    other = ray.data.from_items([{"id": -i, "w": i * 1.5} for i in range(100)],
                                override_num_blocks=3)
    zipped = ds.zip(other).take_batch(100)
    assert list(zipped) == ["id", "id_1", "w"]
    assert np.array_equal(zipped["id_1"], -np.arange(100))
    assert np.array_equal(zipped["w"], np.arange(100) * 1.5)
    with pytest.raises(ValueError, match="same number of rows"):
        ds.zip(ray.data.range(5)).take_all()


def test_limit_stops_reading_early(cluster):
    ds = ray.data.range(1000, override_num_blocks=100).map(lambda r: r)
    assert len(ds.limit(5).take_all()) == 5
    stats = ds.limit(5).materialize().stats()
    tasks = int(stats.split("Operator ReadRange->MapRows(<lambda>): ")[1].split()[0])
    assert tasks < 100


# --- consumption --------------------------------------------------------------------------

def test_iter_batches_rebatches_across_blocks(cluster):
    ds = ray.data.range(103, override_num_blocks=4)
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=10)]
    assert sizes == [10] * 10 + [3]
    assert [len(b["id"]) for b in ds.iter_batches(batch_size=10, drop_last=True)] == [10] * 10
    got = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=7,
                                                           prefetch_batches=3)])
    assert np.array_equal(got, np.arange(103))
    whole = [len(b["id"]) for b in ds.iter_batches(batch_size=None, prefetch_batches=0)]
    assert whole == [25, 26, 26, 26]
    frames = list(ds.iter_batches(batch_size=50, batch_format="pandas"))
    assert all(isinstance(f, pd.DataFrame) for f in frames)


def test_iter_batches_local_shuffle(cluster):
    ds = ray.data.range(200, override_num_blocks=4)
    batches = list(ds.iter_batches(batch_size=20, local_shuffle_buffer_size=50,
                                   local_shuffle_seed=3))
    got = np.concatenate([b["id"] for b in batches])
    assert sorted(got) == list(range(200)) and list(got) != list(range(200))


def test_iter_rows_and_torch_batches(cluster):
    torch = pytest.importorskip("torch")
    ds = ray.data.from_items([{"x": i, "y": i * 0.5} for i in range(10)])
    assert [r["x"] for r in ds.iter_rows()] == list(range(10))
    batches = list(ds.iter_torch_batches(batch_size=4, dtypes={"y": torch.float32}))
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    assert batches[0]["y"].dtype == torch.float32
    assert torch.equal(torch.cat([b["x"] for b in batches]), torch.arange(10))


def test_to_pandas_and_refs(cluster):
    frame = pd.DataFrame({"a": np.arange(20), "b": np.arange(20) % 3})
    ds = ray.data.from_pandas(frame).repartition(4)
    pd.testing.assert_frame_equal(ds.to_pandas(), frame)
    with pytest.raises(ValueError, match="limit"):
        ds.to_pandas(limit=5)
    parts = zray.get(ds.to_numpy_refs())
    assert np.array_equal(np.concatenate([p["a"] for p in parts]), frame["a"].to_numpy())
    column = zray.get(ds.to_numpy_refs(column="b"))
    assert np.array_equal(np.concatenate(column), frame["b"].to_numpy())
    tables = zray.get(ds.to_arrow_refs())
    assert pa.concat_tables(tables).to_pandas().equals(frame)


def test_show_take_take_all(cluster, capsys):
    ds = ray.data.range(30)
    ds.show(2)
    assert capsys.readouterr().out == "{'id': 0}\n{'id': 1}\n"
    assert len(ds.take()) == 20
    with pytest.raises(ValueError, match="limit"):
        ds.take_all(limit=10)
    with pytest.raises(ValueError, match="empty"):
        ds.limit(0).take_batch()


def test_materialize_keeps_blocks_and_stats(cluster):
    calls = ray.data.range(10, override_num_blocks=2).map(lambda r: {"id": r["id"] * 3})
    assert "not been executed" in calls.stats()
    done = calls.materialize()
    assert done.num_blocks() == 2 and done.count() == 10
    assert [r["id"] for r in done.take_all()] == list(range(0, 30, 3))
    assert "2 tasks" in done.stats() and "10 rows" in done.stats()


def test_data_context(cluster):
    from zray.data import DataContext
    context = DataContext.get_current()
    assert context is DataContext.get_current()
    before = context.read_op_min_num_blocks
    try:
        context.read_op_min_num_blocks = 3
        assert ray.data.range(100).num_blocks() == 3
    finally:
        context.read_op_min_num_blocks = before


def test_actor_pool_outputs_feed_later_stages(cluster):
    # a plain step after the pool runs in its actors; the blocks the actors
    # made stay readable after the pool ends (a sort reads them afterwards)
    ds = (ray.data.range(40, override_num_blocks=4)
          .map_batches(AddOffset, concurrency=2, fn_constructor_args=(1,), num_cpus=0.5)
          .filter(lambda r: r["id"] % 2 == 0)
          .drop_columns(["pid"]).sort("id", descending=True))
    assert [r["id"] for r in ds.take_all()] == list(range(40, 0, -2))


def test_actor_pool_ends_with_its_input_and_its_blocks_outlive_it(cluster):
    # 1-CPU actors take both CPUs; once the pool has made its blocks it is
    # gone: a 2-CPU task runs next while the blocks it made are still read
    done = ray.data.range(40, override_num_blocks=4).map_batches(
        AddOffset, concurrency=2, fn_constructor_args=(5,), batch_size=None).materialize()
    assert wait_for(lambda: zray.available_resources().get("CPU", 0) == 2, 20)

    @zray.remote
    def all_cpus_of_a_node():
        return "ran"
    node_cpus = 2 if cluster == "local" else 1
    assert zray.get(all_cpus_of_a_node.options(num_cpus=node_cpus).remote(),
                    timeout=30) == "ran"
    assert [r["id"] for r in done.take_all()] == list(range(5, 45))
    assert done.sum("id") == sum(range(5, 45))


def test_stats_per_operator(cluster):
    ds = ray.data.range(100, override_num_blocks=4).map(lambda r: {"id": r["id"] + 1})
    ds.take_all()
    stats = ds.stats()
    assert "ReadRange->MapRows(<lambda>): 4 tasks, 4 blocks, 100 rows" in stats
    assert "s wall, peak object store use" in stats


class _Terminal:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, text):
        self.text.append(text)
        return len(text)

    def flush(self):
        pass


def test_progress_bars_on_a_terminal_only(cluster, monkeypatch):
    pytest.importorskip("tqdm")
    from zray.data import DataContext
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    ray.data.range(50, override_num_blocks=5).map(lambda r: r).take_all()
    drawn = "".join(terminal.text)
    assert "ReadRange->MapRows(<lambda>)" in drawn and "5/5" in drawn
    terminal.text.clear()
    context = DataContext.get_current()
    context.enable_progress_bars = False
    try:
        ray.data.range(50, override_num_blocks=5).take_all()
    finally:
        context.enable_progress_bars = True
    assert "".join(terminal.text) == ""
    monkeypatch.setattr(sys, "stderr", _NotATerminal())
    ray.data.range(50, override_num_blocks=5).take_all()


class _NotATerminal(_Terminal):
    def isatty(self):
        return False

    def write(self, text):
        raise AssertionError(f"a progress bar was drawn on a non-terminal: {text!r}")


def _crash_once(batch, marker):
    import os
    if batch["id"][0] == 30 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)                                 # the worker dies mid-task
    return {"id": batch["id"] * 2}


def test_a_map_task_whose_worker_dies_is_retried(cluster, tmp_path):
    marker = str(tmp_path / "crashed")
    ds = ray.data.range(60, override_num_blocks=4).map_batches(
        _crash_once, batch_size=None, fn_args=(marker,))
    assert [r["id"] for r in ds.take_all()] == list(range(0, 120, 2))
    assert os.path.exists(marker)
