"""Ray's job names: JobStatus, JobDetails (JobInfo), and the status rules."""

from __future__ import annotations

import dataclasses
import enum


class JobStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)

    def __str__(self):
        return self.value


JOB_TRANSITIONS = {
    JobStatus.PENDING: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.STOPPED},
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED},
    JobStatus.STOPPED: set(), JobStatus.SUCCEEDED: set(), JobStatus.FAILED: set(),
}


@dataclasses.dataclass
class JobDetails:
    """What ``get_job_info`` and ``list_jobs`` return (Ray's JobDetails; times in
    milliseconds since the epoch, as Ray's)."""
    submission_id: str
    entrypoint: str
    status: JobStatus = JobStatus.PENDING
    message: str = ""
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    runtime_env: dict = dataclasses.field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_resources: dict | None = None
    driver_exit_code: int | None = None
    driver_pid: int | None = None
    log_path: str = ""
    type: str = "SUBMISSION"
    job_id: str | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "JobDetails":
        data = dict(data)
        data["status"] = JobStatus(data["status"])
        return cls(**data)


JobInfo = JobDetails
