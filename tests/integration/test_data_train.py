"""zray.train with a zray.data dataset: each worker's get_dataset_shard is one
streaming_split iterator; together they see every row, once per epoch."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pytest.importorskip("torch", reason="zray.train needs torch (the test extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster():
    # two CPUs for the two training workers, two for the dataset's read tasks
    zray.init(num_cpus=4, _system_config={"worker_preload_modules": "numpy,pyarrow,pandas"})
    yield
    zray.shutdown()


def test_trainer_workers_read_their_shards(cluster, tmp_path):
    from zray.train import RunConfig, ScalingConfig, get_dataset_shard, report
    from zray.train.torch import TorchTrainer

    def loop(config):
        shard = get_dataset_shard("train")
        for epoch in range(2):
            ids = [int(x) for b in shard.iter_batches(batch_size=8) for x in b["id"]]
            report({"epoch": epoch, "rows": len(ids), "total": sum(ids)})

    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(storage_path=str(tmp_path)),
                          datasets={"train": ray.data.range(100, override_num_blocks=4)}
                          ).fit()
    assert result.metrics["rows"] == 50 and result.metrics["epoch"] == 1
    assert result.metrics["total"] == sum(range(50))       # rank 0: the first half
