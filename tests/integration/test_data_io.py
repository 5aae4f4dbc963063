"""zray.data file sources and sinks on a local cluster and on 2 nodes
(tests/data_clusters.py), checked against
pyarrow/pandas/numpy reading the same files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pd = pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")
import pyarrow.dataset as pds  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import zray  # noqa: E402
import zray as ray  # noqa: E402
from tests.data_clusters import cluster  # noqa: E402,F401  (the fixture)

pytestmark = pytest.mark.timeout(60)




@pytest.fixture
def frame():
    return pd.DataFrame({"a": np.arange(40), "b": np.arange(40) * 0.5,
                         "s": [f"row{i}" for i in range(40)]})


def test_read_parquet_one_task_per_row_group(cluster, tmp_path, frame):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=10)
    ds = ray.data.read_parquet(str(path))
    assert ds.num_blocks() == 4 and ds.count() == 40
    pd.testing.assert_frame_equal(ds.to_pandas(), frame)
    assert ray.data.read_parquet(str(path), override_num_blocks=2).num_blocks() == 2
    assert ds.input_files() == [str(path)]


def test_read_parquet_projection_and_filter_pushdown(cluster, tmp_path, frame):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                   tmp_path / "f.parquet", row_group_size=10)
    ds = ray.data.read_parquet(str(tmp_path), columns=["a", "s"],
                               filter=pds.field("a") >= 25)
    expected = frame.loc[frame.a >= 25, ["a", "s"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(ds.to_pandas(), expected)
    dnf = ray.data.read_parquet(str(tmp_path), filters=[("a", "<", 3)])
    assert [r["a"] for r in dnf.take_all()] == [0, 1, 2]
    with pytest.raises(KeyError, match="nope"):
        ray.data.read_parquet(str(tmp_path), columns=["nope"]).take_all()


def test_read_parquet_splits_row_groups_bigger_than_a_block(cluster, tmp_path, frame):
    from zray.data import DataContext
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=40)
    context = DataContext.get_current()
    before = context.target_max_block_size
    context.target_max_block_size = 256             # bytes: a few rows a block
    try:
        ds = ray.data.read_parquet(str(path))
        assert ds.num_blocks() > 2 and ds.count() == 40
        pd.testing.assert_frame_equal(ds.to_pandas(), frame)
        some = ray.data.read_parquet(str(path), columns=["s", "a"],
                                     filter=(pds.field("a") >= 5) & (pds.field("a") < 33))
        assert some.num_blocks() > 1
        expected = frame.loc[(frame.a >= 5) & (frame.a < 33), ["s", "a"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(some.to_pandas(), expected)
        with pytest.raises(KeyError, match="nope"):
            ray.data.read_parquet(str(path), columns=["nope"]).take_all()
    finally:
        context.target_max_block_size = before


def test_read_many_files_by_directory_and_glob(cluster, tmp_path, frame):
    for i in range(3):
        part = frame.iloc[i * 10:(i + 1) * 10]
        part.to_csv(tmp_path / f"p{i}.csv", index=False)
    (tmp_path / "_SUCCESS").write_text("")
    from_dir = ray.data.read_csv(str(tmp_path)).to_pandas()
    pd.testing.assert_frame_equal(from_dir, frame.iloc[:30].reset_index(drop=True))
    from_glob = ray.data.read_csv(str(tmp_path / "p[12].csv"), include_paths=True)
    assert from_glob.num_blocks() == 2
    got = from_glob.to_pandas()
    assert list(got["a"]) == list(range(10, 30))
    assert set(got["path"]) == {str(tmp_path / "p1.csv"), str(tmp_path / "p2.csv")}
    assert ray.data.read_csv([str(tmp_path / "p0.csv"), str(tmp_path / "p1.csv")],
                             override_num_blocks=1).num_blocks() == 1


def test_missing_path_names_the_file(cluster, tmp_path):
    missing = str(tmp_path / "nothere.parquet")
    with pytest.raises(FileNotFoundError, match="nothere.parquet"):
        ray.data.read_parquet(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\*.csv"):
        ray.data.read_csv(str(tmp_path / "nope*.csv"))


def test_read_json_lines_text_numpy_binary(cluster, tmp_path):
    rows = [{"x": i, "name": f"n{i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert ray.data.read_json(str(tmp_path / "d.jsonl")).take_all() == rows

    (tmp_path / "t.txt").write_text("first\n\nsecond\nthird\n")
    assert ray.data.read_text(str(tmp_path / "t.txt")).take_all() == [
        {"text": "first"}, {"text": "second"}, {"text": "third"}]

    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", array)
    batch = ray.data.read_numpy(str(tmp_path / "a.npy")).take_batch(10)
    assert np.array_equal(batch["data"], array)

    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for i in range(3):
        (blobs / f"{i}.bin").write_bytes(bytes([i]) * (i + 1))
    got = ray.data.read_binary_files(str(blobs), include_paths=True).take_all()
    assert [r["bytes"] for r in got] == [b"\x00", b"\x01\x01", b"\x02\x02\x02"]
    assert [os.path.basename(r["path"]) for r in got] == ["0.bin", "1.bin", "2.bin"]


def test_write_and_read_back_keeps_rows_and_order(cluster, tmp_path, frame):
    ds = ray.data.from_pandas(frame).repartition(3)
    ds.write_parquet(str(tmp_path / "pq"))
    assert len(os.listdir(tmp_path / "pq")) == 3
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "pq").to_pandas(), frame)
    pd.testing.assert_frame_equal(ray.data.read_parquet(str(tmp_path / "pq")).to_pandas(),
                                  frame)
    ds.write_csv(str(tmp_path / "csv"))
    pd.testing.assert_frame_equal(ray.data.read_csv(str(tmp_path / "csv")).to_pandas(),
                                  frame)
    ds.write_json(str(tmp_path / "json"))
    pd.testing.assert_frame_equal(ray.data.read_json(str(tmp_path / "json")).to_pandas(),
                                  frame)
