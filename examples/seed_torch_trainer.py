"""The seed's distributed training program, as written for Ray 1.x's
ray.util.sgd, running unchanged on zray.

    python examples/seed_torch_trainer.py
"""

import torch
import torch.nn as nn

import zray as ray
from zray.util.sgd import TorchTrainer     # the seed: from ray.util.sgd import TorchTrainer


def model_creator(config):
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def data_creator(config):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(512, 4, generator=generator)
    targets = features.sum(dim=1, keepdim=True) ** 2 / 4
    dataset = torch.utils.data.TensorDataset(features, targets)
    train, val = torch.utils.data.random_split(dataset, [448, 64], generator=generator)
    return (torch.utils.data.DataLoader(train, batch_size=config["batch_size"], shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=config["batch_size"]))


def optimizer_creator(model, config):
    return torch.optim.Adam(model.parameters(), lr=config["lr"])


def scheduler_creator(optimizer, config):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)


def main(epochs=5):
    ray.init(num_cpus=2)
    trainer = TorchTrainer(
        model_creator=model_creator,
        data_creator=data_creator,
        optimizer_creator=optimizer_creator,
        loss_creator=nn.MSELoss,
        scheduler_creator=scheduler_creator,
        config={"lr": 0.01, "batch_size": 32},
        num_workers=2,
        use_gpu=False)
    losses = []
    for epoch in range(epochs):
        stats = trainer.train()
        losses.append(stats["train_loss"])
        print(f"epoch {stats['epoch']}: train_loss {stats['train_loss']:.4f} "
              f"({stats['num_samples']} samples)")
    print("validation:", trainer.validate())
    model = trainer.get_model()
    print("trained model:", type(model).__name__)
    trainer.shutdown()
    ray.shutdown()
    return losses


if __name__ == "__main__":
    main()
