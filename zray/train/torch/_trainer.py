"""TorchTrainer: data-parallel training with torch.distributed."""

from __future__ import annotations

from zray.train._trainer import DataParallelTrainer


class TorchTrainer(DataParallelTrainer):
    """Runs ``train_loop_per_worker`` on each worker of a torch.distributed group
    (gloo on CPU, nccl when ``ScalingConfig(use_gpu=True)``)."""

    _backend = "nccl"        # used only with use_gpu; gloo otherwise
