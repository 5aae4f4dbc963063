"""Tune throughput: 500 trivial trials x 10 reports (trials/s), and an ASHA run.

    python tools/tune_benchmark.py [--trials 500] [--repeats 3]
    python tools/tune_benchmark.py --compare ray       # + Ray Tune (peers venv), interleaved

Each run is a fresh process of one framework (zray with this interpreter, Ray
with /root/peers-venv/bin/python): ``init(num_cpus=2)`` outside the clock,
then two timed ``Tuner.fit()`` calls over ``--trials`` samples of
``{"x": uniform(0, 1)}`` with a function trainable that reports 10 times:

    fifo   the default scheduler (FIFO)
    asha   ASHAScheduler(max_t=10, grace_period=1, reduction_factor=3),
           metric "score", mode "max" (a trial's score is x * i, so low x stop early)

``--reuse-actors true`` passes ``TuneConfig(reuse_actors=True)`` to both (Ray 2.x
defaults to False: a new actor process per trial; zray reuses its runners
unless told False).

Rounds alternate the frameworks (zray first in even rounds, Ray first in odd
ones); medians over the rounds are printed at the end with the ratio, and each
run's load average (1 min) before it started.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PEER_PYTHON = "/root/peers-venv/bin/python"
REPORTS = 10
TUNE = None                  # the framework's tune module, set in one_run


def trivial(config):
    for i in range(REPORTS):
        TUNE.report({"score": config["x"] * i})


def one_run(module: str, trials: int, reuse_actors: str) -> dict:
    """Both workloads in this process, on ``module`` ("zray" or "ray")."""
    global TUNE
    framework = importlib.import_module(module)
    TUNE = importlib.import_module(f"{module}.tune")
    schedulers = importlib.import_module(f"{module}.tune.schedulers")
    init = {"num_cpus": 2}
    if module == "ray":
        init.update(include_dashboard=False, log_to_driver=False)
    framework.init(**init)
    out = {"load_1m": round(os.getloadavg()[0], 2), "reuse_actors": reuse_actors}
    reuse = {} if reuse_actors == "default" else {"reuse_actors": reuse_actors == "true"}
    try:
        for name in ("fifo", "asha"):
            scheduler = schedulers.ASHAScheduler(max_t=REPORTS, grace_period=1,
                                                 reduction_factor=3) \
                if name == "asha" else None
            with tempfile.TemporaryDirectory(prefix=f"tune-bench-{module}-") as storage:
                started = time.perf_counter()
                grid = TUNE.Tuner(
                    trivial, param_space={"x": TUNE.uniform(0, 1)},
                    tune_config=TUNE.TuneConfig(num_samples=trials, metric="score",
                                                mode="max", scheduler=scheduler, **reuse),
                    run_config=TUNE.RunConfig(storage_path=storage, name=name,
                                              verbose=0)).fit()
                seconds = time.perf_counter() - started
                iterations = sum((r.metrics or {}).get("training_iteration", 0) for r in grid)
                out[name] = {"trials": len(grid), "errors": grid.num_errors,
                             "seconds": round(seconds, 3), "iterations": iterations,
                             "trials_per_s": round(len(grid) / seconds, 2)}
    finally:
        framework.shutdown()
    return out


def spawn(system: str, trials: int, reuse_actors: str) -> dict:
    python = sys.executable if system == "zray" else PEER_PYTHON
    done = subprocess.run([python, os.path.abspath(__file__), "--one", system,
                           "--trials", str(trials), "--reuse-actors", reuse_actors],
                          capture_output=True, text=True, timeout=3600)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{system} run failed (exit {done.returncode}):\n"
                       f"{done.stderr[-3000:]}")


def summarize(runs: dict) -> None:
    medians: dict = {}
    for system, rows in runs.items():
        for name in ("fifo", "asha"):
            rates = [row[name]["trials_per_s"] for row in rows]
            seconds = [row[name]["seconds"] for row in rows]
            iterations = rows[-1][name]["iterations"]
            medians[(system, name)] = statistics.median(rates)
            print(f"{system:5s} {name:5s} median {statistics.median(rates):8.2f} trials/s "
                  f"({statistics.median(seconds):.2f} s for {rows[-1][name]['trials']} "
                  f"trials, {iterations} iterations in the last run); every run: {rates}")
    if "ray" in runs:
        for name in ("fifo", "asha"):
            ratio = medians[("zray", name)] / medians[("ray", name)]
            print(f"{name}: zray / Ray Tune = {ratio:.1f}x trial throughput (medians)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", choices=["ray"], default=None)
    parser.add_argument("--reuse-actors", choices=["default", "true", "false"],
                        default="default",
                        help="TuneConfig(reuse_actors=...) for both (default: each "
                             "framework's own default: zray reuses runners, Ray 2.x does not)")
    parser.add_argument("--one", choices=["zray", "ray"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(args.one, args.trials, args.reuse_actors)),
              flush=True)
        return
    systems = ["zray"]
    if args.compare == "ray":
        if os.path.exists(PEER_PYTHON):
            systems.append("ray")
        else:
            print(f"(Ray Tune skipped: {PEER_PYTHON} is absent)")
    runs: dict = {system: [] for system in systems}
    for round_index in range(args.repeats):
        order = systems if round_index % 2 == 0 else systems[::-1]
        for system in order:
            row = spawn(system, args.trials, args.reuse_actors)
            runs[system].append(row)
            print(f"round {round_index} {system}: {json.dumps(row)}", flush=True)
    summarize(runs)


if __name__ == "__main__":
    main()
