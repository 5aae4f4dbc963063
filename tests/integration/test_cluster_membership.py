"""Nodes joining and leaving a Cluster: late feasibility, graceful and abrupt removal."""

from __future__ import annotations

import os

import pytest

import zray
from zray.cluster_utils import Cluster

from tests.conftest import SHM_DIR, wait_for

pytestmark = pytest.mark.timeout(90)

FAST_FAILURE = {"heartbeat_interval_s": 0.1, "heartbeat_missed_limit": 10}


@zray.remote
def node_id():
    return zray.get_runtime_context().get_node_id()


def test_infeasible_task_runs_when_a_node_joins():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        zray.init(address=cluster.address)
        ref = node_id.options(resources={"late": 1}).remote()
        ready, _ = zray.wait([ref], timeout=0.5)
        assert not ready
        late = cluster.add_node(num_cpus=1, resources={"late": 1})
        assert zray.get(ref, timeout=30) == late.node_id
    finally:
        zray.shutdown()
        cluster.shutdown()


def test_removed_node_is_reported_dead_and_work_moves_on():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    try:
        doomed = cluster.add_node(num_cpus=1, resources={"doomed": 1})
        graceful = cluster.add_node(num_cpus=1)
        zray.init(address=cluster.address)
        cluster.remove_node(graceful, allow_graceful=True)
        cluster.remove_node(doomed, allow_graceful=False)

        def states():
            return {n["NodeID"]: n for n in zray.nodes()}
        assert wait_for(lambda: not states()[doomed.node_id]["Alive"])
        assert not states()[graceful.node_id]["Alive"]
        assert "stopped" in states()[graceful.node_id]["DeathReason"]
        assert "heartbeat" in states()[doomed.node_id]["DeathReason"]
        assert zray.cluster_resources()["CPU"] == 1
        assert zray.get(node_id.remote()) == cluster.head_node.node_id
        import psutil                      # a SIGKILLed node leaves no process behind
        assert wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                     if doomed.node_id in " ".join(p.info["cmdline"] or ())],
                        timeout_s=5)
    finally:
        zray.shutdown()
        cluster.shutdown()
    assert not [name for name in os.listdir(SHM_DIR) if doomed.node_id[:16] in name]


def test_node_back_from_a_partition_rejoins_as_a_new_node():
    import signal
    import time
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    try:
        frozen = cluster.add_node(num_cpus=1, resources={"frozen": 1})
        zray.init(address=cluster.address)
        os.kill(frozen.pid, signal.SIGSTOP)         # silent, like a cut link
        try:
            assert wait_for(lambda: not {n["NodeID"]: n for n in zray.nodes()}[
                frozen.node_id]["Alive"])
        finally:
            os.kill(frozen.pid, signal.SIGCONT)

        def rejoined():
            return [n for n in zray.nodes() if n["Alive"] and n["pid"] == frozen.pid
                    and n["NodeID"] != frozen.node_id]
        assert wait_for(rejoined, timeout_s=20)
        [fresh] = rejoined()
        assert fresh["Resources"]["frozen"] == 1
        assert zray.get(node_id.options(resources={"frozen": 1}).remote(),
                        timeout=30) == fresh["NodeID"]
        assert not {n["NodeID"]: n for n in zray.nodes()}[frozen.node_id]["Alive"]
        frozen.node_id = fresh["NodeID"]            # so that shutdown cleans its store
    finally:
        zray.shutdown()
        cluster.shutdown()


KILLED_DRIVER = """
import sys, time, zray
zray.init(address=sys.argv[1])
@zray.remote(num_cpus=1)
class Holder:
    def ping(self):
        return 1
@zray.remote
def forever():
    time.sleep(600)
holder = Holder.remote()
zray.get(holder.ping.remote())
task = forever.remote()
print("ready", flush=True)
time.sleep(600)
"""


def test_killed_driver_frees_its_actors_and_tasks():
    import subprocess
    import sys
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE})
    driver = None
    try:
        cluster.add_node(num_cpus=2)
        zray.init(address=cluster.address)
        driver = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, cluster.address],
                                  stdout=subprocess.PIPE, text=True)
        assert driver.stdout.readline().strip() == "ready"
        assert wait_for(lambda: zray.available_resources().get("CPU", 0) <= 1)
        driver.kill()
        driver.wait()
        assert wait_for(lambda: zray.available_resources().get("CPU", 0) == 3, timeout_s=20)
        assert zray.get([node_id.remote() for _ in range(3)], timeout=30)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        zray.shutdown()
        cluster.shutdown()
