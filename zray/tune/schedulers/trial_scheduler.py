"""The scheduler interface (Ray's ``TrialScheduler``) and ``FIFOScheduler``.

The trial controller calls a scheduler on every result and gets back
CONTINUE, PAUSE or STOP; ``tune_controller`` is the controller itself
(``get_trials()``, ``request_checkpoint(trial)``, ``exploit(trial, donor, config)``).
"""

from __future__ import annotations


class TrialScheduler:
    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    #: Whether this scheduler may stop or pause trials on a result (if not,
    #: trials run ahead without waiting for the driver after each report).
    decides_per_result = True

    def __init__(self, metric: str | None = None, mode: str | None = None):
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._metric, self._mode = metric, mode

    @property
    def metric(self):
        return self._metric

    @property
    def _metric_op(self) -> float:
        return -1.0 if self._mode == "min" else 1.0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        """Take metric/mode from TuneConfig where the scheduler has none."""
        if self._metric and metric and self._metric != metric:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def check_metric(self) -> None:
        if not self._metric or not self._mode:
            raise ValueError(f"{type(self).__name__} needs metric and mode: give them to "
                             f"the scheduler or to TuneConfig(metric=..., mode=...)")

    def on_trial_add(self, tune_controller, trial) -> None:
        pass

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        pass

    def on_trial_error(self, tune_controller, trial) -> None:
        pass

    def on_trial_remove(self, tune_controller, trial) -> None:
        pass

    def decision_points(self, trial) -> list | None:
        """The ``training_iteration`` values at which ``on_trial_result`` may
        return anything but CONTINUE for ``trial`` (sorted), or None: any result.
        Between two points a trial runs on without waiting for the driver."""
        return None

    def choose_trial_to_run(self, tune_controller):
        """The next PENDING (then PAUSED) trial to start, or None."""
        live = getattr(tune_controller, "live_trials", tune_controller.get_trials)()
        for status in ("PENDING", "PAUSED"):
            for trial in live:
                if trial.status.value == status and tune_controller.has_resources_for(trial):
                    return trial
        return None

    def debug_string(self) -> str:
        return f"Using {type(self).__name__}."


class FIFOScheduler(TrialScheduler):
    """Runs trials in the order they were added, never stopping one early."""

    decides_per_result = False

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True
