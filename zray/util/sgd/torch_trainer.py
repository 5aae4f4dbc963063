"""``TorchTrainer(model_creator, data_creator, optimizer_creator, loss_creator,
scheduler_creator, config, num_workers, use_gpu)`` as Ray 1.x documented it."""

from __future__ import annotations

import tempfile

import zray
from zray.train._config import ScalingConfig
from zray.train._trainer import WorkerGroup

#: The training state of this worker process (one seed-form trainer per worker).
_state: dict = {}


class TorchTrainer:
    def __init__(self, model_creator, data_creator, optimizer_creator,
                 loss_creator=None, scheduler_creator=None, config: dict | None = None,
                 num_workers: int = 2, use_gpu: bool = False, backend: str = "auto",
                 scheduler_step_freq: str = "epoch", **unsupported):
        if unsupported:
            raise TypeError(f"TorchTrainer got unexpected arguments {sorted(unsupported)}")
        for name, creator in (("model_creator", model_creator),
                              ("data_creator", data_creator),
                              ("optimizer_creator", optimizer_creator)):
            if not callable(creator):
                raise TypeError(f"{name} must be a function, got {type(creator).__name__}")
        self.config = dict(config or {})
        self.creators = (model_creator, data_creator, optimizer_creator, loss_creator,
                         scheduler_creator, scheduler_step_freq)
        self.epoch = 0
        self._group = WorkerGroup(ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                                  "nccl" if use_gpu else "gloo")
        self._run_dir = tempfile.mkdtemp(prefix="zray-sgd-")
        self._group.start(self._run_dir, None, None, 0)
        self._call(_setup, self.creators, self.config)

    def train(self, num_steps: int | None = None, profile: bool = False,
              reduce_results: bool = True, max_retries: int = 3, info=None) -> dict:
        """One epoch on every worker; the mean training loss and the sample count."""
        self.epoch += 1
        stats = self._call(_train_epoch, num_steps)
        return _reduce(stats, "train_loss", self.epoch) if reduce_results else stats

    def validate(self, num_steps: int | None = None, profile: bool = False,
                 reduce_results: bool = True, info=None) -> dict:
        stats = self._call(_validate, num_steps)
        return _reduce(stats, "val_loss", self.epoch) if reduce_results else stats

    def get_model(self):
        """The trained model (rank 0's, unwrapped from DDP), on the CPU here."""
        import io

        import torch
        model = self.creators[0](self.config)
        buffer = io.BytesIO(zray.get(self._group.workers[0].call.remote(_model_bytes)))
        model.load_state_dict(torch.load(buffer))
        return model

    def state_dict(self) -> dict:
        import io

        import torch
        blob = zray.get(self._group.workers[0].call.remote(_state_bytes))
        return torch.load(io.BytesIO(blob))

    def save(self, checkpoint: str) -> str:
        import torch
        torch.save({"epoch": self.epoch, **self.state_dict()}, checkpoint)
        return checkpoint

    def load(self, checkpoint: str) -> None:
        import io

        import torch
        state = torch.load(checkpoint)
        self.epoch = state.pop("epoch", self.epoch)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._call(_load_state, buffer.getvalue())

    restore = load

    def shutdown(self, force: bool = False) -> None:
        if self._group.workers:
            try:
                self._call(_teardown)
            except Exception:
                pass
            self._group.stop()
        import shutil
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def _call(self, function, *args) -> list:
        return zray.get([w.call.remote(function, *args) for w in self._group.workers])


def _reduce(stats: list, loss_key: str, epoch: int) -> dict:
    samples = sum(s["num_samples"] for s in stats)
    reduced = {"num_samples": samples, "epoch": epoch,
               "batch_count": sum(s["batch_count"] for s in stats)}
    for key in (loss_key, "last_" + loss_key):
        reduced[key] = sum(s[key] * s["num_samples"] for s in stats) / max(samples, 1)
    if "val_accuracy" in stats[0]:
        reduced["val_accuracy"] = sum(s["val_accuracy"] * s["num_samples"]
                                      for s in stats) / max(samples, 1)
    return reduced


# --- what runs in each worker --------------------------------------------------------

def _setup(creators, config) -> None:
    import torch

    from zray.train.torch import prepare_data_loader, prepare_model
    (model_creator, data_creator, optimizer_creator, loss_creator, scheduler_creator,
     step_freq) = creators
    torch.manual_seed(config.get("seed", 0))       # every rank starts from one model
    model = model_creator(config)
    optimizer = optimizer_creator(model, config)
    loaders = data_creator(config)
    train_loader, val_loader = loaders if isinstance(loaders, (tuple, list)) else \
        (loaders, None)
    if loss_creator is None:
        loss = torch.nn.MSELoss()
    elif isinstance(loss_creator, type) and issubclass(loss_creator, torch.nn.Module):
        loss = loss_creator()
    else:
        loss = loss_creator(config)
    _state.update(
        model=prepare_model(model), optimizer=optimizer, loss=loss,
        scheduler=scheduler_creator(optimizer, config) if scheduler_creator else None,
        step_freq=step_freq, train=prepare_data_loader(train_loader),
        val=prepare_data_loader(val_loader) if val_loader is not None else None)


def _train_epoch(num_steps) -> dict:
    model, optimizer, loss_fn = _state["model"], _state["optimizer"], _state["loss"]
    model.train()
    total = last = 0.0
    samples = batches = 0
    for batch, (features, targets) in enumerate(_state["train"]):
        if num_steps is not None and batch >= num_steps:
            break
        optimizer.zero_grad()
        loss = loss_fn(model(features), targets)
        loss.backward()
        optimizer.step()
        if _state["scheduler"] is not None and _state["step_freq"] == "batch":
            _state["scheduler"].step()
        last = loss.item()
        total += last * len(features)
        samples += len(features)
        batches += 1
    if _state["scheduler"] is not None and _state["step_freq"] == "epoch":
        _state["scheduler"].step()
    return {"train_loss": total / max(samples, 1), "last_train_loss": last,
            "num_samples": samples, "batch_count": batches}


def _validate(num_steps) -> dict:
    import torch
    model, loss_fn, loader = _state["model"], _state["loss"], _state["val"]
    if loader is None:
        raise ValueError("validate() needs data_creator to return (train_loader, "
                         "val_loader)")
    model.eval()
    total = last = 0.0
    samples = batches = correct = 0
    classify = None
    with torch.no_grad():
        for batch, (features, targets) in enumerate(loader):
            if num_steps is not None and batch >= num_steps:
                break
            output = model(features)
            last = loss_fn(output, targets).item()
            total += last * len(features)
            samples += len(features)
            batches += 1
            if classify is None:
                classify = output.dim() == 2 and targets.dim() == 1 and output.shape[1] > 1
            if classify:
                correct += (output.argmax(1) == targets).sum().item()
    stats = {"val_loss": total / max(samples, 1), "last_val_loss": last,
             "num_samples": samples, "batch_count": batches}
    if classify:
        stats["val_accuracy"] = correct / max(samples, 1)
    return stats


def _unwrapped():
    model = _state["model"]
    return getattr(model, "module", model)


def _model_bytes() -> bytes:
    import io

    import torch
    buffer = io.BytesIO()
    torch.save(_unwrapped().state_dict(), buffer)
    return buffer.getvalue()


def _state_bytes() -> bytes:
    import io

    import torch
    state = {"model": _unwrapped().state_dict(), "optimizer": _state["optimizer"].state_dict()}
    if _state["scheduler"] is not None:
        state["scheduler"] = _state["scheduler"].state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _load_state(blob: bytes) -> None:
    import io

    import torch
    state = torch.load(io.BytesIO(blob))
    _unwrapped().load_state_dict(state["model"])
    _state["optimizer"].load_state_dict(state["optimizer"])
    if "scheduler" in state and _state["scheduler"] is not None:
        _state["scheduler"].load_state_dict(state["scheduler"])


def _teardown() -> None:
    _state.clear()


__all__ = ["TorchTrainer"]
