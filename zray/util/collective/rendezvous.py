"""Where the ranks of a group find each other: one small named actor per group."""

from __future__ import annotations

import asyncio

import zray

NAMESPACE = "_zray_collective"


def actor_name(group_name: str) -> str:
    return f"collective:{group_name}"


@zray.remote(num_cpus=0)
class Rendezvous:
    """Collects each rank's address; answers every rank once all have joined."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.addresses: dict[int, dict] = {}
        self.complete = asyncio.Event()

    async def join(self, world_size: int, rank: int, address: dict) -> list:
        if world_size != self.world_size:
            raise ValueError(f"rank {rank} joined with world_size={world_size}, but the "
                             f"group was made with world_size={self.world_size}")
        if rank in self.addresses:
            raise ValueError(f"rank {rank} joined the group twice")
        self.addresses[rank] = address
        if len(self.addresses) == self.world_size:
            self.complete.set()
        await self.complete.wait()
        return [self.addresses[r] for r in range(self.world_size)]


def get_or_create(group_name: str, world_size: int):
    return Rendezvous.options(name=actor_name(group_name), namespace=NAMESPACE,
                              get_if_exists=True,
                              max_concurrency=max(world_size, 1) + 1).remote(world_size)
