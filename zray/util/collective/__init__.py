"""Collective communication between tasks and actors (Ray's ``ray.util.collective``).

Each process of a group calls ``init_collective_group(world_size, rank,
backend, group_name)`` (or the driver declares the group once with
``create_collective_group(actors, ...)``); then every rank calls the same
operations in the same order::

    import numpy as np
    import zray
    from zray.util import collective as col

    @zray.remote
    class Worker:
        def setup(self, world_size, rank):
            col.init_collective_group(world_size, rank, backend="zmq", group_name="g")

        def step(self):
            grads = np.ones(1_000_000)
            col.allreduce(grads, group_name="g")       # in place: the sum over ranks
            return grads[0]

Backends:

- ``"zmq"``: numpy arrays (and CPU torch tensors, through their numpy view)
  over direct ZeroMQ sockets between the group's processes, no torch needed.
  Allreduce is a ring (reduce-scatter, then allgather): each rank sends and
  receives 2 (n-1)/n of the array whatever the group's size.  Between hosts the
  sockets use the cluster's CURVE keys, as every zray TCP socket does.
- ``"gloo"`` and ``"nccl"``: torch tensors through ``torch.distributed``
  (rank 0's host is the rendezvous), for code that already uses torch.

Ranks find each other through a small named actor per group (the
rendezvous), which also lets ``create_collective_group`` work from the driver.
"""

from zray.util.collective.api import (
    ReduceOp, allgather, allreduce, barrier, broadcast, create_collective_group,
    destroy_collective_group, get_collective_group_size, get_rank, init_collective_group,
    is_group_initialized, recv, reduce, send)
from zray.util.collective.types import Backend

__all__ = ["Backend", "ReduceOp", "allgather", "allreduce", "barrier", "broadcast",
           "create_collective_group", "destroy_collective_group",
           "get_collective_group_size", "get_rank", "init_collective_group",
           "is_group_initialized", "recv", "reduce", "send"]
