"""A training worker: one actor per rank, running the user's function with a
torch.distributed group around it.  Threaded (two calls at once) so the
trainer can collect reports while the function runs."""

from __future__ import annotations

import datetime
import inspect
import os
import socket

import zray
from zray import _runtime
from zray._process import advertised_host
from zray.train import _session
from zray.train._checkpoint import Checkpoint


class TrainWorker:
    def where(self) -> tuple:
        """(node id, an address other workers reach this host on)."""
        context = zray.get_runtime_context()
        return context.get_node_id(), advertised_host(_runtime.client().endpoint)

    def free_port(self) -> int:
        with socket.socket() as probe:
            probe.bind(("", 0))
            return probe.getsockname()[1]

    def setup(self, placement: dict, master: tuple, backend: str, run_dir: str,
              checkpoint_path: str | None, datasets: dict | None, first_index: int,
              timeout_s: float) -> None:
        rank, world_size = placement["world_rank"], placement["world_size"]
        os.environ.update(MASTER_ADDR=master[0], MASTER_PORT=str(master[1]),
                          RANK=str(rank), WORLD_SIZE=str(world_size),
                          LOCAL_RANK=str(placement["local_rank"]),
                          LOCAL_WORLD_SIZE=str(placement["local_world_size"]),
                          NODE_RANK=str(placement["node_rank"]))
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{master[0]}:{master[1]}",
                                    rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        context = _session.TrainContext(rank, world_size, placement["local_rank"],
                                        placement["local_world_size"],
                                        placement["node_rank"],
                                        os.path.basename(run_dir), run_dir)
        checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
        _session.set_session(_session.Session(context, run_dir, checkpoint, datasets,
                                              first_index))

    def run(self, function, config):
        if _takes_an_argument(function):
            return function(config if config is not None else {})
        return function()

    def call(self, function, *args):
        """Run ``function(*args)`` here (the seed-form trainer's epochs)."""
        return function(*args)

    def reports(self) -> list:
        return _session.current().take_reports()

    def teardown(self) -> None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
        _session.set_session(None)


def _takes_an_argument(function) -> bool:
    try:
        return len(inspect.signature(function).parameters) >= 1
    except (TypeError, ValueError):
        return True
