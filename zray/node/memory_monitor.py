"""Out-of-memory protection: which worker a node kills when its host runs low.

The node loop reads the host's memory every ``Config.memory_monitor_refresh_ms``
(psutil), asks ``MemoryMonitor.decide`` whom to kill, tells the head why
(WORKER_KILLED) and kills that worker.  This module holds only the decision:
no sockets, no clock, no ``os``; tests feed it readings and candidates.

The policy follows Ray's (docs: "Out-Of-Memory Prevention"): above the
threshold, kill the worker of the most recently started *retriable* task,
whose retry costs least; only when none is left, a non-retriable task or an
actor (newest first), whose callers then get the error.  One kill at a time:
the monitor waits until its victim is gone before it picks another, since the
memory reading lags the kill.  The node manager, the head and drivers are
never candidates (they are not this node's workers).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryReading:
    """The host's memory: ``used_bytes`` is total minus what the kernel calls
    available (MemAvailable), as Ray counts it."""
    used_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Candidate:
    """A worker the monitor may kill.

    ``retriable``: its task has retries left (``max_retries`` -1, or attempts
    below it); a worker leased to the head counts as retriable (its plain task
    has ``max_retries`` that only the head knows; the head decides).
    ``started_at``: when its current task started (monotonic seconds), used to
    pick the newest.  ``actor``: the worker hosts an actor."""
    worker_id: bytes
    pid: int
    started_at: float
    retriable: bool
    actor: bool = False
    name: str = ""


class MemoryMonitor:
    """Decides, reading by reading, whether to kill a worker and which one."""

    def __init__(self, threshold: float):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"memory_usage_threshold={threshold!r} must be in (0, 1]; "
                             "e.g. 0.95 kills workers above 95% of the host's memory")
        self.threshold = threshold
        self.pending = None       # worker id of the last victim, until it is gone

    def over(self, reading: MemoryReading) -> bool:
        return reading.fraction > self.threshold

    def decide(self, reading: MemoryReading, candidates) -> Candidate | None:
        """The worker to kill now, or None (memory fine, a kill still in
        flight, or nobody to kill)."""
        candidates = list(candidates)
        if self.pending is not None:
            if any(c.worker_id == self.pending for c in candidates):
                return None           # the last victim is still exiting
            self.pending = None
        if not self.over(reading):
            return None
        victim = pick_victim(candidates)
        if victim is not None:
            self.pending = victim.worker_id
        return victim

    def forget(self, worker_id: bytes) -> None:
        """The worker exited (any reason): a pending kill of it is done."""
        if self.pending == worker_id:
            self.pending = None


def pick_victim(candidates) -> Candidate | None:
    """Newest retriable task first; else the newest of the rest (non-retriable
    tasks and actors)."""
    retriable = [c for c in candidates if c.retriable and not c.actor]
    pool = retriable or list(candidates)
    if not pool:
        return None
    return max(pool, key=lambda c: c.started_at)


def candidates_of(workers):
    """The node's workers the monitor may kill: those running a task or an
    actor (``zray.node.state.Worker`` records), and a worker leased to the
    head (the node does not see what it runs; it goes last among retriable
    ones, ordered by when it was lent)."""
    found = []
    for worker in workers:
        if worker.pid is None or worker.timed_out or worker.retiring:
            continue
        spec = worker.task
        if spec is not None and worker.task_started_at is not None:
            actor = spec.actor_id is not None
            retriable = not actor and (spec.max_retries < 0 or
                                       spec.attempt < spec.max_retries)
            found.append(Candidate(worker.worker_id, worker.pid, worker.task_started_at,
                                   retriable, actor, spec.name))
        elif worker.leased:
            found.append(Candidate(worker.worker_id, worker.pid,
                                   worker.idle_since - 1e9, True))
    return found


def oom_message(victim: Candidate, reading: MemoryReading, threshold: float,
                node_id_hex: str, host: str) -> str:
    """What the task's (or actor's) caller reads, in Ray's words and with Ray's advice."""
    what = (f"the actor {victim.name}" if victim.actor else
            f"task {victim.name}" if victim.name else "the task")
    why = ("it was the most recently started task with retries left" if victim.retriable
           else "no task with retries left was running on the node")
    return (
        f"{what[0].upper()}{what[1:]} was killed due to the node running low on memory. "
        f"Memory on the node (IP: {host}, ID: {node_id_hex}) where the task was running "
        f"was {reading.used_bytes / GIB:.2f}GB / {reading.total_bytes / GIB:.2f}GB "
        f"({reading.fraction:.6f}), which exceeds the memory usage threshold of "
        f"{threshold:g}. zray killed this worker (pid {victim.pid}) because {why}. "
        "To see which processes use the memory, run `ps aux --sort=-rss` on the node. "
        "To avoid this: reduce the memory each task uses, or run fewer of them at once "
        "by asking for more resources per task (e.g. num_cpus or memory=...), or add "
        "nodes with more memory. Set max_retries on the task (-1: retry for ever) to "
        "let it be retried after an out-of-memory kill, and max_restarts on actors. "
        "To change the threshold, set memory_usage_threshold (ZRAY_MEMORY_USAGE_THRESHOLD "
        "or init(_system_config=...)); to turn the monitor off, set "
        "memory_monitor_refresh_ms to 0.")


__all__ = ["Candidate", "candidates_of", "MemoryMonitor", "MemoryReading", "oom_message", "pick_victim"]
