"""zray.tune on a real local cluster (2 CPUs): search spaces, ResultGrid,
class and function trainables, stoppers, errors and retries, concurrency."""

from __future__ import annotations

import os
import time

import pytest

import zray
from tests import tune_trainables as tt
from zray import tune
from zray.tune.stopper import Stopper

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2)
    yield
    zray.shutdown()


def _run(trainable, tmp_path, param_space=None, stop=None, failure_config=None,
         **tune_config):
    return tune.Tuner(trainable, param_space=param_space or {},
                      tune_config=tune.TuneConfig(**tune_config),
                      run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                                stop=stop, failure_config=failure_config,
                                                verbose=0)).fit()


def test_grid_times_samples_and_the_result_grid(cluster, tmp_path):
    grid = _run(tt.quadratic, tmp_path,
                {"x": tune.grid_search([1, 3, 5]), "steps": 3,
                 "nested": {"lr": tune.loguniform(1e-4, 1e-1)}},
                metric="score", mode="max", num_samples=2)
    assert len(grid) == 6 and grid.num_terminated == 6 and grid.num_errors == 0
    assert sorted(r.config["x"] for r in grid) == [1, 1, 3, 3, 5, 5]
    assert all(1e-4 <= r.config["nested"]["lr"] <= 1e-1 for r in grid)
    best = grid.get_best_result()
    assert best.config["x"] == 3 and best.metrics["training_iteration"] == 3
    assert best.metrics["done"] is True and best.error is None
    for key in ("time_this_iter_s", "time_total_s", "timestamp", "trial_id", "pid",
                "hostname", "date", "iterations_since_restore", "time_since_restore"):
        assert key in best.metrics, key
    assert os.path.isdir(best.path) and best.path.startswith(str(tmp_path / "exp"))
    assert list(best.metrics_dataframe["step"]) == [0, 1, 2]
    assert grid.get_best_result("score", "min").config["x"] in (1, 5)
    assert grid.get_best_result("step", "max", scope="avg").metrics["step"] == 2
    frame = grid.get_dataframe()
    assert len(frame) == 6 and "config/x" in frame and "config/nested/lr" in frame
    assert list(grid.get_dataframe(filter_metric="step", filter_mode="min")["step"]) == [0] * 6
    assert [r.config for r in grid][0] == grid[0].config
    with pytest.raises(ValueError, match="No metric"):
        tune.ResultGrid([], None, None, "").get_best_result()


def test_every_search_space_primitive(cluster, tmp_path):
    space = {"u": tune.uniform(-1, 1), "qu": tune.quniform(0, 10, 0.5),
             "lu": tune.loguniform(1e-3, 1), "qlu": tune.qloguniform(1e-2, 1, 1e-2),
             "n": tune.randn(5, 0.1), "ri": tune.randint(0, 3), "qri": tune.qrandint(0, 10, 5),
             "c": tune.choice(["a", "b"]),
             "sf": tune.sample_from(lambda spec: spec.config.ri * 100),
             "x": 3, "steps": 1}
    grid = _run(tt.quadratic, tmp_path, space, num_samples=6,
                search_alg=tune.search.BasicVariantGenerator(random_state=7))
    for result in grid:
        c = result.config
        assert -1 <= c["u"] <= 1 and (c["qu"] * 2) == int(c["qu"] * 2)
        assert 1e-3 <= c["lu"] <= 1 and 1e-2 <= c["qlu"] <= 1
        assert 4 < c["n"] < 6 and c["ri"] in (0, 1, 2) and c["qri"] in (0, 5, 10)
        assert c["c"] in ("a", "b") and c["sf"] == c["ri"] * 100
    again = _run(tt.quadratic, tmp_path / "again", space, num_samples=6,
                 search_alg=tune.search.BasicVariantGenerator(random_state=7))
    assert [r.config for r in grid] == [r.config for r in again]     # seeded


def test_a_failing_trial_is_recorded_and_the_others_finish(cluster, tmp_path):
    grid = _run(tt.fails_sometimes, tmp_path, {"x": tune.grid_search([1, 2, 3])})
    assert grid.num_errors == 1 and grid.num_terminated == 2
    assert len(grid.errors) == 1 and isinstance(grid.errors[0], ValueError)
    failed = [r for r in grid if r.error is not None][0]
    assert failed.config["x"] == 2 and failed.metrics["score"] == 2
    assert sorted(r.metrics["score"] for r in grid if r.error is None) == [10, 30]


def test_max_failures_retries_from_the_last_checkpoint(cluster, tmp_path):
    marker = str(tmp_path / "failed")
    grid = _run(tt.checkpointing, tmp_path, {"steps": 4, "fail_at": 2, "marker": marker},
                failure_config=tune.FailureConfig(max_failures=1))
    result = grid[0]
    assert os.path.exists(marker) and result.error is None
    assert result.metrics["step"] == 3 and result.metrics["start"] == 2
    assert result.metrics["training_iteration"] == 4      # continued, not restarted
    assert result.checkpoint.path.endswith("checkpoint_000003")


def test_max_concurrent_trials_holds(cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    _run(tt.concurrent, tmp_path, {"marker_dir": str(markers)}, num_samples=4,
         max_concurrent_trials=1)
    assert (markers / "max-seen").read_text().split() == ["1"] * 4
    _run(tt.concurrent, tmp_path / "two", {"marker_dir": str(markers)}, num_samples=6,
         max_concurrent_trials=2)
    assert max(map(int, (markers / "max-seen").read_text().split())) <= 2


def test_with_resources_limits_concurrency(cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    _run(tune.with_resources(tt.concurrent, {"cpu": 2}), tmp_path,
         {"marker_dir": str(markers)}, num_samples=3)
    assert (markers / "max-seen").read_text().split() == ["1"] * 3


def test_stop_criteria_dict_function_and_stopper(cluster, tmp_path):
    space = {"marker_dir": str(tmp_path), "rate": tune.grid_search([1, 2]), "steps": 10}
    grid = _run(tt.counted, tmp_path / "a", space, stop={"training_iteration": 3})
    assert [r.metrics["training_iteration"] for r in grid] == [3, 3]
    grid = _run(tt.counted, tmp_path / "b", space,
                stop=lambda trial_id, result: result["score"] >= 4)
    assert sorted(r.metrics["score"] for r in grid) == [4, 4]

    class StopAtTwo(Stopper):
        def __call__(self, trial_id, result):
            return result["training_iteration"] >= 2

    grid = _run(tt.counted, tmp_path / "c", space, stop=StopAtTwo())
    assert [r.metrics["training_iteration"] for r in grid] == [2, 2]


def test_class_trainable_checkpoints_and_with_parameters(cluster, tmp_path):
    trainable = tune.with_parameters(tt.Counter, offset=100)
    grid = tune.Tuner(trainable, param_space={"increment": tune.grid_search([1, 2])},
                      run_config=tune.RunConfig(
                          name="cls", storage_path=str(tmp_path), stop={"count": 105},
                          checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=2,
                                                                  checkpoint_at_end=True),
                          verbose=0)).fit()
    counts = sorted(r.metrics["count"] for r in grid)
    assert counts == [105, 106]
    for result in grid:
        assert result.checkpoint is not None and os.path.isdir(result.checkpoint.path)
    grid = _run(tune.with_parameters(tt.uses_parameters, data=[1, 2, 3]), tmp_path / "p",
                {"k": tune.grid_search([1, 10])})
    assert sorted(r.metrics["total"] for r in grid) == [6, 60]


def test_train_report_returned_dicts_and_runner_reuse(cluster, tmp_path):
    grid = _run(tt.via_train_report, tmp_path, {"v": tune.grid_search([1, 2])})
    assert sorted(r.metrics["value"] for r in grid) == [2, 3]
    grid = _run(tt.returns_dict, tmp_path / "r", {"v": 4})
    assert grid[0].metrics["final"] == 8
    grid = _run(tt.where_am_i, tmp_path / "w", {}, num_samples=6)
    assert len({r.metrics["pid"] for r in grid}) <= 2        # runners are reused
    assert len({r.metrics["id"] for r in grid}) == 6
    assert grid[0].metrics["resources"] == {"CPU": 1}


def test_time_budget_ends_the_run(cluster, tmp_path):
    started = time.monotonic()
    grid = _run(tt.forever, tmp_path, {}, num_samples=2, time_budget_s=2)
    assert time.monotonic() - started < 8
    assert grid.num_terminated == 2 and grid.num_errors == 0


def test_a_trial_needing_more_than_the_cluster_fails_clearly(cluster, tmp_path):
    with pytest.raises(tune.TuneError, match="zray.init"):
        _run(tune.with_resources(tt.quadratic, {"cpu": 8}), tmp_path, {"x": 1})
