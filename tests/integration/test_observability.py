"""Task events, the timeline and the state API on a two-node cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import zray
from zray.cluster_utils import Cluster
from zray.util import state

pytestmark = pytest.mark.timeout(60)


def eventually(produce, ok, timeout=10.0):
    """``produce()`` once ``ok`` of it holds: a worker's finish report reaches the
    head with its bookkeeping batch, possibly after the owner got the result."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = produce()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head": 1}})
    b = cluster.add_node(num_cpus=1, resources={"nodeB": 1})
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    yield cluster, {"head": cluster.head_node, "nodeB": b}
    zray.shutdown()
    cluster.shutdown()


@zray.remote
def traced(i):
    import time
    time.sleep(0.002)
    return (zray.get_runtime_context().get_node_id(), os.getpid())


@zray.remote(max_retries=0)
def broken():
    raise ValueError("broken on purpose")


@zray.remote
def parent():
    return zray.get(traced.options(resources={"nodeB": 0.01}).remote(99))


def test_timeline_has_one_slice_per_task_on_its_node_and_worker(two_nodes, tmp_path):
    n = 6
    refs = [traced.options(resources={"head" if i % 2 else "nodeB": 0.01}).remote(i)
            for i in range(n)]
    ran = zray.get(refs)
    ids = {r.task_id().hex() for r in refs}
    trace = eventually(zray.timeline, lambda t: ids <= {
        e["args"]["task_id"] for e in t if e["ph"] == "X"})
    slices = {e["args"]["task_id"]: e for e in trace
              if e["ph"] == "X" and e["args"]["task_id"] in ids}
    assert len(slices) == n
    for ref, (node_id, pid) in zip(refs, ran):
        ev = slices[ref.task_id().hex()]
        assert ev["name"].endswith("traced")
        assert ev["pid"] == node_id and ev["tid"] == pid
        assert ev["dur"] > 0
    named = {e["pid"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
    assert {node for node, _ in ran} <= named
    out = tmp_path / "trace.json"
    assert zray.timeline(str(out)) is None
    assert len([e for e in json.loads(out.read_text()) if e["ph"] == "X"]) >= n


def test_nested_task_gets_a_flow_arrow(two_nodes):
    zray.get(parent.options(resources={"head": 0.01}).remote())
    trace = eventually(zray.timeline, lambda t: any(e["ph"] == "s" for e in t))
    starts = [e for e in trace if e["ph"] == "s"]
    ends = [e for e in trace if e["ph"] == "f"]
    assert starts and len(starts) == len(ends)


@zray.remote
class Tracked:
    def work(self, seconds):
        import time
        time.sleep(seconds)
        return os.getpid()

    def fail(self):
        raise KeyError("actor call broken on purpose")


def test_actor_calls_are_task_events_and_timeline_slices(two_nodes):
    actor = Tracked.options(resources={"nodeB": 0.01}).remote()
    refs = [actor.work.remote(0.01) for _ in range(3)]
    pid = zray.get(refs)[0]
    failed = actor.fail.remote()
    with pytest.raises(KeyError):
        zray.get(failed)
    ids = {r.task_id().hex() for r in refs}
    trace = eventually(zray.timeline, lambda t: ids <= {
        e["args"]["task_id"] for e in t if e["ph"] == "X"})
    slices = [e for e in trace if e["ph"] == "X" and e["args"]["task_id"] in ids]
    assert len(slices) == 3
    assert all(e["name"] == "Tracked.work" and e["tid"] == pid and
               e["pid"] == two_nodes[1]["nodeB"].node_id and e["dur"] >= 5e3
               for e in slices)
    row = eventually(lambda: state.get_task(failed.task_id().hex()),
                     lambda r: r is not None and r.state == "FAILED")
    assert row.type == "ACTOR_TASK" and row.error_type == "KeyError"
    assert "actor call broken on purpose" in row.error_message


def test_failed_task_event_carries_traceback_and_filters(two_nodes):
    ref = broken.remote()
    with pytest.raises(zray.exceptions.RayTaskError):
        zray.get(ref)
    failed = state.list_tasks(filters=[("state", "=", "FAILED")], detail=True)
    mine = [t for t in failed if t.task_id == ref.task_id().hex()]
    assert len(mine) == 1
    task = mine[0]
    assert task.error_type == "ValueError"
    assert "broken on purpose" in task.error_message
    assert "Traceback" in task.error_message
    assert task.worker_pid and task.node_id and task.end_time_ms >= task.start_time_ms
    assert state.get_task(ref.task_id().hex()).state == "FAILED"
    assert all(t.state == "FAILED" for t in failed)
    by_type = state.list_tasks(filters=[("error_type", "=", "ValueError")])
    assert ref.task_id().hex() in {t.task_id for t in by_type}
    not_failed = state.list_tasks(filters=[("state", "!=", "failed")], limit=1000)
    assert ref.task_id().hex() not in {t.task_id for t in not_failed}
    assert set(state.list_tasks(limit=2)[0]) == set(state.TASK_COLUMNS)
    with pytest.raises(ValueError, match="filter"):
        state.list_tasks(filters=[("state", ">", "x")])


def test_summaries_count_by_function_and_state(two_nodes):
    zray.get([traced.remote(i) for i in range(3)])

    def traced_row(summary):
        return next(v for k, v in summary["cluster"]["summary"].items()
                    if k.endswith("traced"))
    summary = eventually(state.summarize_tasks, lambda s: traced_row(s)[
        "state_counts"].get("FINISHED", 0) >= 3)["cluster"]
    traced_row = traced_row({"cluster": summary})
    assert traced_row["state_counts"]["FINISHED"] >= 3
    assert summary["total_tasks"] >= 3
    nodes = state.list_nodes()
    assert len(nodes) == 2 and all(n.state == "ALIVE" for n in nodes)
    assert state.get_node(nodes[0].node_id).node_id == nodes[0].node_id
    assert state.summarize_objects()["cluster"]["total_objects"] >= 0
    assert "total_actors" in state.summarize_actors()["cluster"]


def test_cli_list_get_summary_timeline(two_nodes, tmp_path):
    cluster, _ = two_nodes
    ref = broken.remote()
    with pytest.raises(zray.exceptions.RayTaskError):
        zray.get(ref)
    env = dict(os.environ, ZRAY_ADDRESS=cluster.address)

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "zray", *args], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = json.loads(cli("list", "tasks", "--filter", "state=FAILED", "--format", "json"))
    assert ref.task_id().hex() in {r["task_id"] for r in rows}
    assert all(r["state"] == "FAILED" for r in rows)
    assert "broken on purpose" in cli("get", "task", ref.task_id().hex())
    assert "FAILED" in cli("summary", "tasks")
    assert "node_id:" in cli("list", "nodes", "--format", "yaml")
    table = cli("list", "tasks", "--filter", "state!=FAILED", "--limit", "3")
    assert table.splitlines()[0].split()[:3] == ["TASK_ID", "ATTEMPT_NUMBER", "NAME"]
    assert "FAILED" not in table
    out = tmp_path / "t.json"
    cli("timeline", "--output", str(out))
    assert any(e["ph"] == "X" for e in json.loads(out.read_text()))



@zray.remote
def chatty(marker):
    print(f"hello {marker}")
    return os.getpid()


def test_cli_logs_reads_a_workers_output_by_task_and_pid(two_nodes):
    cluster, _ = two_nodes
    ref = chatty.options(resources={"nodeB": 0.01}).remote("obs-marker-1")
    pid = zray.get(ref)
    env = dict(os.environ, ZRAY_ADDRESS=cluster.address)

    def logs(*args):
        done = subprocess.run([sys.executable, "-m", "zray", "logs", *args], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    task_id = ref.task_id().hex()
    assert "hello obs-marker-1" in eventually(
        lambda: logs("--task-id", task_id), lambda out: "obs-marker-1" in out)
    assert "hello obs-marker-1" in logs("--pid", str(pid), "--tail", "5")
    everyone = logs()
    assert f"(pid={pid}, node=" in everyone and "hello obs-marker-1" in everyone
    assert "obs-marker-1" not in logs("--pid", "1")
