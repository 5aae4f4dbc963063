"""The collective API: groups by name in this process, operations on them."""

from __future__ import annotations

import threading

import numpy as np

import zray
from zray import _runtime
from zray._process import advertised_host
from zray.util.collective import rendezvous
from zray.util.collective.types import Backend, CollectiveError, ReduceOp

#: Seconds an operation waits for a peer before it raises CollectiveError.
DEFAULT_TIMEOUT_S = 300.0

_groups: dict[str, object] = {}
_lock = threading.Lock()


def init_collective_group(world_size: int, rank: int, backend="zmq",
                          group_name: str = "default", timeout_s: float = DEFAULT_TIMEOUT_S):
    """Join group ``group_name`` as ``rank`` of ``world_size``; returns once
    every rank has joined."""
    backend = Backend.parse(backend)
    _check_rank(world_size, rank)
    with _lock:
        if group_name in _groups:
            raise RuntimeError(f"this process already joined the collective group "
                               f"{group_name!r}; destroy_collective_group it first")
    client = _runtime.client()
    meeting = rendezvous.get_or_create(group_name, world_size)
    if backend is Backend.ZMQ:
        from zray.util.collective.zmq_group import ZmqGroup
        group = ZmqGroup(world_size, rank, group_name, client.config, client.endpoint,
                         advertised_host(client.endpoint), timeout_s)
        addresses = zray.get(meeting.join.remote(world_size, rank, group.address))
        group.connect(addresses)
    else:
        from zray.util.collective.torch_group import TorchGroup
        address = TorchGroup.address_of(rank, advertised_host(client.endpoint))
        addresses = zray.get(meeting.join.remote(world_size, rank, address))
        group = TorchGroup(world_size, rank, group_name, backend.value, addresses[0],
                           timeout_s)
    group.backend = backend
    with _lock:
        _groups[group_name] = group


def create_collective_group(actors, world_size: int, ranks: list, backend="zmq",
                            group_name: str = "default"):
    """From the driver: make ``actors[i]`` rank ``ranks[i]`` of the group.  Each
    actor joins before it runs any later call; this returns at once."""
    Backend.parse(backend)
    if len(actors) != len(ranks) or len(actors) != world_size:
        raise ValueError(f"create_collective_group: {len(actors)} actors, {len(ranks)} "
                         f"ranks and world_size={world_size} must all agree")
    if sorted(ranks) != list(range(world_size)):
        raise ValueError(f"ranks must be 0..{world_size - 1}, each once; got {ranks}")
    rendezvous.get_or_create(group_name, world_size)
    return [actor.__ray_call__.remote(_join_from_actor, world_size, rank, backend,
                                      group_name)
            for actor, rank in zip(actors, ranks)]


def _join_from_actor(instance, world_size, rank, backend, group_name):
    init_collective_group(world_size, rank, backend, group_name)


def destroy_collective_group(group_name: str = "default") -> None:
    """Leave the group (every rank calls it); rank 0 also ends its rendezvous."""
    with _lock:
        group = _groups.pop(group_name, None)
    if group is None:
        return
    group.close()
    if group.rank == 0:
        try:
            zray.kill(zray.get_actor(rendezvous.actor_name(group_name),
                                     namespace=rendezvous.NAMESPACE))
        except ValueError:
            pass                    # already gone


def is_group_initialized(group_name: str = "default") -> bool:
    return group_name in _groups


def get_rank(group_name: str = "default") -> int:
    """This process's rank in the group, or -1 if it has not joined it (as Ray)."""
    group = _groups.get(group_name)
    return -1 if group is None else group.rank


def get_collective_group_size(group_name: str = "default") -> int:
    group = _groups.get(group_name)
    return -1 if group is None else group.world_size


# --- operations ----------------------------------------------------------------------

def allreduce(tensor, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce ``tensor`` over the group, in place on every rank."""
    group = _group(group_name)
    group.allreduce(_array(group, tensor), _op(op))


def reduce(tensor, dst_rank: int = 0, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce ``tensor`` over the group into ``dst_rank``'s copy."""
    group = _group(group_name)
    _check_rank(group.world_size, dst_rank)
    group.reduce(_array(group, tensor), dst_rank, _op(op))


def broadcast(tensor, src_rank: int = 0, group_name: str = "default") -> None:
    """Copy ``src_rank``'s ``tensor`` into every rank's."""
    group = _group(group_name)
    _check_rank(group.world_size, src_rank)
    group.broadcast(_array(group, tensor), src_rank)


def allgather(tensor_list: list, tensor, group_name: str = "default") -> None:
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` on every rank."""
    group = _group(group_name)
    if not isinstance(tensor_list, list) or len(tensor_list) != group.world_size:
        raise ValueError(f"allgather needs a list of {group.world_size} tensors to fill "
                         f"(one per rank), got {type(tensor_list).__name__}")
    source = _array(group, tensor)
    outputs = [_array(group, t) for t in tensor_list]
    for output in outputs:
        if output.shape != source.shape or output.dtype != source.dtype:
            raise ValueError(f"allgather: every output must match the input "
                             f"({source.shape}, {source.dtype}), got "
                             f"({output.shape}, {output.dtype})")
    group.allgather(outputs, source)


def barrier(group_name: str = "default") -> None:
    """Return once every rank of the group has called barrier."""
    _group(group_name).barrier()


def send(tensor, dst_rank: int, group_name: str = "default") -> None:
    group = _group(group_name)
    _check_peer(group, dst_rank)
    group.send(_array(group, tensor), dst_rank)


def recv(tensor, src_rank: int, group_name: str = "default") -> None:
    group = _group(group_name)
    _check_peer(group, src_rank)
    group.recv(_array(group, tensor), src_rank)


# --- helpers -------------------------------------------------------------------------

def _group(group_name: str):
    group = _groups.get(group_name)
    if group is None:
        raise RuntimeError(f"this process is not in the collective group {group_name!r}: "
                           "call init_collective_group (or create_collective_group from "
                           "the driver) first")
    return group


def _array(group, tensor):
    """What the backend works on: numpy arrays for zmq (a CPU torch tensor's
    numpy view shares its memory), the tensor itself for torch backends."""
    if group.backend is not Backend.ZMQ:
        return tensor
    if isinstance(tensor, np.ndarray):
        return tensor
    if type(tensor).__module__.startswith("torch"):
        if tensor.device.type != "cpu":
            raise ValueError("the zmq backend works on CPU tensors; use backend='nccl' "
                             "for GPU tensors")
        return tensor.numpy()
    raise TypeError(f"collective operations take numpy arrays or torch tensors, got "
                    f"{type(tensor).__name__}")


def _op(op) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    try:
        return ReduceOp[str(getattr(op, "name", op)).upper()]
    except KeyError:
        raise ValueError(f"unknown reduce op {op!r}; use ReduceOp.SUM, PRODUCT, MIN or "
                         "MAX") from None


def _check_rank(world_size: int, rank: int) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")


def _check_peer(group, rank: int) -> None:
    _check_rank(group.world_size, rank)
    if rank == group.rank:
        raise ValueError(f"rank {rank} cannot send to or receive from itself")




__all__ = ["CollectiveError"]
