"""zray.train: distributed training with Ray Train's API.

``zray.train.torch.TorchTrainer(train_loop_per_worker, scaling_config=...)``
runs the function on a group of worker actors joined in a torch.distributed
group (gloo on CPU, nccl with ``use_gpu``); inside it, ``get_context()``,
``report(metrics, checkpoint=...)``, ``get_checkpoint()`` and
``get_dataset_shard(name)`` work as in Ray.  ``fit()`` returns a ``Result``.
Needs torch: ``pip install 'zray[train]'``.
"""

from zray.train._checkpoint import Checkpoint
from zray.train._config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from zray.train._result import Result, TrainingFailedError
from zray.train._session import (TrainContext, get_checkpoint, get_context,
                                 get_dataset_shard, report)

__all__ = ["Checkpoint", "CheckpointConfig", "FailureConfig", "Result", "RunConfig",
           "ScalingConfig", "TrainContext", "TrainingFailedError", "get_checkpoint",
           "get_context", "get_dataset_shard", "report"]
