"""The head's metrics endpoint: cluster metrics and user metrics over HTTP."""

from __future__ import annotations

import pytest

import zray
from zray.cluster_utils import Cluster
from tests.integration.test_observability import eventually

pytestmark = pytest.mark.timeout(60)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@zray.remote
def counted(i):
    from zray.util.metrics import Counter, Histogram
    Counter("obs_test_calls", "calls of counted", tag_keys=("kind",)).inc(
        1, tags={"kind": "even" if i % 2 == 0 else "odd"})
    Histogram("obs_test_sizes", "sizes", boundaries=[1, 10]).observe(i)
    return i


def test_metrics_endpoint_serves_cluster_and_user_metrics():
    import urllib.request
    port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "_system_config": {"metrics_export_port": port}})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        zray.init(address=cluster.address)
        assert zray.get([counted.remote(i) for i in range(5)]) == list(range(5))

        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200
                return r.read().decode()
        text = eventually(scrape, lambda t: 'obs_test_calls{kind="even"} 3' in t
                          and 'obs_test_calls{kind="odd"} 2' in t
                          and "obs_test_sizes_count 5" in t)
        assert 'obs_test_calls{kind="even"} 3' in text
        assert 'obs_test_calls{kind="odd"} 2' in text
        assert 'obs_test_sizes_bucket{le="1"} 2' in text      # 0 and 1
        assert 'obs_test_sizes_bucket{le="+Inf"} 5' in text
        assert "obs_test_sizes_sum 10" in text
        assert "zray_cluster_active_nodes 2" in text
        cpus = [line for line in text.splitlines()
                if line.startswith('zray_resources_total{Name="CPU"')]
        assert sorted(float(line.split()[-1]) for line in cpus) == [1.0, 2.0]
        assert "zray_object_store_used_bytes{" in text or "zray_object_store" in text
        assert "zray_scheduler_queue_length 0" in text
        assert 'zray_tasks{State="FINISHED"}' in text
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        zray.shutdown()
        cluster.shutdown()
