"""``ResultGrid``: what ``Tuner.fit()`` returns, one ``Result`` per trial."""

from __future__ import annotations

import math

from zray.train._result import Result
from zray.tune._trial import Status

SCOPES = ("all", "last", "avg", "last-5-avg", "last-10-avg")


def result_of(trial) -> Result:
    metrics = dict(trial.last_result)
    metrics["config"] = trial.config
    history = trial.history or ([(trial.last_result, None)] if trial.last_result else [])
    result = Result(metrics, trial.checkpoint, trial.local_path, trial.error, history,
                    trial.checkpoints)
    result.best_checkpoints = [(c, m) for c, m in trial.checkpoints]
    return result


class ResultGrid:
    def __init__(self, trials: list, metric: str | None, mode: str | None,
                 experiment_path: str):
        self._trials = list(trials)
        self._results = [result_of(t) for t in self._trials]
        self._metric, self._mode = metric, mode
        self.experiment_path = experiment_path
        self.filesystem = None

    def __len__(self):
        return len(self._results)

    def __getitem__(self, index) -> Result:
        return self._results[index]

    def __iter__(self):
        return iter(self._results)

    @property
    def errors(self) -> list:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return sum(t.status == Status.ERROR for t in self._trials)

    @property
    def num_terminated(self) -> int:
        return sum(t.status == Status.TERMINATED for t in self._trials)

    def get_best_result(self, metric: str | None = None, mode: str | None = None,
                        scope: str = "last", filter_nan_and_inf: bool = True) -> Result:
        metric, mode = metric or self._metric, mode or self._mode
        if not metric:
            raise ValueError("No metric is provided. Either pass in a `metric` arg to "
                             "`get_best_result` or specify a metric in the `TuneConfig` "
                             "of your `Tuner`.")
        if mode not in ("min", "max"):
            raise ValueError("No mode is provided (or it is not 'min' or 'max'). Either "
                             "pass in a `mode` arg to `get_best_result` or specify a mode "
                             "in the `TuneConfig` of your `Tuner`.")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
        best, best_score = None, None
        for trial, result in zip(self._trials, self._results):
            score = _score(trial, metric, mode, scope, filter_nan_and_inf)
            if score is None:
                continue
            if best_score is None or (score > best_score if mode == "max"
                                      else score < best_score):
                best, best_score = result, score
        if best is None:
            raise RuntimeError(f"No best trial found for the given metric: {metric}. This "
                               f"means that no trial has reported this metric, or all "
                               f"values reported for this metric are NaN. To not ignore "
                               f"NaN values, you can set the `filter_nan_and_inf` arg to "
                               f"False.")
        return best

    def get_dataframe(self, filter_metric: str | None = None,
                      filter_mode: str | None = None):
        """One row per trial (its last result, or its best for ``filter_metric``),
        with the config as ``config/<name>`` columns."""
        import pandas
        rows = []
        for trial in self._trials:
            row = dict(trial.last_result)
            if filter_metric:
                values = [m for m, _ in trial.history if _finite(m.get(filter_metric))]
                if values:
                    pick = max if filter_mode == "max" else min
                    row = dict(pick(values, key=lambda m: m[filter_metric]))
            row.update({f"config/{k}": v for k, v in _flatten(trial.config).items()})
            row["logdir"] = trial.local_path
            row.setdefault("trial_id", trial.trial_id)
            rows.append(row)
        return pandas.DataFrame(rows)

    def __repr__(self):
        return f"ResultGrid<[{', '.join(map(repr, self._results))}]>"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _score(trial, metric, mode, scope, filter_nan_and_inf):
    values = [m[metric] for m, _ in trial.history if metric in m]
    if not values and metric in trial.last_result:
        values = [trial.last_result[metric]]
    if filter_nan_and_inf:
        values = [v for v in values if _finite(v)]
    if not values:
        return None
    if scope == "last":
        return values[-1]
    if scope == "all":
        return max(values) if mode == "max" else min(values)
    if scope == "avg":
        return sum(values) / len(values)
    window = int(scope.split("-")[1])
    tail = values[-window:]
    return sum(tail) / len(tail)


def _flatten(config, prefix: str = "") -> dict:
    flat = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
