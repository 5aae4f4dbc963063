"""What a trial sees while it runs (in its runner actor's process):
``tune.report(metrics, checkpoint=...)``, ``tune.get_checkpoint()``,
``tune.get_context()``; ``zray.train.report`` and ``get_checkpoint`` reach the
same session (it is installed as the process's train session).

Reports hand results to the runner through a condition variable.  In step
mode (a scheduler or stopper decides on results) ``report`` blocks once the
driver's grant is used up (one result, or up to the scheduler's next decision
point), as in Ray; in streaming mode it returns at once and results are
collected in batches.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
import time

from zray.train import _session as train_session
from zray.train._checkpoint import Checkpoint
from zray.tune.stopper import reached


class TrialStopped(BaseException):
    """Raised inside a function trainable's ``report`` to end the trial (a
    BaseException so that the user's ``except Exception`` does not swallow it)."""


class TuneContext(train_session.TrainContext):
    """``tune.get_context()``: the trial's id, name, directory and resources."""

    def __init__(self, trial_id: str, trial_name: str, trial_dir: str, experiment_name: str,
                 resources: dict):
        super().__init__(0, 1, 0, 1, 0, experiment_name, trial_dir)
        self._trial_id, self._trial_name, self._resources = trial_id, trial_name, resources

    def get_trial_id(self) -> str:
        return self._trial_id

    def get_trial_name(self) -> str:
        return self._trial_name

    def get_trial_resources(self) -> dict:
        return dict(self._resources)


_HOST = socket.gethostname()


class ResultClock:
    """Fills Ray's automatic result keys (training_iteration, time_*_s, ...)."""

    def __init__(self, trial_id: str, restore_point: tuple):
        self.trial_id = trial_id
        self.iteration, self.restored_time_s = restore_point
        self.started = self.last = time.time()
        self.since_restore = 0
        self.pid = os.getpid()

    def fill(self, metrics: dict, checkpoint_dir_name: str | None) -> dict:
        now = time.time()
        self.iteration += 1
        self.since_restore += 1
        result = dict(metrics)
        result.setdefault("done", False)
        result.update(
            training_iteration=self.iteration, time_this_iter_s=now - self.last,
            time_total_s=self.restored_time_s + now - self.started,
            time_since_restore=now - self.started,
            iterations_since_restore=self.since_restore, timestamp=int(now),
            date=time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)),
            trial_id=self.trial_id, pid=self.pid, hostname=_HOST, node_ip=_node_ip(),
            checkpoint_dir_name=checkpoint_dir_name)
        self.last = now
        return result


def _node_ip() -> str:
    return os.environ.get("ZRAY_NODE_IP", "127.0.0.1")


def persist_checkpoint(source: str, trial_dir: str, index: int) -> str:
    """Copy a reported checkpoint into the trial's directory; its new path."""
    target = os.path.join(trial_dir, f"checkpoint_{index:06d}")
    if os.path.abspath(source) != target:
        shutil.rmtree(target + ".tmp", ignore_errors=True)
        shutil.copytree(source, target + ".tmp", dirs_exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(target + ".tmp", target)
    return target


class TuneSession:
    """One running function trainable: its reports, checkpoint and stop flag."""

    def __init__(self, spec: dict, context: TuneContext):
        self.context = context
        self.datasets: dict = {}
        self.trial_dir = spec["trial_dir"]
        self.checkpoint = Checkpoint(spec["checkpoint_path"]) if spec["checkpoint_path"] \
            else None
        self.clock = ResultClock(spec["trial_id"], spec["restore_point"])
        self.next_checkpoint_index = spec["next_checkpoint_index"]
        self.stop_criteria = spec.get("stop") or None
        self.step_mode = spec["step_mode"]
        self.cond = threading.Condition()
        self.results: list = []                  # [(metrics, checkpoint path or None)]
        self.credits = 0 if self.step_mode else math.inf
        self.stopping = False
        self.finished = False
        self.error: BaseException | None = None

    def report(self, metrics: dict, checkpoint: Checkpoint | None = None) -> None:
        if not isinstance(metrics, dict):
            raise TypeError(f"tune.report(metrics) takes a dict, got "
                            f"{type(metrics).__name__}")
        if self.stopping:
            raise TrialStopped()
        path = None
        if checkpoint is not None:
            path = persist_checkpoint(checkpoint.path, self.trial_dir,
                                      self.next_checkpoint_index)
            self.next_checkpoint_index += 1
            self.checkpoint = Checkpoint(path)
        result = self.clock.fill(metrics, os.path.basename(path) if path else None)
        with self.cond:
            self.results.append((result, path))
            self.cond.notify_all()
            if result.get("done") or (self.stop_criteria and
                                      reached(self.stop_criteria, result)):
                self.stopping = True
            while self.credits <= 0 and not self.stopping:
                self.cond.wait()
            if self.stopping:
                raise TrialStopped()
            self.credits -= 1

    def end(self, error: BaseException | None) -> None:
        """The function returned (or raised)."""
        with self.cond:
            self.finished = True
            self.error = error
            self.cond.notify_all()

    def collect(self, max_wait_s: float, count: int = 1) -> tuple:
        """(results, finished) once there are results to hand over (step mode:
        ``count``; streaming: what arrived within ``max_wait_s``) or the function
        ended."""
        deadline = time.monotonic() + max_wait_s
        with self.cond:
            while not self.finished:
                if self.step_mode and len(self.results) >= count:
                    break
                remaining = deadline - time.monotonic()
                if not self.step_mode and self.results and remaining <= 0:
                    break
                self.cond.wait(remaining if self.results and remaining > 0 else 0.5)
            taken, self.results = self.results, []
            return taken, self.finished

    def grant(self, count: int = 1) -> None:
        """Let ``count`` more reports return in step mode (the driver wants more)."""
        if count <= 0:
            return
        with self.cond:
            self.credits += count
            self.cond.notify_all()

    def request_stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def current() -> TuneSession:
    session = train_session.get_session()
    if not isinstance(session, TuneSession):
        raise RuntimeError("tune.report, tune.get_checkpoint and tune.get_context work "
                           "inside a trial that Tuner.fit() runs")
    return session


def report(metrics: dict, *, checkpoint: Checkpoint | None = None) -> None:
    """Report this iteration's metrics (and optionally a checkpoint) to Tune."""
    current().report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial resumes from (a retry, PBT, restore), or None."""
    return current().checkpoint


def get_context() -> TuneContext:
    return current().context
