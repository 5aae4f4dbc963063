"""The chunk sockets on CURVE again (``transfer_encryption="curve"``), in a
module of its own: it starts its own cluster with that setting in the
environment every process of it inherits."""

from __future__ import annotations

import pytest

import zray
from zray import protocol
from zray.cluster_utils import Cluster
from zray.protocol import Msg
from zray.security import transfer_seal_key

from tests.integration.test_security import _answer, _chunk_dealer
from tests.tasks import make_array

pytestmark = pytest.mark.timeout(90)


def test_transfers_still_run_over_curve_when_asked(monkeypatch):
    """``transfer_encryption="curve"`` (every node): the chunk server is a CURVE
    server again, and a member's CURVE socket gets chunks from it."""
    monkeypatch.setenv("ZRAY_TRANSFER_ENCRYPTION", "curve")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        node = cluster.add_node(num_cpus=1, resources={"member": 1})
        zray.init(address=cluster.address)
        ref = make_array.options(resources={"member": 1}).remote(2 * 2**20 // 8, 4.0)
        assert float(zray.get(ref, timeout=60).sum()) == 4.0 * (2 * 2**20 // 8)
        [info] = [n for n in zray.nodes() if n["NodeID"] == node.node_id]
        endpoint = info["ObjectTransferEndpoint"]
        assert endpoint.startswith("tcp://") and cluster.config.cluster_key_file
        assert transfer_seal_key(endpoint, cluster.config) is None
        chunks = _chunk_dealer(endpoint, cluster.config)
        try:
            chunks.send_multipart(protocol.encode(Msg.CHUNK_REQUEST, [(ref.binary(), 0, 64)]))
            item = _answer(chunks, lambda kind, got: kind is Msg.CHUNK)
        finally:
            chunks.close()
        assert item.error is None and item.size > 2 * 2**20
    finally:
        zray.shutdown()
        cluster.shutdown()
