"""ASHA: asynchronous successive halving.  A trial reaching a rung (grace
period * reduction_factor**k) continues only if its metric is in the top
1/reduction_factor of what earlier trials recorded at that rung."""

from __future__ import annotations

import logging
import math

import numpy as np

from zray.tune.schedulers.trial_scheduler import TrialScheduler

log = logging.getLogger("zray.tune")


class AsyncHyperBandScheduler(TrialScheduler):
    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: float = 100, grace_period: float = 1,
                 reduction_factor: float = 4, brackets: int = 1,
                 stop_last_trials: bool = True):
        if grace_period <= 0 or max_t < grace_period:
            raise ValueError(f"need 0 < grace_period <= max_t, got grace_period="
                             f"{grace_period}, max_t={max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        if not isinstance(brackets, int) or brackets < 1:
            raise ValueError(f"brackets must be a positive int, got {brackets!r}")
        super().__init__(metric, mode)
        self._time_attr, self._max_t = time_attr, max_t
        self._stop_last_trials = stop_last_trials
        self._brackets = [_Bracket(grace_period, max_t, reduction_factor, s, stop_last_trials)
                          for s in range(brackets)]
        self._trial_info: dict = {}
        self._num_stopped = 0

    def on_trial_add(self, tune_controller, trial) -> None:
        self.check_metric()
        sizes = np.array([len(b.rungs) for b in self._brackets])
        weights = np.e ** (sizes - sizes.max())
        index = int(np.random.choice(len(self._brackets), p=weights / weights.sum()))
        self._trial_info[trial.trial_id] = self._brackets[index]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return self.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            action = self.STOP
        else:
            bracket = self._trial_info[trial.trial_id]
            action = bracket.on_result(trial.trial_id, result[self._time_attr],
                                       self._metric_op * result[self._metric])
        if action == self.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        bracket = self._trial_info.pop(trial.trial_id, None)
        if bracket is not None and result and self._time_attr in result \
                and self._metric in result:
            bracket.on_result(trial.trial_id, result[self._time_attr],
                              self._metric_op * result[self._metric])

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_info.pop(trial.trial_id, None)

    def decision_points(self, trial) -> list | None:
        """The rungs' milestones (and max_t) when time is counted in iterations:
        a trial is only ever cut there."""
        bracket = self._trial_info.get(trial.trial_id)
        if self._time_attr != "training_iteration" or bracket is None:
            return None
        points = {math.ceil(milestone) for milestone, _ in bracket.rungs}
        if self._stop_last_trials:
            points.add(math.ceil(self._max_t))
        return sorted(points)

    def debug_string(self) -> str:
        rungs = "; ".join(b.debug_str() for b in self._brackets)
        return f"Using AsyncHyperBand: num_stopped={self._num_stopped} {rungs}"


class _Bracket:
    """Rungs (milestone, {trial_id: score}), highest milestone first."""

    def __init__(self, min_t, max_t, reduction_factor, s, stop_last_trials=True):
        self.rf = reduction_factor
        count = int(np.log(max_t / min_t) / np.log(reduction_factor) - s + 1)
        self.rungs = [(min_t * reduction_factor ** (k + s), {})
                      for k in reversed(range(count))]
        self.stop_last_trials = stop_last_trials

    def cutoff(self, recorded: dict):
        if not recorded:
            return None
        return np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)

    def on_result(self, trial_id, cur_iter, cur_rew) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if cur_iter >= milestone and trial_id in recorded and not self.stop_last_trials:
                break
            if cur_iter < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            if cutoff is not None and cur_rew < cutoff:
                action = TrialScheduler.STOP
            if cur_rew is None:
                log.warning("ASHA: trial %s reported no value for the metric", trial_id)
            else:
                recorded[trial_id] = cur_rew
            break
        return action

    def debug_str(self) -> str:
        return "Bracket(" + ", ".join(f"{m}: {len(r)}" for m, r in self.rungs) + ")"


ASHAScheduler = AsyncHyperBandScheduler
