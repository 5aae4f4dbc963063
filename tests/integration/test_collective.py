"""zray.util.collective, zmq backend: exact results for every operation on
groups of 2 and 3 processes."""

from __future__ import annotations

import numpy as np
import pytest

import zray
from tests.actors import CollectiveMember

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster():
    zray.init(num_cpus=2)
    yield
    zray.shutdown()


def group(name, world_size):
    members = [CollectiveMember.remote(rank) for rank in range(world_size)]
    joined = zray.get([m.join.remote(world_size, name) for m in members])
    assert joined == [(rank, world_size) for rank in range(world_size)]
    return members


def expected(world_size, size=10):
    return [np.arange(size, dtype=np.float64) + rank * 100 for rank in range(world_size)]


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_operation_gives_exact_results(cluster, world_size):
    from zray.util import collective as col
    name = f"ops{world_size}"
    members = group(name, world_size)
    inputs = expected(world_size)

    def run(operation, **kwargs):
        return zray.get([m.run.remote(operation, name, **kwargs) for m in members])
    for result in run("allreduce"):
        assert np.array_equal(result, sum(inputs))
    for op, fold in (("MAX", np.maximum), ("MIN", np.minimum), ("PRODUCT", np.multiply)):
        want = inputs[0]
        for other in inputs[1:]:
            want = fold(want, other)
        for result in run("allreduce", op=getattr(col.ReduceOp, op)):
            assert np.array_equal(result, want), op
    results = run("reduce", dst_rank=world_size - 1)
    assert np.array_equal(results[-1], sum(inputs))
    for rank, result in enumerate(results[:-1]):
        assert np.array_equal(result, inputs[rank])        # others keep their input
    for result in run("broadcast", src_rank=1):
        assert np.array_equal(result, inputs[1])
    for outputs in run("allgather"):
        assert all(np.array_equal(o, i) for o, i in zip(outputs, inputs))
    assert run("barrier") == [None] * world_size
    assert zray.get([m.leave.remote(name) for m in members]) == [False] * world_size


def test_uneven_and_large_arrays_allreduce_exactly(cluster):
    members = group("big", 3)
    for size in (1, 2, 7, 3_000_001):     # fewer elements than ranks; not divisible
        results = zray.get([m.run.remote("allreduce", "big", size=size) for m in members])
        want = sum(expected(3, size))
        assert all(np.array_equal(r, want) for r in results), size
    zray.get([m.leave.remote("big") for m in members])


def test_send_recv_between_two_ranks_leave_others_in_step(cluster):
    members = group("p2p", 3)
    zray.get([members[0].exchange.remote("p2p", 2), members[2].exchange.remote("p2p", 0)])
    # rank 1 took no part; a collective after it still lines up
    for result in zray.get([m.run.remote("allreduce", "p2p") for m in members]):
        assert np.array_equal(result, sum(expected(3)))
    zray.get([m.leave.remote("p2p") for m in members])


def test_create_collective_group_from_the_driver(cluster):
    from zray.util import collective as col
    members = [CollectiveMember.remote(rank) for rank in range(2)]
    col.create_collective_group(members, 2, [0, 1], backend="zmq", group_name="declared")
    for result in zray.get([m.run.remote("allreduce", "declared") for m in members]):
        assert np.array_equal(result, sum(expected(2)))
    zray.get([m.leave.remote("declared") for m in members])


def test_bad_calls_are_clear_errors(cluster):
    from zray.util import collective as col
    with pytest.raises(RuntimeError, match="not in the collective group"):
        col.allreduce(np.zeros(3), group_name="nowhere")
    with pytest.raises(ValueError, match="unknown collective backend"):
        col.init_collective_group(2, 0, backend="mpi", group_name="x")
    with pytest.raises(ValueError, match="rank must be"):
        col.init_collective_group(2, 5, group_name="x")
    with pytest.raises(ValueError, match="ranks must be"):
        col.create_collective_group([1, 2], 2, [0, 0], group_name="x")


@pytest.mark.parametrize("backend", ["gloo", "zmq"])
def test_torch_tensors_on_gloo_and_zmq(cluster, backend):
    pytest.importorskip("torch", reason="the gloo backend needs torch (in the test extra)")
    from tests.actors import TorchCollectiveMember
    members = [TorchCollectiveMember.remote(rank) for rank in range(2)]
    zray.get([m.join.remote(2, f"torch-{backend}", backend) for m in members])
    results = zray.get([m.allreduce_and_broadcast.remote(f"torch-{backend}")
                        for m in members])
    for summed, copied in results:
        assert summed == [float(2 * i + 1) for i in range(6)]
        assert copied == [1.0, 1.0, 1.0]
    zray.get([m.leave.remote(f"torch-{backend}") for m in members])
