"""zray.tune's decisions without processes: search spaces, the trial
controller, schedulers and stoppers."""

from __future__ import annotations

import numpy as np
import pytest

from zray.tune import _controller as ctl
from zray.tune._trial import IllegalTransition, Status, Trial
from zray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from zray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from zray.tune.search import sample as s
from zray.tune.stopper import CombinedStopper, MaximumIterationStopper, as_stopper

pytestmark = pytest.mark.timeout(30)


def _generator(space, num_samples=1, seed=None):
    gen = BasicVariantGenerator(random_state=seed)
    gen.set_search_properties(None, None, space, num_samples=num_samples)
    return gen


def _configs(gen):
    out = []
    while not gen.is_finished():
        out.append(gen.next_trial(f"t{len(out)}")[0])
    return out


def test_grid_is_repeated_num_samples_times_first_key_fastest():
    configs = _configs(_generator({"a": s.grid_search([1, 2]), "b": s.grid_search(["x", "y"]),
                                   "c": {"d": 5}}, num_samples=2))
    assert [(c["a"], c["b"]) for c in configs] == [(1, "x"), (2, "x"), (1, "y"), (2, "y")] * 2
    assert all(c["c"] == {"d": 5} for c in configs)


def test_seeded_draws_repeat_and_sample_from_sees_resolved_values():
    space = {"u": s.uniform(0, 1), "n": {"i": s.randint(0, 100)},
             "f": s.sample_from(lambda spec: spec.config.n.i * 2)}
    first, second = _configs(_generator(space, 5, seed=3)), _configs(_generator(space, 5, 3))
    assert first == second and all(c["f"] == c["n"]["i"] * 2 for c in first)
    np.random.seed(11)
    a = _configs(_generator(space, 3))
    np.random.seed(11)
    assert _configs(_generator(space, 3)) == a          # np.random.seed works, as in Ray


def test_domains_respect_their_bounds():
    rng = np.random.default_rng(0)
    assert all(s.qrandint(0, 10, 5).sample(random_state=rng) in (0, 5, 10) for _ in range(50))
    assert all(0 <= s.randint(0, 2).sample(random_state=rng) < 2 for _ in range(50))
    assert all(1 <= s.lograndint(1, 100).sample(random_state=rng) < 100 for _ in range(50))
    values = s.quniform(0, 1, 0.25).sample(size=50, random_state=rng)
    assert set(values) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    with pytest.raises(ValueError):
        s.loguniform(0, 1)
    with pytest.raises(ValueError):
        s.uniform(2, 1)


def test_trial_states_move_only_as_the_table_allows():
    trial = Trial("t", 0, {}, "0", {"CPU": 1})
    trial.set_status(Status.RUNNING)
    trial.set_status(Status.TERMINATED)
    with pytest.raises(IllegalTransition):
        trial.set_status(Status.RUNNING)


def _controller(space, scheduler=None, stopper=None, num_samples=1, **config):
    gen = _generator(space, num_samples)
    config.setdefault("capacity", {"CPU": 2})
    return ctl.TuneController(gen, scheduler or FIFOScheduler(), stopper,
                              ctl.ControllerConfig(**config), experiment_id="exp")


def _kinds(commands):
    return [(c.kind, c.trial.trial_id if c.trial else None) for c in commands]


def test_controller_starts_what_fits_and_the_next_when_one_ends():
    controller = _controller({"x": s.grid_search([1, 2, 3])})
    assert _kinds(controller.start(0.0)) == [("START", "exp_00000"), ("START", "exp_00001")]
    assert controller.used == {"CPU": 2}
    result = {"score": 1, "training_iteration": 1}
    assert controller.on_results("exp_00000", [(result, None)], True, 1.0) == []
    assert _kinds(controller.step(1.0)) == [("START", "exp_00002")]
    assert controller.trials["exp_00000"].last_result["done"] is True
    for trial_id in ("exp_00001", "exp_00002"):
        controller.on_results(trial_id, [(result, None)], True, 2.0)
    assert controller.is_finished() and controller.used == {"CPU": 0}


def test_max_concurrent_trials_and_a_concurrency_limited_searcher():
    controller = _controller({"x": s.grid_search([1, 2, 3])}, max_concurrent_trials=1)
    assert len(controller.start(0.0)) == 1

    class Fixed(Searcher):
        def suggest(self, trial_id):
            return {"x": 1}
    limiter = ConcurrencyLimiter(Fixed(), max_concurrent=1)
    assert limiter.suggest("a") == {"x": 1} and limiter.suggest("b") is None
    limiter.on_trial_complete("a")
    assert limiter.suggest("b") == {"x": 1}


def test_errors_retry_until_max_failures_then_are_recorded():
    controller = _controller({"x": 1}, max_failures=1)
    controller.start(0.0)
    commands = controller.on_error("exp_00000", ValueError("boom"), 1.0)
    assert _kinds(commands) == [("START", "exp_00000")]       # retried
    controller.on_error("exp_00000", ValueError("again"), 2.0)
    trial = controller.trials["exp_00000"]
    assert trial.status == Status.ERROR and str(trial.error) == "again"
    assert controller.is_finished()


def test_stopper_stops_and_discards_the_rest_of_a_batch():
    controller = _controller({"x": 1}, stopper=as_stopper({"training_iteration": 2}))
    controller.start(0.0)
    batch = [({"training_iteration": i}, None) for i in (1, 2, 3)]
    assert _kinds(controller.on_results("exp_00000", batch, False, 1.0)) == [
        ("STOP", "exp_00000")]
    assert controller.trials["exp_00000"].last_result["training_iteration"] == 2
    assert len(controller.trials["exp_00000"].history) == 2


def test_time_budget_ends_everything():
    controller = _controller({"x": s.grid_search([1, 2, 3])}, time_budget_s=5)
    controller.start(0.0)
    commands = controller.step(6.0)
    assert sorted(c.kind for c in commands) == ["STOP", "STOP"]
    assert controller.is_finished()
    assert [t.status for t in controller.get_trials()] == [Status.TERMINATED] * 3


def test_checkpoints_beyond_num_to_keep_are_deleted_worst_first():
    controller = _controller({"x": 1}, num_to_keep=2, checkpoint_score_attribute="acc")
    controller.start(0.0)
    batch = [({"acc": acc, "training_iteration": i + 1}, f"/d/checkpoint_{i:06d}")
             for i, acc in enumerate([0.9, 0.1, 0.5])]
    commands = controller.on_results("exp_00000", batch, False, 1.0)
    assert [c.path for c in commands if c.kind == "DELETE"] == ["/d/checkpoint_000001"]
    trial = controller.trials["exp_00000"]
    assert trial.checkpoint.path == "/d/checkpoint_000002" and trial.next_checkpoint_index == 3
    assert trial.restore_point[0] == 3


def test_asha_cuts_a_trial_below_the_rung_cutoff():
    scheduler = ASHAScheduler(metric="score", mode="max", max_t=9, grace_period=1,
                              reduction_factor=3)
    controller = _controller({"x": s.grid_search([1, 2, 3, 4])}, scheduler=scheduler,
                             max_concurrent_trials=4, capacity={"CPU": 4})
    controller.start(0.0)
    actions = {}
    for trial_id, score in [("exp_00000", 10), ("exp_00001", 9), ("exp_00002", 8),
                            ("exp_00003", 1)]:
        commands = controller.on_results(trial_id, [({"score": score,
                                                      "training_iteration": 1}, None)],
                                         False, 1.0)
        actions[trial_id] = commands[0].kind
    assert actions == {"exp_00000": "CONTINUE", "exp_00001": "STOP",
                       "exp_00002": "STOP", "exp_00003": "STOP"}


def test_pbt_exploits_the_top_trial_into_the_bottom_one():
    pbt = PopulationBasedTraining(time_attr="training_iteration", metric="v", mode="max",
                                  perturbation_interval=1,
                                  hyperparam_mutations={"lr": [1, 2, 3]},
                                  quantile_fraction=0.5, resample_probability=0.0)
    controller = _controller({"lr": s.grid_search([1, 3])}, scheduler=pbt)
    controller.start(0.0)
    top = controller.trials["exp_00001"]
    controller.on_results("exp_00001", [({"v": 9, "training_iteration": 1},
                                         "/d1/checkpoint_000000")], False, 1.0)
    commands = controller.on_results("exp_00000", [({"v": 1, "training_iteration": 1},
                                                    None)], False, 1.0)
    assert _kinds(commands) == [("PAUSE", "exp_00000")] and commands[0].save is False
    bottom = controller.trials["exp_00000"]
    assert bottom.checkpoint == top.checkpoint and bottom.config["lr"] in (2, 3)
    assert _kinds(controller.on_paused("exp_00000", None, 2.0)) == [("START", "exp_00000")]


def test_stoppers_combine():
    stopper = CombinedStopper(MaximumIterationStopper(2), as_stopper(
        lambda trial_id, result: result.get("bad", False)))
    assert not stopper("a", {}) and stopper("a", {}) and stopper("b", {"bad": True})


def test_progress_table_shows_status_iteration_and_metric():
    import io
    from zray.tune._progress import ProgressTable
    controller = _controller({"x": s.grid_search([1, 2, 3])}, metric="score")
    controller.start(0.0)
    controller.on_results("exp_00000", [({"score": 0.5, "training_iteration": 4,
                                          "time_total_s": 1.25}, None)], True, 1.0)
    stream = io.StringIO()
    table = ProgressTable("score", stream=stream, refresh_s=60)
    table.update(controller)
    table.update(controller)                  # within refresh_s: not drawn again
    text = stream.getvalue()
    assert text.count("== Status ==") == 1 and "3 trials" in text
    assert "1 PENDING" in text and "1 RUNNING" in text and "1 TERMINATED" in text
    row = [line for line in text.splitlines() if "exp_00000" in line][0].split()
    assert row[1:] == ["TERMINATED", "4", "1.25", "0.5"]
    assert "score" in text.splitlines()[1]


def test_step_mode_grants_results_up_to_the_next_asha_rung():
    asha = ASHAScheduler(metric="score", mode="max", max_t=10, grace_period=1,
                         reduction_factor=3)
    controller = _controller({"x": 1}, scheduler=asha)
    (start,) = controller.start(0.0)
    assert start.kind == "START" and start.count == 1          # rung 1
    counts = []
    for iteration in (1, 3, 9):
        (command,) = controller.on_results(
            "exp_00000", [({"score": iteration, "training_iteration": iteration}, None)],
            False, 1.0)
        counts.append(command.count)
    assert counts == [2, 6, 1]                                  # to 3, to 9, to max_t 10
    (command,) = controller.on_results(
        "exp_00000", [({"score": 10, "training_iteration": 10}, None)], False, 2.0)
    assert command.kind == "STOP"
    # a result without the metric, or a function stop criterion: one result a call
    controller = _controller({"x": 1}, scheduler=ASHAScheduler(metric="score", mode="max",
                                                               max_t=10))
    controller.start(0.0)
    (command,) = controller.on_results("exp_00000", [({"training_iteration": 1}, None)],
                                       False, 1.0)
    assert command.count == 1
    controller = _controller({"x": 1}, scheduler=ASHAScheduler(metric="score", mode="max",
                                                               max_t=10),
                             stopper=as_stopper(lambda trial_id, result: False))
    assert controller.start(0.0)[0].count == 1
