"""The dashboard's HTTP API against a live two-node cluster: nodes, tasks (a
finished one, and a failed one with its traceback), actors, a worker's
printed output, the timeline and metrics; pages and static files; bad
requests.  Who may read it: test_dashboard_auth.py; how it starts:
test_dashboard_launch.py; in a browser: test_dashboard_browser.py."""

from __future__ import annotations

import psutil
import pytest

import zray
from zray import dashboard
from zray.cluster_utils import Cluster
from tests.dashboard import MARKER, eventually, request, run_workload

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not dashboard.available(),
                                 reason="the dashboard extra (aiohttp) is not installed")]


@pytest.fixture(scope="module")
def board():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True})
    cluster.add_node(num_cpus=1)
    zray.init(address=cluster.address)
    try:
        yield cluster, run_workload()
    finally:
        zray.shutdown()
        cluster.shutdown()


def api(cluster, path, **kwargs):
    status, _, body = request(cluster.dashboard_url, path, **kwargs)
    assert status == 200, (path, status, body)
    return body


def test_nodes_and_cluster_numbers(board):
    cluster, _ = board
    nodes = api(cluster, "/api/nodes")
    assert {n["node_id"] for n in nodes} == {n.node_id for n in cluster.list_all_nodes()}
    assert all(n["state"] == "ALIVE" and n["resources_total"]["CPU"] == 1.0 for n in nodes)
    overview = api(cluster, "/api/cluster")
    assert overview["nodes_alive"] == 2 and overview["nodes_dead"] == 0
    assert overview["resources_total"]["CPU"] == 2.0
    assert overview["object_store_bound_bytes"] > 0


def test_finished_and_failed_tasks_with_the_traceback(board):
    cluster, work = board
    finished = eventually(lambda: api(cluster, "/api/tasks?state=FINISHED"),
                          lambda rows: set(work["done"]) <= {r["task_id"] for r in rows})
    assert set(work["done"]) <= {r["task_id"] for r in finished}
    assert all(r["state"] == "FINISHED" for r in finished)
    failed = eventually(lambda: api(cluster, f"/api/tasks/{work['failed']}"),
                        lambda row: row["state"] == "FAILED")
    assert failed["name"].endswith("broken") and failed["error_type"] == "ValueError"
    assert "broken on purpose" in failed["error_message"]
    assert "Traceback" in failed["error_message"]
    listed = api(cluster, "/api/tasks?state=FAILED")
    assert work["failed"] in {r["task_id"] for r in listed}
    summary = api(cluster, "/api/tasks/summary")
    assert summary["total_tasks"] >= len(work["done"]) + 2


def test_a_workers_print_is_in_its_logs(board):
    cluster, work = board
    logs = eventually(lambda: api(cluster, f"/api/logs?pid={work['pid']}"),
                      lambda r: any(MARKER in c["text"] for c in r["chunks"]))
    assert any(MARKER in c["text"] and c["pid"] == work["pid"] and
               c["node_id"] == work["node_id"] for c in logs["chunks"])
    sources = api(cluster, "/api/logs/sources")
    assert work["pid"] in {s["pid"] for s in sources}
    actor_source = next(s for s in sources if s["pid"] == work["actor_pid"])
    assert actor_source["label"] == "Greeter"
    later = api(cluster, f"/api/logs?pid={work['pid']}&since={logs['next']}")
    assert later["chunks"] == []


def test_actors_timeline_and_metrics(board):
    cluster, work = board
    actors = api(cluster, "/api/actors")
    [greeter] = [a for a in actors if a["name"] == "greeter"]
    assert greeter["state"] == "ALIVE" and greeter["class_name"] == "Greeter"
    assert greeter["pid"] == work["actor_pid"]
    trace = eventually(lambda: api(cluster, "/api/timeline"),
                       lambda t: set(work["done"]) <= {e["args"]["task_id"] for e in t
                                                       if e["ph"] == "X"})
    slices = [e for e in trace if e["ph"] == "X" and e["args"]["task_id"] in work["done"]]
    assert len(slices) == len(work["done"]) and all(e["dur"] > 0 for e in slices)
    status, headers, _ = request(cluster.dashboard_url, "/api/timeline?download=1")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    families = {f["name"]: f for f in api(cluster, "/api/metrics")}
    assert families["zray_cluster_active_nodes"]["samples"][0]["value"] == 2.0
    status, _, text = request(cluster.dashboard_url, "/metrics")
    assert status == 200 and b"zray_tasks{" in text


def test_pages_history_and_bad_requests(board):
    cluster, _ = board
    for page in ("/", "/tasks", "/actors", "/timeline", "/logs", "/cluster-metrics"):
        status, headers, body = request(cluster.dashboard_url, page)
        assert status == 200 and b"zray dashboard" in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    for asset in ("/static/app.css", "/static/core.js", "/static/timeline.js"):
        assert request(cluster.dashboard_url, asset)[0] == 200
    # sampled every 2 s since the dashboard started (with the head's node alone)
    history = eventually(lambda: api(cluster, "/api/history"),
                         lambda h: h["samples"] and h["samples"][-1]["cpu_total"] == 2.0)
    assert history["samples"][-1]["cpu_total"] == 2.0
    assert request(cluster.dashboard_url, "/api/tasks?limit=many")[0] == 400
    assert request(cluster.dashboard_url, "/api/tasks/not-hex")[0] == 400
    assert request(cluster.dashboard_url, "/api/tasks/" + "00" * 24)[0] == 404
    assert request(cluster.dashboard_url, "/api/nope")[0] == 404
    # a loopback dashboard answers only to loopback names (no DNS rebinding)
    status, _, _ = request(cluster.dashboard_url, "/api/nodes",
                           headers={"Host": "attacker.example:8265"})
    assert status == 403


def test_the_dashboard_process_stays_small(board):
    cluster, _ = board
    for _ in range(3):
        api(cluster, "/api/tasks")
        api(cluster, "/api/timeline")
    rss = psutil.Process(cluster.dashboard.pid).memory_info().rss
    assert rss < 80 * 2 ** 20, f"the dashboard uses {rss / 2**20:.0f} MiB"
