"""Hyperparameter search with zray.tune (Ray Tune's API): random + grid
search with ASHA cutting poor trials early.  Runs in seconds on a laptop."""

import zray as ray
from zray import tune
from zray.tune.schedulers import ASHAScheduler


def objective(config):
    loss = 10.0
    for step in range(20):
        loss = loss * (1 - config["lr"]) + config["noise"]
        tune.report({"loss": loss, "step": step})


if __name__ == "__main__":
    ray.init(num_cpus=2)
    grid = tune.Tuner(
        objective,
        param_space={"lr": tune.loguniform(1e-3, 0.5), "noise": tune.grid_search([0.0, 0.1])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=8,
                                    scheduler=ASHAScheduler(max_t=20, grace_period=2)),
        run_config=tune.RunConfig(name="tune_search_example")).fit()
    best = grid.get_best_result()
    print(f"{len(grid)} trials; best loss {best.metrics['loss']:.4f} with {best.config}")
    ray.shutdown()
