"""``Tuner``: runs trials of a trainable over a search space and returns a
``ResultGrid``; ``Tuner.restore`` finishes an interrupted experiment."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from dataclasses import dataclass

import cloudpickle

import zray
from zray.train._config import RunConfig
from zray.tune._controller import ControllerConfig, TuneController
from zray.tune._executor import Executor
from zray.tune._progress import ProgressTable
from zray.tune._result_grid import ResultGrid
from zray.tune._storage import TUNER_FILE, ExperimentStorage, trial_from_record
from zray.tune._trainable import (actor_options, first_bundle_function, is_class_trainable,
                                  resources_function, trainable_name)
from zray.tune._trainer_trial import TrainerTrainable, is_trainer
from zray.tune._trial import Status
from zray.tune.callback import CallbackList
from zray.tune.error import TuneError
from zray.tune.registry import get_trainable_cls, with_registry
from zray.tune.schedulers.trial_scheduler import FIFOScheduler
from zray.tune.search.searcher import as_search_alg
from zray.tune.search.variant_generator import find_unresolved
from zray.tune.stopper import DictStopper, as_stopper

log = logging.getLogger("zray.tune")

#: Seconds a streaming trial collects results before handing a batch over.
BATCH_S = 0.5


@dataclass
class TuneConfig:
    """How to search: the metric to optimize, the search algorithm and
    scheduler, how many samples, how many trials at once, a time budget."""
    metric: str | None = None
    mode: str | None = None
    search_alg: object = None
    scheduler: object = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool | None = None
    trial_name_creator: object = None
    trial_dirname_creator: object = None

    def __post_init__(self):
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"TuneConfig(mode=...) must be 'min' or 'max', got "
                             f"{self.mode!r}")
        if not isinstance(self.num_samples, int) or self.num_samples == 0 \
                or self.num_samples < -1:
            raise ValueError(f"TuneConfig(num_samples=...) must be a positive int (or -1 "
                             f"for no limit), got {self.num_samples!r}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError("TuneConfig(max_concurrent_trials=...) must be None or >= 1")


class Tuner:
    def __init__(self, trainable=None, *, param_space: dict | None = None,
                 tune_config: TuneConfig | None = None, run_config: RunConfig | None = None,
                 _restored: dict | None = None):
        if trainable is None:
            raise TypeError("Tuner needs a trainable: a function, a tune.Trainable "
                            "class or a Trainer")
        if isinstance(trainable, str):
            trainable = get_trainable_cls(trainable)    # "PPO" or a registered name
        if hasattr(param_space, "to_dict"):             # an RLlib AlgorithmConfig
            param_space = param_space.to_dict()
        self.trainable = trainable
        self.param_space = param_space or {}
        self.tune_config = tune_config or TuneConfig()
        self.run_config = run_config or RunConfig()
        self._restored = _restored
        self._results: ResultGrid | None = None

    # -- restore -------------------------------------------------------------------
    @classmethod
    def can_restore(cls, path) -> bool:
        return os.path.exists(os.path.join(os.fspath(path), TUNER_FILE))

    @classmethod
    def restore(cls, path, trainable, resume_unfinished: bool = True,
                resume_errored: bool = False, restart_errored: bool = False,
                param_space: dict | None = None) -> "Tuner":
        """Continue the experiment saved at ``path`` (storage_path/name): finished
        trials keep their results, unfinished ones resume from their checkpoint."""
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not cls.can_restore(path):
            raise TuneError(f"no experiment to restore at {path} (no {TUNER_FILE}): give "
                            f"the directory storage_path/name of an earlier run")
        storage = ExperimentStorage(path)
        state = storage.load_tuner()
        records, search_alg = storage.replay()
        restored = {"path": path, "records": records, "search_alg": search_alg,
                    "experiment_id": state["experiment_id"],
                    "resume_unfinished": resume_unfinished,
                    "resume_errored": resume_errored, "restart_errored": restart_errored}
        run_config = state["run_config"]
        run_config.storage_path, run_config.name = os.path.dirname(path), \
            os.path.basename(path)
        return cls(trainable, param_space=param_space or state["param_space"],
                   tune_config=state["tune_config"], run_config=run_config,
                   _restored=restored)

    # -- fit ----------------------------------------------------------------------
    def fit(self) -> ResultGrid:
        if not zray.is_initialized():
            zray.init()
        trainable, resources_fn = self._trainable()
        config = self.tune_config
        scheduler = config.scheduler or FIFOScheduler()
        if not scheduler.set_search_properties(config.metric, config.mode):
            raise ValueError("the scheduler's metric differs from TuneConfig.metric")
        stopper = as_stopper(self.run_config.stop)
        name = trainable_name(self.trainable)
        path = self.run_config.run_dir(f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        storage = ExperimentStorage(path)
        search_alg, experiment_id = self._search_alg(storage)
        callbacks = CallbackList(self.run_config.callbacks)
        controller = TuneController(search_alg, scheduler, stopper,
                                    self._controller_config(name, resources_fn),
                                    experiment_id, callbacks)
        self._add_restored_trials(controller, storage)
        step_mode = scheduler.decides_per_result or (
            stopper is not None and not isinstance(stopper, DictStopper))
        checkpoint_config = self.run_config.checkpoint_config
        settings = {"step_mode": step_mode, "batch_s": BATCH_S,
                    "stop": stopper.criteria if isinstance(stopper, DictStopper) else None,
                    "checkpoint_frequency": getattr(checkpoint_config,
                                                    "checkpoint_frequency", 0),
                    "checkpoint_at_end": getattr(checkpoint_config, "checkpoint_at_end",
                                                 None),
                    "reuse_actors": config.reuse_actors is not False,
                    "actor_options": self._actor_options()}
        progress = ProgressTable.for_terminal(config.metric, self.run_config.verbose)
        callbacks.call("setup", stop=self.run_config.stop, num_samples=config.num_samples,
                       total_num_samples=getattr(search_alg, "total_samples", None))
        Executor(controller, storage, trainable, settings, progress).run()
        callbacks.call("on_experiment_end")
        if progress is not None:
            progress.update(controller, force=True)
        self._results = ResultGrid(controller.get_trials(), config.metric, config.mode, path)
        return self._results

    def get_results(self) -> ResultGrid:
        if self._results is None:
            raise RuntimeError("get_results() before fit(): call Tuner.fit() first")
        return self._results

    # -- pieces of fit --------------------------------------------------------------
    def _trainable(self) -> tuple:
        """(what runners run, config -> resources or None)."""
        if is_trainer(self.trainable):
            wrapped = TrainerTrainable(self.trainable)
            fixed = wrapped.resources()
            return wrapped, lambda config: fixed
        if not callable(self.trainable):
            raise TypeError(f"Tuner's trainable must be a function, a tune.Trainable class "
                            f"or a Trainer; got {type(self.trainable).__name__}")
        return with_registry(self.trainable), resources_function(self.trainable)

    def _actor_options(self):
        trainer = is_trainer(self.trainable)
        first_bundle = first_bundle_function(self.trainable)

        def options(trial) -> tuple:
            held = {} if trainer else trial.resources
            if first_bundle is not None:      # the other bundles are its own actors'
                held = first_bundle(trial.config)
            chosen = actor_options(held)
            key = tuple(sorted((k, repr(v)) for k, v in chosen.items()))
            return key, chosen
        return options

    def _controller_config(self, name: str, resources_fn) -> ControllerConfig:
        config, run = self.tune_config, self.run_config
        checkpoints = run.checkpoint_config
        return ControllerConfig(
            metric=config.metric, mode=config.mode,
            max_concurrent_trials=config.max_concurrent_trials,
            capacity=zray.cluster_resources(), time_budget_s=config.time_budget_s,
            max_failures=run.failure_config.max_failures,
            num_to_keep=checkpoints.num_to_keep,
            checkpoint_score_attribute=checkpoints.checkpoint_score_attribute,
            checkpoint_score_order=checkpoints.checkpoint_score_order,
            trainable_name=name, resources_fn=resources_fn)

    def _search_alg(self, storage: ExperimentStorage) -> tuple:
        restored = self._restored
        if restored is not None and restored["search_alg"] is not None:
            return restored["search_alg"], restored["experiment_id"]
        config = self.tune_config
        search_alg = as_search_alg(config.search_alg)
        num_samples = config.num_samples if config.num_samples != -1 else 2 ** 62
        if not search_alg.set_search_properties(config.metric, config.mode,
                                                self.param_space, num_samples=num_samples) \
                and find_unresolved(self.param_space):
            raise ValueError("Tuner(param_space=...) has tune.uniform/choice/... values but "
                             "the search algorithm was given its own search space: put "
                             "them in one place (the searcher's space or param_space)")
        experiment_id = restored["experiment_id"] if restored else uuid.uuid4().hex[:5]
        storage.save_tuner({"param_space": self.param_space, "tune_config": config,
                            "run_config": self._saved_run_config(),
                            "experiment_id": experiment_id,
                            "trainable_name": trainable_name(self.trainable),
                            "class_trainable": is_class_trainable(self.trainable)})
        return search_alg, experiment_id

    def _saved_run_config(self) -> RunConfig:
        """The RunConfig for Tuner.restore: without callbacks that do not pickle
        (a callback holding a lock or an open file), which restore cannot bring back."""
        if not self.run_config.callbacks:
            return self.run_config
        try:
            cloudpickle.dumps(self.run_config.callbacks)
            return self.run_config
        except Exception as exc:
            log.warning("RunConfig(callbacks=...) does not pickle (%s): Tuner.restore will "
                        "run without them", exc)
            return dataclasses.replace(self.run_config, callbacks=None)

    def _add_restored_trials(self, controller: TuneController,
                             storage: ExperimentStorage) -> None:
        restored = self._restored
        if restored is None:
            return
        for record in restored["records"]:
            trial = trial_from_record(record)
            unfinished = trial.status in (Status.PENDING, Status.RUNNING, Status.PAUSED)
            if trial.status == Status.ERROR and restored["restart_errored"]:
                trial.checkpoint, trial.restore_point, trial.error = None, (0, 0.0), None
                unfinished = True
            elif trial.status == Status.ERROR and restored["resume_errored"]:
                trial.error = None
                unfinished = True
            if unfinished and restored["resume_unfinished"]:
                trial.status = Status.PENDING
                up_to = trial.restore_point[0]
                history = storage.read_results(trial.local_path, up_to) \
                    if trial.local_path else []
                trial.last_result = history[-1] if history else {}
                trial.num_failures = 0
                controller.add_trial(trial)
            else:
                if unfinished:
                    trial.status = Status.TERMINATED
                history = storage.read_results(trial.local_path) if trial.local_path else []
                controller.trials[trial.trial_id] = trial
            trial.history = [(m, None) for m in history]
