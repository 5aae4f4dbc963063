#!/usr/bin/env python
"""CPU seconds per task, per put, per start-up: by process kind.

Wall-clock rates on a shared, loaded machine swing 2x from run to run; the
CPU time a process spends on a fixed piece of work moves less, though not
nothing (on the 2-core VM at load 15-25 the same tree's figures rose ~30%):
compare trees in alternated rounds, medians over them.  This tool starts a one-node cluster, runs fixed workloads and reports,
for each kind of process (driver, head, node manager, forkserver, workers),
the CPU time (user + sys, from psutil) it spent, per unit of work, as the
median of several repeats (each repeat a fresh cluster in a fresh process).

Workloads (the shapes of tools/microbenchmark.py's):

* ``init``: ``zray.init(num_cpus=2)`` up to the first task's result (the
  import of zray in the driver is not counted; ms in all).
* ``tasks_async``: ``--tasks`` no-op tasks, submitted in batches of 10,000,
  then got (us per task).
* ``tasks_sync``: ``--sync-tasks`` no-op tasks, one at a time (us per task).
* ``put_small``: ``--puts`` puts of a small int (us per put).
* ``wait_1000``: 1,000 no-op tasks then ``zray.wait`` on all (us per task).
* ``nested_fanout``: 10 tasks each submitting 100 children (us per task).
* ``idle``: the cluster sitting idle for ``--idle-s`` (ms of CPU per second).

Usage (from the root of the tree to measure; PYTHONPATH picks the tree)::

    PYTHONPATH=$PWD python tools/cpu_per_task.py --repeats 5
    cd /tmp/old && PYTHONPATH=$PWD python $BRANCH/tools/cpu_per_task.py --only tasks_async

``--json FILE`` writes every sample.  Processes are told apart by their
command line: ``zray.head``, ``zray.node``, the node's forkserver (child of the
node) and workers (everything else below the driver).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

import psutil

BATCH = 10_000
KINDS = ("driver", "head", "node", "forkserver", "workers", "total")


def process_kind(process: psutil.Process, node_pids: set[int]) -> str:
    try:
        cmdline = process.cmdline()
        parent = process.ppid()
    except psutil.Error:
        return "workers"
    if "zray.head" in cmdline:
        return "head"
    if "zray.node" in cmdline:
        node_pids.add(process.pid)
        return "node"
    if parent in node_pids and any("forkserver" in part for part in cmdline):
        return "forkserver"
    return "workers"


class CpuMeter:
    """Total CPU time of this process and all its descendants, by kind.

    Descendants are remembered from one snapshot to the next, so a worker
    that exits between two snapshots keeps the CPU time last seen for it
    (snapshots are taken right before and after a workload, while the
    cluster is up)."""

    def __init__(self):
        self.me = psutil.Process()
        self.known: dict[int, tuple[psutil.Process, str]] = {}
        self.last_cpu: dict[int, float] = {}
        self.node_pids: set[int] = set()

    def snapshot(self) -> dict[str, float]:
        children = self.me.children(recursive=True)
        children.sort(key=lambda p: p.pid)   # the node before its forkserver
        for child in children:
            if child.pid not in self.known:
                self.known[child.pid] = (child, process_kind(child, self.node_pids))
        totals = dict.fromkeys(KINDS, 0.0)
        for pid, (process, kind) in self.known.items():
            try:
                times = process.cpu_times()
                self.last_cpu[pid] = times.user + times.system
            except psutil.Error:
                pass
            totals[kind] += self.last_cpu.get(pid, 0.0)
        times = self.me.cpu_times()
        totals["driver"] = times.user + times.system
        totals["total"] = sum(totals[k] for k in KINDS[:-1])
        return totals


def delta(after: dict, before: dict, per: float) -> dict:
    return {k: (after[k] - before[k]) / per for k in KINDS}


def run_tasks_async(zray, f, args):
    done = 0
    while done < args.tasks:
        count = min(BATCH, args.tasks - done)
        zray.get([f.task.remote() for _ in range(count)])
        done += count
    return args.tasks


def run_tasks_sync(zray, f, args):
    for _ in range(args.sync_tasks):
        zray.get(f.task.remote())
    return args.sync_tasks


def run_put_small(zray, f, args):
    refs = [zray.put(i) for i in range(args.puts)]
    del refs
    return args.puts


def run_wait_1000(zray, f, args):
    for _ in range(args.wait_rounds):
        refs = [f.task.remote() for _ in range(1000)]
        zray.wait(refs, num_returns=len(refs))
    return args.wait_rounds * 1000


def run_nested_fanout(zray, f, args):
    for _ in range(args.fanout_rounds):
        total = sum(zray.get([f.parent.remote(100) for _ in range(10)]))
        assert total == 1000, total
    return args.fanout_rounds * 1010          # 10 parents + 1,000 children


def run_idle(zray, f, args):
    time.sleep(args.idle_s)
    return args.idle_s * 1e3                    # ms of CPU per second


WORKLOADS = {"tasks_async": run_tasks_async, "tasks_sync": run_tasks_sync,
             "put_small": run_put_small, "wait_1000": run_wait_1000,
             "nested_fanout": run_nested_fanout, "idle": run_idle}


def run_once(args, queue) -> None:
    """One repeat: a fresh cluster, every workload; results go on ``queue``."""
    import types
    import zray
    results = {}
    meter = CpuMeter()
    before = meter.snapshot()
    zray.init(num_cpus=2)

    def noop():
        return None

    def child():
        return 1

    def parent(children):
        return sum(zray.get([child_task.remote() for _ in range(children)]))

    task, child_task = zray.remote(noop), zray.remote(child)
    parent_task = zray.remote(parent)
    zray.get(task.remote())
    results["init"] = delta(meter.snapshot(), before, 1e-3)          # ms in all
    zray.get([task.remote() for _ in range(200)])                     # warm-up
    for _ in range(5):
        [zray.put(i) for i in range(200)]
    zray.get([parent_task.remote(5) for _ in range(4)])
    f = types.SimpleNamespace(task=task, parent=parent_task)
    for name in args.only:
        if name == "idle":
            time.sleep(1.0)                     # the warm-up's leftovers settle
        before = meter.snapshot()
        units = WORKLOADS[name](zray, f, args)
        results[name] = delta(meter.snapshot(), before, units * 1e-6)
    zray.shutdown()
    queue.put(results)


UNITS = {"init": "ms", "tasks_async": "us/task", "tasks_sync": "us/task",
         "put_small": "us/put", "wait_1000": "us/task", "nested_fanout": "us/task",
         "idle": "ms/s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--sync-tasks", type=int, default=2_000)
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--wait-rounds", type=int, default=5)
    parser.add_argument("--fanout-rounds", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads (init always runs)")
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument("--label", default=os.environ.get("PYTHONPATH", "."))
    args = parser.parse_args()
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")

    context = multiprocessing.get_context("spawn")
    samples = []
    for _ in range(args.repeats):
        queue = context.Queue()
        child = context.Process(target=run_once, args=(args, queue))
        child.start()
        samples.append(queue.get(timeout=600))
        child.join(60)

    print(f"# {args.label}  repeats={args.repeats}  load={os.getloadavg()[0]:.2f}")
    print(f"{'workload':<14} {'unit':<8}" + "".join(f"{k:>11}" for k in KINDS))
    medians = {}
    for workload, unit in UNITS.items():
        if workload not in samples[0]:
            continue
        row = {k: statistics.median(s[workload][k] for s in samples) for k in KINDS}
        medians[workload] = row
        print(f"{workload:<14} {unit:<8}" + "".join(f"{row[k]:>11.2f}" for k in KINDS))
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"label": args.label, "samples": samples, "medians": medians}, f)


if __name__ == "__main__":
    main()
