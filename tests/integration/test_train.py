"""zray.train's TorchTrainer on CPU (gloo): two workers train one model."""

from __future__ import annotations

import json
import os

import pytest

import zray
from tests import tasks

torch = pytest.importorskip("torch", reason="zray.train needs torch (the test extra "
                                            "installs it)")

from zray.train import (CheckpointConfig, FailureConfig, RunConfig,  # noqa: E402
                        ScalingConfig, TrainingFailedError)
from zray.train.torch import TorchTrainer  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2)
    yield
    zray.shutdown()


def test_two_workers_train_one_model_and_report(cluster, tmp_path):
    trainer = TorchTrainer(
        tasks.train_linear, train_loop_config={"epochs": 4},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="linear", storage_path=str(tmp_path),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    assert result.error is None
    assert result.path == str(tmp_path / "linear")
    assert result.metrics["epoch"] == 3 and result.metrics["world_size"] == 2
    assert result.metrics["rank"] == 0
    history = result.metrics_dataframe if _has_pandas() else None
    if history is not None:
        assert list(history["epoch"]) == [0, 1, 2, 3]
        assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    weight, bias = result.metrics["weights"]
    assert abs(weight[0][0] - 2.0) < 0.2 and abs(weight[0][1] + 3.0) < 0.2
    # the last checkpoint is in the Result and on storage; only 2 are kept
    state = torch.load(os.path.join(result.checkpoint.path, "state.pt"))
    assert state["epoch"] == 3
    kept = sorted(n for n in os.listdir(result.path) if n.startswith("checkpoint_"))
    assert len(kept) == 2 and result.checkpoint.path.endswith(kept[-1])
    # the workers ran in one placement group (PACK, a bundle each), removed at the end
    [group] = zray.util.placement_group_table().values()
    assert group["strategy"] == "PACK" and group["state"] == "REMOVED"
    assert group["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}


def test_every_rank_ends_with_identical_weights(cluster, tmp_path):
    trainer = TorchTrainer(tasks.train_linear,
                           train_loop_config={"epochs": 2, "weights_dir": str(tmp_path)},
                           scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="same", storage_path=str(tmp_path)))
    trainer.fit()
    ranks = [json.loads((tmp_path / f"rank{r}").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]


def test_a_failure_restarts_from_the_checkpoint(cluster, tmp_path):
    marker = str(tmp_path / "failed-once")
    trainer = TorchTrainer(
        tasks.train_linear,
        train_loop_config={"epochs": 4, "fail_at_epoch": 2, "marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="retry", storage_path=str(tmp_path),
                             failure_config=FailureConfig(max_failures=1)))
    result = trainer.fit()
    assert os.path.exists(marker)              # it did fail once
    assert result.metrics["epoch"] == 3
    assert result.metrics["start"] == 2        # resumed after the epoch-1 checkpoint


def test_failures_beyond_max_failures_raise(cluster, tmp_path):
    marker = str(tmp_path / "never")
    os.makedirs(marker)                # a directory: open(marker, "w") fails every time
    trainer = TorchTrainer(
        tasks.train_linear,
        train_loop_config={"epochs": 2, "fail_at_epoch": 0, "marker": marker + "/x/y"},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="fails", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError) as failed:
        trainer.fit()
    assert failed.value.result.error is not None


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
        return True
    except ImportError:
        return False


def test_the_seeds_torch_trainer_program_runs_and_its_loss_falls():
    """examples/seed_torch_trainer.py: Ray 1.x's ray.util.sgd.TorchTrainer form."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, os.path.join(root, "examples",
                                                       "seed_torch_trainer.py")],
                         capture_output=True, text=True, timeout=150, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [float(line.split("train_loss ")[1].split()[0])
              for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert len(losses) == 5 and losses[-1] < losses[0] * 0.8, losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert "val_loss" in run.stdout and "trained model: Sequential" in run.stdout


def test_seed_trainer_save_and_load_round_trip(cluster, tmp_path):
    from examples.seed_torch_trainer import (data_creator, model_creator,
                                             optimizer_creator)
    from zray.util.sgd import TorchTrainer as SeedTrainer
    trainer = SeedTrainer(model_creator, data_creator, optimizer_creator,
                          loss_creator=torch.nn.MSELoss,
                          config={"lr": 0.01, "batch_size": 64}, num_workers=2)
    try:
        trainer.train()
        path = trainer.save(str(tmp_path / "seed.pt"))
        before = trainer.get_model().state_dict()
        trainer.train()
        trainer.load(path)
        after = trainer.get_model().state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        trainer.shutdown()
