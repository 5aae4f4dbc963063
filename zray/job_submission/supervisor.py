"""The JobSupervisor: a detached actor on the head node that runs job entrypoints.

Entrypoints are started by one long-lived launcher thread (so the kernel's
parent-death signal, which follows the forking thread, kills them only when
the supervisor's process dies), each in its own session (process group),
output to ``<session>/logs/job-driver-<id>.log``.  The thread also polls them:
an exit code turns into SUCCEEDED or FAILED (with the log's tail in
``message``).  ``stop`` sends SIGTERM to the group, SIGKILL after a grace
period.  State lives in this actor, so it outlives the submitting client, and
each change of a job is also written to ``<session>/jobs/<id>.json`` on the
head's host: the actor is restarted if its worker dies (max_restarts=-1), and
the new one reads the records back (jobs that were running are FAILED, their
entrypoints having died with the old worker).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import threading
import time

from zray.job_submission.models import JOB_TRANSITIONS, JobDetails, JobStatus

SUPERVISOR_NAME = "_zray_job_supervisor"
#: How much of a failed entrypoint's output goes into its message (as Ray).
MESSAGE_TAIL_CHARS = 20000
STOP_GRACE_S = 3.0


def _die_with_parent():
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class JobSupervisor:
    def __init__(self, address: str):
        from zray import _runtime
        worker = _runtime.runtime().worker
        self.address = address
        self.session_dir = worker.session_dir
        self.node_id = worker.node_id
        self.config = worker.config
        self.logs_dir = os.path.join(self.session_dir, "logs")
        self.records_dir = os.path.join(self.session_dir, "jobs")
        self.jobs: dict[str, JobDetails] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping: dict[str, float] = {}        # id -> when SIGTERM went out
        self.lock = threading.Lock()
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self._recover()
        threading.Thread(target=self._launcher, name="job-launcher", daemon=True).start()

    # --- the actor's methods -----------------------------------------------------------

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict | None,
               metadata: dict | None, entrypoint_num_cpus=None, entrypoint_num_gpus=None,
               entrypoint_resources=None) -> str:
        if not submission_id or "/" in submission_id or submission_id.startswith("."):
            raise ValueError(f"bad submission_id {submission_id!r}")
        with self.lock:
            if submission_id in self.jobs:
                raise ValueError(f"Job with submission_id {submission_id} already exists. "
                                 "Please use a different submission_id.")
            job = JobDetails(submission_id, entrypoint, metadata=dict(metadata or {}),
                             runtime_env=dict(runtime_env or {}),
                             entrypoint_num_cpus=entrypoint_num_cpus,
                             entrypoint_num_gpus=entrypoint_num_gpus,
                             entrypoint_resources=entrypoint_resources,
                             start_time=int(time.time() * 1000),
                             log_path=os.path.join(self.logs_dir,
                                                   f"job-driver-{submission_id}.log"))
            self.jobs[submission_id] = job
            self._save(job)
        try:
            cwd, env = self._prepare(job)
        except Exception as exc:
            self._finish(job, JobStatus.FAILED, None,
                         f"Job's runtime_env could not be set up: {exc!r}", "RUNTIME_ENV")
            return submission_id
        done = queue.SimpleQueue()
        self.requests.put((job, cwd, env, done))
        done.get()
        return submission_id

    def info(self, submission_id: str) -> dict:
        with self.lock:
            return self._job(submission_id).to_dict()

    def list(self) -> list:
        with self.lock:
            return [job.to_dict() for job in self.jobs.values()]

    def logs(self, submission_id: str, offset: int = 0, limit: int = 1 << 20) -> tuple:
        """(text from byte ``offset``, the next offset, whether the job is over)."""
        with self.lock:
            job = self._job(submission_id)
            over = job.status.is_terminal()
        try:
            with open(job.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            data = b""
        return data.decode(errors="replace"), offset + len(data), over and len(data) < limit

    def stop(self, submission_id: str) -> bool:
        with self.lock:
            job = self._job(submission_id)
            if job.status.is_terminal():
                return False
            proc = self.procs.get(submission_id)
            self.stopping[submission_id] = time.monotonic()
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
        return True

    def delete(self, submission_id: str) -> bool:
        with self.lock:
            job = self._job(submission_id)
            if not job.status.is_terminal():
                raise RuntimeError(f"Attempted to delete job '{submission_id}', but it is in "
                                   f"a non-terminal state {job.status.value}: stop it first")
            del self.jobs[submission_id]
        for path in (job.log_path, self._record_path(submission_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return True

    # --- the launcher thread -------------------------------------------------------------

    def _launcher(self) -> None:
        while True:
            try:
                job, cwd, env, done = self.requests.get(timeout=0.1)
            except queue.Empty:
                self._poll()
                continue
            try:
                self._launch(job, cwd, env)
            finally:
                done.put(True)

    def _launch(self, job, cwd, env) -> None:
        os.makedirs(self.logs_dir, exist_ok=True)
        with self.lock:
            stopped = job.submission_id in self.stopping
        if stopped:
            self._finish(job, JobStatus.STOPPED, None, "Job was intentionally stopped.")
            return
        try:
            with open(job.log_path, "ab") as log:
                proc = subprocess.Popen(job.entrypoint, shell=True, cwd=cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        except OSError as exc:
            self._finish(job, JobStatus.FAILED, None,
                         f"Job entrypoint could not be started: {exc}", "JOB_SUPERVISOR")
            return
        with self.lock:
            self.procs[job.submission_id] = proc
            job.driver_pid = proc.pid
            self._move(job, JobStatus.RUNNING, "Job is currently running.")
            self._save(job)

    def _poll(self) -> None:
        now = time.monotonic()
        for submission_id, proc in list(self.procs.items()):
            stop_at = self.stopping.get(submission_id)
            code = proc.poll()
            if code is None:
                if stop_at is not None and now - stop_at > STOP_GRACE_S:
                    _signal_group(proc.pid, signal.SIGKILL)
                continue
            _signal_group(proc.pid, signal.SIGKILL)      # what it left in its group
            job = self.jobs.get(submission_id)
            del self.procs[submission_id]
            if job is None:
                continue
            if stop_at is not None:
                self._finish(job, JobStatus.STOPPED, code, "Job was intentionally stopped.")
            elif code == 0:
                self._finish(job, JobStatus.SUCCEEDED, code, "Job finished successfully.")
            else:
                self._finish(job, JobStatus.FAILED, code,
                             f"Job entrypoint command failed with exit code {code}, last "
                             f"available logs (truncated to {MESSAGE_TAIL_CHARS} chars):\n"
                             + _tail(job.log_path, MESSAGE_TAIL_CHARS), "JOB_ENTRYPOINT")

    # --- helpers -------------------------------------------------------------------------

    def _job(self, submission_id: str) -> JobDetails:
        job = self.jobs.get(submission_id)
        if job is None:
            raise ValueError(f"Job {submission_id} does not exist.")
        return job

    def _move(self, job, status, message) -> None:
        if status not in JOB_TRANSITIONS[job.status]:
            raise RuntimeError(f"job {job.submission_id}: {job.status.value} -> {status.value}")
        job.status = status
        job.message = message

    def _finish(self, job, status, code, message, error_type=None) -> None:
        with self.lock:
            self._move(job, status, message)
            job.end_time = int(time.time() * 1000)
            job.driver_exit_code = code
            job.error_type = error_type
            self.stopping.pop(job.submission_id, None)
            self._save(job)

    def _record_path(self, submission_id: str) -> str:
        return os.path.join(self.records_dir, submission_id + ".json")

    def _save(self, job) -> None:
        """Write ``job``'s record (atomically; a full disk only loses the record)."""
        path = self._record_path(job.submission_id)
        try:
            os.makedirs(self.records_dir, mode=0o700, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(job.to_dict(), f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass

    def _recover(self) -> None:
        """Read the records a previous supervisor of this session left: ended jobs
        as they were; running ones FAILED, what is left of their process group
        killed (their entrypoint died with that supervisor's process)."""
        try:
            names = sorted(n for n in os.listdir(self.records_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return
        for name in names:
            try:
                with open(os.path.join(self.records_dir, name)) as f:
                    job = JobDetails.from_dict(json.load(f))
            except (OSError, ValueError, TypeError):
                continue
            self.jobs[job.submission_id] = job
            if job.status.is_terminal():
                continue
            if job.driver_pid and not _pid_exists(job.driver_pid):
                _signal_group(job.driver_pid, signal.SIGKILL)   # the group, not a reused pid
            was = job.status.value.lower()
            job.status = JobStatus.FAILED
            job.message = (f"The job supervisor's process died while the job was "
                           f"{was}: its entrypoint was killed with it. "
                           "Submit the job again.")
            job.error_type = "JOB_SUPERVISOR"
            job.end_time = int(time.time() * 1000)
            self._save(job)

    def _prepare(self, job) -> tuple:
        """The entrypoint's cwd and environment: the job's runtime_env applied
        (packages unpacked on this node), and what its zray.init() needs to join
        this cluster with its runtime_env."""
        from zray.runtime_env.packaging import JOB_RUNTIME_ENV_VAR
        from zray.runtime_env.setup import cache_dir, code_paths
        from zray.runtime_env.store import StoreClient
        runtime_env = job.runtime_env
        env = dict(os.environ)
        for name in env.pop("ZRAY_DEFAULTED_THREAD_VARS", "").split(","):
            env.pop(name, None)        # the worker's one-thread defaults, not the user's
        fetch = None
        if runtime_env.get("working_dir") or runtime_env.get("py_modules"):
            fetch = StoreClient().fetch
        cwd, paths = code_paths(runtime_env, cache_dir(self.session_dir, self.node_id), fetch)
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")]
                                                         if p])
        env.update(runtime_env.get("env_vars") or {})
        env["ZRAY_ADDRESS"] = self.address
        if self.config.insecure:
            env["ZRAY_INSECURE"] = "1"
        elif self.config.cluster_key_file:
            env["ZRAY_CLUSTER_KEY_FILE"] = self.config.cluster_key_file
        env["ZRAY_JOB_SUBMISSION_ID"] = job.submission_id
        if runtime_env:
            env[JOB_RUNTIME_ENV_VAR] = json.dumps(runtime_env)
        return cwd, env


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars * 4))
            return f.read().decode(errors="replace")[-chars:]
    except OSError:
        return ""


__all__ = ["JobSupervisor", "SUPERVISOR_NAME"]
