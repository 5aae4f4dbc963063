"""``OptunaSearch``: Ray Tune's wrapper of an Optuna study (``pip install
"zray[tune]"`` or ``pip install optuna``).

Each trial is one ``study.ask()``; its results are reported to the Optuna
trial as intermediate values (step = ``training_iteration``) and its last
result is ``tell``-ed when it ends (FAIL when it raised with no metric,
PRUNED when a scheduler stopped it before it reported one).  The space comes
from ``param_space`` (``tune.uniform`` etc., converted to Optuna
distributions), or from ``space=``: a dict of Optuna distributions or a
define-by-run function ``space(trial) -> dict | None``.
"""

from __future__ import annotations

import logging

from zray.tune.search.sample import Categorical, Domain, Float, Function, Integer, Normal
from zray.tune.search.searcher import Searcher
from zray.tune.search.variant_generator import find_unresolved, is_grid

try:
    import optuna as ot
except ImportError:           # an optional dependency: OptunaSearch() says what to install
    ot = None

log = logging.getLogger("zray.tune")

#: Ray's name for the metric when only a mode is given.
DEFAULT_METRIC = "_metric"


def _require_optuna() -> None:
    if ot is None:
        raise ImportError('OptunaSearch needs optuna: pip install "zray[tune]" '
                          '(or pip install "optuna>=3.0")')
    major = int(ot.__version__.split(".")[0])
    if major < 3:
        raise ImportError(f'OptunaSearch needs optuna >= 3.0, found {ot.__version__}: '
                          f'pip install -U "optuna>=3.0"')


class OptunaSearch(Searcher):
    """Suggest configs with an Optuna sampler (TPE by default, seeded by ``seed``)."""

    def __init__(self, space=None, metric: str | list | None = None,
                 mode: str | list | None = None, points_to_evaluate: list | None = None,
                 sampler=None, study_name: str | None = None, storage=None,
                 seed: int | None = None, evaluated_rewards: list | None = None):
        _require_optuna()
        if isinstance(mode, list) or isinstance(metric, list):
            if not (isinstance(mode, list) and isinstance(metric, list)
                    and len(mode) == len(metric)):
                raise ValueError("OptunaSearch: for several objectives give metric and "
                                 "mode as lists of the same length")
            if any(m not in ("min", "max") for m in mode):
                raise ValueError(f"OptunaSearch: every mode must be 'min' or 'max', got "
                                 f"{mode}")
            Searcher.__init__(self, None, None)
            self._metric, self._mode = metric, mode
        else:
            super().__init__(metric, mode)
        if sampler is not None and not isinstance(sampler, ot.samplers.BaseSampler):
            raise TypeError(f"OptunaSearch(sampler=...) takes an optuna.samplers."
                            f"BaseSampler, got {type(sampler).__name__}")
        if sampler is not None and seed is not None:
            log.warning("OptunaSearch: seed is ignored when a sampler is given; seed the "
                        "sampler itself")
        if isinstance(space, dict) and space:
            if find_unresolved(space):       # tune.uniform(...) etc.: convert them
                space = self.convert_search_space(space)
            else:                            # Optuna distributions, maybe nested
                space = _flatten(space)
        self._space = space
        self._points_to_evaluate = list(points_to_evaluate or [])
        self._evaluated_rewards = evaluated_rewards
        if evaluated_rewards is not None and \
                len(evaluated_rewards) != len(self._points_to_evaluate):
            raise ValueError("OptunaSearch: evaluated_rewards needs one reward per point "
                             "in points_to_evaluate")
        self._sampler, self._seed = sampler, seed
        self._study_name = study_name or "optuna"
        self._storage = storage
        self._ot_study = None
        self._ot_trials: dict = {}
        self._completed: set = set()
        if self._space:
            self._setup_study()

    # -- setup ------------------------------------------------------------------------
    def _setup_study(self) -> None:
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        if isinstance(self._mode, list):
            directions = {"directions": [_direction(m) for m in self._mode]}
        else:
            directions = {"direction": _direction(self._mode)}
        sampler = self._sampler or ot.samplers.TPESampler(seed=self._seed)
        self._ot_study = ot.create_study(storage=self._storage, sampler=sampler,
                                         pruner=ot.pruners.NopPruner(),
                                         study_name=self._study_name, load_if_exists=True,
                                         **directions)
        if self._evaluated_rewards is not None:
            for point, reward in zip(self._points_to_evaluate, self._evaluated_rewards):
                self.add_evaluated_point(point, reward)
        else:
            for point in self._points_to_evaluate:
                self._ot_study.enqueue_trial(_flatten(point))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Take the space from ``param_space`` (False: this searcher has its own)."""
        if self._space:
            return False
        self._space = self.convert_search_space(config)
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        if self._space:
            self._setup_study()
        return True

    # -- the Searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str):
        if not self._space:
            raise RuntimeError("OptunaSearch has no search space: give Tuner(param_space=) "
                               "tune.uniform/choice/... values, or OptunaSearch(space=...)")
        if not self._metric or not self._mode:
            raise RuntimeError("OptunaSearch needs metric and mode: give them to "
                               "OptunaSearch(...) or to TuneConfig(metric=..., mode=...)")
        if callable(self._space):
            ot_trial = self._ot_trials.get(trial_id) or self._ot_study.ask()
            self._ot_trials[trial_id] = ot_trial
            returned = self._space(ot_trial)
            if returned is not None and (not isinstance(returned, dict) or
                                         not all(isinstance(k, str) for k in returned)):
                raise TypeError(f"OptunaSearch's define-by-run space must return None or "
                                f"a dict with str keys, got {type(returned).__name__}")
            params = {**ot_trial.params, **(returned or {})}
        else:
            ot_trial = self._ot_trials.get(trial_id) or \
                self._ot_study.ask(fixed_distributions=self._space)
            self._ot_trials[trial_id] = ot_trial
            params = ot_trial.params
        return _unflatten(params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self._metric, list) or trial_id in self._completed:
            return                   # Optuna keeps no intermediate values for several objectives
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self._metric)
        if ot_trial is None or not isinstance(value, (int, float)):
            return
        step = result.get("training_iteration", 0)
        try:
            ot_trial.report(float(value), int(step))
        except Exception as exc:     # e.g. a step reported twice after a restore
            log.debug("OptunaSearch: report of trial %s skipped (%s)", trial_id, exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed or trial_id not in self._ot_trials:
            return
        self._completed.add(trial_id)
        if result and isinstance(self._metric, list):
            value = [result.get(m) for m in self._metric]
            value = None if any(v is None for v in value) else value
        else:
            value = result.get(self._metric) if result else None
        if value is not None:
            state = ot.trial.TrialState.COMPLETE
        elif error:
            state = ot.trial.TrialState.FAIL
        else:
            state = ot.trial.TrialState.PRUNED
        try:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        except Exception as exc:     # e.g. a NaN metric
            log.warning("OptunaSearch: could not tell trial %s's result to optuna (%s)",
                        trial_id, exc)

    def add_evaluated_point(self, parameters: dict, value, error: bool = False,
                            pruned: bool = False, intermediate_values: list | None = None):
        """Tell the study about a config evaluated outside this run."""
        if not self._space or callable(self._space):
            raise TypeError("OptunaSearch.add_evaluated_point needs a dict search space "
                            "(not none, not a define-by-run function)")
        state = ot.trial.TrialState.COMPLETE
        if error:
            state, value = ot.trial.TrialState.FAIL, None
        elif pruned:
            state = ot.trial.TrialState.PRUNED
        params = _flatten(parameters)
        self._ot_study.add_trial(ot.trial.create_trial(
            state=state, value=value, params=params,
            distributions={k: self._space[k] for k in params},
            intermediate_values=dict(enumerate(intermediate_values))
            if intermediate_values else None))

    # -- the space ----------------------------------------------------------------------
    @staticmethod
    def convert_search_space(spec: dict) -> dict:
        """{"a/b": optuna distribution} for the tune domains in ``spec``."""
        _require_optuna()
        unresolved = find_unresolved(spec)
        if any(is_grid(value) for _, value in unresolved):
            raise ValueError("OptunaSearch cannot search a grid_search: use tune.choice "
                             "(or BasicVariantGenerator for a grid)")
        return {"/".join(map(str, path)): _distribution(domain, path)
                for path, domain in unresolved}


def _distribution(domain: Domain, path: tuple):
    name = "/".join(map(str, path))
    if isinstance(domain, (Function, Normal)):
        raise ValueError(f"OptunaSearch cannot search {name} = {domain!r}: Optuna has no "
                         f"such distribution (use uniform, loguniform, randint, choice)")
    if isinstance(domain, Categorical):
        return ot.distributions.CategoricalDistribution(domain.categories)
    if isinstance(domain, Float):
        if domain.log_base is not None:
            if domain.q is not None:
                log.warning("OptunaSearch: %s's quantization is dropped (Optuna has no "
                            "quantized log distribution)", name)
            return ot.distributions.FloatDistribution(domain.lower, domain.upper, log=True)
        return ot.distributions.FloatDistribution(domain.lower, domain.upper,
                                                  step=domain.q)
    if isinstance(domain, Integer):
        # randint's upper bound is excluded, qrandint's included (as in Ray)
        upper = domain.upper if domain.inclusive else domain.upper - 1
        if domain.log_base is not None:
            return ot.distributions.IntDistribution(domain.lower, upper, log=True)
        return ot.distributions.IntDistribution(domain.lower, upper, step=domain.q or 1)
    raise ValueError(f"OptunaSearch cannot search {name} = {domain!r}")


def _direction(mode) -> str:
    return "minimize" if mode == "min" else "maximize"


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and not is_grid(value):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        target = nested
        parts = key.split("/")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested
