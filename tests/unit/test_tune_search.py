"""zray.tune's OptunaSearch (its space conversion and ask/tell bookkeeping)
and tune.Callback hooks, driven without processes."""

from __future__ import annotations

import cloudpickle
import pytest

from zray import tune
from zray.tune import _controller as ctl
from zray.tune.callback import CallbackList
from zray.tune.schedulers import FIFOScheduler
from zray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator

pytestmark = pytest.mark.timeout(30)


def _optuna():
    return pytest.importorskip("optuna")


def test_tune_domains_become_optuna_distributions():
    ot = _optuna()
    from zray.tune.search.optuna import OptunaSearch
    space = OptunaSearch.convert_search_space({
        "u": tune.uniform(0, 2), "qu": tune.quniform(0, 1, 0.25),
        "lu": tune.loguniform(1e-4, 1e-1), "ri": tune.randint(1, 5),
        "qri": tune.qrandint(0, 10, 5), "c": tune.choice(["a", "b"]),
        "nested": {"lri": tune.lograndint(1, 100)}, "constant": 3})
    d = ot.distributions
    assert space == {
        "u": d.FloatDistribution(0, 2), "qu": d.FloatDistribution(0, 1, step=0.25),
        "lu": d.FloatDistribution(1e-4, 1e-1, log=True),
        "ri": d.IntDistribution(1, 4),                  # randint excludes its upper bound
        "qri": d.IntDistribution(0, 10, step=5),        # qrandint includes it
        "c": d.CategoricalDistribution(["a", "b"]),
        "nested/lri": d.IntDistribution(1, 99, log=True)}
    with pytest.raises(ValueError, match="grid_search"):
        OptunaSearch.convert_search_space({"g": tune.grid_search([1, 2])})
    with pytest.raises(ValueError, match="Optuna has no such distribution"):
        OptunaSearch.convert_search_space({"n": tune.randn(0, 1)})


def test_optuna_asks_tells_and_pickles():
    ot = _optuna()
    from zray.tune.search.optuna import OptunaSearch
    searcher = OptunaSearch(seed=1, points_to_evaluate=[{"x": 1.5, "n": {"k": 2}}])
    generator = SearchGenerator(searcher)
    assert generator.set_search_properties(
        "score", "max", {"x": tune.uniform(0, 2), "n": {"k": tune.randint(1, 4)}, "c": 7},
        num_samples=3)
    config, tag = generator.next_trial("a")
    assert config == {"x": 1.5, "n": {"k": 2}, "c": 7}       # the given point first
    generator.on_trial_result("a", {"score": 0.5, "training_iteration": 1})
    generator.on_trial_complete("a", {"score": 0.9, "training_iteration": 2})
    config, _ = generator.next_trial("b")
    assert 0 <= config["x"] <= 2 and config["n"]["k"] in (1, 2, 3) and config["c"] == 7
    generator.on_trial_complete("b", None, error=True)
    generator.next_trial("c")
    generator.on_trial_complete("c", {"other": 1})        # ended with no metric: pruned
    assert generator.is_finished() and generator.next_trial("d") is None
    states = [t.state for t in searcher._ot_study.trials]
    state = ot.trial.TrialState
    assert states == [state.COMPLETE, state.FAIL, state.PRUNED]
    first = searcher._ot_study.trials[0]
    assert first.value == 0.9 and first.intermediate_values == {1: 0.5}
    again = cloudpickle.loads(cloudpickle.dumps(generator))    # the experiment journal
    assert len(again.searcher._ot_study.trials) == 3


def test_optuna_own_space_define_by_run_and_evaluated_rewards():
    ot = _optuna()
    from zray.tune.search.optuna import OptunaSearch

    def space(trial):
        x = trial.suggest_float("x", 0, 1)
        if x > 0.5:
            trial.suggest_int("extra", 1, 2)
        return {"fixed": "yes"}
    searcher = OptunaSearch(space, metric="m", mode="min", seed=0)
    assert searcher.set_search_properties(None, None, {}) is False      # has its own
    for i in range(6):
        config = searcher.suggest(str(i))
        assert config["fixed"] == "yes" and ("extra" in config) == (config["x"] > 0.5)
    warm = OptunaSearch({"a": ot.distributions.FloatDistribution(0, 1)}, metric="m",
                        mode="max", points_to_evaluate=[{"a": 0.3}], evaluated_rewards=[2.0])
    assert [t.value for t in warm._ot_study.trials] == [2.0]
    with pytest.raises(ValueError, match="one reward per point"):
        OptunaSearch(points_to_evaluate=[{"a": 1}], evaluated_rewards=[1, 2])
    with pytest.raises(RuntimeError, match="metric and mode"):
        OptunaSearch({"a": ot.distributions.FloatDistribution(0, 1)}).suggest("x")


class Recorder(tune.Callback):
    def __init__(self):
        self.events = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.append(("start", trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.append(("result", trial.trial_id, result["training_iteration"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append(("complete", trial.trial_id))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.events.append(("recover", trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.events.append(("error", trial.trial_id))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.events.append(("checkpoint", trial.trial_id, checkpoint.path))


def test_callbacks_see_every_transition_in_order():
    recorder = Recorder()
    gen = BasicVariantGenerator()
    gen.set_search_properties(None, None, {"x": tune.grid_search([1, 2])}, num_samples=1)
    controller = ctl.TuneController(
        gen, FIFOScheduler(), None,
        ctl.ControllerConfig(capacity={"CPU": 2}, max_failures=1), experiment_id="e",
        callbacks=CallbackList([recorder]))
    controller.start(0.0)
    controller.on_results("e_00000", [({"training_iteration": 1}, "/c/checkpoint_000000"),
                                      ({"training_iteration": 2}, None)], True, 1.0)
    controller.on_error("e_00001", ValueError("once"), 1.0)        # retried
    controller.on_error("e_00001", ValueError("twice"), 2.0)       # recorded
    assert recorder.events == [
        ("start", "e_00000"), ("start", "e_00001"),
        ("checkpoint", "e_00000", "/c/checkpoint_000000"), ("result", "e_00000", 1),
        ("result", "e_00000", 2), ("complete", "e_00000"),
        ("recover", "e_00001"), ("start", "e_00001"), ("error", "e_00001")]
    with pytest.raises(TypeError, match="tune.Callback"):
        CallbackList([object()])


def test_concurrency_limiter_wraps_optuna():
    _optuna()
    from zray.tune.search.optuna import OptunaSearch
    limiter = ConcurrencyLimiter(OptunaSearch(metric="m", mode="max", seed=0),
                                 max_concurrent=1)
    generator = SearchGenerator(limiter)
    generator.set_search_properties(None, None, {"a": tune.uniform(0, 1)}, num_samples=5)
    assert generator.next_trial("a") is not None and generator.next_trial("b") is None
    generator.on_trial_complete("a", {"m": 1.0})
    assert generator.next_trial("b") is not None
