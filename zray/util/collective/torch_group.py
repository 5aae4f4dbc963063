"""The ``gloo`` and ``nccl`` backends: torch tensors through torch.distributed.

Rank 0 picks a free port on its host; every rank reads it from the
rendezvous and initializes a torch process group there.  One torch group per
process (torch's default group); a second zray group with a torch backend in
the same process is refused with a clear error.
"""

from __future__ import annotations

import datetime
import socket

from zray.util.collective.types import ReduceOp


class TorchGroup:
    def __init__(self, world_size: int, rank: int, group_name: str, backend: str,
                 master: dict, timeout_s: float):
        import torch.distributed as dist
        if dist.is_initialized():
            raise RuntimeError("this process already has a torch.distributed group; zray "
                               "runs one gloo/nccl collective group per process")
        self.dist = dist
        self.world_size = world_size
        self.rank = rank
        self.group_name = group_name
        dist.init_process_group(backend, init_method=f"tcp://{master['host']}:{master['port']}",
                                world_size=world_size, rank=rank,
                                timeout=datetime.timedelta(seconds=timeout_s))

    @staticmethod
    def address_of(rank: int, host: str) -> dict:
        if rank != 0:
            return {}
        with socket.socket() as probe:
            probe.bind((host, 0))
            return {"host": host, "port": probe.getsockname()[1]}

    def _op(self, op: ReduceOp):
        ops = self.dist.ReduceOp
        return {ReduceOp.SUM: ops.SUM, ReduceOp.PRODUCT: ops.PRODUCT,
                ReduceOp.MIN: ops.MIN, ReduceOp.MAX: ops.MAX}[op]

    def allreduce(self, tensor, op) -> None:
        self.dist.all_reduce(tensor, op=self._op(op))

    def reduce(self, tensor, dst_rank, op) -> None:
        self.dist.reduce(tensor, dst_rank, op=self._op(op))

    def broadcast(self, tensor, src_rank) -> None:
        self.dist.broadcast(tensor, src_rank)

    def allgather(self, outputs, tensor) -> None:
        self.dist.all_gather(outputs, tensor)

    def barrier(self) -> None:
        self.dist.barrier()

    def send(self, tensor, dst_rank) -> None:
        self.dist.send(tensor, dst_rank)

    def recv(self, tensor, src_rank) -> None:
        self.dist.recv(tensor, src_rank)

    def close(self) -> None:
        self.dist.destroy_process_group()
