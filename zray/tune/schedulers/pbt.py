"""Population based training: every ``perturbation_interval``, a trial in the
bottom quantile clones the checkpoint of one in the top quantile (exploit)
and continues with a mutated copy of its config (explore)."""

from __future__ import annotations

import copy
import logging
import math
import random

from zray.tune.schedulers.trial_scheduler import TrialScheduler
from zray.tune.search.sample import Categorical, Domain

log = logging.getLogger("zray.tune")


class _TrialState:
    def __init__(self):
        self.last_score = None
        self.last_perturbation_time = 0
        self.last_result = None


class PopulationBasedTraining(TrialScheduler):
    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, perturbation_interval: float = 60.0,
                 burn_in_period: float = 0.0, hyperparam_mutations: dict | None = None,
                 quantile_fraction: float = 0.25, resample_probability: float = 0.25,
                 perturbation_factors: tuple = (1.2, 0.8), custom_explore_fn=None,
                 log_config: bool = True, require_attrs: bool = True, synch: bool = False):
        if not hyperparam_mutations and not custom_explore_fn:
            raise ValueError("PopulationBasedTraining needs hyperparam_mutations or "
                             "custom_explore_fn")
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in [0, 0.5], got "
                             f"{quantile_fraction}")
        if perturbation_interval <= 0:
            raise ValueError("perturbation_interval must be positive")
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._perturbation_interval, self._burn_in_period = perturbation_interval, burn_in_period
        self._hyperparam_mutations = hyperparam_mutations or {}
        self._quantile_fraction = quantile_fraction
        self._resample_probability = resample_probability
        self._perturbation_factors = perturbation_factors
        self._custom_explore_fn = custom_explore_fn
        self._require_attrs = require_attrs
        self._state: dict = {}
        self._num_perturbations = 0

    def on_trial_add(self, tune_controller, trial) -> None:
        self.check_metric()
        self._state[trial.trial_id] = _TrialState()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            if self._require_attrs:
                raise ValueError(f"PopulationBasedTraining needs {self._time_attr!r} and "
                                 f"{self._metric!r} in every result; got "
                                 f"{sorted(result)}")
            return self.CONTINUE
        now = result[self._time_attr]
        state = self._state[trial.trial_id]
        if now < self._burn_in_period:
            return self.CONTINUE
        if now - state.last_perturbation_time < self._perturbation_interval:
            return self.CONTINUE
        state.last_score = self._metric_op * result[self._metric]
        state.last_perturbation_time = now
        state.last_result = result
        lower, upper = self._quantiles(tune_controller)
        if trial.trial_id in upper:
            tune_controller.request_checkpoint(trial)
            return self.CONTINUE
        if trial.trial_id in lower:
            donor = tune_controller.get_trial(random.choice(upper))
            if donor.checkpoint is None:
                log.info("PBT: %s has no checkpoint to clone yet", donor)
                return self.CONTINUE
            new_config = self._explore(donor.config)
            self._num_perturbations += 1
            log.info("PBT: %s clones %s's checkpoint with config %s", trial, donor,
                     new_config)
            self._state[trial.trial_id].last_perturbation_time = now
            tune_controller.exploit(trial, donor, new_config)
            return self.PAUSE
        return self.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._state.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._state.pop(trial.trial_id, None)

    def _quantiles(self, tune_controller) -> tuple:
        """(bottom trial ids, top trial ids) by last score."""
        scored = [(state.last_score, trial_id) for trial_id, state in self._state.items()
                  if state.last_score is not None]
        if len(scored) <= 1:
            return [], []
        scored.sort()
        count = int(math.ceil(len(scored) * self._quantile_fraction))
        count = min(count, len(scored) // 2)
        if count == 0:
            return [], []
        return [t for _, t in scored[:count]], [t for _, t in scored[-count:]]

    def _explore(self, config: dict) -> dict:
        new = copy.deepcopy(config)
        _mutate(new, self._hyperparam_mutations, self._resample_probability,
                self._perturbation_factors)
        if self._custom_explore_fn:
            new = self._custom_explore_fn(new)
            if new is None:
                raise ValueError("PBT's custom_explore_fn must return the new config")
        return new

    def debug_string(self) -> str:
        return f"PopulationBasedTraining: {self._num_perturbations} perturbs"


def _mutate(config: dict, mutations: dict, resample_probability: float,
            factors: tuple) -> None:
    for key, spec in mutations.items():
        if isinstance(spec, dict):
            config.setdefault(key, {})
            _mutate(config[key], spec, resample_probability, factors)
            continue
        if isinstance(spec, Categorical):
            spec = spec.categories
        current = config.get(key)
        if isinstance(spec, (list, tuple)):
            if random.random() < resample_probability or current not in spec:
                config[key] = random.choice(spec)
            else:
                index = list(spec).index(current) + random.choice([-1, 1])
                config[key] = spec[min(max(index, 0), len(spec) - 1)]
        elif isinstance(spec, Domain) or callable(spec):
            if current is None or random.random() < resample_probability:
                config[key] = spec.sample() if isinstance(spec, Domain) else spec()
            else:
                value = current * random.choice(factors)
                config[key] = int(value) if isinstance(current, int) else value
        else:
            raise TypeError(f"hyperparam_mutations[{key!r}] must be a list, a tune "
                            f"domain, a function or a dict; got {type(spec).__name__}")
