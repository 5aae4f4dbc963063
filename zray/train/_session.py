"""What a training function sees inside a worker: its context, ``report`` and
``get_checkpoint``.  One session per worker process, set by the worker actor."""

from __future__ import annotations

import os
import shutil
import threading

from zray.train._checkpoint import Checkpoint

_session = None
#: A session bound to one thread (a Tune trial's function thread): that thread
#: keeps reaching its own trial's session even after the runner moved on.
_thread = threading.local()


class TrainContext:
    """Ray Train's ``get_context()``: where this worker stands in the group."""

    def __init__(self, world_rank, world_size, local_rank, local_world_size, node_rank,
                 experiment_name, trial_dir):
        self._world_rank = world_rank
        self._world_size = world_size
        self._local_rank = local_rank
        self._local_world_size = local_world_size
        self._node_rank = node_rank
        self._experiment_name = experiment_name
        self._trial_dir = trial_dir

    def get_world_rank(self) -> int:
        return self._world_rank

    def get_world_size(self) -> int:
        return self._world_size

    def get_local_rank(self) -> int:
        return self._local_rank

    def get_local_world_size(self) -> int:
        return self._local_world_size

    def get_node_rank(self) -> int:
        return self._node_rank

    def get_experiment_name(self) -> str:
        return self._experiment_name

    def get_trial_dir(self) -> str:
        return self._trial_dir

    def get_storage(self):
        return self._trial_dir


class Session:
    def __init__(self, context: TrainContext, run_dir: str, checkpoint: Checkpoint | None,
                 datasets: dict | None, first_index: int):
        self.context = context
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.datasets = datasets or {}
        self.reports: list = []           # (index, metrics, checkpoint path or None)
        self.index = first_index
        self.lock = threading.Lock()

    def report(self, metrics: dict, checkpoint: Checkpoint | None) -> None:
        if not isinstance(metrics, dict):
            raise TypeError(f"report(metrics) takes a dict, got {type(metrics).__name__}")
        path = None
        if checkpoint is not None and self.context.get_world_rank() == 0:
            path = os.path.join(self.run_dir, f"checkpoint_{self.index:06d}")
            if os.path.abspath(checkpoint.path) != path:
                shutil.copytree(checkpoint.path, path + ".tmp", dirs_exist_ok=True)
                os.replace(path + ".tmp", path)
            self.checkpoint = Checkpoint(path)
        with self.lock:
            self.reports.append((self.index, dict(metrics), path))
        self.index += 1

    def take_reports(self) -> list:
        with self.lock:
            taken, self.reports = self.reports, []
        return taken


def set_session(session) -> None:
    global _session
    _session = session


def bind_thread(session) -> None:
    """Make ``session`` this thread's own (it wins over the process's)."""
    _thread.session = session


def get_session():
    """This thread's session, else the one installed in this process (a train
    or a tune one), or None."""
    return getattr(_thread, "session", None) or _session


def current() -> Session:
    session = get_session()
    if session is None:
        raise RuntimeError("this is not a training worker: zray.train.report, "
                           "get_context and get_checkpoint work inside the function a "
                           "Trainer runs (train_loop_per_worker)")
    return session


def report(metrics: dict, checkpoint: Checkpoint | None = None, **_ignored) -> None:
    """Report metrics (and optionally a checkpoint) for this training step."""
    current().report(metrics, checkpoint)


def get_context() -> TrainContext:
    return current().context


def get_checkpoint() -> Checkpoint | None:
    """The latest checkpoint of this run (to resume from), or None."""
    return current().checkpoint


def get_dataset_shard(name: str = "train"):
    datasets = current().datasets
    if name not in datasets:
        raise KeyError(f"no dataset {name!r} was given to the Trainer "
                       f"(datasets: {sorted(datasets)})")
    return datasets[name]
