"""The seed's (Ray 1.x) ``ray.util.sgd.TorchTrainer``: creator functions in,
one epoch per ``train()`` call on every worker, with DDP.

Built on zray.train's worker group (actors joined in a torch.distributed
group).  Ray 2.x removed this API; zray keeps it so that programs written for
it run after ``import zray as ray``.  New code should use
``zray.train.torch.TorchTrainer``.
"""

from zray.util.sgd.torch_trainer import TorchTrainer

__all__ = ["TorchTrainer"]
