"""Scaling curves on this machine: tasks/s against the number of node managers,
and cross-node transfer GB/s against chunk size and window.

    python tools/scaling.py [--nodes 1,2,4] [--runs 3] [--json out.json] [--plot dir]

- ``tasks``: for each N, a ``cluster_utils.Cluster`` of N node managers with one
  CPU each (the head node among them); the driver submits ``--tasks`` no-op
  tasks and gets them all (as ``tasks_async``); median of ``--runs``.
- ``transfer``: two node managers; a 100 MB object made on the second is pulled
  by the driver's ``get`` into the first, for each chunk size x window (set
  through ZRAY_TRANSFER_CHUNK_BYTES / ZRAY_TRANSFER_WINDOW, so each pair gets a
  fresh cluster); median of ``--runs`` pulls of fresh objects.  CURVE is on, as
  by default; ``--insecure`` measures without it.

On a 2-core machine N node managers share two cores, so the tasks curve shows
the cost of more processes and more TCP hops, not the gain of more hosts.
Plots need matplotlib (only when ``--plot`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import zray
from zray.cluster_utils import Cluster

MB = 10**6


@zray.remote
def noop():
    return None


@zray.remote(resources={"source": 1})
def make_bytes(size):
    return np.ones(size, dtype=np.uint8)


def cluster_of(nodes: int, insecure: bool, source: bool = False) -> Cluster:
    system = {"insecure": True} if insecure else {}
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "_system_config": system})
    for i in range(nodes - 1):
        last = i == nodes - 2
        cluster.add_node(num_cpus=1, wait=False,
                         resources={"source": 1} if source and last else None)
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    return cluster


def close(cluster: Cluster) -> None:
    zray.shutdown()
    cluster.shutdown()


def tasks_rate(nodes: int, tasks: int, runs: int, insecure: bool) -> list:
    cluster = cluster_of(nodes, insecure)
    try:
        zray.get([noop.remote() for _ in range(200)])            # warm-up
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            zray.get([noop.remote() for _ in range(tasks)])
            rates.append(tasks / (time.perf_counter() - started))
        return rates
    finally:
        close(cluster)


def transfer_rate(chunk: int, window: int, runs: int, insecure: bool,
                  size: int = 100 * MB) -> list:
    os.environ["ZRAY_TRANSFER_CHUNK_BYTES"] = str(chunk)
    os.environ["ZRAY_TRANSFER_WINDOW"] = str(window)
    try:
        cluster = cluster_of(2, insecure, source=True)
    finally:
        del os.environ["ZRAY_TRANSFER_CHUNK_BYTES"], os.environ["ZRAY_TRANSFER_WINDOW"]
    try:
        rates = []
        for _ in range(runs + 1):                    # the first pull warms TCP up
            ref = make_bytes.remote(size)
            zray.wait([ref])
            started = time.perf_counter()
            value = zray.get(ref)
            rates.append(size / (time.perf_counter() - started) / 1e9)
            assert value.nbytes == size
            del value, ref
        return rates[1:]
    finally:
        close(cluster)


def plot(results: dict, folder: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    written = []
    if results.get("tasks"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [row["nodes"] for row in results["tasks"]]
        ax.plot(xs, [row["median"] for row in results["tasks"]], marker="o")
        ax.set_xlabel("node managers (1 CPU each)")
        ax.set_ylabel("tasks/s")
        ax.set_xticks(xs)
        ax.set_title("tasks_async vs node managers (2-core VM)")
        fig.tight_layout()
        path = os.path.join(folder, "scaling_tasks.png")
        fig.savefig(path, dpi=120)
        written.append(path)
    if results.get("transfer"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for window in sorted({row["window"] for row in results["transfer"]}):
            rows = [r for r in results["transfer"] if r["window"] == window]
            ax.plot([r["chunk_mib"] for r in rows], [r["median"] for r in rows],
                    marker="o", label=f"window {window}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chunk size (MiB)")
        ax.set_ylabel("GB/s")
        ax.set_title("100 MB pull between two nodes")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(folder, "scaling_transfer.png")
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--chunks-mib", default="1,4,16")
    parser.add_argument("--windows", default="1,4,8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["tasks", "transfer"])
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--plot", metavar="DIR")
    args = parser.parse_args(argv)
    results = {"insecure": args.insecure, "runs": args.runs}
    if args.only in (None, "tasks"):
        results["tasks"] = []
        print(f"{'nodes':>5}  {'tasks/s (median)':>16}  runs")
        for nodes in [int(n) for n in args.nodes.split(",")]:
            rates = tasks_rate(nodes, args.tasks, args.runs, args.insecure)
            results["tasks"].append({"nodes": nodes, "median": statistics.median(rates),
                                     "samples": rates})
            print(f"{nodes:>5}  {statistics.median(rates):>16,.0f}  "
                  f"{', '.join(f'{r:,.0f}' for r in rates)}", flush=True)
    if args.only in (None, "transfer"):
        results["transfer"] = []
        print(f"\n{'chunk MiB':>9}  {'window':>6}  {'GB/s (median)':>13}  runs")
        for chunk in [int(c) for c in args.chunks_mib.split(",")]:
            for window in [int(w) for w in args.windows.split(",")]:
                rates = transfer_rate(chunk * 2**20, window, args.runs, args.insecure)
                results["transfer"].append({"chunk_mib": chunk, "window": window,
                                            "median": statistics.median(rates),
                                            "samples": rates})
                print(f"{chunk:>9}  {window:>6}  {statistics.median(rates):>13.3f}  "
                      f"{', '.join(f'{r:.2f}' for r in rates)}", flush=True)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        try:
            for path in plot(results, args.plot):
                print(f"wrote {path}")
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib); tables above",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
