"""The bounded object store: spilling to disk, restoring, backpressure.

Each test starts a cluster with a small ``object_store_memory`` and checks, from
the files themselves, that the store's shared memory stays within its bound,
that every value comes back equal, and that spill files live exactly as long
as their objects.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import zray
from zray.cluster_utils import Cluster
from zray.exceptions import ObjectStoreFullError

from tests.conftest import SHM_DIR, SPILL_BASES, wait_for

pytestmark = pytest.mark.timeout(180)

MB = 1024 * 1024
BLOCK = 50 * MB


def store_bytes() -> int:
    """Bytes of every zray file in the shared-memory folder (segments, spares,
    segments being written or restored)."""
    total = 0
    for name in os.listdir(SHM_DIR):
        if name.startswith("zray_"):
            try:
                total += os.stat(os.path.join(SHM_DIR, name)).st_size
            except FileNotFoundError:
                pass
    return total


def spill_dir_files(base) -> list:
    found = []
    for folder in os.listdir(base):
        if folder.startswith("zray-spill-"):
            found += [n for n in os.listdir(os.path.join(base, folder)) if n != "owner.pid"]
    return found


def block(value: int) -> np.ndarray:
    return np.full(BLOCK // 8, value, dtype=np.int64)


def spilling_config(path) -> dict:
    return {"object_spilling_config": json.dumps(
        {"type": "filesystem", "params": {"directory_path": str(path)}})}


@zray.remote
def make_block(value: int):
    return np.full(BLOCK // 8, value, dtype=np.int64)


@zray.remote
def total(array) -> int:
    return int(array.sum())


def test_puts_past_the_bound_spill_and_come_back(tmp_path):
    spill = tmp_path / "spill"
    SPILL_BASES.add(str(spill))
    bound = 200 * MB
    zray.init(num_cpus=1, object_store_memory=bound, _system_config=spilling_config(spill))
    try:
        refs = []
        for i in range(20):
            refs.append(zray.put(block(i)))
            used = store_bytes()
            assert used <= bound + BLOCK + MB, f"after put {i}: {used / MB:.1f} MB in shm"
        spilled = spill_dir_files(spill)
        assert len(spilled) >= 20 - bound // BLOCK, spilled
        for i, ref in enumerate(refs):
            value = zray.get(ref)
            assert value.shape == (BLOCK // 8,) and value[0] == i and value[-1] == i
            assert np.array_equal(value, block(i))
            del value
            assert store_bytes() <= bound + BLOCK + MB
        del refs, ref
        assert wait_for(lambda: not spill_dir_files(spill), 20), spill_dir_files(spill)
    finally:
        zray.shutdown()
    assert not os.path.exists(spill) or not os.listdir(spill)


def test_task_returns_spill_and_sum_exactly():
    bound = 300 * MB
    zray.init(num_cpus=2, object_store_memory=bound)
    try:
        refs = [make_block.remote(i) for i in range(40)]
        got = 0
        for ref in refs:
            value = zray.get(ref)
            got += int(value.sum())
            del value
            assert store_bytes() <= bound + 2 * BLOCK + MB     # two workers write at once
        assert got == sum(range(40)) * (BLOCK // 8)
        assert wait_for(lambda: zray.nodes()[0]["ObjectStore"].get("bound_bytes") == bound,
                        10), zray.nodes()[0]["ObjectStore"]
        del refs, ref
    finally:
        zray.shutdown()


def test_a_node_reads_an_object_spilled_on_another(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 120 * MB, "resources": {"nodeA": 1}})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=200 * MB, resources={"nodeB": 1})
        zray.init(address=cluster.address)
        first = zray.put(block(7))
        later = [zray.put(block(i)) for i in range(3)]      # first is spilled on A
        node_a = cluster.head_node.node_id
        segment = [n for n in os.listdir(SHM_DIR) if n.startswith(f"zray_{node_a[:16]}_")
                   and n.endswith(first.hex())]
        assert not segment, "the first object should be spilled on node A"
        result = zray.get(total.options(resources={"nodeB": 1}).remote(first))
        assert result == 7 * (BLOCK // 8)
        still = [n for n in os.listdir(SHM_DIR) if n.startswith(f"zray_{node_a[:16]}_")
                 and n.endswith(first.hex())]
        assert not still, "node A restored the object to serve node B"
        stats = {n["NodeID"]: n["ObjectStore"] for n in zray.nodes()}
        assert wait_for(lambda: {n["NodeID"]: n["ObjectStore"] for n in zray.nodes()}[
            node_a].get("spilled_objects", 0) >= 1, 10), stats
        del first, later
    finally:
        zray.shutdown()
        cluster.shutdown()


def test_a_put_that_cannot_fit_raises_and_the_cluster_goes_on():
    bound = 100 * MB
    zray.init(num_cpus=1, object_store_memory=bound,
              _system_config={"object_store_full_timeout_s": 2.0})
    try:
        with pytest.raises(ObjectStoreFullError, match="larger object_store_memory"):
            zray.put(np.zeros(150 * MB // 8))        # larger than the bound: at once
        pinned = zray.put(np.ones(60 * MB // 8))
        view = zray.get(pinned)                       # a live zero-copy value pins it
        started = time.monotonic()
        with pytest.raises(ObjectStoreFullError) as info:
            zray.put(np.ones(60 * MB // 8))
        assert time.monotonic() - started < 15
        text = str(info.value)
        assert "pinned" in text and pinned.hex() in text and f"pid {os.getpid()}" in text
        assert "100.0 MiB" in text
        del view                                      # unpinned: now it can spill
        again = zray.put(np.full(60 * MB // 8, 3.0))
        assert zray.get(total.remote(again)) == int(3 * (60 * MB // 8))
        assert zray.get(pinned)[0] == 1.0
        del pinned, again
    finally:
        zray.shutdown()
