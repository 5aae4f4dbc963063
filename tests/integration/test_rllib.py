"""zray.rllib on a real local cluster: PPO learns CartPole-v1 with 2 env runner
actors, checkpoints round-trip, continuous actions, custom envs, a killed
runner is replaced, the seed's Ray 1.x program, Tune trials."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

import zray  # noqa: E402
from tests import rl_envs  # noqa: E402
from zray import tune  # noqa: E402
from zray.rllib.algorithms.algorithm import Algorithm  # noqa: E402
from zray.rllib.algorithms.ppo import PPO, PPOConfig  # noqa: E402

pytestmark = pytest.mark.timeout(120)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cluster():
    # logical CPUs: the trained algorithm's 2 runners stay up for the module, and
    # Tune counts the cluster's total (not what is free) when it starts trials
    zray.init(num_cpus=6)
    yield
    zray.shutdown()


def cartpole_config(**training):
    return (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2)
            .training(**{"lr": 1e-3, "gamma": 0.99, "lambda_": 0.95, "clip_param": 0.2,
                         "train_batch_size": 2000, "minibatch_size": 128, "num_epochs": 10,
                         "model": {"fcnet_hiddens": [64, 64]}, **training})
            .evaluation(evaluation_duration=5, evaluation_config={"explore": False})
            .debugging(seed=0))


@pytest.fixture(scope="module")
def trained(cluster):
    algo = cartpole_config().build_algo()
    results = []
    for _ in range(40):
        results.append(algo.train())
        if results[-1]["env_runners"]["episode_return_mean"] >= 150:
            break
    yield algo, results
    algo.stop()


@pytest.mark.timeout(240)
def test_ppo_learns_cartpole_with_two_env_runners(trained):
    algo, results = trained
    last = results[-1]
    assert last["env_runners"]["episode_return_mean"] >= 150, \
        [r["env_runners"]["episode_return_mean"] for r in results]
    runners = last["env_runners"]
    for key in ("episode_return_min", "episode_return_max", "episode_len_mean",
                "num_episodes", "num_env_steps_sampled"):
        assert key in runners
    assert runners["num_env_steps_sampled"] == 2000
    assert last["num_env_steps_sampled_lifetime"] == 2000 * len(results)
    assert last["training_iteration"] == len(results) == algo.iteration
    assert last["time_this_iter_s"] > 0 and last["time_total_s"] >= last["time_this_iter_s"]
    assert {"env_runner_sampling_timer", "learner_update_timer"} <= set(last["timers"])
    assert "policy_loss" in last["learners"]["default_policy"]
    # Ray 1.x's flat keys
    assert last["episode_reward_mean"] == runners["episode_return_mean"]
    assert last["timesteps_total"] == last["num_env_steps_sampled_lifetime"]
    assert last["episodes_this_iter"] == runners["num_episodes"]
    assert last["episode_len_mean"] == runners["episode_len_mean"]


def _greedy(algo, observations) -> list:
    return [algo.compute_single_action(obs, explore=False) for obs in observations]


def test_checkpoints_restore_the_same_greedy_actions(trained, tmp_path):
    algo, _ = trained
    observations = np.random.default_rng(0).uniform(-0.2, 0.2, (50, 4)).astype(np.float32)
    expected = _greedy(algo, observations)
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored, PPO) and restored.iteration == algo.iteration
        assert _greedy(restored, observations) == expected
        import torch
        logits = restored.get_module().forward_inference(
            {"obs": torch.from_numpy(observations)})["action_dist_inputs"]
        assert logits.argmax(dim=1).tolist() == expected
    finally:
        restored.stop()
    fresh = cartpole_config().env_runners(num_env_runners=0).build_algo()
    try:
        saved = algo.save(str(tmp_path / "ckpt2"))
        assert isinstance(saved, str) and saved.checkpoint.path == saved
        fresh.restore(saved)
        assert _greedy(fresh, observations) == expected
        assert fresh.train()["training_iteration"] == algo.iteration + 1
    finally:
        fresh.stop()


def test_evaluate_runs_greedy_episodes(trained):
    algo, _ = trained
    result = algo.evaluate()
    runners = result["env_runners"]
    assert runners["num_episodes"] == 5
    assert runners["episode_return_mean"] >= 100
    assert runners["episode_return_min"] <= runners["episode_return_max"]


@pytest.mark.timeout(180)
def test_continuous_actions_on_a_registered_env(cluster):
    tune.register_env("short_pendulum", rl_envs.pendulum)
    algo = (PPOConfig().environment("short_pendulum", env_config={"max_steps": 100})
            .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
            .training(train_batch_size=400, minibatch_size=100, num_epochs=2, lr=3e-4,
                      model={"fcnet_hiddens": [32, 32]})
            .debugging(seed=1).build())
    try:
        results = [algo.train() for _ in range(3)]
        last = results[-1]
        assert last["env_runners"]["num_env_steps_sampled"] == 400
        assert last["env_runners"]["num_episodes"] == 4     # 2 envs x 200 steps / 100 a episode
        assert last["num_episodes_lifetime"] == 12
        assert -100 * 16.3 <= last["env_runners"]["episode_return_mean"] <= 0
        assert math.isfinite(last["learners"]["default_policy"]["total_loss"])
        action = algo.compute_single_action(np.zeros(3, np.float32), explore=True)
        assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
    finally:
        algo.stop()


def test_an_env_class_with_env_config(cluster):
    algo = (PPOConfig().environment(rl_envs.Corridor, env_config={"length": 3})
            .env_runners(num_env_runners=0)
            .training(train_batch_size=200, minibatch_size=50, num_epochs=2)
            .build_algo())
    try:
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 200
        assert result["env_runners"]["num_episodes"] > 0
    finally:
        algo.stop()


def test_a_seed_makes_runs_repeat(cluster):
    def run():
        algo = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=1)
                .training(train_batch_size=300, minibatch_size=100, num_epochs=2)
                .debugging(seed=11).build_algo())
        try:
            results = [algo.train() for _ in range(2)]
            return ([r["hist_stats"]["episode_reward"] for r in results],
                    results[-1]["learners"]["default_policy"]["total_loss"])
        finally:
            algo.stop()
    assert run() == run()


@pytest.mark.timeout(120)
def test_a_killed_env_runner_is_replaced_and_nothing_is_counted_twice(cluster):
    algo = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=2)
            .training(train_batch_size=400, minibatch_size=100, num_epochs=1)
            .debugging(seed=0).build_algo())
    try:
        assert algo.train()["env_runners"]["num_env_steps_sampled"] == 400
        victim = algo.env_runner_group.actor(1)
        os.kill(zray.get(victim.pid.remote()), signal.SIGKILL)
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 200   # the survivor's
        assert result["fault_tolerance"] == {"num_healthy_workers": 2,
                                             "num_remote_worker_restarts": 1}
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 400   # both again
        assert result["num_env_steps_sampled_lifetime"] == 1000
        assert zray.get(algo.env_runner_group.actor(1).ping.remote()) == "ok"
    finally:
        algo.stop()


def test_evaluation_on_runner_actors_and_iteration_minimums(cluster):
    algo = (PPOConfig().environment(rl_envs.Corridor, env_config={"length": 3})
            .env_runners(num_env_runners=0)
            .training(train_batch_size=100, minibatch_size=50, num_epochs=1)
            .evaluation(evaluation_interval=1, evaluation_num_env_runners=2,
                        evaluation_duration=5)
            .reporting(min_sample_timesteps_per_iteration=250)
            .debugging(seed=2).build_algo())
    try:
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 300   # 3 training_steps
        assert result["learners"]["__all_modules__"]["num_env_steps_trained"] == 300
        assert result["evaluation"]["env_runners"]["num_episodes"] == 5
        assert result["evaluation"]["env_runners"]["episode_len_mean"] >= 3
    finally:
        algo.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        algo.train()


def test_an_env_that_raises_fails_train_with_its_error(cluster):
    algo = (PPOConfig().environment(rl_envs.Exploding).env_runners(num_env_runners=1)
            .training(train_batch_size=100, minibatch_size=50, num_epochs=1).build_algo())
    try:
        with pytest.raises(ValueError, match="the env exploded"):
            algo.train()
    finally:
        algo.stop()


@pytest.mark.timeout(180)
def test_the_seeds_ppotrainer_program_runs(tmp_path):
    """examples/seed_ppo.py: Ray 1.x's PPOTrainer with a config dict."""
    env = dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path))     # ~/zray_results
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "seed_ppo.py"), "3"],
                          env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "episode_reward_mean=" in line]
    assert len(lines) == 3 and "timesteps_total=6000" in lines[-1]
    saved = [line for line in done.stdout.splitlines() if "checkpoint saved in" in line]
    assert saved and saved[0].split()[-1].startswith(str(tmp_path / "zray_results" / "PPO"))
    assert saved[0].endswith("checkpoint_000003")


def test_the_ray1_trainer_reads_ray1_keys_and_saves(cluster, tmp_path):
    import zray as ray
    trainer = ray.rllib.agents.ppo.PPOTrainer(
        config={"num_workers": 0, "train_batch_size": 200, "sgd_minibatch_size": 50,
                "num_sgd_iter": 2, "lambda": 0.9, "model": {"fcnet_hiddens": [16]},
                "seed": 3}, env="CartPole-v1")
    try:
        assert trainer.config.lambda_ == 0.9 and trainer.config.minibatch_size == 50
        assert ray.rllib.agents.ppo.DEFAULT_CONFIG["num_sgd_iter"] == 30
        result = trainer.train()
        assert result["timesteps_total"] == 200 and result["training_iteration"] == 1
        assert "learner_stats" in result["info"]["learner"]["default_policy"]
        path = trainer.save(str(tmp_path))
        action = trainer.compute_action([0.0, 0.0, 0.0, 0.0], explore=False)
        trainer.train()
        trainer.restore(path)
        assert trainer.iteration == 1
        assert trainer.compute_action([0.0, 0.0, 0.0, 0.0], explore=False) == action
    finally:
        trainer.stop()


@pytest.mark.timeout(240)
def test_tuner_runs_ppo_by_name_and_by_class(cluster, tmp_path):
    tune.register_env("corridor", lambda env_config: rl_envs.Corridor(env_config))
    config = (PPOConfig().environment("corridor", env_config={"length": 4})
              .env_runners(num_env_runners=1)
              .training(lr=tune.grid_search([1e-3, 3e-4]), train_batch_size=200,
                        minibatch_size=50, num_epochs=2, model={"fcnet_hiddens": [16]}))
    grid = tune.Tuner("PPO", param_space=config,
                      run_config=tune.RunConfig(stop={"training_iteration": 2}, verbose=0,
                                                storage_path=str(tmp_path), name="by_name"),
                      tune_config=tune.TuneConfig(metric="env_runners/episode_return_mean",
                                                  mode="max")).fit()
    assert len(grid) == 2 and grid.num_errors == 0, grid.errors
    assert sorted(r.config["lr"] for r in grid) == [3e-4, 1e-3]
    for result in grid:
        assert result.metrics["training_iteration"] == 2
        assert result.metrics["env_runners"]["num_env_steps_sampled_lifetime"] == 400
    best = grid.get_best_result()
    assert best.metrics["env_runners/episode_return_mean"] == \
        best.metrics["env_runners"]["episode_return_mean"]
    by_class = tune.Tuner(PPO, param_space=config.copy(copy_frozen=False).training(
        lr=1e-3).to_dict(), run_config=tune.RunConfig(
        stop={"env_runners/num_env_steps_sampled_lifetime": 200}, verbose=0,
        storage_path=str(tmp_path), name="by_class")).fit()
    assert by_class.num_errors == 0, by_class.errors
    assert by_class[0].metrics["timesteps_total"] == 200
