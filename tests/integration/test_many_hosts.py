"""zray over simulated hosts: each node in its own network namespace with its own
address, started with the real `zray start` CLI (tools/many_hosts.py)."""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
from many_hosts import ZrayHosts  # noqa: E402
from netns_harness import available  # noqa: E402

AVAILABLE, REASON = available()
pytestmark = [pytest.mark.skipif(not AVAILABLE, reason=REASON), pytest.mark.timeout(150)]


def test_map_reduce_over_three_hosts_before_and_after_a_cut_link():
    with ZrayHosts(n_hosts=3) as cluster:
        status = cluster.status()
        assert "3 node(s) alive" in status
        for host in cluster.hosts:
            assert host.ip in status

        result = cluster.map_reduce(num_maps=24)
        assert result["total"] == result["expected"]
        assert len(result["nodes"]) == 3                 # SPREAD reached every host

        cluster.cut(1)
        time.sleep(2.0)                                  # less than the head's dead-node limit
        cluster.heal(1)
        result = cluster.map_reduce(num_maps=24)
        assert result["total"] == result["expected"]
        assert len(result["nodes"]) == 3
        assert "3 node(s) alive" in cluster.status()


@pytest.mark.slow
def test_chaos_map_reduce_over_four_hosts_with_cut_links():
    from many_hosts import FAST_FAILURE_ENV
    with ZrayHosts(n_hosts=4, env=FAST_FAILURE_ENV) as cluster:
        result = cluster.chaos_map_reduce(num_maps=1000, every_s=1.5, cut_s=1.5)
        assert result["ok"], result
        assert result["cuts"] >= 1
        assert "DEAD" in cluster.status()            # a cut node was declared dead
        deadline = time.monotonic() + 30             # ... and comes back as a new node
        while "4 node(s) alive" not in cluster.status():
            assert time.monotonic() < deadline, cluster.status()
            time.sleep(0.5)
