"""One trial's record: its config, status (an explicit state machine), results
and checkpoints.  Plain data: the controller changes it, the executor and the
experiment journal read it."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


#: status -> statuses it may move to.
ALLOWED = {
    Status.PENDING: {Status.RUNNING, Status.TERMINATED},
    Status.RUNNING: {Status.PAUSED, Status.TERMINATED, Status.ERROR, Status.PENDING},
    Status.PAUSED: {Status.PENDING, Status.RUNNING, Status.TERMINATED},
    Status.TERMINATED: set(),
    Status.ERROR: {Status.PENDING},
}


class IllegalTransition(RuntimeError):
    pass


class Trial:
    """A trial: ``trial_id``, ``config``, ``status``, ``last_result``, ``checkpoint``."""

    def __init__(self, trial_id: str, index: int, config: dict, experiment_tag: str,
                 resources: dict, trainable_name: str = "trainable"):
        self.trial_id = trial_id
        self.index = index
        self.config = config
        self.experiment_tag = experiment_tag
        self.resources = resources
        self.trainable_name = trainable_name
        self.status = Status.PENDING
        self.local_path: str | None = None
        self.last_result: dict = {}
        self.history: list = []              # [(metrics, Checkpoint | None)]
        self.checkpoint = None               # latest Checkpoint
        self.checkpoints: list = []          # [(Checkpoint, metrics)] kept on storage
        self.restore_point = (0, 0.0)        # (training_iteration, time_total_s) at checkpoint
        self.next_checkpoint_index = 0
        self.num_failures = 0
        self.error = None
        self.save_requested = False
        self.exploited_from = None           # PBT: the trial whose checkpoint it cloned

    def set_status(self, status: Status) -> None:
        if status != self.status and status not in ALLOWED[self.status]:
            raise IllegalTransition(f"trial {self.trial_id}: {self.status.value} -> "
                                    f"{status.value} is not allowed")
        self.status = status

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.TERMINATED, Status.ERROR)

    @property
    def iteration(self) -> int:
        return self.last_result.get("training_iteration", 0)

    def __repr__(self):
        return f"{self.trainable_name}_{self.trial_id}"

    def __str__(self):
        return repr(self)
