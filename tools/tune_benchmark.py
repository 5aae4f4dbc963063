"""Tune throughput: 500 trivial trials x 10 reports (trials/s), and an ASHA run.

    python tools/tune_benchmark.py [--trials 500] [--compare ray]

``--compare ray`` runs the same program on Ray Tune with
/root/peers-venv/bin/python (skipped when that interpreter is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PEER_PYTHON = "/root/peers-venv/bin/python"

BODY = """
import json, sys, tempfile, time
import {module} as ray
from {module} import tune

def trivial(config):
    for i in range(10):
        tune.report({{"score": config["x"] * i}})

ray.init(num_cpus=2)
out = {{}}
n = int(sys.argv[1])
for name, scheduler in (("fifo", None), ("asha", "asha")):
    kwargs = {{}}
    if scheduler:
        from {module}.tune.schedulers import ASHAScheduler
        kwargs["scheduler"] = ASHAScheduler(max_t=10, grace_period=1, reduction_factor=3)
    started = time.perf_counter()
    grid = tune.Tuner(trivial, param_space={{"x": tune.uniform(0, 1)}},
                      tune_config=tune.TuneConfig(num_samples=n, metric="score", mode="max",
                                                  **kwargs),
                      run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(),
                                                verbose=0)).fit()
    seconds = time.perf_counter() - started
    out[name] = {{"trials": len(grid), "seconds": round(seconds, 2),
                 "trials_per_s": round(len(grid) / seconds, 1)}}
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def run(python: str, module: str, trials: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BODY.format(module=module))
    try:
        done = subprocess.run([python, f.name, str(trials)], capture_output=True, text=True,
                              timeout=1800)
    finally:
        os.unlink(f.name)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{module} run failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--compare", choices=["ray"], default=None)
    args = parser.parse_args()
    results = {"zray": run(sys.executable, "zray", args.trials)}
    if args.compare == "ray":
        if os.path.exists(PEER_PYTHON):
            results["ray"] = run(PEER_PYTHON, "ray", args.trials)
        else:
            print(f"(ray skipped: {PEER_PYTHON} is absent)")
    for system, figures in results.items():
        for name, row in figures.items():
            print(f"{system:5s} {name:5s} {row['trials']} trials in {row['seconds']} s: "
                  f"{row['trials_per_s']} trials/s")


if __name__ == "__main__":
    main()
