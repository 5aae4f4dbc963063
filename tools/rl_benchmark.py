"""PPO on CartPole-v1 with 2 env runners: zray.rllib against RLlib, same settings.

    python tools/rl_benchmark.py                       # zray only, seeds 0-2
    python tools/rl_benchmark.py --compare ray         # + RLlib (peers venv), interleaved

Each run builds the algorithm (the cluster is started first, outside the
clock), then trains until the mean return over the last 20 episodes reaches
``--target`` (450), and reports: seconds to the target (train() calls only, and
with the algorithm's build), env steps to the target, and env steps per second
(sampled steps / sampling time, and overall steps / training time).
Runs alternate zray/RLlib per seed; medians are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PEERS_PYTHON = "/root/peers-venv/bin/python"
HYPERPARAMETERS = dict(lr=1e-3, gamma=0.99, lambda_=0.95, clip_param=0.2,
                       train_batch_size=2000, minibatch_size=128, num_epochs=10,
                       vf_loss_coeff=1.0, entropy_coeff=0.0)
HIDDENS = [64, 64]


def build_zray(seed: int):
    import zray
    from zray.rllib.algorithms.ppo import PPOConfig
    zray.init(num_cpus=3)
    return (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2, num_envs_per_env_runner=1)
            .training(**HYPERPARAMETERS, model={"fcnet_hiddens": HIDDENS})
            .reporting(metrics_num_episodes_for_smoothing=20)
            .debugging(seed=seed))


def build_ray(seed: int):
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    return (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2, num_envs_per_env_runner=1)
            .training(**HYPERPARAMETERS)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=HIDDENS))
            .reporting(metrics_num_episodes_for_smoothing=20)
            .debugging(seed=seed))


def one_run(backend: str, seed: int, target: float, limit_s: float) -> dict:
    config = build_zray(seed) if backend == "zray" else build_ray(seed)
    built = time.perf_counter()
    algo = config.build_algo()
    started = time.perf_counter()
    sample_s, steps, reached, mean = 0.0, 0, None, float("nan")
    while time.perf_counter() - started < limit_s:
        result = algo.train()
        steps = result["num_env_steps_sampled_lifetime"]
        # zray: this iteration's sampling time; RLlib: its timer is a moving average
        sample_s += result["timers"].get("env_runner_sampling_timer", 0.0)
        mean = result["env_runners"].get("episode_return_mean", float("nan"))
        if mean >= target:
            reached = time.perf_counter()
            break
    end = time.perf_counter()
    algo.stop()
    return {"backend": backend, "seed": seed, "reached": reached is not None,
            "train_s": (reached or end) - started, "with_build_s": (reached or end) - built,
            "env_steps": steps, "final_mean": mean,
            "steps_per_s": steps / max(end - started, 1e-9),
            "sample_steps_per_s": steps / sample_s if sample_s else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["ray"], default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--limit-s", type=float, default=400.0)
    parser.add_argument("--one", choices=["zray", "ray"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(args.one, args.seeds[0], args.target,
                                             args.limit_s)), flush=True)
        return
    backends = ["zray"] + (["ray"] if args.compare else [])
    runs = []
    for seed in args.seeds:
        for backend in backends:
            python = sys.executable if backend == "zray" else PEERS_PYTHON
            done = subprocess.run([python, os.path.abspath(__file__), "--one", backend,
                                   "--seeds", str(seed), "--target", str(args.target),
                                   "--limit-s", str(args.limit_s)],
                                  capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                print(f"{backend} seed {seed} failed:\n{done.stderr[-2000:]}")
                continue
            run = json.loads(line[0][7:])
            runs.append(run)
            print(json.dumps(run), flush=True)
    for backend in backends:
        mine = [r for r in runs if r["backend"] == backend]
        if mine:
            print(f"{backend}: reached {sum(r['reached'] for r in mine)}/{len(mine)}; median "
                  + ", ".join(f"{key} {statistics.median(r[key] for r in mine):.1f}"
                              for key in ("train_s", "with_build_s", "env_steps",
                                          "steps_per_s", "sample_steps_per_s")))


if __name__ == "__main__":
    main()
