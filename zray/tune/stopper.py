"""Stop criteria (``RunConfig(stop=...)``): a dict of thresholds, a function
``(trial_id, result) -> bool``, or a ``Stopper``, as in Ray Tune."""

from __future__ import annotations

import time
from collections import defaultdict, deque

import numpy as np

from zray.tune._flatten import with_flat_keys


class Stopper:
    """``__call__(trial_id, result)``: stop this trial; ``stop_all()``: end the run."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        raise NotImplementedError

    def stop_all(self) -> bool:
        return False


class NoopStopper(Stopper):
    def __call__(self, trial_id, result):
        return False


class DictStopper(Stopper):
    """Stop a trial once any ``result[key] >= value`` (Ray's dict criteria)."""

    def __init__(self, criteria: dict):
        self.criteria = dict(criteria)

    def __call__(self, trial_id, result):
        return reached(self.criteria, result)


def reached(criteria: dict, result: dict) -> bool:
    result = with_flat_keys(result)               # {"env_runners/episode_return_mean": 150}
    for key, threshold in criteria.items():
        if key in result and result[key] is not None and result[key] >= threshold:
            return True
    return False


class FunctionStopper(Stopper):
    def __init__(self, function):
        self._function = function

    def __call__(self, trial_id, result):
        return bool(self._function(trial_id, result))


class MaximumIterationStopper(Stopper):
    def __init__(self, max_iter: int):
        self._max_iter = max_iter
        self._iterations: dict = defaultdict(int)

    def __call__(self, trial_id, result):
        self._iterations[trial_id] += 1
        return self._iterations[trial_id] >= self._max_iter


class TimeoutStopper(Stopper):
    """End the whole run after ``timeout`` seconds (a number or timedelta)."""

    def __init__(self, timeout):
        seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
        self._deadline = time.monotonic() + float(seconds)

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return time.monotonic() >= self._deadline


class TrialPlateauStopper(Stopper):
    """Stop a trial whose ``metric`` has stopped moving: the std of its last
    ``num_results`` values is under ``std`` (after ``grace_period`` results)."""

    def __init__(self, metric: str, std: float = 0.01, num_results: int = 4,
                 grace_period: int = 4, metric_threshold: float | None = None,
                 mode: str | None = None):
        if metric_threshold is not None and mode not in ("min", "max"):
            raise ValueError("TrialPlateauStopper: give mode='min' or 'max' with "
                             "metric_threshold")
        self._metric, self._std, self._num_results = metric, std, num_results
        self._grace_period, self._threshold, self._mode = grace_period, metric_threshold, mode
        self._seen: dict = defaultdict(int)
        self._window: dict = defaultdict(lambda: deque(maxlen=self._num_results))

    def __call__(self, trial_id, result):
        value = result.get(self._metric)
        if value is None:
            return False
        self._seen[trial_id] += 1
        self._window[trial_id].append(value)
        if self._seen[trial_id] < self._grace_period:
            return False
        if len(self._window[trial_id]) < self._num_results:
            return False
        if self._threshold is not None:
            if self._mode == "min" and value > self._threshold:
                return False
            if self._mode == "max" and value < self._threshold:
                return False
        return float(np.std(self._window[trial_id])) <= self._std


class CombinedStopper(Stopper):
    def __init__(self, *stoppers: Stopper):
        self._stoppers = stoppers

    def __call__(self, trial_id, result):
        return any([stopper(trial_id, result) for stopper in self._stoppers])

    def stop_all(self):
        return any(stopper.stop_all() for stopper in self._stoppers)


def as_stopper(stop) -> Stopper | None:
    """RunConfig.stop as a Stopper (None: no criteria)."""
    if stop is None:
        return None
    if isinstance(stop, Stopper):
        return stop
    if isinstance(stop, dict):
        return DictStopper(stop) if stop else None
    if callable(stop):
        return FunctionStopper(stop)
    raise TypeError(f"RunConfig(stop=...) takes a dict, a function (trial_id, result) -> "
                    f"bool or a tune.Stopper; got {type(stop).__name__}")
