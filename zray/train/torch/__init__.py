"""zray.train.torch: TorchTrainer and the helpers a torch training loop uses."""

from zray.train.torch._prepare import get_device, prepare_data_loader, prepare_model
from zray.train.torch._trainer import TorchTrainer

__all__ = ["TorchTrainer", "get_device", "prepare_data_loader", "prepare_model"]
