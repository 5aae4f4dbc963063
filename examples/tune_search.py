"""Hyperparameter search with zray.tune (Ray Tune's API): random + grid
search with ASHA cutting poor trials early, then (when optuna is installed)
the same objective searched by OptunaSearch.  Runs in seconds on a laptop.

    python examples/tune_search.py
"""

import tempfile

import zray as ray
from zray import tune
from zray.tune.schedulers import ASHAScheduler


def objective(config):
    loss = 10.0
    for step in range(20):
        loss = loss * (1 - config["lr"]) + config["noise"]
        tune.report({"loss": loss, "step": step})


class PrintBest(tune.Callback):
    """A callback: says when a trial beats the best loss so far."""

    def __init__(self):
        self.best = float("inf")

    def on_trial_complete(self, iteration, trials, trial, **info):
        loss = trial.last_result.get("loss", float("inf"))
        if loss < self.best:
            self.best = loss
            print(f"  new best loss {loss:.4f} from {trial} (lr={trial.config['lr']:.4f})")


def random_and_grid(storage: str) -> None:
    grid = tune.Tuner(
        objective,
        param_space={"lr": tune.loguniform(1e-3, 0.5), "noise": tune.grid_search([0.0, 0.1])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=8,
                                    scheduler=ASHAScheduler(max_t=20, grace_period=2)),
        run_config=tune.RunConfig(name="tune_search_example", storage_path=storage,
                                  callbacks=[PrintBest()])).fit()
    best = grid.get_best_result()
    print(f"{len(grid)} trials; best loss {best.metrics['loss']:.4f} with {best.config}")


def optuna_search(storage: str) -> None:
    try:
        from zray.tune.search.optuna import OptunaSearch
        OptunaSearch()
    except ImportError as exc:
        print(f"(OptunaSearch skipped: {exc})")
        return
    grid = tune.Tuner(
        objective,
        param_space={"lr": tune.loguniform(1e-3, 0.5), "noise": tune.choice([0.0, 0.1])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=16,
                                    max_concurrent_trials=2,
                                    search_alg=OptunaSearch(seed=0)),
        run_config=tune.RunConfig(name="optuna_example", storage_path=storage,
                                  verbose=0)).fit()
    best = grid.get_best_result()
    print(f"OptunaSearch: {len(grid)} trials; best loss {best.metrics['loss']:.4f} "
          f"with {best.config}")


if __name__ == "__main__":
    ray.init(num_cpus=2)
    with tempfile.TemporaryDirectory() as storage:
        random_and_grid(storage)
        optuna_search(storage)
    ray.shutdown()
