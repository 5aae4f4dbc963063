"""Median stopping: stop a trial whose best result so far is worse than the
median of the other trials' running means at the same time."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from zray.tune.schedulers.trial_scheduler import TrialScheduler


class MedianStoppingRule(TrialScheduler):
    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, grace_period: float = 60.0,
                 min_samples_required: int = 3, min_time_slice: int = 0,
                 hard_stop: bool = True):
        super().__init__(metric, mode)
        self._time_attr, self._grace_period = time_attr, grace_period
        self._min_samples_required = min_samples_required
        self._min_time_slice, self._hard_stop = min_time_slice, hard_stop
        self._results: dict = defaultdict(list)
        self._completed: set = set()
        self._stopped: set = set()

    def on_trial_add(self, tune_controller, trial) -> None:
        self.check_metric()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self._stopped:
            return self.STOP
        if self._time_attr not in result or self._metric not in result:
            return self.CONTINUE
        now = result[self._time_attr]
        self._results[trial.trial_id].append(result)
        if now < self._grace_period:
            return self.CONTINUE
        others = [t for t in self._trials_beyond(now) if t != trial.trial_id]
        if len(others) < self._min_samples_required:
            return self.CONTINUE
        median = float(np.median([self._running_mean(t, now) for t in others]))
        best = max(self._metric_op * r[self._metric] for r in self._results[trial.trial_id])
        if best < median and now > self._grace_period:
            if self._hard_stop:
                self._stopped.add(trial.trial_id)
                return self.STOP
            return self.PAUSE
        return self.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        seen = self._results[trial.trial_id]
        if result and self._time_attr in result and self._metric in result and (
                not seen or seen[-1] is not result):
            seen.append(result)
        self._completed.add(trial.trial_id)

    def _trials_beyond(self, now) -> list:
        return [t for t, results in self._results.items()
                if t in self._completed or (results and results[-1][self._time_attr] >= now)]

    def _running_mean(self, trial_id, now) -> float:
        values = [self._metric_op * r[self._metric] for r in self._results[trial_id]
                  if r[self._time_attr] <= now]
        return float(np.mean(values)) if values else float("-inf")
