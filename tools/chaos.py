"""Chaos run: a map-reduce over a Cluster while nodes are killed and added.

Four node managers (the head node plus three), one CPU each, heartbeats fast
enough that a killed node is declared dead within about a second.  While the
driver runs a map-reduce of ``--maps`` tasks (each map makes an array that lives
in a node's shared memory; reducers sum groups of them; the driver adds the
partial sums), a chaos thread SIGKILLs a random non-head node every
``--every-s`` seconds and adds a fresh one.  The answer is compared with the one
computed locally; it must match exactly, every run.

    python tools/chaos.py --runs 5 [--maps 1000] [--every-s 2]

Prints what was killed and when, and how long each run took (a run with no
chaos is the baseline for the recovery cost).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time

import numpy as np

import zray
from zray.cluster_utils import Cluster

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}
ELEMENTS = 20_000                       # 160 KB per map output: shared memory
GROUP = 25                              # map outputs per reducer


@zray.remote(max_retries=-1)
def mapper(seed: int):
    rng = np.random.default_rng(seed)
    time.sleep(0.005)
    return rng.integers(0, 1000, size=ELEMENTS, dtype=np.int64)


@zray.remote(max_retries=-1)
def reducer(*parts):
    return int(sum(int(p.sum()) for p in parts))


def expected_total(maps: int) -> int:
    return sum(int(np.random.default_rng(s).integers(0, 1000, size=ELEMENTS,
                                                      dtype=np.int64).sum())
               for s in range(maps))


def map_reduce(maps: int) -> int:
    mapped = [mapper.remote(seed) for seed in range(maps)]
    partial = [reducer.remote(*mapped[i:i + GROUP]) for i in range(0, maps, GROUP)]
    del mapped
    return sum(zray.get(partial, timeout=600))


class Chaos(threading.Thread):
    """Every ``every_s`` seconds: kill one non-head node, add a new one."""

    def __init__(self, cluster: Cluster, every_s: float, seed: int, log):
        super().__init__(name="chaos", daemon=True)
        self.cluster = cluster
        self.every_s = every_s
        self.rng = random.Random(seed)
        self.log = log
        self.stop = threading.Event()
        self.kills = 0

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(self.every_s):
            victims = list(self.cluster.worker_nodes)
            if not victims:
                continue
            victim = self.rng.choice(victims)
            self.cluster.remove_node(victim, allow_graceful=False)
            self.kills += 1
            added = self.cluster.add_node(num_cpus=1, wait=False)
            self.log(f"  t={time.monotonic() - started:5.1f}s killed node "
                     f"{victim.node_id[:12]} (SIGKILL), added {added.node_id[:12]}")


def run_once(maps: int, every_s: float, seed: int, expected: int, log) -> tuple:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    chaos = None
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=1, wait=False)
        cluster.wait_for_nodes()
        zray.init(address=cluster.address)
        chaos = Chaos(cluster, every_s, seed, log) if every_s > 0 else None
        started = time.monotonic()
        if chaos is not None:
            chaos.start()
        total = map_reduce(maps)
        elapsed = time.monotonic() - started
    finally:
        if chaos is not None:
            chaos.stop.set()
            chaos.join()
        zray.shutdown()
        cluster.shutdown()
    return total == expected, elapsed, (chaos.kills if chaos else 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--maps", type=int, default=1000)
    parser.add_argument("--every-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    expected = expected_total(args.maps)
    ok, baseline_s, _ = run_once(args.maps, 0, args.seed, expected, print)
    print(f"baseline (no chaos): {'OK' if ok else 'WRONG'} in {baseline_s:.1f} s")
    failures = 0 if ok else 1
    for run in range(args.runs):
        print(f"run {run + 1}: map-reduce of {args.maps} maps, a node killed and one "
              f"added every {args.every_s:g} s")
        ok, elapsed, kills = run_once(args.maps, args.every_s, args.seed + run, expected,
                                      print)
        failures += not ok
        print(f"run {run + 1}: {'OK' if ok else 'WRONG'} in {elapsed:.1f} s with {kills} "
              f"node(s) killed ({elapsed - baseline_s:+.1f} s against the baseline)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
