"""A lost block is rebuilt from lineage: the blocks of a materialized dataset
made on a node that then dies are made again on the node left."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402
from zray.cluster_utils import Cluster  # noqa: E402
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _times_three_where(batch, runs):
    node = zray.get_runtime_context().get_node_id()
    with open(runs, "a") as f:
        f.write(node + "\n")
    ids = batch["id"]
    # 800 KB a block: in shared memory on the node that made it, not inline
    return {"id": ids * 3, "payload": np.ones((len(ids), 1000)) * ids[:, None]}


def test_blocks_lost_with_their_node_are_rebuilt_from_lineage(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"worker_preload_modules": "numpy,pyarrow,pandas"}})
    try:
        other = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        zray.init(address=cluster.address)
        runs = str(tmp_path / "runs")
        on_other = NodeAffinitySchedulingStrategy(node_id=other.node_id, soft=True)
        done = ray.data.range(400, override_num_blocks=4).map_batches(
            _times_three_where, batch_size=None, fn_args=(runs,),
            scheduling_strategy=on_other).materialize()
        with open(runs) as f:
            assert f.read().split() == [other.node_id] * 4
        cluster.remove_node(other, allow_graceful=False)
        rows = done.take_all()                   # every block is made again
        assert [r["id"] for r in rows] == list(range(0, 1200, 3))
        assert all((r["payload"] == r["id"] // 3).all() for r in rows)
        with open(runs) as f:
            again = f.read().split()[4:]
        assert len(again) == 4 and other.node_id not in again
    finally:
        zray.shutdown()
        cluster.shutdown()
