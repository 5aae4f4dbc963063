#!/usr/bin/env python
"""Microbenchmarks for zray, optionally side by side with Ray and Dask.

The workloads, their sizes and the zray targets are those of BENCHMARKS.md.
Each (framework, workload) pair runs in its own fresh worker process: the
worker starts the framework, runs untimed warm-up (a few no-op tasks, then the
workload once at tiny sizes), and then times N runs of the workload.  Only
``init_time`` and ``idle_rss`` need a fresh process per run; they start one
worker per run.  The driver prints the median of the N runs (all samples go
to ``--json``).

Workloads with a ``cluster`` (``tasks_async_2nodes``, ``transfer_100mb_cross_node``)
start the framework as a ``cluster_utils.Cluster`` of several node managers on
this machine, one CPU each (``--num-cpus`` does not apply), and connect the
worker to it as the driver; its local node is the head node.

Usage (from the repository root)::

    python tools/microbenchmark.py                     # zray, all workloads, 5 runs
    python tools/microbenchmark.py --quick             # smoke check, reduced sizes
    python tools/microbenchmark.py --only tasks_async,put_large --runs 9
    python tools/microbenchmark.py --compare ray,dask --json results.json
    python tools/microbenchmark.py --setup-peers ~/peers-venv --compare ray,dask
    python tools/microbenchmark.py --compare ray --python-for-peer ray=/opt/ray/bin/python

With ``--compare`` the peers' workers for one workload are alive at the same
time and are driven in lock step, one run each in turn (zray, ray, dask, zray,
ray, dask, ...), so slow drift of the machine's load hits every framework
alike.  Ratios are printed so that a ratio above 1 means zray is better: for
rates (tasks/s, GB/s, ...) it is zray/peer, for times and memory (s, MB) it is
peer/zray.  A peer that is not importable is reported as such and skipped.

Every worker has a hard timeout (``--timeout``; 300 s, 60 s with ``--quick``)
on the time it spends working (start-up, runs, shutdown; not the time it sits
waiting for its turn); a worker past it is killed, with its descendants, and
reported as "timeout".

Internal worker mode (what the driver starts; useful for debugging one
workload by hand; prints one JSON object per line on stdout)::

    python tools/microbenchmark.py --worker zray tasks_async --runs 3 [--quick]

Units: 1 MB = 10**6 bytes, 1 GB = 10**9 bytes; "100 MB" arrays are 12,500,000
float64 (100,000,000 uint8 in ``transfer_100mb_cross_node``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import math
import multiprocessing
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Callable

import numpy as np
import psutil

BYTES_PER_MB = 10**6
BYTES_PER_GB = 10**9
NUM_CPUS = 2
DEFAULT_RUNS = 5
QUICK_RUNS = 3
DEFAULT_TIMEOUT_S = 300.0
QUICK_TIMEOUT_S = 60.0
IDLE_SETTLE_S = 1.0          # idle_rss: pause after the task, before reading RSS
PROBE_TIMEOUT_S = 120.0      # importing ray can take a while on a loaded machine
STOP_GRACE_S = 5.0           # how long leftover descendants get after their worker exits
WARMUP_NOOP_TASKS = 20
LOOPBACK = "127.0.0.1"
RAW_ZMQ_TIMEOUT_MS = 60_000  # raw pyzmq baseline: longest wait for a frame or a request

FRAMEWORKS = ("zray", "ray", "dask")
PEERS = ("ray", "dask")
FRAMEWORK_MODULES = {"zray": "zray", "ray": "ray", "dask": "distributed"}
PEER_PIP_PACKAGES = ("ray[default]", "dask[distributed]", "numpy", "psutil")

# Outcome of a (framework, workload) pair other than "ok".
UNSUPPORTED = "unsupported"
NOT_APPLICABLE = "n/a"
TIMEOUT = "timeout"
ERROR = "error"
SKIPPED = "skipped"
NOT_INSTALLED = "not installed"


# ---------------------------------------------------------------------------
# Sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each workload is; FULL_SIZES are BENCHMARKS.md's definitions."""
    tasks_sync: int
    tasks_async: int
    ref_arg_tasks: int
    actor_calls_sync: int
    actor_calls_async: int
    actor_calls_per_actor: int
    small_objects: int
    large_bytes: int
    large_puts: int
    large_get_rounds: int
    large_arg_tasks: int
    wait_tasks: int
    fanout_parents: int
    fanout_children: int
    map_tasks: int
    map_elements: int
    transfer_rounds: int      # transfer_100mb_cross_node: zray/raw pairs per run

    @property
    def large_elements(self) -> int:
        return self.large_bytes // 8


FULL_SIZES = Sizes(
    tasks_sync=1_000, tasks_async=10_000, ref_arg_tasks=5_000,
    actor_calls_sync=1_000, actor_calls_async=10_000, actor_calls_per_actor=5_000,
    small_objects=10_000, large_bytes=100 * BYTES_PER_MB, large_puts=10,
    large_get_rounds=5, large_arg_tasks=10, wait_tasks=1_000,
    fanout_parents=10, fanout_children=100, map_tasks=1_000, map_elements=100_000,
    transfer_rounds=5)

QUICK_SIZES = Sizes(
    tasks_sync=200, tasks_async=2_000, ref_arg_tasks=1_000,
    actor_calls_sync=200, actor_calls_async=2_000, actor_calls_per_actor=1_000,
    small_objects=2_000, large_bytes=100 * BYTES_PER_MB, large_puts=3,
    large_get_rounds=2, large_arg_tasks=10, wait_tasks=1_000,
    fanout_parents=10, fanout_children=100, map_tasks=200, map_elements=100_000,
    transfer_rounds=3)

WARMUP_SIZES = Sizes(
    tasks_sync=10, tasks_async=50, ref_arg_tasks=50,
    actor_calls_sync=10, actor_calls_async=50, actor_calls_per_actor=25,
    small_objects=50, large_bytes=BYTES_PER_MB, large_puts=2,
    large_get_rounds=1, large_arg_tasks=2, wait_tasks=20,
    fanout_parents=2, fanout_children=3, map_tasks=10, map_elements=1_000,
    transfer_rounds=1)


# ---------------------------------------------------------------------------
# Outcomes a workload can raise instead of returning a sample


class Unsupported(Exception):
    """The framework lacks a feature the workload needs (e.g. zray actors)."""


class NotApplicable(Exception):
    """The framework has no equivalent of this workload."""


class Skipped(Exception):
    """The workload cannot run in this setup at all."""


# ---------------------------------------------------------------------------
# Registry


@dataclasses.dataclass(frozen=True)
class Target:
    """A zray target from BENCHMARKS.md; ``op`` is None when it cannot be checked here."""
    op: str | None
    value: float | None
    text: str

    def met_by(self, measured: float) -> bool | None:
        if self.op is None or self.value is None:
            return None
        return measured >= self.value if self.op == ">=" else measured <= self.value


RATIO_UNIT = "ratio"        # a dimensionless "zray / baseline"; higher is better


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    unit: str
    target: Target

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s") or self.unit == RATIO_UNIT


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Nodes to start with ``cluster_utils.Cluster`` instead of ``init(num_cpus=N)``.

    ``head_node`` and each of ``nodes`` are keyword arguments of ``add_node``.
    """
    head_node: dict
    nodes: tuple


#: The head node and one more, one CPU each; only the second has resource "nodeB".
TWO_NODES = ClusterSpec(head_node={"num_cpus": 1},
                        nodes=({"num_cpus": 1, "resources": {"nodeB": 1}},))
#: The same with CURVE off (zray's Cluster makes a key and encrypts by default).
TWO_NODES_INSECURE = ClusterSpec(
    head_node={"num_cpus": 1, "_system_config": {"insecure": True}},
    nodes=({"num_cpus": 1, "resources": {"nodeB": 1}},))
#: The same with the chunk sockets on CURVE instead of sealed with AES-GCM.
TWO_NODES_CURVE = ClusterSpec(
    head_node={"num_cpus": 1, "_system_config": {"transfer_encryption": "curve"}},
    nodes=({"num_cpus": 1, "resources": {"nodeB": 1}},))
ON_NODE_B = {"nodeB": 1}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    function: Callable
    metrics: tuple
    fresh_process: bool = False
    skip_reason: str | None = None
    #: Sizes fields a total-time result grows with; where QUICK_SIZES differs on
    #: one of them, a --quick result cannot be held against the target.
    size_fields: tuple = ()
    #: Start the framework as this cluster of nodes (None: ``init(num_cpus=N)``).
    cluster: ClusterSpec | None = None
    #: Why only zray runs this workload (None: peers run it too).
    zray_only: str | None = None

    def comparable_in_quick_mode(self) -> bool:
        return all(getattr(QUICK_SIZES, f) == getattr(FULL_SIZES, f) for f in self.size_fields)


#: name -> Workload (whose ``function(fw, sizes)`` returns one sample: metric key -> value).
WORKLOADS: dict[str, Workload] = {}


def at_least(value: float, text: str) -> Target:
    return Target(">=", value, text)


def at_most(value: float, text: str) -> Target:
    return Target("<=", value, text)


def workload(unit: str | None = None, target: Target | None = None, *, metrics=None,
             fresh_process: bool = False, skip_reason: str | None = None,
             size_fields: tuple = (), cluster: ClusterSpec | None = None,
             zray_only: str | None = None):
    """Register the decorated function under its own name.

    Single-metric workloads give ``unit`` and ``target``; the sample key is the
    workload's name.  Others give ``metrics``, a tuple of Metric.
    """
    def register(function):
        name = function.__name__
        metric_list = metrics or (Metric(name, unit, target),)
        WORKLOADS[name] = Workload(name, function, tuple(metric_list), fresh_process,
                                   skip_reason, size_fields, cluster, zray_only)
        return function
    return register


# ---------------------------------------------------------------------------
# Task and actor bodies (module level, so every framework can ship them)


def noop():
    return None


def noop_arg(value):
    return None


def return_one():
    return 1


def make_array(num_elements):
    return np.full(num_elements, 1.0, dtype=np.float64)


def make_bytes(size_bytes):
    return np.ones(size_bytes, dtype=np.uint8)


def sum_array(array):
    return float(array.sum())


def map_chunk(num_elements, offset):
    values = np.arange(offset, offset + num_elements, dtype=np.float64)
    return float((values * 2).sum())


class Counter:
    """The actor of the actor_calls_* workloads."""

    def __init__(self):
        self.count = 0

    def incr(self):
        self.count += 1
        return self.count


def dask_fanout_parent(num_children):
    """Dask's nested_fanout parent: submit children from inside a task, sum them."""
    from distributed import worker_client
    with worker_client() as client:
        children = [client.submit(return_one, pure=False) for _ in range(num_children)]
        return sum(client.gather(children))


# ---------------------------------------------------------------------------
# Framework adapters: the few operations the workloads need, per framework


class RayLikeAdapter:
    """zray and Ray share one API (``import zray as ray``)."""

    def __init__(self, name: str, module_name: str):
        self.name = name
        self.module_name = module_name
        self.api = None
        self.cluster = None
        self._remote_functions = {}
        self._actor_class = None
        self._actors = []
        self._fanout_parent = None

    def import_framework(self) -> None:
        self.api = importlib.import_module(self.module_name)

    def start(self, num_cpus: int) -> None:
        self.api.init(num_cpus=num_cpus)

    def start_cluster(self, spec: ClusterSpec) -> None:
        """Start ``spec``'s nodes with ``<framework>.cluster_utils`` and connect to them."""
        cluster_utils = importlib.import_module(f"{self.module_name}.cluster_utils")
        self.cluster = cluster_utils.Cluster(initialize_head=True,
                                             head_node_args=dict(spec.head_node))
        try:
            for node_args in spec.nodes:
                self.cluster.add_node(**node_args)
            self.api.init(address=self.cluster.address)
        except BaseException:
            self._shutdown_cluster()
            raise

    def shutdown(self) -> None:
        try:
            self.api.shutdown()
        finally:
            self._shutdown_cluster()

    def _shutdown_cluster(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.shutdown()

    def task(self, function, resources: dict | None = None) -> Callable:
        """A callable that submits ``function`` as a task and returns its ref."""
        key = (function, tuple(sorted((resources or {}).items())))
        if key not in self._remote_functions:
            remote = self.api.remote(resources=resources) if resources else self.api.remote
            self._remote_functions[key] = remote(function)
        return self._remote_functions[key].remote

    def get(self, refs):
        return self.api.get(refs)

    def put(self, value):
        return self.api.put(value)

    def wait_all(self, refs) -> None:
        self.api.wait(refs, num_returns=len(refs))

    def wait_ready(self, ref, fetch_local: bool = True) -> None:
        self.api.wait([ref], num_returns=1, fetch_local=fetch_local)

    def counter_actors(self, count: int) -> list:
        """``count`` Counter actors (created once per process); each item submits incr()."""
        if self._actor_class is None:
            try:
                self._actor_class = self.api.remote(Counter)
            except TypeError as error:
                raise Unsupported(f"remote() on a class raised TypeError: {error}") from None
        while len(self._actors) < count:
            handle = self._actor_class.remote()
            self.api.get(handle.incr.remote())          # wait until the actor is up
            self._actors.append(handle)
        return [handle.incr.remote for handle in self._actors[:count]]

    def fanout_parent(self) -> Callable:
        """A submitter of a task that submits ``n`` children, gets them and sums them."""
        if self._fanout_parent is None:
            api = self.api
            child = api.remote(return_one)

            def fanout_parent(num_children):
                return sum(api.get([child.remote() for _ in range(num_children)]))

            self._fanout_parent = api.remote(fanout_parent).remote
        return self._fanout_parent


class DaskAdapter:
    """dask.distributed: LocalCluster(n_workers=2, threads_per_worker=1, processes=True).

    submit/gather/scatter/wait stand in for remote/get/put/wait; Dask actors
    (``submit(cls, actor=True)``) for Ray actors; ``worker_client`` for tasks
    that submit tasks.
    """

    name = "dask"

    def __init__(self):
        self.distributed = None
        self.cluster = None
        self.client = None
        self._actors = []

    def import_framework(self) -> None:
        self.distributed = importlib.import_module("distributed")

    def start(self, num_cpus: int) -> None:
        self.cluster = self.distributed.LocalCluster(
            n_workers=num_cpus, threads_per_worker=1, processes=True)
        self.client = self.distributed.Client(self.cluster)

    def start_cluster(self, spec: ClusterSpec) -> None:
        raise Unsupported("Dask has no cluster of separate node managers on one machine "
                          "(no cluster_utils.Cluster); its LocalCluster of 2 workers is "
                          "what the one-node workloads already run")

    def shutdown(self) -> None:
        self.client.close()
        self.cluster.close()

    def task(self, function, resources: dict | None = None) -> Callable:
        client = self.client
        return lambda *args: client.submit(function, *args, pure=False, resources=resources)

    def get(self, futures):
        if isinstance(futures, list):
            if all(isinstance(f, self.distributed.Future) for f in futures):
                return self.client.gather(futures)
            return [future.result() for future in futures]
        return futures.result()

    def put(self, value):
        return self.client.scatter(value, hash=False)

    def wait_all(self, futures) -> None:
        self.distributed.wait(futures)

    def wait_ready(self, future, fetch_local: bool = True) -> None:
        self.distributed.wait([future])

    def counter_actors(self, count: int) -> list:
        while len(self._actors) < count:
            actor = self.client.submit(Counter, actor=True, pure=False).result()
            actor.incr().result()
            self._actors.append(actor)
        return [actor.incr for actor in self._actors[:count]]

    def fanout_parent(self) -> Callable:
        return self.task(dask_fanout_parent)


def make_adapter(framework: str):
    if framework == "dask":
        return DaskAdapter()
    return RayLikeAdapter(framework, FRAMEWORK_MODULES[framework])


# ---------------------------------------------------------------------------
# Workloads


def rate(count: int, elapsed_s: float) -> float:
    return count / elapsed_s


@workload("tasks/s", at_least(1_500, "≥ 1,500 /s"))
def tasks_sync(fw, sizes):
    submit = fw.task(noop)
    start = time.perf_counter()
    for _ in range(sizes.tasks_sync):
        fw.get(submit())
    return {"tasks_sync": rate(sizes.tasks_sync, time.perf_counter() - start)}


def submit_all_then_get_rate(fw, count: int) -> float:
    """Submit ``count`` no-op tasks, then get them all; tasks per second."""
    submit = fw.task(noop)
    start = time.perf_counter()
    fw.get([submit() for _ in range(count)])
    return rate(count, time.perf_counter() - start)


@workload("tasks/s", at_least(6_000, "≥ 6,000 /s"))
def tasks_async(fw, sizes):
    return {"tasks_async": submit_all_then_get_rate(fw, sizes.tasks_async)}


@workload("tasks/s", Target(None, None, "none set"), cluster=TWO_NODES)
def tasks_async_2nodes(fw, sizes):
    """tasks_async on two node managers of one CPU each (head node + one more),
    over CURVE (zray's default on TCP)."""
    return {"tasks_async_2nodes": submit_all_then_get_rate(fw, sizes.tasks_async)}


@workload("tasks/s", Target(None, None, "CURVE costs < 20% (vs tasks_async_2nodes)"),
          cluster=TWO_NODES_INSECURE)
def tasks_async_2nodes_insecure(fw, sizes):
    """tasks_async_2nodes with CURVE off (ZRAY_INSECURE)."""
    return {"tasks_async_2nodes_insecure": submit_all_then_get_rate(fw, sizes.tasks_async)}


@workload("tasks/s", at_least(5_000, "≥ 5,000 /s"))
def tasks_async_ref_arg(fw, sizes):
    submit = fw.task(noop_arg)
    start = time.perf_counter()
    small_ref = fw.put(b"x" * 100)
    fw.get([submit(small_ref) for _ in range(sizes.ref_arg_tasks)])
    return {"tasks_async_ref_arg": rate(sizes.ref_arg_tasks, time.perf_counter() - start)}


@workload("calls/s", at_least(2_500, "≥ 2,500 /s"))
def actor_calls_sync(fw, sizes):
    (incr,) = fw.counter_actors(1)
    start = time.perf_counter()
    for _ in range(sizes.actor_calls_sync):
        fw.get(incr())
    return {"actor_calls_sync": rate(sizes.actor_calls_sync, time.perf_counter() - start)}


@workload("calls/s", at_least(10_000, "≥ 10,000 /s"))
def actor_calls_async(fw, sizes):
    (incr,) = fw.counter_actors(1)
    start = time.perf_counter()
    fw.get([incr() for _ in range(sizes.actor_calls_async)])
    return {"actor_calls_async": rate(sizes.actor_calls_async, time.perf_counter() - start)}


@workload("calls/s", at_least(10_000, "≥ 10,000 /s"))
def actor_calls_2actors_async(fw, sizes):
    incr_a, incr_b = fw.counter_actors(2)
    calls = 2 * sizes.actor_calls_per_actor
    start = time.perf_counter()
    refs = []
    for _ in range(sizes.actor_calls_per_actor):
        refs.append(incr_a())
        refs.append(incr_b())
    fw.get(refs)
    return {"actor_calls_2actors_async": rate(calls, time.perf_counter() - start)}


@workload("puts/s", at_least(15_000, "≥ 15,000 /s"))
def put_small(fw, sizes):
    start = time.perf_counter()
    refs = [fw.put(i) for i in range(sizes.small_objects)]
    elapsed_s = time.perf_counter() - start
    del refs
    return {"put_small": rate(sizes.small_objects, elapsed_s)}


@workload("gets/s", at_least(30_000, "≥ 30,000 /s"))
def get_small(fw, sizes):
    refs = [fw.put(i) for i in range(sizes.small_objects)]
    start = time.perf_counter()
    for ref in refs:
        fw.get(ref)
    return {"get_small": rate(sizes.small_objects, time.perf_counter() - start)}


@workload("GB/s", at_least(2.5, "≥ 2.5 GB/s"))
def put_large(fw, sizes):
    array = make_array(sizes.large_elements)
    start = time.perf_counter()
    for _ in range(sizes.large_puts):
        fw.put(array)
    elapsed_s = time.perf_counter() - start
    return {"put_large": sizes.large_puts * array.nbytes / BYTES_PER_GB / elapsed_s}


@workload(metrics=(
    Metric("get", "GB/s", at_least(50.0, "≥ 50 GB/s (≤ 2 ms per 100 MB)")),
    Metric("round", "s", at_most(0.08, "≤ 0.08 s")),
))
def get_large_from_task(fw, sizes):
    submit = fw.task(make_array)
    get_s = round_s = 0.0
    for _ in range(sizes.large_get_rounds):
        start = time.perf_counter()
        ref = submit(sizes.large_elements)
        fw.wait_ready(ref)
        ready = time.perf_counter()
        array = fw.get(ref)
        done = time.perf_counter()
        if array.nbytes != sizes.large_bytes:
            raise AssertionError(f"got {array.nbytes} bytes, expected {sizes.large_bytes}")
        get_s += done - ready
        round_s += done - start
        del array, ref
    rounds = sizes.large_get_rounds
    return {"get": rounds * sizes.large_bytes / BYTES_PER_GB / get_s,
            "round": round_s / rounds,
            "get_ms_per_100mb": 1000 * get_s / rounds * (100 * BYTES_PER_MB) / sizes.large_bytes}


@workload("s", at_most(0.1, "≤ 0.1 s"), size_fields=("large_bytes", "large_arg_tasks"))
def task_large_arg(fw, sizes):
    array = make_array(sizes.large_elements)
    submit = fw.task(sum_array)
    start = time.perf_counter()
    array_ref = fw.put(array)
    sums = fw.get([submit(array_ref) for _ in range(sizes.large_arg_tasks)])
    elapsed_s = time.perf_counter() - start
    if sums[0] != float(sizes.large_elements):
        raise AssertionError(f"sum {sums[0]} != {sizes.large_elements}")
    return {"task_large_arg": elapsed_s}


@workload("s", at_most(0.2, "≤ 0.2 s"), size_fields=("wait_tasks",))
def wait_1000(fw, sizes):
    submit = fw.task(noop)
    start = time.perf_counter()
    fw.wait_all([submit() for _ in range(sizes.wait_tasks)])
    return {"wait_1000": time.perf_counter() - start}


@workload("s", at_most(0.5, "≤ 0.5 s"), size_fields=("fanout_parents", "fanout_children"))
def nested_fanout(fw, sizes):
    submit_parent = fw.fanout_parent()
    start = time.perf_counter()
    totals = fw.get([submit_parent(sizes.fanout_children)
                     for _ in range(sizes.fanout_parents)])
    elapsed_s = time.perf_counter() - start
    if sum(totals) != sizes.fanout_parents * sizes.fanout_children:
        raise AssertionError(f"fan-out summed to {sum(totals)}")
    return {"nested_fanout": elapsed_s}


@workload("s", at_most(4.0, "≤ 4 s"), size_fields=("map_tasks", "map_elements"))
def map_reduce(fw, sizes):
    submit = fw.task(map_chunk)
    n = sizes.map_elements
    start = time.perf_counter()
    total = sum(fw.get([submit(n, i * n) for i in range(sizes.map_tasks)]))
    elapsed_s = time.perf_counter() - start
    last = sizes.map_tasks * n - 1
    if not math.isclose(total, last * (last + 1), rel_tol=1e-9):   # 2 * sum(0..last)
        raise AssertionError(f"map_reduce total {total} is wrong")
    return {"map_reduce": elapsed_s}


@workload("s", at_most(0.5, "≤ 0.5 s"), fresh_process=True)
def init_time(fw, sizes):
    """Fresh process: init with 2 CPUs until the first task result (import not counted)."""
    start = time.perf_counter()
    fw.import_framework()
    imported = time.perf_counter()
    fw.start(NUM_CPUS)
    fw.get(fw.task(noop)())
    first_result = time.perf_counter()
    fw.shutdown()
    stopped = time.perf_counter()
    return {"init_time": first_result - imported, "import_s": imported - start,
            "shutdown_s": stopped - first_result}


@workload("MB", at_most(150, "≤ 150 MB"), fresh_process=True)
def idle_rss(fw, sizes):
    """After init(num_cpus=2) and one task: RSS of this process and all its descendants."""
    fw.import_framework()
    fw.start(NUM_CPUS)
    fw.get(fw.task(noop)())
    time.sleep(IDLE_SETTLE_S)
    rss_bytes, process_count = tree_rss(psutil.Process())
    fw.shutdown()
    return {"idle_rss": rss_bytes / BYTES_PER_MB, "processes": process_count}


@workload("GB/s", at_least(2.5, "≥ 2.5 GB/s"), fresh_process=True,
          size_fields=("large_bytes", "large_puts"))
def put_large_cold(fw, sizes):
    """Fresh cluster, every ref kept: each put writes pages the store never had
    (no freed segment to reuse), as a program filling the store does."""
    fw.import_framework()
    fw.start(NUM_CPUS)
    arrays = [make_array(sizes.large_elements) for _ in range(sizes.large_puts)]
    for i, array in enumerate(arrays):          # distinct, and faulted in before timing
        array[0] = i
    start = time.perf_counter()
    refs = [fw.put(array) for array in arrays]
    elapsed_s = time.perf_counter() - start
    total = sum(array.nbytes for array in arrays)
    del refs
    fw.shutdown()
    return {"put_large_cold": total / BYTES_PER_GB / elapsed_s}


@workload("s", at_most(0.15, "≤ 0.15 s"), fresh_process=True,
          size_fields=("large_bytes", "large_arg_tasks"))
def task_large_arg_cold(fw, sizes):
    """task_large_arg in a fresh cluster: the put writes fresh pages and every
    worker maps (and faults in) the argument for the first time."""
    fw.import_framework()
    fw.start(NUM_CPUS)
    fw.get(fw.task(noop)())                   # the cluster is up, as in task_large_arg
    elapsed_s = task_large_arg(fw, sizes)["task_large_arg"]
    fw.shutdown()
    return {"task_large_arg_cold": elapsed_s}


TRANSFER_METRICS = (
    Metric("get", "GB/s", Target(None, None, "≥ 0.8 × raw (vs_raw)")),
    Metric("raw_pyzmq", "GB/s", Target(None, None, "baseline, same security")),
    Metric("vs_raw", RATIO_UNIT, at_least(0.8, "≥ 0.8")),
)
TRANSFER_ZRAY_ONLY = (
    "measured for zray only: its target is a ratio to raw pyzmq in the same run, and "
    "BENCHMARKS.md records no peer figure to compare with")


@workload(metrics=TRANSFER_METRICS, cluster=TWO_NODES, zray_only=TRANSFER_ZRAY_ONLY)
def transfer_100mb_cross_node(fw, sizes):
    """A 100 MB object made on node B is pulled by the driver's get onto the head node,
    encrypted as zray does by default (chunks sealed with AES-256-GCM under the
    cluster's key, see zray.node.sealing); the baseline is a raw frame over CURVE,
    the cipher of every other TCP socket.

    Each round makes a fresh object on node B (untimed), then times its get and
    one raw zero-copy pyzmq frame of the same size between two processes over
    TCP on loopback, in turn (ABBA order); the rounds' medians give one sample.
    """
    return measure_transfer(fw, sizes, curve=True)


@workload(metrics=TRANSFER_METRICS, cluster=TWO_NODES_INSECURE,
          zray_only=TRANSFER_ZRAY_ONLY)
def transfer_100mb_cross_node_insecure(fw, sizes):
    """transfer_100mb_cross_node with CURVE off on both sides (ZRAY_INSECURE)."""
    return measure_transfer(fw, sizes, curve=False)


@workload(metrics=TRANSFER_METRICS, cluster=TWO_NODES_CURVE,
          zray_only=TRANSFER_ZRAY_ONLY)
def transfer_100mb_cross_node_curve(fw, sizes):
    """transfer_100mb_cross_node with the chunk sockets on CURVE
    (transfer_encryption="curve"), as every other TCP socket."""
    return measure_transfer(fw, sizes, curve=True)


def measure_transfer(fw, sizes, curve: bool) -> dict:
    size_bytes = sizes.large_bytes
    make = fw.task(make_bytes, resources=ON_NODE_B)
    get_s, raw_s = [], []
    with raw_zmq_sender(size_bytes, curve) as time_raw_frame_s:
        for round_index in range(sizes.transfer_rounds):
            ref = make(size_bytes)
            fw.wait_ready(ref, fetch_local=False)      # made on node B, not yet pulled
            get_round_s, raw_round_s = time_get_and_raw_s(
                fw, ref, size_bytes, time_raw_frame_s, get_first=round_index % 2 == 0)
            get_s.append(get_round_s)
            raw_s.append(raw_round_s)
            del ref                                    # freed while the next is made
    get_gbps = size_bytes / BYTES_PER_GB / statistics.median(get_s)
    raw_gbps = size_bytes / BYTES_PER_GB / statistics.median(raw_s)
    return {"get": get_gbps, "raw_pyzmq": raw_gbps, "vs_raw": get_gbps / raw_gbps}


def time_get_and_raw_s(fw, ref, size_bytes: int, time_raw_frame_s,
                       get_first: bool) -> tuple[float, float]:
    """Seconds for the get of ``ref`` and for one raw frame, timed in the order given."""
    if not get_first:
        raw_s = time_raw_frame_s()
    start = time.perf_counter()
    array = fw.get(ref)
    get_s = time.perf_counter() - start
    if get_first:
        raw_s = time_raw_frame_s()
    if array.nbytes != size_bytes:
        raise AssertionError(f"got {array.nbytes} bytes, expected {size_bytes}")
    return get_s, raw_s


@contextlib.contextmanager
def raw_zmq_sender(size_bytes: int, curve: bool = False):
    """The transfer baseline: yields a function timing one raw frame of ``size_bytes``.

    This process's DEALER asks; a ROUTER in a child process answers with one
    zero-copy frame of a numpy buffer, over TCP on loopback.  Timed: request
    sent until the whole frame is received (without a copy).
    """
    import zmq
    with zmq.Context() as context, context.socket(zmq.DEALER) as dealer:
        dealer.linger = 0
        dealer.rcvtimeo = dealer.sndtimeo = RAW_ZMQ_TIMEOUT_MS
        keys = None
        if curve:                 # the same encryption zray's cluster sockets use
            server, client = zmq.curve_keypair(), zmq.curve_keypair()
            dealer.curve_server = True
            dealer.curve_secretkey = server[1]
            keys = (server[0], client[0], client[1])
        port = dealer.bind_to_random_port(f"tcp://{LOOPBACK}")
        child = multiprocessing.get_context("spawn").Process(
            target=serve_raw_frames, args=(f"tcp://{LOOPBACK}:{port}", size_bytes, keys),
            name="raw-zmq-sender", daemon=True)
        child.start()
        try:
            dealer.send(b"ready?")             # untimed: the child is up, its buffer made
            dealer.recv()
            time_raw_frame_s(dealer, size_bytes)   # untimed: TCP buffers grow with use
            yield lambda: time_raw_frame_s(dealer, size_bytes)
        finally:
            stop_raw_sender(child, dealer)


def time_raw_frame_s(dealer, size_bytes: int) -> float:
    start = time.perf_counter()
    dealer.send(b"send")
    frame = dealer.recv(copy=False)
    elapsed_s = time.perf_counter() - start
    if len(frame.buffer) != size_bytes:
        raise AssertionError(f"raw frame has {len(frame.buffer)} bytes, expected {size_bytes}")
    return elapsed_s


def stop_raw_sender(child, dealer) -> None:
    import zmq
    try:
        dealer.send(b"stop", zmq.NOBLOCK)
    except zmq.Again:
        pass                 # no connected child to tell: the join times out, then kill
    child.join(timeout=STOP_GRACE_S)
    if child.is_alive():
        child.kill()
        child.join()


def serve_raw_frames(endpoint: str, size_bytes: int, keys=None) -> None:
    """Child process of the raw baseline: answer each request with one zero-copy frame.

    Exits on "stop", or when no request came for RAW_ZMQ_TIMEOUT_MS (its parent is gone).
    """
    import zmq
    payload = np.ones(size_bytes, dtype=np.uint8)
    with zmq.Context() as context, context.socket(zmq.ROUTER) as router:
        router.linger = 0
        if keys is not None:
            router.curve_serverkey, router.curve_publickey, router.curve_secretkey = keys
        router.connect(endpoint)
        while router.poll(RAW_ZMQ_TIMEOUT_MS):
            peer, request = router.recv_multipart()
            if request == b"stop":
                return
            reply = payload if request == b"send" else b"ready"
            router.send_multipart([peer, reply], copy=False)


def tree_rss(process) -> tuple[int, int]:
    """Sum of RSS over ``process`` and every descendant; also how many processes."""
    total, count = 0, 0
    for member in [process] + process.children(recursive=True):
        try:
            total += member.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


# ---------------------------------------------------------------------------
# Worker mode: one framework, one workload, JSON lines on stdout


class WorkerChannel:
    """The worker's JSON-lines pipe to the driver.

    The framework (or the tasks it runs) may print to stdout, so the real
    stdout is kept for this channel only and file descriptor 1 is pointed at
    stderr, for this process and every process it starts.
    """

    def __init__(self):
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def send(self, **event) -> None:
        self._out.write(json.dumps(event) + "\n")
        self._out.flush()

    @staticmethod
    def wait_for_go() -> bool:
        """Stepped mode: block until the driver says "run" (True) or "stop" (False)."""
        return sys.stdin.readline().strip() == "run"


def warm_up(fw, bench: Workload) -> None:
    """Untimed: a few no-op tasks, then the workload once at tiny sizes."""
    submit = fw.task(noop)
    fw.get([submit() for _ in range(WARMUP_NOOP_TASKS)])
    bench.function(fw, WARMUP_SIZES)


def run_worker(args) -> int:
    channel = WorkerChannel()
    bench = WORKLOADS[args.workload]
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    fw = make_adapter(args.framework)
    samples = []
    try:
        if bench.skip_reason:
            raise Skipped(bench.skip_reason)
        if bench.zray_only and args.framework != "zray":
            raise Unsupported(bench.zray_only)
        if bench.fresh_process:
            samples.append(bench.function(fw, sizes))
            channel.send(event="sample", run=0, sample=samples[0])
        else:
            run_in_process(fw, bench, sizes, args, channel, samples)
    except Unsupported as reason:
        channel.send(event="result", status=UNSUPPORTED, reason=str(reason), samples=samples)
        return 0
    except NotApplicable as reason:
        channel.send(event="result", status=NOT_APPLICABLE, reason=str(reason), samples=samples)
        return 0
    except Skipped as reason:
        channel.send(event="result", status=SKIPPED, reason=str(reason), samples=samples)
        return 0
    except Exception as error:  # report any failure of the framework, keep the driver going
        channel.send(event="result", status=ERROR, samples=samples,
                     reason=f"{type(error).__name__}: {error}",
                     traceback=traceback.format_exc())
        return 1
    channel.send(event="result", status="ok", samples=samples)
    return 0


def run_in_process(fw, bench, sizes, args, channel, samples) -> None:
    """Start the framework, warm up, time ``args.runs`` runs, shut down."""
    fw.import_framework()
    started = time.perf_counter()
    if bench.cluster:
        fw.start_cluster(bench.cluster)
    else:
        fw.start(args.num_cpus)
    try:
        warm_up(fw, bench)
        channel.send(event="ready", setup_s=time.perf_counter() - started)
        for run in range(args.runs):
            if args.stepped and not channel.wait_for_go():
                break
            sample = bench.function(fw, sizes)
            samples.append(sample)
            channel.send(event="sample", run=run, sample=sample)
    finally:
        fw.shutdown()


# ---------------------------------------------------------------------------
# Driver: starting workers, interleaving them, collecting results


@dataclasses.dataclass
class Outcome:
    """What one framework did on one workload."""
    status: str = "ok"
    reason: str = ""
    samples: list = dataclasses.field(default_factory=list)
    detail: str = ""           # traceback or stderr tail, for --json and error output

    def fail(self, status: str, reason: str, detail: str = "") -> None:
        if self.status == "ok":
            self.status, self.reason, self.detail = status, reason, detail

    def median(self, key: str) -> float | None:
        values = [s[key] for s in self.samples if key in s]
        return statistics.median(values) if values else None


class WorkerProcess:
    """One worker subprocess, its JSON-lines stdout and its working-time budget."""

    def __init__(self, python: str, framework: str, workload_name: str, runs: int,
                 options, stepped: bool):
        argv = [python, os.path.abspath(__file__), "--worker", framework, workload_name,
                "--runs", str(runs), "--num-cpus", str(options.num_cpus)]
        if options.quick:
            argv.append("--quick")
        if stepped:
            argv.append("--stepped")
        self.label = f"{framework}/{workload_name}"
        self.budget_s = options.timeout
        self.used_s = 0.0
        self.stderr = tempfile.TemporaryFile()
        self.events = queue.Queue()
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self.stderr, text=True, bufsize=1,
                                      cwd=os.getcwd(), env=worker_environment())
        self.reader = threading.Thread(target=self._read_stdout, daemon=True)
        self.reader.start()

    def _read_stdout(self) -> None:
        for line in self.popen.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.events.put({"event": "noise", "text": line})
        self.events.put(None)

    def next_event(self, wanted: tuple) -> dict:
        """The next event whose kind is in ``wanted`` or "result"; raises TimeoutError."""
        while True:
            remaining_s = self.budget_s - self.used_s
            if remaining_s <= 0:
                raise TimeoutError(self.label)
            start = time.monotonic()
            try:
                event = self.events.get(timeout=remaining_s)
            except queue.Empty:
                raise TimeoutError(self.label) from None
            finally:
                self.used_s += time.monotonic() - start
            if event is None:
                self.popen.wait()
                return {"event": "result", "status": ERROR,
                        "reason": f"worker exited with code {self.popen.returncode} "
                                  f"without a result", "samples": []}
            if event.get("event") in wanted + ("result",):
                return event

    def send(self, command: str) -> bool:
        try:
            self.popen.stdin.write(command + "\n")
            self.popen.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def stderr_tail(self, lines: int = 25) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def finish(self) -> None:
        """Wait for the worker to exit, then stop anything it started that is left."""
        descendants = self._descendants()
        try:
            self.popen.wait(timeout=max(self.budget_s - self.used_s, 1.0))
        except subprocess.TimeoutExpired:
            pass
        kill_processes([self._self_process()] + descendants, grace_s=STOP_GRACE_S)
        self.stderr.close()

    def kill(self) -> None:
        kill_processes([self._self_process()] + self._descendants(), grace_s=0)
        self.stderr.close()

    def _self_process(self):
        try:
            return psutil.Process(self.popen.pid)
        except psutil.NoSuchProcess:
            return None

    def _descendants(self) -> list:
        process = self._self_process()
        if process is None:
            return []
        try:
            return process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def kill_processes(processes, grace_s: float) -> None:
    """SIGKILL those of ``processes`` still alive after ``grace_s`` (by pid, reuse-safe)."""
    alive = [p for p in processes if p is not None]
    if grace_s > 0:
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    psutil.wait_procs(alive, timeout=5)


def worker_environment() -> dict:
    """The workers' environment: this checkout's zray comes first on the path, so
    the tool measures the tree it lives in, installed or not."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(checkout, "zray")):
        env["PYTHONPATH"] = os.pathsep.join(
            [checkout] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def apply_result(outcome: Outcome, event: dict) -> None:
    """Fold a worker's final "result" event into ``outcome``."""
    status = event.get("status", ERROR)
    if status != "ok":
        detail = event.get("traceback", "")
        outcome.fail(status, event.get("reason", ""), detail)


def record_timeout(outcome: Outcome, worker: WorkerProcess) -> None:
    outcome.fail(TIMEOUT, f"no answer within the {worker.budget_s:.0f} s worker timeout",
                 worker.stderr_tail())
    worker.kill()


def run_interleaved(bench: Workload, frameworks: list, pythons: dict, options,
                    outcomes: dict) -> None:
    """In-process workloads: one worker per framework, driven a run at a time in turn."""
    workers = {}
    for framework in frameworks:
        worker = WorkerProcess(pythons[framework], framework, bench.name, options.runs,
                               options, stepped=True)
        if accept_event(worker, outcomes[framework], ("ready",)):
            workers[framework] = worker
    for _ in range(options.runs):
        for framework in list(workers):
            worker = workers[framework]
            worker.send("run")      # if the worker is gone, its last event says why
            if not accept_event(worker, outcomes[framework], ("sample",)):
                del workers[framework]
    for framework, worker in workers.items():
        worker.send("stop")
        accept_event(worker, outcomes[framework], ())


def accept_event(worker: WorkerProcess, outcome: Outcome, wanted: tuple) -> bool:
    """Read the next wanted event; False (and the worker is finished) once it is over."""
    try:
        event = worker.next_event(wanted)
    except TimeoutError:
        record_timeout(outcome, worker)
        return False
    if event["event"] == "sample":
        outcome.samples.append(event["sample"])
        return True
    if event["event"] == "ready":
        return True
    apply_result(outcome, event)
    if outcome.status == ERROR and not outcome.detail:
        outcome.detail = worker.stderr_tail()
    worker.finish()
    return False


def run_fresh_processes(bench: Workload, frameworks: list, pythons: dict, options,
                        outcomes: dict) -> None:
    """init_time and idle_rss: a new worker per run, frameworks in turn.

    Outside --quick, a first round is run and thrown away (it warms the file cache).
    """
    rounds = options.runs if options.quick else options.runs + 1
    for round_index in range(rounds):
        warm_up_round = not options.quick and round_index == 0
        for framework in frameworks:
            outcome = outcomes[framework]
            if outcome.status != "ok":
                continue
            target = Outcome() if warm_up_round else outcome
            worker = WorkerProcess(pythons[framework], framework, bench.name, 1, options,
                                   stepped=False)
            if accept_event(worker, target, ("sample",)):
                accept_event(worker, target, ())
            if target.status != "ok":
                outcome.fail(target.status, target.reason, target.detail)


def run_workload(bench: Workload, frameworks: list, pythons: dict, options,
                 unavailable: dict) -> dict:
    outcomes = {framework: Outcome() for framework in frameworks}
    for framework, reason in unavailable.items():
        outcomes[framework].fail(NOT_INSTALLED, reason)
    if bench.skip_reason:
        for outcome in outcomes.values():
            outcome.fail(SKIPPED, bench.skip_reason)
        return outcomes
    if bench.zray_only:
        for framework in frameworks:
            if framework != "zray":
                outcomes[framework].fail(UNSUPPORTED, bench.zray_only)
    runnable = [f for f in frameworks if outcomes[f].status == "ok"]
    if bench.fresh_process:
        run_fresh_processes(bench, runnable, pythons, options, outcomes)
    else:
        run_interleaved(bench, runnable, pythons, options, outcomes)
    return outcomes


def probe_framework(python: str, framework: str) -> str | None:
    """None when ``python`` can import the framework (and numpy, psutil); else why not."""
    module = FRAMEWORK_MODULES[framework]
    try:
        completed = subprocess.run([python, "-c", f"import {module}, numpy, psutil"],
                                   capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except FileNotFoundError:
        return f"no interpreter at {python}"
    except subprocess.TimeoutExpired:
        return f"importing {module} in {python} took over {PROBE_TIMEOUT_S:.0f} s"
    if completed.returncode == 0:
        return None
    last_line = (completed.stderr.strip().splitlines() or ["unknown error"])[-1]
    return f"{module} not importable in {python}: {last_line}"


# ---------------------------------------------------------------------------
# Reporting


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def cell(outcome: Outcome, key: str) -> str:
    if outcome.status != "ok":
        return outcome.status
    return format_number(outcome.median(key))


def ratio(metric: Metric, zray_value, peer_value) -> float | None:
    """How many times better zray is than the peer (>1: zray better)."""
    if not zray_value or not peer_value:
        return None
    if metric.higher_is_better:
        return zray_value / peer_value
    return peer_value / zray_value


def verdict_text(bench: Workload, metric: Metric, zray_median, quick: bool) -> str:
    """pass / MISS against the target; "n/c" where --quick shrank a total-time workload."""
    if zray_median is None:
        return "-"
    if quick and metric.unit == "s" and not bench.comparable_in_quick_mode():
        return "n/c"
    return {True: "pass", False: "MISS", None: "-"}[metric.target.met_by(zray_median)]


def table_rows(results: dict, peers: list, quick: bool) -> list:
    header = ["workload", "unit", "zray"] + peers + [f"vs {p}" for p in peers] + \
        ["target", "ok"]
    rows = [header]
    for name, outcomes in results.items():
        bench = WORKLOADS[name]
        for metric in bench.metrics:
            label = name if len(bench.metrics) == 1 else f"{name}: {metric.key}"
            zray_median = outcomes["zray"].median(metric.key)
            ratios = [ratio(metric, zray_median, outcomes[p].median(metric.key))
                      for p in peers]
            rows.append([label, metric.unit, cell(outcomes["zray"], metric.key)]
                        + [cell(outcomes[p], metric.key) for p in peers]
                        + [f"{r:.2f}x" if r is not None else "-" for r in ratios]
                        + [metric.target.text,
                           verdict_text(bench, metric, zray_median, quick)])
    return rows


def render_table(rows: list) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    numeric = set(range(2, len(rows[0]) - 2))
    lines = []
    for index, row in enumerate(rows):
        cells = [str(c).rjust(w) if i in numeric else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def failure_notes(results: dict) -> list:
    """One line per (workload, status, reason), naming the frameworks it applies to."""
    grouped = {}
    for name, outcomes in results.items():
        for framework, outcome in outcomes.items():
            if outcome.status not in ("ok", NOT_INSTALLED) and outcome.reason:
                key = (name, outcome.status, outcome.reason)
                grouped.setdefault(key, []).append(framework)
    return [f"{'+'.join(frameworks)}/{name}: {status}: {reason}"
            for (name, status, reason), frameworks in grouped.items()]


def run_metadata(options, peers, pythons) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "host": platform.node(), "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / BYTES_PER_GB, 1),
        "python": sys.version.split()[0], "quick": options.quick, "runs": options.runs,
        "num_cpus": options.num_cpus, "timeout_s": options.timeout, "peers": peers,
        "pythons": pythons,
        "ratio_note": "ratio > 1 means zray is better: zray/peer for rates, "
                      "peer/zray for times and memory",
    }


def print_report(results: dict, peers: list, unavailable: dict, meta: dict) -> None:
    print()
    mode = "QUICK smoke run (reduced sizes; noisy; not official figures)" \
        if meta["quick"] else "full sizes"
    print(f"zray microbenchmarks, {meta['date']}, {mode}; median of {meta['runs']} runs; "
          f"{meta['cpus']} CPUs, {meta['memory_gb']} GB, Python {meta['python']}")
    for peer, reason in unavailable.items():
        print(f"note: peer {peer} skipped: {reason}")
    if peers:
        print(f"ratios: {meta['ratio_note']}")
    rows = table_rows(results, peers, meta["quick"])
    print(render_table(rows))
    if any(row[-1] == "n/c" for row in rows[1:]):
        print("n/c: not comparable: --quick ran this total-time workload at reduced size")
    for note in failure_notes(results):
        print(f"  {note}")


def results_json(results: dict, meta: dict) -> dict:
    out = {"meta": meta, "results": {}}
    for name, outcomes in results.items():
        bench = WORKLOADS[name]
        out["results"][name] = {
            framework: {
                "status": outcome.status, "reason": outcome.reason,
                "detail": outcome.detail, "samples": outcome.samples,
                "medians": {m.key: outcome.median(m.key) for m in bench.metrics},
                "units": {m.key: m.unit for m in bench.metrics},
            }
            for framework, outcome in outcomes.items()
        }
    return out


# ---------------------------------------------------------------------------
# Peer environment


def setup_peers(directory: str) -> str:
    """Create a virtualenv at ``directory`` with Ray and Dask; return its python."""
    python = os.path.join(directory, "bin", "python")
    if not os.path.exists(python):
        print(f"creating virtualenv {directory}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", directory], check=True)
    command = [python, "-m", "pip", "install", "--upgrade", *PEER_PIP_PACKAGES]
    print("running: " + " ".join(shlex.quote(c) for c in command), flush=True)
    completed = subprocess.run(command)
    if completed.returncode != 0:
        print(f"warning: pip exited with code {completed.returncode}; peers that did not "
              f"install will be reported as not installed", file=sys.stderr)
    return python


def peer_pythons(options, peer_venv_python: str | None) -> dict:
    pythons = {framework: sys.executable for framework in FRAMEWORKS}
    if peer_venv_python:
        pythons.update({peer: peer_venv_python for peer in PEERS})
    if options.ray_python:
        pythons["ray"] = options.ray_python
    for item in options.python_for_peer:
        for pair in item.split(","):
            peer, sep, python = pair.partition("=")
            if not sep or peer not in PEERS:
                raise SystemExit(f"--python-for-peer expects PEER=PYTHON with PEER in "
                                 f"{PEERS}, got {pair!r}")
            pythons[peer] = python
    return pythons


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="zray microbenchmarks (see BENCHMARKS.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", type=int, default=None,
                        help=f"timed runs per workload (default {DEFAULT_RUNS}, "
                             f"{QUICK_RUNS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes and runs: a smoke check, not a measurement")
    parser.add_argument("--only", default="",
                        help="comma-separated workloads to run (default: all)")
    parser.add_argument("--compare", default="",
                        help="comma-separated peers to run alongside zray: ray, dask")
    parser.add_argument("--json", dest="json_path", help="write all results here as JSON")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds of work allowed per worker process (default "
                             f"{DEFAULT_TIMEOUT_S:.0f}, {QUICK_TIMEOUT_S:.0f} with --quick)")
    parser.add_argument("--num-cpus", type=int, default=NUM_CPUS,
                        help=f"CPUs each framework is started with (default {NUM_CPUS})")
    parser.add_argument("--ray-python", help="python interpreter for the ray peer")
    parser.add_argument("--python-for-peer", action="append", default=[],
                        metavar="PEER=PYTHON", help="interpreter for a peer; repeatable")
    parser.add_argument("--setup-peers", metavar="DIR",
                        help="create a virtualenv at DIR with ray[default] and "
                             "dask[distributed], and use it for the peers")
    parser.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--stepped", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.runs is None:
        options.runs = QUICK_RUNS if options.quick else DEFAULT_RUNS
    if options.timeout is None:
        options.timeout = QUICK_TIMEOUT_S if options.quick else DEFAULT_TIMEOUT_S
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    return options, parser


def split_names(text: str) -> list:
    return [name.strip() for name in text.split(",") if name.strip()]


def selected_workloads(options, parser) -> list:
    names = split_names(options.only) or list(WORKLOADS)
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    return names


def selected_peers(options, parser) -> list:
    peers = split_names(options.compare)
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    return list(dict.fromkeys(peers))


def run_driver(options, parser) -> int:
    names = selected_workloads(options, parser)
    peers = selected_peers(options, parser)
    venv_python = None
    if options.setup_peers:
        venv_python = setup_peers(options.setup_peers)
        if not peers:
            print(f"peers installed; compare with: --compare ray,dask "
                  f"--python-for-peer ray={venv_python},dask={venv_python}")
            return 0
    pythons = peer_pythons(options, venv_python)
    unavailable = {}
    for framework in ["zray"] + peers:
        reason = probe_framework(pythons[framework], framework)
        if reason:
            unavailable[framework] = reason
            print(f"note: {framework} is not available ({reason}); continuing without it",
                  flush=True)
    frameworks = ["zray"] + peers
    meta = run_metadata(options, peers, {f: pythons[f] for f in frameworks})
    results = {}
    started = time.monotonic()
    for name in names:
        lap = time.monotonic()
        results[name] = run_workload(WORKLOADS[name], frameworks, pythons, options,
                                     unavailable)
        summary = ", ".join(f"{f} {o.status}" for f, o in results[name].items())
        print(f"[{time.monotonic() - started:6.1f} s] {name}: {summary} "
              f"({time.monotonic() - lap:.1f} s)", flush=True)
    meta["total_s"] = round(time.monotonic() - started, 1)
    print_report(results, peers, {p: unavailable[p] for p in peers if p in unavailable}, meta)
    if options.json_path:
        with open(options.json_path, "w") as out:
            json.dump(results_json(results, meta), out, indent=2)
        print(f"wrote {options.json_path}")
    failed = [name for name, outcomes in results.items()
              if outcomes["zray"].status in (ERROR, TIMEOUT)]
    return 1 if failed else 0


def main(argv=None) -> int:
    options, parser = parse_args(argv)
    if options.worker:
        framework, name = options.worker
        if framework not in FRAMEWORKS or name not in WORKLOADS:
            parser.error(f"--worker expects one of {FRAMEWORKS} and a known workload")
        options.framework, options.workload = framework, name
        return run_worker(options)
    return run_driver(options, parser)


if __name__ == "__main__":
    sys.exit(main())
