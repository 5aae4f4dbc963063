"""prepare_model / prepare_data_loader: make a torch loop data-parallel."""

from __future__ import annotations

import os


def get_device():
    """This worker's torch device: its GPU (by local rank) when it has one."""
    import torch
    if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != "":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))
                            % torch.cuda.device_count())
    return torch.device("cpu")


def prepare_model(model, move_to_device: bool = True, parallel_strategy: str | None = "ddp",
                  parallel_strategy_kwargs: dict | None = None):
    """Move ``model`` to this worker's device and wrap it in
    DistributedDataParallel when the group has more than one worker."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    device = get_device()
    if move_to_device:
        model = model.to(device)
    if parallel_strategy is None or not dist.is_initialized() or dist.get_world_size() < 2:
        return model
    if parallel_strategy != "ddp":
        raise ValueError(f"parallel_strategy {parallel_strategy!r} is not supported: use "
                         "'ddp' or None")
    kwargs = dict(parallel_strategy_kwargs or {})
    if device.type == "cuda":
        kwargs.setdefault("device_ids", [device.index])
    return DistributedDataParallel(model, **kwargs)


def prepare_data_loader(data_loader, add_dist_sampler: bool = True,
                        move_to_device: bool = True):
    """A DataLoader giving this worker its share of the data (a
    DistributedSampler, its epoch advanced on every pass) on its device."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader, RandomSampler
    from torch.utils.data.distributed import DistributedSampler
    loader = data_loader
    if add_dist_sampler and dist.is_initialized() and dist.get_world_size() > 1 and \
            not isinstance(data_loader.sampler, DistributedSampler):
        shuffle = isinstance(data_loader.sampler, RandomSampler)
        sampler = DistributedSampler(data_loader.dataset, shuffle=shuffle)
        loader = DataLoader(data_loader.dataset, batch_size=data_loader.batch_size,
                            sampler=sampler, num_workers=data_loader.num_workers,
                            collate_fn=data_loader.collate_fn,
                            pin_memory=data_loader.pin_memory,
                            drop_last=data_loader.drop_last)
    return _EpochLoader(loader, get_device() if move_to_device else None)


class _EpochLoader:
    """Iterates the loader; advances its DistributedSampler's epoch each pass
    (so shuffling differs per epoch) and moves batches to the device."""

    def __init__(self, loader, device):
        self.loader = loader
        self.device = device
        self.epoch = 0

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.epoch += 1
        for batch in self.loader:
            yield _to_device(batch, self.device)


def _to_device(batch, device):
    if device is None or device.type == "cpu":
        return batch
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
