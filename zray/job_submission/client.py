"""JobSubmissionClient: Ray's job API over zray's authenticated channel.

Ray's client speaks HTTP to the dashboard (an unauthenticated endpoint was
CVE-2023-48022); zray's joins the cluster as a driver, over CURVE with the
cluster key, and calls the JobSupervisor actor on the head node.  A process
without the key is refused by the head like any other peer.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import zray
from zray import _runtime
from zray.job_submission.models import JobDetails, JobStatus
from zray.job_submission.supervisor import SUPERVISOR_NAME, JobSupervisor
from zray.runtime_env.store import SYSTEM_NAMESPACE

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class JobSubmissionClient:
    """Submit and manage jobs on the cluster at ``address`` (``HOST:PORT``,
    ``tcp://HOST:PORT``, ``auto``, or None for ZRAY_ADDRESS / this process's
    cluster).  Uses this process's connection when it has one."""

    def __init__(self, address: str | None = None, **ignored):
        if address and address.startswith(("http://", "https://")):
            raise ValueError(f"{address!r}: zray has no HTTP job endpoint; pass the "
                             "cluster's address HOST:PORT (as `zray start --head` printed)")
        self._owns_connection = _runtime.get_runtime() is None
        if self._owns_connection:
            zray.init(address=address or "auto", log_to_driver=False)
        runtime = _runtime.runtime()
        self._supervisor = zray.remote(JobSupervisor).options(
            name=SUPERVISOR_NAME, namespace=SYSTEM_NAMESPACE, lifetime="detached",
            get_if_exists=True, num_cpus=0, max_concurrency=16, max_restarts=-1,
            runtime_env={"working_dir": None, "py_modules": None},
            resources={"node:__internal_head__": 0.001}).remote(runtime.address)

    def _call(self, method: str, *args):
        return zray.get(getattr(self._supervisor, method).remote(*args))

    def submit_job(self, *, entrypoint: str, job_id: str | None = None,
                   runtime_env: dict | None = None, metadata: dict | None = None,
                   submission_id: str | None = None, entrypoint_num_cpus=None,
                   entrypoint_num_gpus=None, entrypoint_memory=None,
                   entrypoint_resources=None) -> str:
        """Start ``entrypoint`` (a shell command) on the head's host; its id."""
        from zray import options as opts
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise ValueError("entrypoint must be a non-empty shell command, e.g. "
                             "'python script.py'")
        submission_id = submission_id or job_id or f"zraysubmit_{secrets.token_hex(8)}"
        if not isinstance(submission_id, str) or not _ID.fullmatch(submission_id):
            raise ValueError(f"submission_id {submission_id!r} must be 1-128 letters, digits, "
                             "'_', '-' or '.' (it names the job's log file)")
        if runtime_env is not None:
            opts.validate({"runtime_env": runtime_env}, opts.TASK_OPTIONS, "submit_job()")
        if metadata is not None and not (isinstance(metadata, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise TypeError("metadata must be a dict of str -> str")
        resolved = _runtime.runtime().resolve_env(
            {k: v for k, v in (runtime_env or {}).items() if v is not None})
        return self._call("submit", submission_id, entrypoint, resolved, metadata,
                          entrypoint_num_cpus, entrypoint_num_gpus, entrypoint_resources)

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.from_dict(self._call("info", job_id))

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def list_jobs(self) -> list:
        return [JobDetails.from_dict(d) for d in self._call("list")]

    def get_job_logs(self, job_id: str) -> str:
        chunks, offset = [], 0
        while True:
            text, offset, over = self._call("logs", job_id, offset)
            chunks.append(text)
            if not text:
                return "".join(chunks)

    async def tail_job_logs(self, job_id: str, poll_s: float = 0.5):
        """Yield the job's output as it is written, until the job ends (polling:
        every 20 ms after output, backing off to ``poll_s`` while there is none)."""
        offset, delay = 0, 0.02
        loop = asyncio.get_running_loop()
        while True:
            text, offset, over = await loop.run_in_executor(
                None, self._call, "logs", job_id, offset)
            if text:
                delay = 0.02
                yield text
            elif over:
                return
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, poll_s)

    def stop_job(self, job_id: str) -> bool:
        return self._call("stop", job_id)

    def delete_job(self, job_id: str) -> bool:
        return self._call("delete", job_id)

    def close(self) -> None:
        """Disconnect, if this client connected (the jobs run on)."""
        if self._owns_connection and _runtime.get_runtime() is not None:
            zray.shutdown()
            self._owns_connection = False


__all__ = ["JobSubmissionClient"]
