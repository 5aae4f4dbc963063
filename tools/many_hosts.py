"""A zray cluster over simulated hosts: the real `zray start` CLI in network
namespaces (see netns_harness.py), a driver program, and injected faults.

    with ZrayHosts(n_hosts=3) as cluster:          # head on host 0, nodes on 1 and 2
        print(cluster.run_driver(0, "print(zray.cluster_resources())"))
        cluster.cut(2); cluster.heal(2)
        cluster.kill_node(1)

Each host has its own temp dir (the hosts share one filesystem), so `zray stop`
on one host stops only what was started there.  Run this file to do a map-reduce
over every host, cut and heal a link, and do it again:

    sudo python tools/many_hosts.py [--hosts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_harness import NetnsHarness, available  # noqa: E402

PORT = 6380

DRIVER_PRELUDE = """\
import os, sys, json, time
import zray
zray.init(address=os.environ["ZRAY_TEST_HEAD"])
"""

MAP_REDUCE = """\
import numpy as np

@zray.remote
def mapper(seed, size):
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 1000, size=size)          # > inline size: moves between hosts
    return part, zray.get_runtime_context().get_node_id()

@zray.remote
def partial_sum(mapped):
    part, _ = mapped
    return int(part.sum())

maps = [mapper.options(scheduling_strategy="SPREAD").remote(seed, 40_000)
        for seed in range(NUM_MAPS)]
sums = [partial_sum.options(scheduling_strategy="SPREAD").remote(m) for m in maps]
nodes = {zray.get(m)[1] for m in maps}
total = sum(zray.get(sums))
expected = sum(int(np.random.default_rng(s).integers(0, 1000, size=40_000).sum())
               for s in range(NUM_MAPS))
print(json.dumps({"total": total, "expected": expected, "nodes": sorted(nodes)}))
"""


CHAOS_DRIVER = """\
sys.path.insert(0, TOOLS)
import chaos
started = time.monotonic()
total = chaos.map_reduce(NUM_MAPS)
print(json.dumps({"ok": total == chaos.expected_total(NUM_MAPS),
                  "elapsed_s": time.monotonic() - started}))
"""

#: Heartbeats fast enough that a cut link gets its node declared dead in ~1 s.
FAST_FAILURE_ENV = {"ZRAY_HEARTBEAT_INTERVAL_S": "0.1", "ZRAY_HEARTBEAT_MISSED_LIMIT": "10"}


class ZrayHosts:
    """A head on host 0 and a node on every other host, started with the CLI."""

    def __init__(self, n_hosts: int = 3, num_cpus: int = 1, env: dict | None = None,
                 insecure: bool = False):
        self.net = NetnsHarness(n_hosts)
        self.root = tempfile.mkdtemp(prefix="zh", dir="/tmp")    # short: socket paths
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("ZRAY_ADDRESS", None)
        self.address = f"{self.net.hosts[0].ip}:{PORT}"
        security = ["--insecure"] if insecure else []
        if insecure:
            self.env["ZRAY_INSECURE"] = "1"
        try:
            self._zray(0, "start", "--head", "--port", str(PORT),
                       "--node-ip-address", self.net.hosts[0].ip,
                       "--num-cpus", str(num_cpus), *security)
            if not insecure:      # the key other hosts would get by scp
                head = [e for e in self._records() if e["role"] == "head"][0]
                self.key_file = os.path.join(head["session_dir"], "cluster.key")
                self.env["ZRAY_CLUSTER_KEY_FILE"] = self.key_file
            for host in self.net.hosts[1:]:
                self._zray(host.index, "start", "--address", self.address,
                           "--num-cpus", str(num_cpus), *security)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "ZrayHosts":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def hosts(self):
        return self.net.hosts

    def temp_dir(self, index: int) -> str:
        return os.path.join(self.root, f"h{index}")

    def cli(self, index: int, *args: str, timeout_s: float = 60.0, env: dict | None = None,
            popen: bool = False):
        """`zray ARGS` on host ``index`` with that host's temp dir (and the key, unless
        ``env`` changes it; a None value unsets a variable): its CompletedProcess, or its Popen (text pipes) if
        ``popen``."""
        environ = dict(self.env, ZRAY_TEMP_DIR=self.temp_dir(index))
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}     # None: unset
        argv = [sys.executable, "-m", "zray", *args]
        if popen:
            import subprocess
            return self.net.popen(index, argv, env=environ, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        return self.net.run(index, argv, timeout_s=timeout_s, env=environ)

    def head_log(self) -> str:
        """The head's log (host 0's session), for what it refused."""
        import glob
        text = ""
        for path in glob.glob(os.path.join(self.temp_dir(0), "session_*", "logs",
                                           "head.log")):
            with open(path, errors="replace") as f:
                text += f.read()
        return text

    def _zray(self, index: int, *args: str, timeout_s: float = 60.0) -> str:
        result = self.cli(index, *args, timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"`zray {' '.join(args)}` on host {index} failed "
                               f"({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _records(self) -> list:
        records = []
        for host in self.net.hosts:
            path = os.path.join(self.temp_dir(host.index), "started.json")
            try:
                with open(path) as f:
                    records += [dict(e, host=host.index) for e in json.load(f)]
            except (FileNotFoundError, ValueError):
                pass
        return records

    def node_pid(self, index: int) -> int:
        for entry in self._records():
            if entry["host"] == index and entry["role"] == "node":
                return entry["pid"]
        raise LookupError(f"no node recorded on host {index}")

    # --- driving and faults ------------------------------------------------------------

    def run_driver(self, index: int, body: str, timeout_s: float = 120.0,
                   **substitutions) -> str:
        """Run a driver program on host ``index``; ``body`` follows a prelude that
        connects to the head (names in ``substitutions`` are defined first)."""
        source = DRIVER_PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in substitutions.items())
        source += textwrap.dedent(body)
        env = dict(self.env, ZRAY_TEST_HEAD=self.address,
                   ZRAY_TEMP_DIR=self.temp_dir(index))
        result = self.net.run(index, [sys.executable, "-c", source], timeout_s=timeout_s,
                              env=env)
        if result.returncode != 0:
            raise RuntimeError(f"driver on host {index} failed ({result.returncode}):\n"
                               f"{result.stderr[-3000:]}")
        return result.stdout

    def map_reduce(self, index: int = 0, num_maps: int = 24) -> dict:
        return json.loads(self.run_driver(index, MAP_REDUCE, NUM_MAPS=num_maps)
                          .strip().splitlines()[-1])

    def chaos_map_reduce(self, num_maps: int = 1000, every_s: float = 3.0,
                         cut_s: float = 2.0, seed: int = 1, log=print) -> dict:
        """tools/chaos.py's map-reduce, driven from host 0, while every ``every_s``
        a random other host's link is cut for ``cut_s`` (longer than the
        dead-node limit, so its node is declared dead, its work redone elsewhere,
        and it rejoins as a new node once healed)."""
        import random
        import threading
        rng = random.Random(seed)
        stop = threading.Event()
        cuts = []

        def inject():
            started = time.monotonic()
            while not stop.wait(every_s):
                victim = rng.randrange(1, len(self.hosts))
                self.cut(victim)
                log(f"  t={time.monotonic() - started:5.1f}s cut host {victim} "
                    f"({self.hosts[victim].ip}) for {cut_s:g} s")
                stop.wait(cut_s)
                self.heal(victim)
                cuts.append(victim)
        thread = threading.Thread(target=inject, daemon=True)
        thread.start()
        try:
            out = self.run_driver(0, CHAOS_DRIVER, timeout_s=300, NUM_MAPS=num_maps,
                                  TOOLS=os.path.dirname(os.path.abspath(__file__)))
        finally:
            stop.set()
            thread.join()
        result = json.loads(out.strip().splitlines()[-1])
        result["cuts"] = len(cuts)
        return result

    def status(self) -> str:
        return self._zray(0, "status")

    def cut(self, index: int) -> None:
        self.net.cut(index)

    def heal(self, index: int) -> None:
        self.net.heal(index)

    def kill_node(self, index: int) -> int:
        """SIGKILL the node manager on host ``index``; returns its pid."""
        pid = self.node_pid(index)
        self.net.kill(pid)
        return pid

    def close(self) -> None:
        for host in reversed(self.net.hosts):
            try:
                self._zray(host.index, "stop", "--grace-s", "5")
            except Exception as exc:  # the harness still kills what is left
                print(f"zray stop on host {host.index} failed: {exc}", file=sys.stderr)
        self.net.close()
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--cut-s", type=float, default=2.0,
                        help="seconds host 1's link stays cut")
    parser.add_argument("--chaos", type=int, default=0, metavar="RUNS",
                        help="instead: RUNS chaos map-reduces of 1,000 maps, cutting a "
                             "random host's link for 1.5 s every 1.5 s")
    args = parser.parse_args(argv)
    ok, reason = available()
    if not ok:
        print(f"cannot make namespaces here: {reason}")
        return 2
    if args.chaos:
        return chaos_main(args.hosts, args.chaos)
    with ZrayHosts(args.hosts) as cluster:
        print(cluster.status())
        for round_name in ("before the cut", "after cut and heal"):
            if round_name.startswith("after"):
                cluster.cut(1)
                print(f"cut host 1 ({cluster.hosts[1].ip}) for {args.cut_s} s")
                time.sleep(args.cut_s)
                cluster.heal(1)
            started = time.monotonic()
            result = cluster.map_reduce()
            verdict = "OK" if result["total"] == result["expected"] else "WRONG"
            print(f"map-reduce {round_name}: {verdict} total={result['total']} over "
                  f"{len(result['nodes'])} nodes in {time.monotonic() - started:.2f} s")
    return 0


def chaos_main(hosts: int, runs: int) -> int:
    failures = 0
    with ZrayHosts(hosts, env=FAST_FAILURE_ENV) as cluster:
        for run in range(runs):
            result = cluster.chaos_map_reduce(every_s=1.5, cut_s=1.5, seed=run)
            failures += not result["ok"]
            print(f"chaos run {run + 1}: {'OK' if result['ok'] else 'WRONG'} in "
                  f"{result['elapsed_s']:.1f} s with {result['cuts']} link cut(s)")
        print(cluster.status())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
