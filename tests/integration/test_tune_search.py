"""zray.tune on a real cluster (2 CPUs): OptunaSearch (a failing trial is
told to Optuna as FAIL, a seed repeats a run), tune.Callback hooks, and
with_parameters sending a large object through the object store."""

from __future__ import annotations

import threading

import cloudpickle
import numpy as np
import pytest

import zray
from tests import tune_trainables as tt
from zray import tune

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2)
    yield
    zray.shutdown()


def _run(trainable, tmp_path, param_space, callbacks=None, **tune_config):
    return tune.Tuner(trainable, param_space=param_space,
                      tune_config=tune.TuneConfig(**tune_config),
                      run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                                callbacks=callbacks, verbose=0)).fit()


def test_optuna_search_tells_results_and_failures(cluster, tmp_path):
    ot = pytest.importorskip("optuna")
    from zray.tune.search.optuna import OptunaSearch
    searcher = OptunaSearch(seed=3, points_to_evaluate=[{"x": 5.9}, {"x": 3.0}])
    space = {"x": tune.uniform(0, 6), "unused": {"c": tune.choice(["a", "b"])}}
    grid = _run(tt.fails_above, tmp_path, space, metric="score", mode="max",
                num_samples=10, max_concurrent_trials=2, search_alg=searcher)
    assert len(grid) == 10
    assert all(0 <= r.config["x"] <= 6 and r.config["unused"]["c"] in "ab" for r in grid)
    too_large = [r for r in grid if r.config["x"] > 5.5]
    assert grid.num_errors == len(too_large) >= 1              # the first point fails
    assert grid.num_terminated == 10 - len(too_large)
    assert grid.get_best_result().config["x"] == 3.0            # the second point is best
    state = ot.trial.TrialState
    by_x = {t.params["x"]: t for t in searcher._ot_study.trials}
    assert len(by_x) == 10
    for result in grid:
        told = by_x[result.config["x"]]
        if result.error is not None:
            assert told.state == state.FAIL
        else:
            assert told.state == state.COMPLETE and told.value == result.metrics["score"]
            assert told.intermediate_values[1] == pytest.approx(result.metrics["score"] - 0.01)


def test_optuna_seed_repeats_and_one_space_only(cluster, tmp_path):
    pytest.importorskip("optuna")
    from zray.tune.search.optuna import OptunaSearch
    space = {"x": tune.uniform(0, 6), "steps": 1}
    runs = [_run(tt.quadratic, tmp_path / str(i), space, metric="score", mode="max",
                 num_samples=4, max_concurrent_trials=1, search_alg=OptunaSearch(seed=11))
            for i in range(2)]
    assert [r.config for r in runs[0]] == [r.config for r in runs[1]]
    with pytest.raises(ValueError, match="grid_search"):
        _run(tt.quadratic, tmp_path / "g", {"x": tune.grid_search([1, 2])}, metric="score",
             mode="max", search_alg=OptunaSearch())
    import optuna
    own = OptunaSearch({"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score",
                       mode="max")
    with pytest.raises(ValueError, match="its own search space"):
        _run(tt.quadratic, tmp_path / "o", space, search_alg=own)


class Recorder(tune.Callback):
    """Counts what the hooks saw; holds a lock, so it does not pickle."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.calls.append(("setup", total_num_samples))

    def on_trial_start(self, iteration, trials, trial, **info):
        self.calls.append(("start", trial.config["x"]))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.calls.append(("result", trial.config["x"], result["score"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.calls.append(("complete", trial.config["x"]))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.calls.append(("error", trial.config["x"]))

    def on_step_end(self, iteration, trials, **info):
        self.calls.append(("step", iteration, len(trials)))

    def on_experiment_end(self, trials, **info):
        self.calls.append(("end", sorted(t.status.value for t in trials)))


def test_callbacks_see_results_completions_and_errors(cluster, tmp_path):
    recorder = Recorder()
    grid = _run(tt.fails_sometimes, tmp_path, {"x": tune.grid_search([1, 2, 3])},
                callbacks=[recorder])
    assert grid.num_errors == 1
    calls = recorder.calls
    assert calls[0] == ("setup", 3)
    assert calls[-1] == ("end", ["ERROR", "TERMINATED", "TERMINATED"])
    assert sorted(c[1] for c in calls if c[0] == "start") == [1, 2, 3]
    assert sorted(c[1:] for c in calls if c[0] == "result") == [
        (1, 1), (1, 10), (2, 2), (3, 3), (3, 30)]
    assert sorted(c[1] for c in calls if c[0] == "complete") == [1, 3]
    assert [c[1] for c in calls if c[0] == "error"] == [2]
    steps = [c[1] for c in calls if c[0] == "step"]
    assert steps and steps == sorted(steps)
    for x in (1, 3):          # a trial starts, reports, then completes
        positions = [i for i, c in enumerate(calls) if c[0] in ("start", "complete")
                     and c[1] == x]
        assert calls[positions[0]][0] == "start" and calls[positions[-1]][0] == "complete"


def test_with_parameters_sends_a_large_object_once(cluster, tmp_path):
    data = np.ones(1_000_000, dtype=np.float64)          # 8 MB
    trainable = tune.with_parameters(tt.sums_array, data=data)
    assert len(cloudpickle.dumps(trainable)) < 100_000      # a reference, not the array
    grid = _run(trainable, tmp_path, {"k": tune.grid_search([1, 2, 3, 4])})
    assert sorted(r.metrics["total"] for r in grid) == [1e6, 2e6, 3e6, 4e6]
    assert all(r.metrics["size"] == 1_000_000 for r in grid)
