"""The trainer's side: start a group of worker actors, run the training
function on all of them, collect reports, and restart the group from the
latest checkpoint when a worker fails (``FailureConfig.max_failures``)."""

from __future__ import annotations

import logging
import os
import shutil
import time

import zray
from zray.exceptions import RayActorError, RayTaskError
from zray.train._checkpoint import Checkpoint
from zray.train._config import RunConfig, ScalingConfig
from zray.train._result import Result, TrainingFailedError
from zray.train._worker import TrainWorker
from zray.util.placement_group import placement_group, remove_placement_group
from zray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

log = logging.getLogger("zray.train")

#: Seconds between two collections of the workers' reports.
POLL_S = 0.1
#: How long the trainer waits for its placement group before saying so (and waiting on).
WAIT_WARN_S = 30.0

_RemoteWorker = zray.remote(TrainWorker)


class DataParallelTrainer:
    """Runs ``train_loop_per_worker`` on ``scaling_config.num_workers`` workers."""

    _backend = "gloo"
    #: Called with (metrics, checkpoint) for every report (zray.tune sets it when
    #: the trainer runs as a trial).
    _report_hook = None

    def __init__(self, train_loop_per_worker, *, train_loop_config: dict | None = None,
                 scaling_config: ScalingConfig | None = None,
                 run_config: RunConfig | None = None, datasets: dict | None = None,
                 resume_from_checkpoint: Checkpoint | None = None, **unsupported):
        if unsupported:
            raise TypeError(f"{type(self).__name__} got unexpected arguments "
                            f"{sorted(unsupported)}")
        if not callable(train_loop_per_worker):
            raise TypeError("train_loop_per_worker must be a function")
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.scaling_config = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        self.datasets = datasets
        self.resume_from_checkpoint = resume_from_checkpoint

    def fit(self) -> Result:
        """Train; return the Result, or raise TrainingFailedError once the
        failures allowed are used up (the Result is on the error)."""
        run_dir = self.run_config.run_dir(
            f"{type(self).__name__}_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        os.makedirs(run_dir, exist_ok=True)
        history: list = []
        checkpoints: list = []
        latest = self.resume_from_checkpoint
        failures = 0
        max_failures = self.run_config.failure_config.max_failures
        while True:
            group = WorkerGroup(self.scaling_config, self._backend)
            try:
                group.start(run_dir, latest.path if latest else None, self.datasets,
                            len(history))
                error = group.run(self.train_loop_per_worker, self.train_loop_config,
                                  lambda reports: self._collect(reports, history,
                                                                checkpoints))
            finally:
                group.stop()
            if checkpoints:
                latest = checkpoints[-1]
            if error is None:
                break
            failures += 1
            if max_failures != -1 and failures > max_failures:
                result = Result(history[-1][0] if history else {}, latest, run_dir, error,
                                history, checkpoints)
                raise TrainingFailedError(f"training failed after {failures} attempt(s) "
                                          f"(max_failures={max_failures}): {error}",
                                          result) from error
            log.warning("a training worker failed (%s); restarting the group from %s "
                        "(failure %d of %s)", error, latest or "the start", failures,
                        "unlimited" if max_failures == -1 else max_failures)
        return Result(history[-1][0] if history else {}, latest, run_dir, None, history,
                      checkpoints)

    def _collect(self, reports: list, history: list, checkpoints: list) -> None:
        keep = self.run_config.checkpoint_config.num_to_keep
        for _index, metrics, path in reports:
            checkpoint = Checkpoint(path) if path else None
            history.append((metrics, checkpoint))
            if self._report_hook is not None:
                self._report_hook(metrics, checkpoint)
            if checkpoint is not None:
                checkpoints.append(checkpoint)
                while keep is not None and len(checkpoints) > keep:
                    shutil.rmtree(checkpoints.pop(0).path, ignore_errors=True)


class WorkerGroup:
    """The worker actors of one attempt."""

    def __init__(self, scaling: ScalingConfig, backend: str):
        self.scaling = scaling
        self.backend = "nccl" if scaling.use_gpu and backend == "nccl" else "gloo"
        self.workers: list = []
        self.placement_group = None
        self.shards: list = []

    def start(self, run_dir, checkpoint_path, datasets, first_index) -> None:
        self.workers = self._start_workers()
        where = zray.get([w.where.remote() for w in self.workers])
        placements = _placements(where)
        master = (where[0][1], zray.get(self.workers[0].free_port.remote()))
        # kept here: the split coordinator lives as long as a handle to it does
        self.shards = shards = _shards(datasets, len(self.workers))
        zray.get([worker.setup.remote(placement, master, self.backend, run_dir,
                                      checkpoint_path, shard, first_index, 1800.0)
                  for worker, placement, shard in zip(self.workers, placements, shards)])

    def run(self, function, config, collect) -> BaseException | None:
        """Run ``function`` on every worker; feed rank 0's reports to ``collect``.
        Returns the first error (a worker raised or died), or None."""
        pending = [w.run.remote(function, config) for w in self.workers]
        error = None
        while pending and error is None:
            done, pending = zray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            for ref in done:
                try:
                    zray.get(ref)
                except (RayTaskError, RayActorError) as exc:
                    error = exc
            try:
                collect(zray.get(self.workers[0].reports.remote()))
            except RayActorError as exc:
                error = error or exc
        return error

    def _start_workers(self) -> list:
        """One actor per bundle of one placement group (worker i in bundle i), so
        the group's resources are reserved together, by the scaling strategy."""
        scaling = self.scaling
        self.placement_group = placement_group([scaling.bundle()] * scaling.num_workers,
                                               strategy=scaling.placement_strategy)
        while not self.placement_group.wait(WAIT_WARN_S):
            log.warning("the training workers' placement group (%d x %s, %s) is still "
                        "waiting for resources; `zray status` shows what the cluster "
                        "lacks", scaling.num_workers, scaling.bundle(),
                        scaling.placement_strategy)
        options = scaling.worker_resources()
        return [_RemoteWorker.options(
                    max_concurrency=2, **options,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self.placement_group, placement_group_bundle_index=index)).remote()
                for index in range(scaling.num_workers)]

    def stop(self) -> None:
        for worker in self.workers:
            zray.kill(worker)
        self.workers = []
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None
        self.shards = []


def _placements(where: list) -> list:
    """World, local and node ranks from each worker's (node id, address)."""
    node_order = list(dict.fromkeys(node for node, _ in where))
    per_node: dict = {}
    placements = []
    for rank, (node, _) in enumerate(where):
        local = per_node.setdefault(node, [])
        local.append(rank)
        placements.append({"world_rank": rank, "world_size": len(where),
                           "local_rank": len(local) - 1,
                           "node_rank": node_order.index(node)})
    for placement, (node, _) in zip(placements, where):
        placement["local_world_size"] = len(per_node[node])
    return placements


def _shards(datasets: dict | None, count: int) -> list:
    """Each worker's share of each dataset (a zray.data Dataset's streaming_split
    when there is one; otherwise the object is given to every worker as is)."""
    if not datasets:
        return [None] * count
    split = {}
    for name, dataset in datasets.items():
        if hasattr(dataset, "streaming_split"):
            split[name] = dataset.streaming_split(count, equal=True)
        else:
            split[name] = [dataset] * count
    return [{name: parts[i] for name, parts in split.items()} for i in range(count)]
