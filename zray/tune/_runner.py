"""The trial runner: a zray actor that runs one trial at a time, and is reused
for the next trial once that one ends (fewer processes, faster starts).

Calls from the driver's executor (each returns ``{"results": [(metrics,
checkpoint path)], "done": bool}``, or raises the trial's error once the
results before it have been handed over):

    start(spec)        begin a trial (function in a thread, or a Trainable) and
                       return its first ``spec["count"]`` results (step mode) or
                       first batch
    resume(save, count) the next ``count`` results (step mode) / batch
                       (``save``: checkpoint first)
    stop(save)         end the trial; {"checkpoint": path or None, "clean": bool}
"""

from __future__ import annotations

import inspect
import os
import shutil
import threading
import time

from zray.train import _session as train_session
from zray.tune._session import ResultClock, TrialStopped, TuneContext, TuneSession
from zray.tune._trainable import is_class_trainable
from zray.tune.stopper import reached

#: Seconds a stopped function may take to reach its next report before the
#: runner calls itself unclean (the executor then replaces the actor).
STOP_GRACE_S = 5.0


class TrialRunner:
    def __init__(self, trainable):
        self.trainable = trainable
        self.run = None

    def start(self, spec: dict) -> dict:
        if self.run is not None:
            self.stop(False)
        context = TuneContext(spec["trial_id"], spec["trial_name"], spec["trial_dir"],
                              spec["experiment_name"], spec["resources"])
        os.makedirs(spec["trial_dir"], exist_ok=True)
        if is_class_trainable(self.trainable):
            self.run = _ClassRun(self.trainable, spec, context)
        else:
            self.run = _FunctionRun(self.trainable, spec, context)
        return self.run.next(spec["batch_s"], count=spec.get("count", 1))

    def resume(self, save: bool = False, count: int = 1) -> dict:
        if self.run is None:
            raise RuntimeError("resume() with no trial running on this runner")
        return self.run.next(None, save, count)

    def stop(self, save: bool = False) -> dict:
        run, self.run = self.run, None
        if run is None:
            return {"checkpoint": None, "clean": True}
        return run.stop(save)

    def ping(self) -> int:
        return os.getpid()


class _FunctionRun:
    """A function trainable in a thread, reporting through a TuneSession."""

    def __init__(self, function, spec: dict, context: TuneContext):
        self.session = TuneSession(spec, context)
        self.batch_s = spec["batch_s"]
        self.pending_error = None
        train_session.set_session(self.session)
        self.thread = threading.Thread(target=self._main, args=(function, spec["config"]),
                                       name=f"trial-{spec['trial_id']}", daemon=True)
        self.thread.start()

    def _main(self, function, config) -> None:
        # this thread reports to its own session, even if it outlives a stop
        # (the runner may be running the next trial by then)
        train_session.bind_thread(self.session)
        error = None
        try:
            returned = function(config) if _takes_an_argument(function) else function()
            if isinstance(returned, dict):
                self.session.report(returned)
        except TrialStopped:
            pass
        except BaseException as exc:   # the trial's error, handed to the driver
            error = exc
        self.session.end(error)

    def next(self, batch_s, save: bool = False, count: int = 1) -> dict:
        if self.pending_error is not None:
            raise self.pending_error
        if batch_s is None:
            self.session.grant(count)
        else:                                   # the start: count - 1 reports run on
            self.session.grant(count - 1)
        results, finished = self.session.collect(self.batch_s, count)
        error = self.session.error if finished else None
        if error is not None:
            train_session.set_session(None)
            if not results:
                raise error
            self.pending_error = error         # raised on the next call, after these
            return {"results": results, "done": False}
        return {"results": results, "done": finished}

    def stop(self, save: bool) -> dict:
        self.session.request_stop()
        clean = True
        if self.thread is not None:
            self.thread.join(STOP_GRACE_S)
            clean = not self.thread.is_alive()
        train_session.set_session(None)
        checkpoint = self.session.checkpoint
        return {"checkpoint": checkpoint.path if checkpoint and save else None,
                "clean": clean}


class _ClassRun:
    """A Trainable instance, stepped in the runner's own thread."""

    def __init__(self, cls, spec: dict, context: TuneContext):
        self.spec = spec
        self.batch_s = spec["batch_s"]
        self.clock = ResultClock(spec["trial_id"], spec["restore_point"])
        self.next_checkpoint_index = spec["next_checkpoint_index"]
        self.stop_criteria = spec.get("stop") or None
        self.frequency = spec.get("checkpoint_frequency") or 0
        self.at_end = spec.get("checkpoint_at_end")
        self.error = None
        self.instance = cls(spec["config"], trial_id=spec["trial_id"],
                            trial_name=spec["trial_name"], logdir=spec["trial_dir"],
                            resources=spec["resources"])
        if spec["checkpoint_path"]:
            self.instance.restore(spec["checkpoint_path"], spec["restore_point"][0])
        else:
            self.instance._iteration = spec["restore_point"][0]

    def next(self, batch_s, save: bool = False, count: int = 1) -> dict:
        if self.error is not None:
            raise self.error
        deadline = time.monotonic() + (self.batch_s if batch_s is None else batch_s)
        outcome = {"results": [], "done": False}
        if save:
            outcome["saved"] = self._save()
        results = outcome["results"]
        while True:
            try:
                raw = self.instance.train()
            except Exception as exc:           # the trial's error, after its results
                if not results:
                    raise
                self.error = exc
                return outcome
            due = raw.get("should_checkpoint") or (
                self.frequency and (self.clock.iteration + 1) % self.frequency == 0)
            result = self.clock.fill(raw, None)
            done = bool(result.get("done")) or bool(
                self.stop_criteria and reached(self.stop_criteria, result))
            path = None
            if due or (done and self.at_end):
                path = self._save()
                result["checkpoint_dir_name"] = os.path.basename(path)
            results.append((result, path))
            if done or (len(results) >= count if self.spec["step_mode"]
                        else time.monotonic() >= deadline):
                outcome["done"] = done
                return outcome

    def _save(self) -> str:
        directory = os.path.join(self.spec["trial_dir"],
                                 f"checkpoint_{self.next_checkpoint_index:06d}")
        self.next_checkpoint_index += 1
        staging = directory + ".saving"
        shutil.rmtree(staging, ignore_errors=True)
        self.instance.save(staging)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        return directory

    def stop(self, save: bool) -> dict:
        path = self._save() if save else None
        self.instance.stop()
        return {"checkpoint": path, "clean": True}


def _takes_an_argument(function) -> bool:
    try:
        return len(inspect.signature(function).parameters) >= 1
    except (TypeError, ValueError):
        return True
