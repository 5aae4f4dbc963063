"""zray.tune's schedulers on a real cluster: ASHA stops poor trials early,
median stopping, PBT exploits checkpoints; Tuner(TorchTrainer)."""

from __future__ import annotations

import os

import pytest

import zray
from tests import tune_trainables as tt
from zray import tune
from zray.tune.schedulers import (ASHAScheduler, AsyncHyperBandScheduler,
                                  MedianStoppingRule, PopulationBasedTraining)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2)
    yield
    zray.shutdown()


def _iterations_run(directory, rate) -> int:
    with open(os.path.join(directory, f"trial-{rate}")) as f:
        return len(f.read().split())


def test_asha_stops_poor_trials_early(cluster, tmp_path):
    rates = [1, 2, 3, 4, 5, 6, 7, 8]
    grid = tune.Tuner(
        tt.counted,
        param_space={"rate": tune.grid_search(rates), "marker_dir": str(tmp_path),
                     "steps": 9},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", max_concurrent_trials=1,
            scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha",
                                  verbose=0)).fit()
    assert grid.num_terminated == len(rates)
    runs = {rate: _iterations_run(tmp_path, rate) for rate in rates}
    # trials run one by one in rising quality: none is ever cut, except ...
    assert runs[8] == 9
    reported = {r.config["rate"]: r.metrics["training_iteration"] for r in grid}
    assert reported == runs        # a stopped trial ran no iteration past its last report
    # ... when they come in falling quality, later (worse) trials stop at a rung
    os.makedirs(tmp_path / "down")
    grid = tune.Tuner(
        tt.counted,
        param_space={"rate": tune.grid_search(rates[::-1]),
                     "marker_dir": str(tmp_path / "down"), "steps": 9},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", max_concurrent_trials=1,
            scheduler=AsyncHyperBandScheduler(max_t=9, grace_period=1,
                                              reduction_factor=3)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha2",
                                  verbose=0)).fit()
    runs = {rate: _iterations_run(tmp_path / "down", rate) for rate in rates}
    assert runs[8] == 9
    assert sum(1 for n in runs.values() if n < 9) >= 5, runs


def test_median_stopping_rule(cluster, tmp_path):
    grid = tune.Tuner(
        tt.counted,
        param_space={"rate": tune.grid_search([5, 4, 3, 2, 1]), "marker_dir": str(tmp_path),
                     "steps": 6},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", max_concurrent_trials=1,
            scheduler=MedianStoppingRule(time_attr="training_iteration", grace_period=1,
                                         min_samples_required=2)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="median",
                                  verbose=0)).fit()
    iterations = {r.config["rate"]: r.metrics["training_iteration"] for r in grid}
    assert iterations[5] == 6 and iterations[4] == 6
    assert iterations[1] < 6 and iterations[2] < 6


def test_pbt_clones_the_best_checkpoint(cluster, tmp_path):
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [0.1, 1.0, 10.0]},
                                  quantile_fraction=0.5, resample_probability=0.0)
    grid = tune.Tuner(
        tt.pbt_trainable, param_space={"lr": tune.grid_search([0.1, 10.0]), "population": 2,
                                       "barrier_dir": str(tmp_path), "step_s": 0.02},
        tune_config=tune.TuneConfig(metric="value", mode="max", scheduler=pbt),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "out"), name="pbt",
                                  stop={"training_iteration": 8}, verbose=0)).fit()
    assert grid.num_errors == 0
    values = sorted(r.metrics["value"] for r in grid)
    # the lr=0.1 trial alone would reach 0.8; cloning the lr=10 trial's
    # checkpoint puts it far above that
    assert values[0] > 5, [r.metrics for r in grid]
    assert all(r.metrics["training_iteration"] == 8 for r in grid)


def test_tuner_runs_a_torch_trainer(cluster, tmp_path):
    pytest.importorskip("torch")
    from tests import tasks
    from zray.train import ScalingConfig
    from zray.train.torch import TorchTrainer
    trainer = TorchTrainer(tasks.train_linear, train_loop_config={"epochs": 2},
                           scaling_config=ScalingConfig(num_workers=1))
    grid = tune.Tuner(trainer,
                      param_space={"train_loop_config": {"lr": tune.grid_search([0.05, 0.1])}},
                      tune_config=tune.TuneConfig(metric="loss", mode="min"),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), name="torch",
                                                verbose=0)).fit()
    assert grid.num_errors == 0, grid.errors
    assert sorted(r.config["train_loop_config"]["lr"] for r in grid) == [0.05, 0.1]
    best = grid.get_best_result()
    assert best.metrics["epoch"] == 1 and best.checkpoint is not None
    assert best.checkpoint.path.startswith(best.path)
