"""Data-parallel training with Ray Train's API on zray: two workers, DDP on CPU.

    python examples/train_torch.py
"""

import os
import tempfile

import torch

import zray
import zray.train
from zray.train import Checkpoint, RunConfig, ScalingConfig
from zray.train.torch import TorchTrainer, prepare_data_loader, prepare_model


def train_loop_per_worker(config):
    torch.manual_seed(0)
    features = torch.randn(1024, 8)
    targets = features @ torch.arange(8.0).unsqueeze(1) + 1.0
    loader = prepare_data_loader(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(features, targets), batch_size=64, shuffle=True))
    model = prepare_model(torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for epoch in range(config["epochs"]):
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
            zray.train.report({"epoch": epoch, "loss": loss.item()},
                              checkpoint=Checkpoint.from_directory(folder))


if __name__ == "__main__":
    zray.init(num_cpus=2)
    trainer = TorchTrainer(train_loop_per_worker,
                           train_loop_config={"lr": 0.02, "epochs": 5},
                           scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="linear",
                                                storage_path=tempfile.mkdtemp()))
    result = trainer.fit()
    print("final metrics:", result.metrics)
    print("checkpoint:", result.checkpoint)
    zray.shutdown()
