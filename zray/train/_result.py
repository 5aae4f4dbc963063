"""What ``Trainer.fit()`` returns, and the error when training fails."""

from __future__ import annotations

from zray.exceptions import RayError


class Result:
    """Ray Train's Result: the last reported metrics, the latest checkpoint, the
    run's directory, the error (if any), and the metrics history."""

    def __init__(self, metrics: dict, checkpoint, path: str, error, history: list,
                 checkpoints: list):
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.path = path
        self.error = error
        self._history = history
        self.best_checkpoints = [(c, m) for m, c in history if c is not None]

    @property
    def config(self):
        """The trial's config (a Tune trial's result carries it in ``metrics``)."""
        return (self.metrics or {}).get("config")

    @property
    def metrics_dataframe(self):
        """Every reported metrics dict, one row each (needs pandas)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Result.metrics_dataframe needs pandas: pip install "
                              "pandas") from None
        return pandas.DataFrame([metrics for metrics, _ in self._history])

    def __repr__(self):
        return (f"Result(metrics={self.metrics}, path={self.path!r}, "
                f"checkpoint={self.checkpoint}, error={self.error!r})")


class TrainingFailedError(RayError):
    """Training failed more often than FailureConfig.max_failures allows."""

    def __init__(self, message: str = "", result: Result | None = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self):
        return (TrainingFailedError, (str(self), self.result))
