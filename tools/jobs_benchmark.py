"""Timings of jobs and runtime_env packages (docs/benchmarks.md).

    python tools/jobs_benchmark.py [--runs 5] [--mb 10]
    sudo python tools/jobs_benchmark.py --compare ray [--runs 3] [--mb 10]

With --compare ray: the CLI figures of tools/jobs_compare.py instead (zray on
three simulated hosts against Ray's `ray job submit` on one host).

Starts a cluster with `zray start --head` in a temp dir, then measures:
- submit -> first line: JobSubmissionClient.submit_job of an entrypoint that
  prints one line (plain python; and one that calls zray.init() first) until
  that line is in the job's log;
- a random (incompressible) working_dir of --mb MB: a fresh driver's
  init(runtime_env=...) up to its first task's result, first (pack, upload,
  unpack on the node) and again with the same content (cached: hash only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIRST_TASK = """
import os, sys, time, zray
started = time.perf_counter()
zray.init(address=sys.argv[1], runtime_env={"working_dir": sys.argv[2]})
@zray.remote
def f():
    import payload_marker
    return payload_marker.X
assert zray.get(f.remote()) == 1
print(time.perf_counter() - started)
"""


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "zray", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def first_line_s(client, entrypoint) -> float:
    started = time.perf_counter()
    job_id = client.submit_job(entrypoint=entrypoint)
    deadline = started + 60
    while "first" not in client.get_job_logs(job_id):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"job {job_id} printed nothing in 60 s: "
                               f"{client.get_job_info(job_id)}")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    while not client.get_job_status(job_id).is_terminal():
        time.sleep(0.01)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--compare", choices=["ray"],
                        help="zray's CLI on 3 simulated hosts against Ray's on one host")
    args = parser.parse_args(argv)
    if args.compare:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from jobs_compare import compare
        print(json.dumps(compare(args.runs, args.mb), indent=1))
        return 0
    temp = tempfile.mkdtemp(prefix="zb", dir="/tmp")
    env = dict(os.environ, ZRAY_TEMP_DIR=temp,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    started = cli("start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1",
                  "--num-cpus", "2", env=env)
    address = re.search(r"zray head started at (\S+)", started.stdout).group(1)
    results = {}
    try:
        os.environ["ZRAY_TEMP_DIR"] = temp
        from zray.job_submission import JobSubmissionClient
        client = JobSubmissionClient(address)
        first_line_s(client, "echo first")                 # starts the supervisor
        plain = [first_line_s(client, "python -c \"print('first', flush=True)\"")
                 for _ in range(args.runs)]
        joined = [first_line_s(client, "python -c \"import zray; zray.init(); "
                                       "print('first', flush=True)\"")
                  for _ in range(args.runs)]
        client.close()
        results["submit_to_first_line_s"] = statistics.median(plain)
        results["submit_to_first_line_with_init_s"] = statistics.median(joined)
        first, cached = [], []
        for _ in range(args.runs):
            wd = tempfile.mkdtemp(prefix="zbwd", dir="/tmp")
            with open(os.path.join(wd, "payload.bin"), "wb") as f:
                f.write(os.urandom(args.mb * 10**6))
            with open(os.path.join(wd, "payload_marker.py"), "w") as f:
                f.write("X = 1\n")
            for series in (first, cached):
                out = subprocess.run([sys.executable, "-c", FIRST_TASK, address, wd],
                                     capture_output=True, text=True, env=env, timeout=120)
                series.append(float(out.stdout.strip().splitlines()[-1]))
            shutil.rmtree(wd)
        results[f"working_dir_{args.mb}mb_first_s"] = statistics.median(first)
        results[f"working_dir_{args.mb}mb_cached_s"] = statistics.median(cached)
    finally:
        cli("stop", env=env)
        shutil.rmtree(temp, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
