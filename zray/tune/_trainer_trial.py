"""A Ray Train trainer as a Tune trainable: ``Tuner(TorchTrainer(...),
param_space={"train_loop_config": {...}})``.  Each trial runs a copy of the
trainer with its config merged in; rank 0's reports become the trial's."""

from __future__ import annotations

import copy

from zray.train._config import RunConfig
from zray.train._trainer import DataParallelTrainer
from zray.tune._session import get_checkpoint, get_context, report


def is_trainer(trainable) -> bool:
    return isinstance(trainable, DataParallelTrainer)


class TrainerTrainable:
    """Callable(config) that fits a copy of ``trainer`` inside a trial."""

    def __init__(self, trainer: DataParallelTrainer):
        self.trainer = trainer
        self.__name__ = type(trainer).__name__

    def __call__(self, config: dict) -> None:
        trainer = copy.copy(self.trainer)
        loop_config = dict(trainer.train_loop_config or {})
        loop_config.update(config.get("train_loop_config", {}))
        trainer.train_loop_config = loop_config
        if "scaling_config" in config:
            trainer.scaling_config = config["scaling_config"]
        context = get_context()
        base = trainer.run_config
        trainer.run_config = RunConfig(name="train", storage_path=context.get_trial_dir(),
                                       checkpoint_config=base.checkpoint_config,
                                       failure_config=base.failure_config)
        trainer.resume_from_checkpoint = (get_checkpoint()
                                          or trainer.resume_from_checkpoint)
        trainer._report_hook = lambda metrics, checkpoint: report(
            metrics, checkpoint=checkpoint)
        trainer.fit()

    def resources(self) -> dict:
        """What the trial's workers hold together (its runner itself holds none)."""
        scaling = self.trainer.scaling_config
        worker = scaling.worker_resources()
        total = {"CPU": worker["num_cpus"] * scaling.num_workers,
                 "GPU": worker["num_gpus"] * scaling.num_workers}
        for name, amount in (worker["resources"] or {}).items():
            total[name] = amount * scaling.num_workers
        return {k: v for k, v in total.items() if v}
