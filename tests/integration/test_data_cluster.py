"""zray.data on two node managers (zray.cluster_utils.Cluster): blocks made on
one node are read, shuffled and aggregated on the other."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pd = pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402
from zray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"worker_preload_modules": "numpy,pyarrow,pandas"}})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    yield cluster
    zray.shutdown()
    cluster.shutdown()


@zray.remote
def where():
    return zray.get_runtime_context().get_node_id()


def test_a_pipeline_spans_both_nodes(two_nodes, tmp_path):
    frame = pd.DataFrame({"k": np.arange(4000) % 7, "v": np.arange(4000, dtype=np.float64)})
    ds = (ray.data.from_pandas(frame).repartition(8)
          .map_batches(lambda b: {"k": b["k"], "v": b["v"] * 2,
                                  "node": np.array([zray.get_runtime_context().get_node_id()]
                                                   * len(b["k"]))},
                       batch_size=None, num_cpus=1, scheduling_strategy="SPREAD"))
    done = ds.materialize()
    assert len(set(done.unique("node"))) == 2          # both nodes made blocks
    got = done.groupby("k").sum("v").to_pandas().sort_values("k").reset_index(drop=True)
    expected = (frame.assign(v=frame.v * 2).groupby("k").v.sum().reset_index()
                .rename(columns={"v": "sum(v)"}))
    pd.testing.assert_frame_equal(got, expected)
    shuffled = done.random_shuffle(seed=3).sort("v").drop_columns(["node"]).to_pandas()
    pd.testing.assert_frame_equal(shuffled, frame.assign(v=frame.v * 2))


def test_streaming_split_across_nodes(two_nodes):
    ds = ray.data.range(1000, override_num_blocks=10)
    its = ds.streaming_split(2, equal=True)

    @zray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def consume(it):
        ids = [int(x) for b in it.iter_batches(batch_size=64) for x in b["id"]]
        return zray.get_runtime_context().get_node_id(), ids

    results = zray.get([consume.remote(it) for it in its])
    assert sorted(results[0][1] + results[1][1]) == list(range(1000))
    assert len(results[0][1]) == len(results[1][1]) == 500
