"""The trial controller: Tune's decisions, with no sockets, processes or clock.

    executor ──events──► TuneController ──commands──► executor
      start(now)                          Command(START, trial)      run it on a runner actor
      on_results(trial_id, results, ...)  Command(CONTINUE, trial)   ask for more results
      on_error(trial_id, error, now)      Command(STOP, trial)       end its run (status set)
      on_paused(trial_id, checkpoint)     Command(PAUSE, trial)      end its run, keep a checkpoint
      step(now)                           Command(DELETE, path)      drop an old checkpoint

It creates trials from the search algorithm while there is room (resources,
``max_concurrent_trials``), asks the stopper and the scheduler about every
result, retries failed trials from their last checkpoint (``max_failures``)
and ends the run at ``time_budget_s``.  Unit tests drive it directly.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from zray.train._checkpoint import Checkpoint
from zray.tune._flatten import with_flat_keys
from zray.tune._trial import Status, Trial
from zray.tune.callback import CallbackList
from zray.tune.schedulers.trial_scheduler import TrialScheduler
from zray.tune.stopper import DictStopper

log = logging.getLogger("zray.tune")

START, CONTINUE, STOP, PAUSE, DELETE = "START", "CONTINUE", "STOP", "PAUSE", "DELETE"


@dataclass
class Command:
    kind: str
    trial: Trial | None = None
    path: str | None = None                  # DELETE: the checkpoint to drop
    save: bool = False                       # CONTINUE/PAUSE: save a checkpoint first
    count: int = 1                           # START/CONTINUE: results before the next stop


@dataclass
class ControllerConfig:
    metric: str | None = None
    mode: str | None = None
    max_concurrent_trials: int | None = None
    capacity: dict | None = None            # resource name -> amount the cluster has
    time_budget_s: float | None = None
    max_failures: int = 0
    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    trainable_name: str = "trainable"
    default_resources: dict | None = None
    resources_fn: object = None              # config -> resources dict, or None


class TuneController:
    """Trial state and every decision about it."""

    def __init__(self, search_alg, scheduler: TrialScheduler, stopper, config: ControllerConfig,
                 experiment_id: str | None = None, callbacks: CallbackList | None = None):
        self.search_alg, self.scheduler, self.stopper = search_alg, scheduler, stopper
        self.callbacks = callbacks if callbacks is not None else CallbackList()
        self.callbacks.trials_of = self.get_trials
        self.config = config
        self.experiment_id = experiment_id or uuid.uuid4().hex[:5]
        self.trials: dict = {}
        self._live: dict = {}                # trial id -> trial, until it finishes
        self.used: dict = {}
        self.start_time: float | None = None
        self.budget_spent = False
        self.stop_everything = False
        self._warned_metric = False

    # -- what schedulers and the executor read -------------------------------------
    def get_trials(self) -> list:
        return list(self.trials.values())

    def get_trial(self, trial_id: str) -> Trial:
        return self.trials[trial_id]

    def live_trials(self) -> list:
        """The trials not finished yet (PENDING, RUNNING, PAUSED), in creation
        order: what scheduling looks at, without a pass over every trial."""
        for trial_id in [i for i, t in self._live.items() if t.is_finished]:
            del self._live[trial_id]
        return list(self._live.values())

    @property
    def running(self) -> list:
        return [t for t in self.live_trials() if t.status == Status.RUNNING]

    def is_finished(self) -> bool:
        searching = not (self.search_alg.is_finished() or self.stop_everything)
        return not searching and not self.live_trials()

    def has_resources_for(self, trial: Trial) -> bool:
        limit = self.config.max_concurrent_trials
        if limit and len(self.running) >= limit:
            return False
        capacity = self.config.capacity or {}
        return all(self.used.get(name, 0) + amount <= capacity.get(name, 0) + 1e-9
                   for name, amount in trial.resources.items() if amount)

    # -- trials from the search algorithm -----------------------------------------
    def add_trial(self, trial: Trial) -> None:
        """A trial made elsewhere (restored from an experiment's state)."""
        self.trials[trial.trial_id] = trial
        if not trial.is_finished:
            self._live[trial.trial_id] = trial
        self.scheduler.on_trial_add(self, trial)

    def _create_trials(self) -> None:
        while not self.stop_everything and not self.search_alg.is_finished():
            if any(t.status == Status.PENDING for t in self.live_trials()):
                return
            if not self._room_for_another():
                return
            index = len(self.trials)
            trial_id = f"{self.experiment_id}_{index:05d}"
            suggestion = self.search_alg.next_trial(trial_id)
            if suggestion is None:
                return
            config, tag = suggestion
            trial = Trial(trial_id, index, config, tag, self._resources_of(config),
                          self.config.trainable_name)
            self.add_trial(trial)

    def _room_for_another(self) -> bool:
        limit = self.config.max_concurrent_trials
        return not limit or len(self.running) < limit

    def _resources_of(self, config: dict) -> dict:
        if self.config.resources_fn is not None:
            return dict(self.config.resources_fn(config))
        return dict(self.config.default_resources or {"CPU": 1})

    # -- events --------------------------------------------------------------------
    def start(self, now: float) -> list:
        self.start_time = now
        return self.step(now)

    def step(self, now: float) -> list:
        """Start what fits; end the run at the time budget or a stopper's stop_all."""
        commands: list = []
        if not self.stop_everything and self._out_of_time(now):
            commands += self._stop_all()
        self._create_trials()
        while not self.stop_everything:
            trial = self.scheduler.choose_trial_to_run(self)
            if trial is None:
                break
            self._set_running(trial)
            commands.append(Command(START, trial,
                                    count=self._results_to_next_decision(
                                        trial, trial.restore_point[0])))
            self._create_trials()
        return commands

    def _out_of_time(self, now: float) -> bool:
        budget = self.config.time_budget_s
        if budget is not None and self.start_time is not None \
                and now - self.start_time >= budget:
            self.budget_spent = True
            return True
        return self.stopper is not None and self.stopper.stop_all()

    def _stop_all(self) -> list:
        self.stop_everything = True
        commands = []
        for trial in self.live_trials():
            if trial.status == Status.RUNNING:
                commands += self._terminate(trial)
            elif trial.status in (Status.PENDING, Status.PAUSED):
                trial.set_status(Status.TERMINATED)
        return commands

    def on_results(self, trial_id: str, results: list, done: bool, now: float,
                   saved: str | None = None) -> list:
        """``results``: [(metrics, checkpoint path or None)] from a running trial;
        ``done``: its function returned (or reported done=True); ``saved``: a
        checkpoint it made on request, of its state at its last result."""
        trial = self.trials[trial_id]
        if trial.status != Status.RUNNING:
            return []                        # a late batch from a trial already stopped
        commands = []
        if saved:
            commands += self._record_checkpoint(trial, saved, trial.last_result)
        for position, (metrics, checkpoint_path) in enumerate(results):
            metrics = with_flat_keys(metrics)          # "env_runners/episode_return_mean"
            last = done and position == len(results) - 1
            checkpoint = None
            if checkpoint_path:
                commands += self._record_checkpoint(trial, checkpoint_path, metrics)
                checkpoint = trial.checkpoint
            trial.history.append((metrics, checkpoint))
            action = self._judge(trial, metrics, last)
            if action == TrialScheduler.STOP:
                return commands + self._terminate(trial)
            if action == TrialScheduler.PAUSE:
                return commands + self._pause(trial)
        if done:
            return commands + self._terminate(trial, ran_to_end=True)
        save, trial.save_requested = trial.save_requested, False
        count = self._results_to_next_decision(trial, trial.iteration)
        return commands + [Command(CONTINUE, trial, save=save, count=count)]

    def _results_to_next_decision(self, trial: Trial, iteration: int) -> int:
        """How many results (in step mode) a trial at ``iteration`` may report
        before it waits for the driver: up to the scheduler's next decision
        point (1 when every result may be decided on: a function or Stopper
        stop criterion, or a last result without the scheduler's metric)."""
        if self.stopper is not None and not isinstance(self.stopper, DictStopper):
            return 1
        decision_points = getattr(self.scheduler, "decision_points", None)
        points = decision_points(trial) if decision_points is not None else None
        if not points:
            return 1
        metric = getattr(self.scheduler, "metric", None) or self.config.metric
        if trial.last_result and metric not in trial.last_result:
            return 1
        later = [point for point in points if point > iteration]
        return max(1, later[0] - iteration) if later else 1

    def _judge(self, trial: Trial, metrics: dict, last: bool) -> str:
        trial.last_result = metrics
        self._check_metric(metrics)
        if self.callbacks:
            self.callbacks.call("on_trial_result", trial=trial, result=metrics)
        self.search_alg.on_trial_result(trial.trial_id, metrics)
        if self.stopper is not None and self.stopper(trial.trial_id, metrics):
            return TrialScheduler.STOP
        if last:
            return TrialScheduler.CONTINUE
        return self.scheduler.on_trial_result(self, trial, metrics)

    def _check_metric(self, metrics: dict) -> None:
        metric = self.config.metric
        if metric and metric not in metrics and not self._warned_metric:
            self._warned_metric = True
            log.warning(
                "a trial reported no %r (TuneConfig.metric); it reported %s", metric,
                sorted(k for k in metrics if not k.startswith("time")))

    def _record_checkpoint(self, trial: Trial, path: str, metrics: dict) -> list:
        checkpoint = Checkpoint(path)
        trial.checkpoint = checkpoint
        trial.next_checkpoint_index = max(trial.next_checkpoint_index,
                                          checkpoint_index(path) + 1)
        trial.restore_point = (metrics.get("training_iteration", 0),
                               metrics.get("time_total_s", 0.0))
        trial.checkpoints.append((checkpoint, metrics))
        if self.callbacks:
            self.callbacks.call("on_checkpoint", trial=trial, checkpoint=checkpoint)
        keep = self.config.num_to_keep
        if keep is None or len(trial.checkpoints) <= keep:
            return []
        return [Command(DELETE, trial, path=c.path) for c in self._prune(trial, keep)]

    def _prune(self, trial: Trial, keep: int) -> list:
        """Drop the worst checkpoints beyond ``keep`` (never the latest)."""
        attribute = self.config.checkpoint_score_attribute
        kept = trial.checkpoints[:-1]
        if attribute:
            sign = 1 if self.config.checkpoint_score_order == "max" else -1
            kept.sort(key=lambda item: sign * _score(item[1], attribute))
        dropped = kept[:len(trial.checkpoints) - keep]
        trial.checkpoints = [c for c in trial.checkpoints if c not in dropped]
        return [checkpoint for checkpoint, _ in dropped]

    def on_error(self, trial_id: str, error: BaseException, now: float) -> list:
        """The trial raised or its runner died: retry it from its checkpoint while
        ``max_failures`` allows, else record the error."""
        trial = self.trials[trial_id]
        if trial.status != Status.RUNNING:
            return []
        self._release(trial)
        trial.num_failures += 1
        allowed = self.config.max_failures
        if allowed == -1 or trial.num_failures <= allowed:
            trial.set_status(Status.PENDING)
            self.callbacks.call("on_trial_recover", trial=trial)
            return self.step(now)
        trial.error = error
        trial.set_status(Status.ERROR)
        self.callbacks.call("on_trial_error", trial=trial)
        self.scheduler.on_trial_error(self, trial)
        self.search_alg.on_trial_complete(trial.trial_id, trial.last_result, error=True)
        return self.step(now)

    def on_paused(self, trial_id: str, checkpoint_path: str | None, now: float) -> list:
        """The executor ended a paused trial's run (with a fresh checkpoint, if any)."""
        trial = self.trials[trial_id]
        trial.exploited_from = None
        commands = []
        if checkpoint_path:
            commands = self._record_checkpoint(trial, checkpoint_path, trial.last_result)
        return commands + self.step(now)

    # -- what schedulers ask for ---------------------------------------------------
    def request_checkpoint(self, trial: Trial) -> None:
        trial.save_requested = True

    def exploit(self, trial: Trial, donor: Trial, new_config: dict) -> None:
        """PBT: ``trial`` restarts from ``donor``'s checkpoint with ``new_config``."""
        trial.config = new_config
        trial.checkpoint = donor.checkpoint
        trial.restore_point = donor.restore_point
        trial.exploited_from = donor.trial_id

    # -- transitions -----------------------------------------------------------------
    def _set_running(self, trial: Trial) -> None:
        trial.set_status(Status.RUNNING)
        for name, amount in trial.resources.items():
            self.used[name] = self.used.get(name, 0) + amount
        self.callbacks.call("on_trial_start", trial=trial)

    def _release(self, trial: Trial) -> None:
        for name, amount in trial.resources.items():
            self.used[name] = self.used.get(name, 0) - amount

    def _terminate(self, trial: Trial, ran_to_end: bool = False) -> list:
        self._release(trial)
        trial.set_status(Status.TERMINATED)
        if ran_to_end and trial.last_result:
            trial.last_result["done"] = True
        self.scheduler.on_trial_complete(self, trial, trial.last_result)
        self.search_alg.on_trial_complete(trial.trial_id, trial.last_result)
        self.callbacks.call("on_trial_complete", trial=trial)
        return [] if ran_to_end else [Command(STOP, trial)]

    def _pause(self, trial: Trial) -> list:
        self._release(trial)
        trial.set_status(Status.PAUSED)
        save = trial.exploited_from is None
        return [Command(PAUSE, trial, save=save)]


def checkpoint_index(path: str) -> int:
    """3 for ".../checkpoint_000003" (-1 for a name of another form)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    try:
        return int(name.rsplit("_", 1)[-1])
    except ValueError:
        return -1


def _score(metrics: dict, attribute: str) -> float:
    value = metrics.get(attribute)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) \
        else float("-inf")
