"""zray.data next to Ray Data and Dask on four workloads: wall time and peak memory.

    python tools/data_benchmark.py [--compare ray,dask] [--runs 3] [--scale 0.1]
                                   [--json out.json] [--data-dir DIR]

Workloads (sizes at --scale 1; every size is multiplied by --scale):
  etl      read 1 GiB of Parquet (generated once into --data-dir) -> map_batches
           numpy transform -> write Parquet
  groupby  sum of a float column over 10 M generated rows, 1,000 keys
  sort     sort 1 GiB of generated rows (16 float64 columns) by a float column
  infer    batch inference: a callable class on a pool of 2 actors over 1 M rows
           (actors take num_cpus=0.5: on 2 CPUs, 1-CPU actors leave none for the
           tasks that feed them and Ray Data waits forever; Dask: map_partitions
           with the model built once per worker process)

Each (framework, workload, run) runs in its own process, interleaved
(run 1: every workload on every framework, then run 2, ...), with a 2-CPU
cluster: zray/Ray ``init(num_cpus=2)``, Dask ``LocalCluster(n_workers=2,
threads_per_worker=1)``.  Wall time is the workload's alone, after the cluster
started with its worker processes up and pandas/pyarrow imported in them
(zray/Ray: two tasks that import them, Dask: ``client.run`` on every worker).  Peak memory is the highest sum, sampled every 0.2 s, of the RSS of
every process of the run: the driver's process tree plus any process carrying
the run's tag in its environment (catches daemons re-parented away from the
tree).  RSS counts a shared-memory page in every process that maps it, so
object stores read high when several processes map the same blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil

PEER_PYTHON = "/root/peers-venv/bin/python"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("etl", "groupby", "sort", "infer")
COLUMNS = 16
PARQUET_FILES = 16

CHILD = r'''
import json, os, sys, time
import numpy as np
framework, workload, scale, data_dir, out_dir = sys.argv[1:6]
scale = float(scale)
COLUMNS = {columns}

def transform(batch):
    return {{k: v * 2.0 + 1.0 for k, v in batch.items()}}

def gen_groupby(batch):
    ids = batch["id"]
    return {{"key": ids % 1000, "value": (ids % 97).astype(np.float64)}}

def gen_sort(batch):
    rng = np.random.default_rng(int(batch["id"][0]))
    out = {{"key": rng.random(len(batch["id"]))}}
    for c in range(COLUMNS - 1):
        out[f"c{{c}}"] = rng.random(len(batch["id"]))
    return out

def gen_features(batch):
    ids = batch["id"].astype(np.float64)
    return {{"x": np.stack([ids * (k + 1) % 7 for k in range(32)], axis=1)}}

class Model:
    def __init__(self):
        self.w = np.random.default_rng(0).random((32, 8))
    def __call__(self, batch):
        return {{"pred": (batch["x"] @ self.w).sum(axis=1)}}

groupby_rows = int(10_000_000 * scale)
sort_rows = int(2**30 * scale) // (8 * COLUMNS)
infer_rows = int(1_000_000 * scale)

if framework in ("zray", "ray"):
    import importlib
    ray = importlib.import_module(framework)
    kwargs = {{"_system_config": {{"worker_preload_modules": "numpy,pyarrow,pandas"}}}} \
        if framework == "zray" else {{"include_dashboard": False}}
    ray.init(num_cpus=2, **kwargs)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
    except Exception:
        pass

    @ray.remote
    def warm_up():
        import pandas, pyarrow  # noqa: F401
        time.sleep(0.5)
        return os.getpid()
    # the clock starts with worker processes up, as Dask's LocalCluster has them
    ray.get([warm_up.remote() for _ in range(2)])
    started = time.perf_counter()
    if workload == "etl":
        ray.data.read_parquet(data_dir).map_batches(transform, batch_format="numpy") \
            .write_parquet(out_dir)
        check = len(os.listdir(out_dir))
    elif workload == "groupby":
        rows = ray.data.range(groupby_rows).map_batches(gen_groupby).groupby("key") \
            .sum("value").take_all()
        check = [len(rows), sum(r["sum(value)"] for r in rows)]
    elif workload == "sort":
        ds = ray.data.range(sort_rows).map_batches(gen_sort).sort("key").materialize()
        check = ds.count()
    else:
        check = ray.data.range(infer_rows).map_batches(gen_features) \
            .map_batches(Model, concurrency=2, num_cpus=0.5,
                         batch_size=4096).sum("pred")
    seconds = time.perf_counter() - started
    ray.shutdown()
else:
    import dask.dataframe as dd
    import pandas as pd
    from dask.distributed import Client, LocalCluster, wait
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    client.run(lambda: (__import__("pandas"), __import__("pyarrow")) and None)
    parts = 16

    def chunk(i, rows, gen):
        lo, hi = rows * i // parts, rows * (i + 1) // parts
        return pd.DataFrame(gen({{"id": np.arange(lo, hi)}}))

    _model = {{}}
    def infer(df):
        model = _model.setdefault("m", Model())
        return pd.DataFrame({{"pred": model({{"x": np.stack([df[f"x{{k}}"].to_numpy() for k in range(32)], axis=1)}})["pred"]}})

    def features(i):
        lo, hi = infer_rows * i // parts, infer_rows * (i + 1) // parts
        x = gen_features({{"id": np.arange(lo, hi)}})["x"]
        return pd.DataFrame({{f"x{{k}}": x[:, k] for k in range(32)}})

    started = time.perf_counter()
    if workload == "etl":
        df = dd.read_parquet(data_dir)
        df.map_partitions(lambda p: p * 2.0 + 1.0).to_parquet(out_dir)
        check = len(os.listdir(out_dir))
    elif workload == "groupby":
        df = dd.from_map(chunk, range(parts), rows=groupby_rows, gen=gen_groupby)
        sums = df.groupby("key")["value"].sum().compute()
        check = [len(sums), float(sums.sum())]
    elif workload == "sort":
        df = dd.from_map(chunk, range(parts), rows=sort_rows, gen=gen_sort)
        df = df.sort_values("key").persist()
        wait(df)
        check = len(df)
    else:
        df = dd.from_map(features, range(parts))
        check = float(df.map_partitions(infer, meta={{"pred": "f8"}})["pred"].sum().compute())
    seconds = time.perf_counter() - started
    client.close()
    cluster.close()
print("RESULT " + json.dumps({{"seconds": seconds, "check": check}}))
'''.format(columns=COLUMNS)


class PeakRss:
    """Highest summed RSS of a process tree plus the processes tagged ``tag``."""

    def __init__(self, root_pid: int, tag: str):
        self.root_pid, self.tag = root_pid, tag
        self.peak_bytes = 0
        self._tagged: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _scan_tagged(self) -> None:
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("ZRAY_DATA_BENCH_TAG") == self.tag:
                    self._tagged.add(proc.pid)
            except (psutil.Error, OSError):
                continue

    def _poll(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_scan > 1.0:
                self._scan_tagged()
                last_scan = time.monotonic()
            pids = set(self._tagged)
            try:
                root = psutil.Process(self.root_pid)
                pids.add(root.pid)
                pids.update(p.pid for p in root.children(recursive=True))
            except psutil.Error:
                pass
            total = 0
            for pid in pids:
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def python_for(framework: str) -> str:
    return sys.executable if framework == "zray" else PEER_PYTHON


def make_parquet(data_dir: str, scale: float) -> str:
    """1 GiB x scale of float64 Parquet in PARQUET_FILES files (made once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = os.path.join(data_dir, f"etl-{scale:g}")
    if os.path.isdir(path) and len(os.listdir(path)) == PARQUET_FILES:
        return path
    os.makedirs(path, exist_ok=True)
    rows = int(2**30 * scale) // (8 * COLUMNS) // PARQUET_FILES
    rng = np.random.default_rng(0)
    for i in range(PARQUET_FILES):
        table = pa.table({f"c{c}": rng.random(rows) for c in range(COLUMNS)})
        pq.write_table(table, os.path.join(path, f"part-{i:03d}.parquet"))
    return path


def run_one(framework: str, workload: str, scale: float, data_dir: str,
            timeout_s: float = 1800) -> dict:
    tag = uuid.uuid4().hex
    env = dict(os.environ, ZRAY_DATA_BENCH_TAG=tag)
    if framework == "zray":
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        out_dir = os.path.join(tmp, "out")
        proc = subprocess.Popen([python_for(framework), "-c", CHILD, framework, workload,
                                 str(scale), data_dir, out_dir], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = PeakRss(proc.pid, tag)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_run(proc.pid, tag)
            stdout, stderr = proc.communicate()
            peak_bytes = peak.stop()
            return {"seconds": None, "error": f"killed after {timeout_s:g} s",
                    "peak_rss_mib": round(peak_bytes / 2**20), "check": None}
        peak_bytes = peak.stop()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["peak_rss_mib"] = round(peak_bytes / 2**20)
            return result
    print(f"{framework} {workload} failed (rc {proc.returncode}):\n{stderr[-3000:]}",
          file=sys.stderr)
    return {"seconds": None, "error": f"failed (rc {proc.returncode})",
            "peak_rss_mib": round(peak_bytes / 2**20), "check": None}


def _kill_run(pid: int, tag: str) -> None:
    """Kill a run that passed its time limit: its process tree and the
    processes carrying its tag (daemons re-parented away from the tree)."""
    victims = []
    try:
        root = psutil.Process(pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("ZRAY_DATA_BENCH_TAG") == tag:
                victims.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default="", help="comma list of ray, dask")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--json", default="data_benchmark.json")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds a run may take before it is killed (and "
                             "recorded as such)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "zray-data-bench"))
    args = parser.parse_args()
    frameworks = ["zray"] + [f for f in args.compare.split(",") if f]
    if len(frameworks) > 1 and not os.path.exists(PEER_PYTHON):
        print(f"{PEER_PYTHON} is missing: comparing nothing", file=sys.stderr)
        frameworks = ["zray"]
    workloads = [w for w in args.workloads.split(",") if w]
    parquet = make_parquet(args.data_dir, args.scale)
    results: dict = {w: {f: [] for f in frameworks} for w in workloads}
    for run in range(args.runs):
        for workload in workloads:
            for framework in frameworks:
                result = run_one(framework, workload, args.scale, parquet, args.timeout)
                results[workload][framework].append(result)
                seconds = (f"{result['seconds']:7.2f} s" if result["seconds"] is not None
                           else result["error"])
                print(f"run {run + 1} {workload:8s} {framework:5s} {seconds} "
                      f"{result['peak_rss_mib']:6d} MiB check={result['check']}", flush=True)
    print(f"\nscale {args.scale:g}, {args.runs} runs, medians "
          "(wall s / peak RSS MiB of all the run's processes)")
    print(f"{'workload':10s}" + "".join(f"{f:>20s}" for f in frameworks))
    summary: dict = {}
    for workload in workloads:
        cells, summary[workload] = [], {}
        for framework in frameworks:
            runs = [r for r in results[workload][framework] if r["seconds"] is not None]
            if not runs:
                summary[workload][framework] = {"median_s": None}
                cells.append(results[workload][framework][0]["error"])
                continue
            seconds = statistics.median(r["seconds"] for r in runs)
            mib = statistics.median(r["peak_rss_mib"] for r in runs)
            summary[workload][framework] = {"median_s": round(seconds, 2),
                                            "median_peak_rss_mib": mib,
                                            "runs_ok": len(runs)}
            cells.append(f"{seconds:8.2f} s {mib:7.0f} MiB")
        print(f"{workload:10s}" + "".join(f"{c:>20s}" for c in cells))
    with open(args.json, "w") as f:
        json.dump({"scale": args.scale, "runs": args.runs, "summary": summary,
                   "results": results}, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
