"""The clusters zray.data's integration tests run on: every test of a module
that takes ``cluster`` from here runs twice, on a local cluster and on a
2-node ``zray.cluster_utils.Cluster`` (a head node and one more node manager,
one CPU each, the driver attached to the head's node), so blocks are made,
pulled and combined across nodes.

    from tests.data_clusters import cluster  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import pytest

import zray
from zray.cluster_utils import Cluster

# workers fork with pyarrow and pandas imported (~1 s each otherwise, on 2 cores)
PRELOAD = {"worker_preload_modules": "numpy,pyarrow,pandas"}


def start_two_nodes(**head_args) -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": PRELOAD, **head_args})
    cluster.add_node(num_cpus=1, **head_args)
    cluster.wait_for_nodes()
    zray.init(address=cluster.address)
    return cluster


@pytest.fixture(scope="module", params=["local", "two_nodes"])
def cluster(request):
    """A 2-CPU cluster: one local node, or two nodes of one CPU each."""
    if request.param == "local":
        zray.init(num_cpus=2, _system_config=PRELOAD)
        yield "local"
        zray.shutdown()
        return
    two_nodes = start_two_nodes()
    assert len([n for n in zray.nodes() if n.get("Alive", True)]) == 2
    yield "two_nodes"
    zray.shutdown()
    two_nodes.shutdown()
