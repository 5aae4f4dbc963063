"""Search algorithms: Ray's ``Searcher`` interface (``suggest`` /
``on_trial_complete``), ``ConcurrencyLimiter``, ``BasicVariantGenerator``
(grid and random search), and ``SearchGenerator`` which adapts a ``Searcher``
to what the trial controller asks of every search algorithm:

    set_search_properties(metric, mode, param_space, num_samples)
    next_trial(trial_id) -> (config, experiment_tag) | None   (None: not now)
    is_finished() -> bool
    on_trial_result(trial_id, result); on_trial_complete(trial_id, result, error)
"""

from __future__ import annotations

import copy

import numpy as np

from zray.tune.search.sample import Domain
from zray.tune.search.variant_generator import VariantSpace, format_tag


class Searcher:
    """Suggests one config at a time and learns from completed trials."""

    FINISHED = "FINISHED"

    def __init__(self, metric: str | None = None, mode: str | None = None):
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._metric, self._mode = metric, mode

    @property
    def metric(self):
        return self._metric

    @property
    def mode(self):
        return self._mode

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Fill metric/mode from TuneConfig when the searcher has none."""
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str):
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass

    def get_state(self) -> dict:
        return dict(self.__dict__)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)


class ConcurrencyLimiter(Searcher):
    """At most ``max_concurrent`` of the wrapped searcher's trials run at once
    (``batch=True``: the next batch starts only when the whole last one ended)."""

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False):
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"ConcurrencyLimiter(max_concurrent=...) must be a positive "
                             f"int, got {max_concurrent!r}")
        super().__init__(searcher.metric, searcher.mode)
        self.searcher, self.max_concurrent, self.batch = searcher, max_concurrent, batch
        self.live: set = set()
        self.cached: list = []

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def suggest(self, trial_id: str):
        if len(self.live) >= self.max_concurrent:
            return None
        if self.batch and self.cached:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live.add(trial_id)
        return suggestion

    def on_trial_result(self, trial_id, result) -> None:
        if trial_id in self.live:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        if trial_id not in self.live:
            return
        if self.batch:
            self.cached.append((trial_id, result, error))
            if len(self.cached) == len(self.live):
                for cached in self.cached:
                    self.searcher.on_trial_complete(*cached)
                self.live.clear()
                self.cached = []
        else:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            self.live.discard(trial_id)


class BasicVariantGenerator:
    """Grid search and random search: every grid combination, ``num_samples``
    times, random domains drawn per trial (``random_state`` seeds them)."""

    def __init__(self, points_to_evaluate: list | None = None, max_concurrent: int = 0,
                 constant_grid_search: bool = False, random_state=None):
        self.points_to_evaluate = list(points_to_evaluate or [])
        self.max_concurrent = max_concurrent
        self.constant_grid_search = constant_grid_search
        self._seed = random_state
        self._rng = (np.random.default_rng(random_state)
                     if isinstance(random_state, (int, np.integer)) else random_state)
        self._space: VariantSpace | None = None
        self._total = 0
        self._next = 0
        self._live: set = set()
        self.metric = self.mode = None

    def set_search_properties(self, metric, mode, param_space, num_samples=1) -> bool:
        self.metric, self.mode = metric, mode
        self._space = VariantSpace(param_space)
        self._total = num_samples * self._space.grid_size
        return True

    @property
    def total_samples(self) -> int:
        return self._total

    def is_finished(self) -> bool:
        return self._next >= self._total

    def next_trial(self, trial_id: str):
        if self.is_finished() or (self.max_concurrent and
                                  len(self._live) >= self.max_concurrent):
            return None
        space = self._space
        index = self._next
        repeat, grid_index = divmod(index, space.grid_size)
        preset = self.points_to_evaluate[repeat] if repeat < len(
            self.points_to_evaluate) else None
        rng = self._rng
        if self.constant_grid_search and rng is None:
            rng = np.random.default_rng(repeat)
        config, chosen = space.resolve(grid_index, rng, preset)
        self._next += 1
        self._live.add(trial_id)
        return config, format_tag(index, chosen)

    def on_trial_result(self, trial_id, result) -> None:
        pass

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        self._live.discard(trial_id)


class SearchGenerator:
    """Runs a ``Searcher`` for ``num_samples`` trials: its suggestion is merged
    over the constant parts of ``param_space``."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self._total = 0
        self._created = 0
        self._finished = False
        self._param_space: dict = {}

    @property
    def metric(self):
        return self.searcher.metric

    @property
    def mode(self):
        return self.searcher.mode

    def set_search_properties(self, metric, mode, param_space, num_samples=1) -> bool:
        self._param_space = param_space
        self._total = num_samples
        return self.searcher.set_search_properties(metric, mode, param_space)

    @property
    def total_samples(self) -> int:
        return self._total

    def is_finished(self) -> bool:
        return self._finished or self._created >= self._total

    def next_trial(self, trial_id: str):
        if self.is_finished():
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion == Searcher.FINISHED:
            self._finished = True
            return None
        if suggestion is None:
            return None
        config = _merge(copy.deepcopy(_constants(self._param_space)), suggestion)
        self._created += 1
        return config, format_tag(self._created - 1, {(k,): v for k, v in
                                                      _flat(suggestion).items()})

    def on_trial_result(self, trial_id, result) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)


def _constants(space):
    """``space`` without its domains (the searcher supplies those)."""
    if isinstance(space, dict):
        return {k: _constants(v) for k, v in space.items() if not isinstance(v, Domain)}
    return space


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _flat(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_search_alg(search_alg):
    """The search algorithm a TuneConfig names (None: BasicVariantGenerator)."""
    if search_alg is None:
        return BasicVariantGenerator()
    if isinstance(search_alg, Searcher):
        return SearchGenerator(search_alg)
    if hasattr(search_alg, "next_trial"):
        return search_alg
    raise TypeError(f"search_alg must be a Searcher or BasicVariantGenerator, got "
                    f"{type(search_alg).__name__}")
