"""``tune.Callback``: hooks the driver calls as a run goes
(``RunConfig(callbacks=[...])``), with Ray Tune's names and arguments.

    setup(stop=, num_samples=, total_num_samples=)      once, before any trial
    on_step_begin / on_step_end(iteration, trials)      around each pass of the loop
    on_trial_start(iteration, trials, trial)            a trial (re)starts on a runner
    on_trial_result(iteration, trials, trial, result)   every reported result
    on_checkpoint(iteration, trials, trial, checkpoint) a checkpoint was kept
    on_trial_complete(iteration, trials, trial)         ended (ran out, stopped)
    on_trial_recover(iteration, trials, trial)          failed, will be retried
    on_trial_error(iteration, trials, trial)            failed for good
    on_experiment_end(trials)                           once, after the last trial

They run in the driver, between scheduling decisions: keep them quick.  An
exception in a callback ends the run (as in Ray).
"""

from __future__ import annotations


class Callback:
    """Override the hooks you need; each takes ``**info`` for forward compatibility."""

    def setup(self, stop=None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info) -> None:
        pass

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        pass

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        pass

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_trial_restore(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_trial_save(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict,
                        **info) -> None:
        pass

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        pass

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint,
                      **info) -> None:
        pass

    def on_experiment_end(self, trials: list, **info) -> None:
        pass

    def get_state(self) -> dict | None:
        return None

    def set_state(self, state: dict) -> None:
        pass


HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore",
         "on_trial_save", "on_trial_result", "on_trial_complete", "on_trial_recover",
         "on_trial_error", "on_checkpoint", "on_experiment_end")


class CallbackList:
    """Calls each hook on every callback, in order.  ``iteration`` (the driver
    loop's pass) and ``trials`` are filled in here."""

    def __init__(self, callbacks=None):
        callbacks = list(callbacks or [])
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"RunConfig(callbacks=...) takes tune.Callback instances, "
                                f"got {type(callback).__name__}")
        self.callbacks = callbacks
        self.iteration = 0
        self.trials_of = list            # replaced by the controller: () -> [Trial]

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, hook: str, **info) -> None:
        if not self.callbacks:
            return
        if hook not in ("setup", "on_experiment_end"):
            info.setdefault("iteration", self.iteration)
        if hook != "setup":
            info.setdefault("trials", self.trials_of())
        for callback in self.callbacks:
            getattr(callback, hook)(**info)
