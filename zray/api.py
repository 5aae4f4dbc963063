"""The public API with Ray's names and semantics: init, get, put, wait, ..."""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import os
import json
import threading

from zray import _runtime, options as opts
from zray._process import advertised_host
from zray.config import Config
from zray.client import Client
from zray.exceptions import RaySystemError
from zray.generators import ObjectRefGenerator
from zray.object_ref import ObjectRef, stale_ref_error
from zray.protocol import Msg
from zray.remote_function import RemoteFunction, put_value

# zray._launch (subprocess, socket) and zray.runtime_env.packaging (hashlib and
# OpenSSL) load in init, the driver's: a worker imports this module for get,
# put and wait, and paid ~10 ms of imports for them in every process.

_init_lock = threading.RLock()
_atexit_registered = False


class ClientContext(dict):
    """What ``init`` returns: address information, readable as a dict or attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


def init(address: str | None = None, *, num_cpus=None, num_gpus=None, resources=None,
         object_store_memory=None, namespace=None, ignore_reinit_error=False,
         runtime_env=None, log_to_driver=True, include_dashboard=None,
         logging_level=None, configure_logging=True, _system_config=None, **kwargs):
    """Connect this process to a cluster, starting a local one when no address is given."""
    global _atexit_registered
    ignored = set(kwargs) - {"dashboard_host", "dashboard_port", "_temp_dir",
                             "local_mode", "_node_ip_address", "job_config",
                             "_metrics_export_port"}
    if ignored:
        raise TypeError(f"init() got unexpected keyword argument(s) {sorted(ignored)}")
    from zray._launch import default_resources
    from zray.runtime_env.packaging import resolver
    job_env = _job_runtime_env(runtime_env)
    _warn_ignored_init_options(kwargs)
    with _init_lock:
        if _runtime.get_runtime() is not None:
            if ignore_reinit_error:
                return _context(_runtime.get_runtime())
            raise RuntimeError("Maybe you called zray.init twice by accident? This error "
                               "can be suppressed by passing in 'ignore_reinit_error=True' "
                               "or by calling 'zray.shutdown()' prior to 'zray.init()'.")
        config = Config.from_system_config(_system_config,
                                           temp_dir=kwargs.get("_temp_dir") or None)
        if kwargs.get("_metrics_export_port"):     # served by the head this starts
            config = dataclasses.replace(
                config, metrics_export_port=int(kwargs["_metrics_export_port"]))
        address = address or os.environ.get("ZRAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if address:
            if num_cpus is not None or num_gpus is not None or resources:
                raise ValueError("When connecting to an existing cluster, num_cpus, num_gpus "
                                 "and resources must not be given: they are set where the "
                                 "cluster's nodes are started.")
            runtime = _connect(address, config, namespace)
            _warn_dashboard_ignored(include_dashboard)
        else:
            runtime = _start_local(config, namespace, default_resources(
                num_cpus, num_gpus, resources, object_store_memory=object_store_memory,
                head=True, shm_dir=config.shm_dir))
            if include_dashboard:
                _start_dashboard(runtime, kwargs)
        runtime.resolve_env = resolver(config.runtime_env_max_package_bytes)
        runtime.client.log_to_driver = bool(log_to_driver)
        _runtime.set_runtime(runtime)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    _exit_cleanly_when_stopped()
    try:        # the packages go up through the cluster's own PackageStore actor
        runtime.runtime_env = runtime.resolve_env(job_env)
    except BaseException:
        shutdown()
        raise
    return _context(runtime)


def _exit_cleanly_when_stopped() -> None:
    """A job's driver (started by ``zray job submit``) exits on SIGTERM through
    its atexit shutdown, so the head ends its tasks and actors at once rather
    than when its heartbeats stop (``zray job stop`` sends SIGTERM first)."""
    import signal
    if not os.environ.get("ZRAY_JOB_SUBMISSION_ID") or \
            threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)


def _job_runtime_env(runtime_env) -> dict | None:
    """The job's runtime_env, checked as a task's is: it applies to every task
    and actor of this driver (and, inherited, to theirs), as in Ray.  A driver
    started by ``zray job submit`` gets its job's (ZRAY_JOB_RUNTIME_ENV, already
    uploaded), under what it passes itself."""
    from zray.runtime_env.packaging import JOB_RUNTIME_ENV_VAR, check_local_paths
    inherited = os.environ.get(JOB_RUNTIME_ENV_VAR)
    job_env = json.loads(inherited) if inherited else None
    if runtime_env is None:
        return job_env or None
    opts.validate({"runtime_env": runtime_env}, opts.TASK_OPTIONS, "init()")
    check_local_paths(runtime_env)
    mine = {k: (list(v) if isinstance(v, (list, tuple)) else v)
            for k, v in runtime_env.items() if k in opts.RUNTIME_ENV_FIELDS and v}
    return opts.merge_runtime_env(job_env, mine) or None


def _start_dashboard(runtime, kwargs) -> None:
    """The dashboard beside the local cluster's head (``include_dashboard=True``);
    ``dashboard_host`` default 127.0.0.1, ``dashboard_port`` default 8265 or the
    next free one, as Ray.  Its URL goes to stderr, as Ray's banner."""
    import sys
    from zray.dashboard.launch import describe, start_dashboard
    cluster = runtime.cluster
    try:
        cluster.dashboard = start_dashboard(
            cluster.config, cluster.head_address, cluster.session_dir,
            kwargs.get("dashboard_host"), kwargs.get("dashboard_port"),
            head_pid=cluster.head.pid)
    except BaseException:
        runtime.client.close()
        cluster.stop()
        raise
    sys.stderr.write(describe(cluster.dashboard) + "\n")   # user-facing, as Ray's


def _warn_dashboard_ignored(include_dashboard) -> None:
    if include_dashboard:
        opts.warn_once("init:include_dashboard", "init(include_dashboard=True) is ignored "
                       "when connecting to a running cluster: its dashboard is started "
                       "with its head (`zray start --head --include-dashboard`).")


def _warn_ignored_init_options(kwargs) -> None:
    if kwargs.get("local_mode"):
        opts.warn_once("init:local_mode", "init(local_mode=True) is not supported by zray "
                       "(Ray deprecated it): tasks and actors run in worker processes as "
                       "usual.")
    if kwargs.get("job_config") is not None:
        opts.warn_once("init:job_config", "init(job_config=...) is ignored by zray; pass "
                       "runtime_env= and namespace= to init() instead.")


def _start_local(config, namespace, resources) -> _runtime.Runtime:
    from zray._launch import LocalCluster
    cluster = LocalCluster(config, resources)
    client = Client(cluster.head_address, b"D" + os.urandom(8), config, "driver",
                        local_node_id=cluster.node_id)
    client.liveness_check = cluster.check
    try:
        welcome = client.hello({"wait_for_nodes": 1, "namespace": namespace},
                               config.startup_timeout_s)
    except BaseException:
        client.close()
        cluster.stop()
        raise
    for node in welcome.get("nodes", []):      # the node's socket: room, restores
        if node.get("NodeID") == cluster.node_id.hex():
            client.node_endpoint = node.get("NodeManagerEndpoint") or None
    client.serve_results(f"ipc://{cluster.session_dir}/driver-{os.getpid()}.sock")
    runtime = _runtime.Runtime(client, "driver", namespace)
    runtime.cluster = cluster
    runtime.address = cluster.head_address
    return runtime


def head_endpoint(address: str) -> str:
    """A ZeroMQ endpoint for what users write as a cluster address."""
    if address.startswith(("ipc://", "tcp://")):
        return address
    if address == "auto":
        from zray._launch import find_local_cluster
        return head_endpoint(find_local_cluster(Config.from_env().temp_dir))
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"cluster address {address!r} is not HOST:PORT, ipc://PATH or "
                         "tcp://HOST:PORT")
    return f"tcp://{host}:{port}"


def _connect(address, config, namespace) -> _runtime.Runtime:
    """Join a running cluster as a driver; use a node on this host for the store."""
    endpoint = head_endpoint(address)
    from zray._launch import with_cluster_key
    from zray.security import keys_for
    config = with_cluster_key(config, endpoint)
    if endpoint.startswith("tcp://"):
        keys_for(config)               # a bad key file fails here, with its reason
    client = Client(endpoint, b"D" + os.urandom(8), config, "driver")
    try:
        welcome = client.hello({"namespace": namespace}, config.startup_timeout_s)
    except BaseException:
        client.close()
        raise
    node = _local_node(endpoint, welcome.get("nodes", []))
    if node is not None:
        client.local_node_id = bytes.fromhex(node["NodeID"])
        client.node_endpoint = node.get("NodeManagerEndpoint") or None
    from zray._process import serve_endpoint
    if endpoint.startswith("ipc://"):
        here = os.path.dirname(endpoint[len("ipc://"):])
        client.serve_results(f"ipc://{here}/driver-{os.getpid()}-{os.urandom(3).hex()}.sock")
    else:
        client.serve_results(serve_endpoint("", "", advertised_host(endpoint), endpoint))
    runtime = _runtime.Runtime(client, "driver", namespace)
    runtime.address = endpoint
    return runtime


def _local_node(endpoint: str, nodes: list):
    """The node on this host that stores this driver's objects: on the address
    this host uses to reach the head (the head's own node if several match)."""
    from zray._launch import hostname
    alive = [n for n in nodes if n["Alive"]]
    if endpoint.startswith("tcp://"):
        mine = [n for n in alive if n["NodeManagerAddress"] == advertised_host(endpoint)]
        if not mine:            # e.g. the head reached on loopback, nodes on the LAN
            from zray._launch import local_addresses
            here = local_addresses()
            mine = [n for n in alive if n["NodeManagerAddress"] in here]
    else:
        mine = [n for n in alive if n["NodeManagerHostname"] == hostname()]
    mine.sort(key=lambda n: "node:__internal_head__" not in n["Resources"])
    return mine[0] if mine else None


def _context(runtime) -> ClientContext:
    cluster = runtime.cluster
    return ClientContext(
        address_info={"address": runtime.address,
                      "session_dir": getattr(cluster, "session_dir", None),
                      "node_id": runtime.client.local_node_id.hex()
                      if runtime.client.local_node_id else None},
        address=runtime.address, dashboard_url=_dashboard_url(cluster),
        session_dir=getattr(cluster, "session_dir", None))


def _dashboard_url(cluster) -> str | None:
    board = getattr(cluster, "dashboard", None)
    return board.address if board is not None else None


def shutdown(_exiting_interpreter: bool = False) -> None:
    """Disconnect; stop every process that ``init`` started."""
    with _init_lock:
        runtime = _runtime.get_runtime()
        if runtime is None or runtime.mode != "driver":
            return
        _runtime.set_runtime(None)
        client = runtime.client
        if runtime.cluster is not None:
            client.send(Msg.SHUTDOWN, ("cluster",))
        else:
            client.send(Msg.SHUTDOWN, ("disconnect",))
        client.close()
        if runtime.cluster is not None:
            runtime.cluster.stop()


def is_initialized() -> bool:
    return _runtime.get_runtime() is not None


def remote(*args, **kwargs):
    """``@remote`` or ``@remote(num_cpus=..., ...)`` on a function (or, later, a class)."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @zray.remote decorator must be applied either with no "
                        "arguments and no parentheses, or with keyword arguments only, "
                        "e.g. @zray.remote(num_cpus=1).")
    return lambda target: _make_remote(target, kwargs)


def _make_remote(target, options):
    if inspect.isclass(target):
        from zray.actor import ActorClass
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"zray.remote expects a function or class, got {target!r}")
    return RemoteFunction(target, options)


def _object_ids(refs, what: str, client):
    if not isinstance(refs, (list, tuple)):
        raise TypeError(f"{what} expects an ObjectRef or a list of ObjectRefs, got "
                        f"{type(refs).__name__}")
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"{what} expects ObjectRefs, but the list holds a "
                            f"{type(ref).__name__}: {ref!r}")
        if ref._client is not client and ref._client is not None:
            raise stale_ref_error(ref)
    return [ref._id for ref in refs]


def get(object_refs, *, timeout: float | None = None):
    """The values of one ObjectRef or a list of them, in order."""
    client = _runtime.client()
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number or None")
    if isinstance(object_refs, ObjectRef):
        if object_refs._client is not client and object_refs._client is not None:
            raise stale_ref_error(object_refs)
        entry = client.get_entries([object_refs._id], timeout)[0]
        return client.value_of(object_refs._id, entry)
    if isinstance(object_refs, ObjectRefGenerator):
        raise TypeError("zray.get() does not take an ObjectRefGenerator: iterate it "
                        "(for ref in gen) and get the ObjectRefs it yields, or get "
                        "gen.completed() to wait for the task to finish.")
    ids = _object_ids(object_refs, "zray.get", client)
    entries = client.get_entries(ids, timeout)
    return [client.value_of(object_id, entry) for object_id, entry in zip(ids, entries)]


def put(value, *, _owner=None) -> ObjectRef:
    """Store ``value`` in the object store; return its ObjectRef."""
    return put_value(value, _runtime.client())


def wait(object_refs, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True):
    """Split refs into (ready, not ready), both in the order given.  An
    ObjectRefGenerator is ready when its next ref is available (or it ended)."""
    client = _runtime.client()
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)):
        raise TypeError("wait() expected a list of ObjectRef, got a single "
                        f"{type(object_refs).__name__}")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"zray.wait expects a list of ObjectRefs, got "
                        f"{type(object_refs).__name__}")
    if not object_refs:
        return [], []
    generators = [r for r in object_refs if isinstance(r, ObjectRefGenerator)]
    ids = _object_ids([r for r in object_refs if not isinstance(r, ObjectRefGenerator)],
                      "zray.wait", client)
    if len(set(ids)) != len(ids) or len({id(g) for g in generators}) != len(generators):
        raise ValueError("Wait requires a list of unique object refs.")
    if num_returns <= 0 or num_returns > len(object_refs):
        raise ValueError(f"Invalid number of objects to return {num_returns}: it must be "
                         f"between 1 and the number of refs ({len(object_refs)}).")
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number or None")
    ready_ids = client.wait_entries(ids, num_returns, timeout,
                                    streams=[g._wait_handle() for g in generators])
    ready, not_ready = [], []
    for ref in object_refs:
        is_ready = ref.next_ready() if isinstance(ref, ObjectRefGenerator) \
            else ref._id in ready_ids
        if is_ready and len(ready) < num_returns:
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref``; its ``get`` raises TaskCancelledError.

    A queued actor call is dropped; a running async actor call is cancelled.  For
    an ObjectRefGenerator, the task stops and its next item is the
    TaskCancelledError."""
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    client = _runtime.client()
    spec = client.unregistered_call(object_ref.task_id())
    if spec is not None:          # an actor call the head does not know about
        client.cancel_actor_call(spec.task_id, spec.actor_id)
        return
    client.send(Msg.CANCEL_TASKS, (object_ref.task_id(), bool(force)))


def nodes() -> list:
    return _runtime.client().query("nodes")


def cluster_resources() -> dict:
    return _runtime.client().query("cluster_resources")


def available_resources() -> dict:
    return _runtime.client().query("available_resources")


def get_actor(name: str, namespace: str | None = None):
    """The handle of the live actor called ``name`` (ValueError when there is none)."""
    from zray.actor import ActorHandle
    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs the actor's name as a non-empty string")
    runtime = _runtime.runtime()
    client = runtime.client
    if namespace is None:
        namespace = runtime.namespace
    meta = client.query("get_actor", (name, namespace, client.job_id))
    if meta is None:
        raise ValueError(f"Failed to look up actor with name '{name}'"
                         + (f" in namespace '{namespace}'" if namespace else "")
                         + ". This could be because 1. You are trying to look up a named "
                         "actor you didn't create. 2. The named actor died. 3. You did not "
                         "use a namespace matching the namespace of the actor.")
    return ActorHandle(meta["actor_id"], meta["methods"], meta["class_name"], -1,
                       meta.get("max_task_retries", 0))


def kill(actor, *, no_restart: bool = True) -> None:
    """Kill an actor's process; restart it only if ``no_restart`` is False."""
    from zray.actor import ActorHandle
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"zray.kill() only supported for actors. For tasks, try "
                         f"zray.cancel(). Got: {type(actor).__name__}.")
    client = _runtime.client()
    if no_restart:
        client.mark_killed(actor._actor_id)
    client.send(Msg.KILL_ACTOR, (actor._actor_id, bool(no_restart)))
