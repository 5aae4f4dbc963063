"""Ray Train's configuration objects: how many workers, where results go, how
failures and checkpoints are handled."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ScalingConfig:
    """How many training workers, and what each one holds."""
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    placement_strategy: str = "PACK"
    trainer_resources: dict | None = None

    def __post_init__(self):
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(f"ScalingConfig(num_workers=...) must be a positive int, got "
                             f"{self.num_workers!r}")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"placement_strategy must be PACK, SPREAD, STRICT_PACK or "
                             f"STRICT_SPREAD, got {self.placement_strategy!r}")

    def worker_resources(self) -> dict:
        """num_cpus / num_gpus / resources for one worker actor."""
        wanted = dict(self.resources_per_worker or {})
        cpus = wanted.pop("CPU", 1)
        gpus = wanted.pop("GPU", 1 if self.use_gpu else 0)
        return {"num_cpus": cpus, "num_gpus": gpus, "resources": wanted or None}

    def bundle(self) -> dict:
        """One worker's bundle in the group's placement group."""
        options = self.worker_resources()
        wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"],
                  **(options["resources"] or {})}
        return {name: amount for name, amount in wanted.items() if amount}


@dataclass
class CheckpointConfig:
    """``num_to_keep``: checkpoints kept on storage (None: all; the best by
    ``checkpoint_score_attribute`` when given, else the newest).  For Tune's
    class trainables: ``checkpoint_frequency`` (every N iterations, 0: never)
    and ``checkpoint_at_end``."""
    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self):
        if self.num_to_keep is not None and (not isinstance(self.num_to_keep, int)
                                             or self.num_to_keep < 1):
            raise ValueError(f"CheckpointConfig(num_to_keep=...) must be None or a "
                             f"positive int, got {self.num_to_keep!r}")


@dataclass
class FailureConfig:
    """``max_failures``: times the whole worker group restarts from the latest
    checkpoint after a worker fails (-1: without limit)."""
    max_failures: int = 0

    def __post_init__(self):
        if not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(f"FailureConfig(max_failures=...) must be an int >= -1, got "
                             f"{self.max_failures!r}")


@dataclass
class RunConfig:
    """Where a run keeps its checkpoints and results: ``storage_path/name``."""
    name: str | None = None
    storage_path: str | None = None
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    verbose: int = 1
    stop: object = None          # Tune: a dict, a function (trial_id, result) or a Stopper
    callbacks: list | None = None

    def __post_init__(self):
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        if self.failure_config is None:
            self.failure_config = FailureConfig()

    def run_dir(self, default_name: str) -> str:
        root = self.storage_path or os.environ.get("ZRAY_RESULTS_DIR",
                                                   os.path.expanduser("~/zray_results"))
        return os.path.join(os.path.abspath(os.path.expanduser(root)),
                            self.name or default_name)
