"""One frozen configuration for every zray process.

Every field can be overridden by an environment variable named ``ZRAY_<FIELD>``
(upper case).  The driver resolves the configuration once and hands it to the
processes it starts explicitly (as JSON in their argv), so a child never reads a
different value than its parent.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Config:
    #: Objects whose serialized size is at most this travel inside messages;
    #: larger ones go to the node's shared-memory store.
    max_inline_object_bytes: int = 100 * 1024
    #: Seconds between heartbeats sent by nodes and drivers to the head.
    heartbeat_interval_s: float = 1.0
    #: A peer that misses this many heartbeats in a row is declared dead.
    heartbeat_missed_limit: int = 10
    #: Task attempts whose events (submitted, scheduled, started, finished or
    #: failed, retried, cancelled) the head keeps for the state API, the
    #: timeline and ``zray summary``; the oldest go first and are counted.
    task_events_max: int = 100_000
    #: Actor workers report each method call they ran (its run time, outcome
    #: and error), batched every 50 ms, so that actor calls are in the task
    #: events and the timeline (calls go from caller to actor without the head).
    actor_task_events: bool = True
    #: A port on which the head serves its metrics in Prometheus' text format
    #: (``zray start --head --metrics-export-port``, ``init(_metrics_export_port=)``);
    #: 0: not served.
    metrics_export_port: int = 0
    #: Chunks of worker output (each a print's worth) the head keeps for
    #: ``zray logs``; the oldest go first.
    log_buffer_chunks: int = 20_000
    #: The interface the metrics endpoint listens on (loopback unless widened).
    metrics_export_host: str = "127.0.0.1"
    #: Seconds a driver or node manager goes without hearing from the head
    #: (it answers every heartbeat) before it presumes the head dead: a
    #: driver's blocked and new calls then raise an error naming the head, and
    #: a node manager stops its workers and exits.
    head_timeout_s: float = 30.0
    #: How far the head may commit a node beyond its resources, as a multiple of
    #: its totals.  Tasks beyond capacity wait in the node's queue, which keeps
    #: the pipeline to the workers full; the node never runs more than fits.
    node_overcommit_factor: float = 16.0
    #: The same for functions that run longer than ``short_task_s`` or were not
    #: seen yet: small, so long tasks do not wait on a busy node while another idles.
    long_task_overcommit_factor: float = 0.5
    #: A function whose recent run time is at most this counts as short.
    short_task_s: float = 0.01
    #: Most tasks a busy worker may hold (running plus queued behind it); only
    #: tasks of functions whose recent run time is under ``prefetch_max_task_s``
    #: are queued at a worker.  1 turns prefetching off.
    worker_prefetch: int = 32
    #: Let idle nodes lend one worker to the head, which then sends 1-CPU tasks
    #: straight to it, and grants it on to a driver submitting one plain task
    #: at a time, which then sends them itself (driver -> worker -> driver).
    lease_workers: bool = True
    #: Let a node manager run the plain tasks its own workers submit
    #: (``zray.resources.local_placeable``: no actor, strategy, GPU, ObjectRef
    #: argument, generator or runtime_env) itself when they fit its free
    #: resources now, registering them with the head as bookkeeping; the rest
    #: spill back to the head (see docs/architecture.md, *Local placement*).
    local_placement: bool = True
    #: A worker offers a task to its node only while it awaits fewer results of
    #: its own tasks than this (a one-at-a-time loop always; a burst its first
    #: few, the rest go to the head, which spreads bursts over the cluster).
    local_placement_max_awaited: int = 4
    #: Seconds the head keeps an unused leased worker before giving it back.
    lease_idle_s: float = 0.05
    #: Tasks of functions that recently ran longer than this are never prefetched.
    prefetch_max_task_s: float = 0.002
    #: Seconds a client may hold bookkeeping for the head (reference counts,
    #: registrations and results of actor calls, registrations and reports of
    #: tasks sent on a granted lease) to send it in batches.
    bookkeeping_delay_s: float = 0.002
    #: A remote function or actor class whose pickle is larger than this warns
    #: once, when first used (Ray's FUNCTION_SIZE_WARN_THRESHOLD): it probably
    #: captures a large object that should be put in the store instead.
    function_size_warn_bytes: int = 10 ** 7
    #: One whose pickle is larger than this is refused with ValueError (Ray's
    #: FUNCTION_SIZE_ERROR_THRESHOLD); every worker would hold a copy.
    function_size_error_bytes: int = 10 ** 8
    #: Largest inbound frame a driver's, worker's or actor's socket, and a node's
    #: socket to the head, accepts, in bytes (-1: no limit).
    max_message_bytes: int = 512 * 1024 * 1024
    #: Largest inbound frame the head (and a node's socket for its workers)
    #: accepts, in bytes (-1: no limit).  ZeroMQ drops a peer that declares a
    #: larger frame before buffering it, even before the CURVE handshake, so this
    #: bounds what an unauthenticated peer can make the head allocate.  Bulk data
    #: never crosses the head: what reaches it is task specs (arguments over
    #: ``max_inline_object_bytes`` are put first), inline objects and results
    #: (each at most ``max_inline_object_bytes``), pickled functions (Ray warns
    #: above 10 MB) and reference batches; clients split batches to stay under
    #: this, so only a single item (a function) larger than it cannot be sent.
    max_head_message_bytes: int = 64 * 1024 * 1024
    #: Bytes in one chunk of an object pulled from another node.
    transfer_chunk_bytes: int = 4 * 1024 * 1024
    #: Chunk requests a pull keeps outstanding (its window of credits).
    transfer_window: int = 4
    #: Seconds a pull waits for a peer's next chunk before trying another copy.
    transfer_timeout_s: float = 30.0
    #: How chunks between hosts are encrypted: "aes-gcm" (messages sealed with
    #: AES-256-GCM under a key derived from the cluster's secret, on sockets
    #: without CURVE: several times cheaper per byte where the CPU has AES
    #: instructions; see zray.node.sealing) or "curve" (CURVE like every other
    #: socket).  Every node of a cluster must use the same.
    transfer_encryption: str = "aes-gcm"
    #: The cluster's CURVE key file (see zray.security); empty: found from this
    #: host's record of started clusters, or none for ipc-only clusters.
    cluster_key_file: str = ""
    #: Turn CURVE authentication and encryption off on TCP sockets (trusted
    #: networks only).
    insecure: bool = False
    #: Ports nodes, actors and drivers listen on between hosts, as "low-high"
    #: (e.g. "20000-20999", for a firewall rule); empty: any port the OS picks.
    port_range: str = ""
    #: Modules the node's fork server imports before forking workers, comma
    #: separated (e.g. "numpy,pandas"): each worker starts with them loaded
    #: instead of importing them on first use (numpy: ~50 ms once per worker
    #: on a 2-core VM, paid by the first task that reads an array), at the cost
    #: of ~10 MB in the fork server; the workers share those pages (their RSS
    #: counts ~6 MB each, their own memory grows < 1 MB). numpy is a core
    #: dependency, so it is preloaded by default; "" turns it off. A worker
    #: sets OpenBLAS's thread count to each task's num_cpus (zray.worker.blas).
    #: The fork server imports them after forking the prestarted workers (a
    #: faster init()); the node replaces those once it has (never leasing
    #: them meanwhile), see NodeManagerState.on_preloaded.
    worker_preload_modules: str = "numpy"
    #: Workers a node starts with; more start (forked in ~10 ms) when tasks
    #: wait, up to one per CPU and beyond for blocked ones. -1: one per CPU.
    prestart_workers: int = 1
    #: Bytes of freed shared-memory segments a node keeps (up to 4 files) for
    #: the next large writes: writing into pages already faulted in is ~3x
    #: faster than into fresh ones. A segment anyone still maps is never kept.
    #: 0 turns it off.
    spare_segment_bytes: int = 1024 * 1024 * 1024
    #: Size of the blank spare segments a node pre-faults (posix_fallocate, in
    #: a thread of its own, in free spare slots within ``spare_segment_bytes``)
    #: so that large writes in a fresh store go at the speed of pages already
    #: there: a put of up to this size takes one. The thread makes blanks only
    #: after half a CPU of the host was idle for 0.2 s (zray.serialization.IdleCpu),
    #: so it does not compete with running tasks. 0 turns it off.
    spare_blank_bytes: int = 128 * 1024 * 1024
    #: Freed heap memory a worker keeps for its next allocations instead of
    #: handing it back to the OS (glibc's M_TRIM_THRESHOLD; allocations up to
    #: a quarter of it come from the heap, M_MMAP_THRESHOLD). glibc's defaults
    #: (128 KiB) make every numpy temporary of a task fault in fresh pages: a
    #: task making two 800 KB arrays ran 1.3 ms instead of 0.15 ms. 0 keeps
    #: glibc's defaults.
    worker_heap_keep_bytes: int = 64 * 1024 * 1024
    #: Most workers for tasks (actors not counted) a node runs at once, those
    #: blocked in get/wait (their CPU lent back) included; at the cap, tasks
    #: wait in the node's queue and the node logs a warning. Deeply nested
    #: blocking gets start a worker per level. 0: 8 x the node's CPUs, at least 32.
    max_workers_per_node: int = 0
    #: Milliseconds between the node's reads of its host's memory (Ray's
    #: memory_monitor_refresh_ms); above ``memory_usage_threshold`` it kills
    #: the worker of the newest retriable task (see docs/memory.md). 0 turns
    #: the memory monitor off.
    memory_monitor_refresh_ms: int = 250
    #: Fraction of the host's memory (total minus available) above which the
    #: node's memory monitor kills a worker (Ray's memory_usage_threshold).
    memory_usage_threshold: float = 0.95
    #: First delay before retrying a task killed for lack of memory, in ms;
    #: it doubles with each such kill of the task, up to 60 s (Ray's
    #: task_oom_retry_delay_base_ms).
    task_oom_retry_delay_base_ms: int = 1000
    #: Seconds an idle surplus worker (beyond num_cpus) lives before it exits.
    idle_worker_timeout_s: float = 10.0
    #: Seconds a process waits for its children to exit on shutdown before
    #: killing them.
    shutdown_grace_s: float = 2.0
    #: Seconds a put or task return that does not fit in its node's object
    #: store, even after spilling all it can, waits for memory to be freed
    #: before it raises ObjectStoreFullError.
    object_store_full_timeout_s: float = 30.0
    #: Folder where nodes spill objects when their store is over its bound
    #: (each node uses a subfolder ``zray-spill-<node>`` it removes when it
    #: stops); empty: inside the session directory.  Ray's
    #: ``_system_config={"object_spilling_config": json.dumps({"type":
    #: "filesystem", "params": {"directory_path": ...}})}`` sets it too.
    object_spilling_directory: str = ""
    #: Largest runtime_env package (a zipped working_dir or py_module) zray
    #: uploads, as Ray's 500 MiB limit.
    runtime_env_max_package_bytes: int = 500 * 1024 * 1024
    #: Root folder for session directories (sockets, logs, keys).
    temp_dir: str = "/tmp/zray-sessions"
    #: Folder holding shared-memory segments, one per object.
    shm_dir: str = "/dev/shm"
    #: Seconds the driver waits for the head and first node to come up.
    startup_timeout_s: float = 30.0
    #: Logging level of the head, node and worker processes.
    log_level: str = "INFO"

    def __post_init__(self):
        if self.transfer_encryption not in ("aes-gcm", "curve"):
            raise ValueError(f"transfer_encryption={self.transfer_encryption!r} must be "
                             "'aes-gcm' or 'curve'")
        if not 0.0 < self.memory_usage_threshold <= 1.0:
            raise ValueError(f"memory_usage_threshold={self.memory_usage_threshold!r} must "
                             "be a fraction in (0, 1], e.g. 0.95")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Config":
        """Defaults, then ``ZRAY_*`` variables, then explicit overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = "ZRAY_" + f.name.upper()
            if var in environ:
                values[f.name] = _parse(f, environ[var], var)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}; valid: "
                             f"{sorted(f.name for f in fields(cls))}")
        return cls(**values)

    @classmethod
    def from_system_config(cls, system_config=None, **overrides) -> "Config":
        """``from_env`` with ``init(_system_config=...)``: Config fields, plus
        Ray's ``object_spilling_config`` (a JSON string, filesystem type only)."""
        values = dict(system_config or {})
        spilling = values.pop("object_spilling_config", None)
        if spilling is not None:
            values["object_spilling_directory"] = spilling_directory(spilling)
        values.update(overrides)
        return cls.from_env(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls(**json.loads(text))


def _parse(f: dataclasses.Field, raw: str, var: str):
    kind = type(f.default)
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {var}={raw!r} is not a valid "
                         f"{kind.__name__}; unset it or give a {kind.__name__}") from None


def spilling_directory(spilling_config) -> str:
    """The folder of Ray's ``object_spilling_config`` (JSON text or a dict):
    ``{"type": "filesystem", "params": {"directory_path": "/path"}}``; a list of
    paths takes the first (zray spills to one folder per node)."""
    try:
        spec = json.loads(spilling_config) if isinstance(spilling_config, str) \
            else dict(spilling_config)
        kind = spec.get("type", "filesystem")
        path = spec["params"]["directory_path"]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(
            "object_spilling_config must be JSON like json.dumps({'type': 'filesystem', "
            f"'params': {{'directory_path': '/tmp/spill'}}}}); got {spilling_config!r} "
            f"({exc!r})") from None
    if kind != "filesystem":
        raise ValueError(f"object_spilling_config type {kind!r} is not supported by zray; "
                         "use 'filesystem'")
    if isinstance(path, (list, tuple)):
        path = path[0] if path else ""
    if not isinstance(path, str) or not path:
        raise ValueError(f"object_spilling_config directory_path must be a folder; got "
                         f"{path!r}")
    return path
