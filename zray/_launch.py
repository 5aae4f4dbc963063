"""Starting head and node-manager processes on this machine.

Used by ``zray.init()`` for the embedded local cluster (and by the CLI and
``cluster_utils`` for longer-lived ones).  Each process gets the resolved
Config as JSON on its command line; logs go to the session directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from zray._session_nodes import record_node, session_node_ids  # noqa: F401 (were here)
from zray.config import Config
from zray.exceptions import RaySystemError
from zray.serialization import remove_segments


KEEP_SESSIONS = 20


def make_session_dir(config: Config) -> tuple[str, str]:
    name = f"session_{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}_{os.urandom(3).hex()}"
    longest_socket = len(os.path.join(os.path.abspath(config.temp_dir), name)) + 40
    if longest_socket > 107:         # sockaddr_un.sun_path, less room for socket names
        raise ValueError(f"the temp dir {config.temp_dir!r} is too long for the session's "
                         "socket paths (at most 107 bytes); choose a shorter one, e.g. "
                         "/tmp/zray")
    os.makedirs(config.temp_dir, mode=0o700, exist_ok=True)
    prune_sessions(config.temp_dir)
    path = os.path.join(config.temp_dir, name)
    os.mkdir(path, mode=0o700)       # (makedirs gives the parents 0777 & ~umask)
    os.mkdir(os.path.join(path, "logs"), mode=0o700)
    return name, path


def prune_sessions(temp_dir: str, keep: int = KEEP_SESSIONS) -> None:
    """Delete the logs of old sessions, keeping the newest ``keep``; one that
    still has sockets is kept unless it is a day old (its processes were killed)."""
    import shutil
    try:
        names = sorted(n for n in os.listdir(temp_dir) if n.startswith("session_"))
    except FileNotFoundError:
        return
    for name in names[:-keep] if len(names) > keep else []:
        path = os.path.join(temp_dir, name)
        try:
            if any(f.endswith(".sock") for f in os.listdir(path)) and \
                    time.time() - os.path.getmtime(path) < 86400:
                continue                    # perhaps still in use
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def object_store_bound(asked, available: int, shm_dir: str) -> int:
    """A node's object store bound: what was asked, else 30% of free memory
    capped by what ``shm_dir`` can hold; warns when that is less than asked."""
    try:
        stat = os.statvfs(shm_dir)
        shm_bytes = stat.f_bavail * stat.f_frsize
    except OSError:
        shm_bytes = None
    if not asked:
        store = int(available * 0.3)
        return min(store, int(shm_bytes * 0.9)) if shm_bytes else store
    if shm_bytes is not None and int(asked) > shm_bytes:
        import warnings
        warnings.warn(
            f"object_store_memory is {int(asked) / 2**30:.2f} GiB but {shm_dir} can hold "
            f"only {shm_bytes / 2**30:.2f} GiB more: writes may fail with ENOSPC before the "
            f"store reaches its bound and spills. Lower object_store_memory, or enlarge "
            f"{shm_dir} (e.g. `mount -o remount,size=...`, or docker --shm-size).",
            UserWarning, stacklevel=3)
    return int(asked)


def default_resources(num_cpus=None, num_gpus=None, resources=None, memory=None,
                      object_store_memory=None, host="127.0.0.1", head=False,
                      shm_dir="/dev/shm") -> dict:
    import psutil
    available = psutil.virtual_memory().available
    store = object_store_bound(object_store_memory, available, shm_dir)
    result = {"CPU": float(os.cpu_count() if num_cpus is None else num_cpus)}
    if num_gpus is None:
        num_gpus = detect_gpus()
    if num_gpus:
        result["GPU"] = float(num_gpus)
    result.update({k: float(v) for k, v in (resources or {}).items()})
    result["memory"] = float(memory or max(available - store, 0) * 0.7)
    result["object_store_memory"] = float(store)
    result[f"node:{host}"] = 1.0
    if head:
        result["node:__internal_head__"] = 1.0
    return result


def detect_gpus(environ=None, run=None) -> int:
    """GPUs this host offers when the user did not say: the devices listed in
    CUDA_VISIBLE_DEVICES when it is set (as Ray), else those ``nvidia-smi -L``
    lists, else none."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        return len(devices)
    import shutil
    if run is None and shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = (run or _nvidia_smi_list)()
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def _nvidia_smi_list() -> str:
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def child_environment() -> dict:
    """The environment for processes we start: the driver's import path is
    appended to PYTHONPATH, so workers can import the modules the driver's
    functions live in (as Ray puts the driver's directory on workers' paths)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths = env["PYTHONPATH"].split(os.pathsep) + paths
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class ManagedProcess:
    """A child process with a name and a log file, stopped by pid only."""

    def __init__(self, name: str, argv: list, log_path: str, new_session: bool = True):
        self.name = name
        self.log_path = log_path
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log_file:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                          stderr=log_file, start_new_session=new_session,
                                          env=child_environment())
        self.pid = self.popen.pid

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RaySystemError(f"the {self.name} process exited with code {code}; "
                                 f"its log {self.log_path} ends with:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen.wait()


def start_head(config: Config, session_name: str, session_dir: str, binds: list,
               parent_pid: int | None, ready_file: str | None = None) -> ManagedProcess:
    argv = [sys.executable, "-m", "zray.head", "--config", config.to_json(),
            "--session-name", session_name, "--log-file",
            os.path.join(session_dir, "logs", "head.log")]
    if ready_file:
        argv += ["--ready-file", ready_file]
    for bind in binds:
        argv += ["--bind", bind]
    if parent_pid:
        argv += ["--parent-pid", str(parent_pid)]
    return ManagedProcess("head", argv, os.path.join(session_dir, "logs", "head.out"))


def start_node(config: Config, head_address: str, node_id: bytes, resources: dict,
               session_dir: str, host: str, parent_pid: int | None) -> ManagedProcess:
    tag = node_id.hex()[:12]
    argv = [sys.executable, "-m", "zray.node", "--config", config.to_json(),
            "--head", head_address, "--node-id", node_id.hex(),
            "--resources", json.dumps(resources), "--session-dir", session_dir,
            "--host", host, "--log-file",
            os.path.join(session_dir, "logs", f"node-{tag}.log")]
    if parent_pid:
        argv += ["--parent-pid", str(parent_pid)]
    return ManagedProcess(f"node {tag}", argv,
                          os.path.join(session_dir, "logs", f"node-{tag}.out"))


def start_tcp_head(config: Config, session_name: str, session_dir: str, host: str,
                   port: int, parent_pid: int | None,
                   bind_host: str | None = None) -> tuple[ManagedProcess, str]:
    """A head on TCP (``port`` 0: any free port) listening on ``bind_host``
    (default ``host``; "0.0.0.0": every interface); returns it and its endpoint
    as others reach it, on ``host``."""
    ready = os.path.join(session_dir, "head.json")
    head = start_head(config, session_name, session_dir,
                      [f"tcp://{bind_host or host}:{port or '*'}"], parent_pid,
                      ready_file=ready)
    deadline = time.monotonic() + config.startup_timeout_s
    while not os.path.exists(ready):
        head.check()
        if time.monotonic() > deadline:
            head.stop(config.shutdown_grace_s)
            raise RaySystemError(f"the head did not start in {config.startup_timeout_s} s; "
                                 f"see {head.log_path}")
        time.sleep(0.01)
    with open(ready) as f:
        endpoint = json.load(f)["endpoints"][0]
    return head, f"tcp://{host}:{endpoint.rpartition(':')[2]}"


def await_node_processes_gone(node_id_hex: str, timeout_s: float = 5.0) -> bool:
    """Wait until no process carries ``node_id_hex`` in its arguments (a node's
    fork server and workers do; they exit once the node manager is gone)."""
    import psutil
    deadline = time.monotonic() + timeout_s
    while True:
        alive = False
        for process in psutil.process_iter(["cmdline"]):
            try:
                if node_id_hex in " ".join(process.info["cmdline"] or ()):
                    alive = True
                    break
            except psutil.Error:
                continue
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# --- what `zray start` started on this host ------------------------------------------

STARTED_FILE = "started.json"


def _started_path(temp_dir: str) -> str:
    return os.path.join(temp_dir, STARTED_FILE)


def read_started(temp_dir: str, alive_only: bool = True) -> list:
    """Processes `zray start` recorded here that still run (pid and start time
    match); with ``alive_only`` False, the dead ones too."""
    import psutil
    try:
        with open(_started_path(temp_dir)) as f:
            entries = json.load(f)
    except (FileNotFoundError, ValueError):
        return []
    if not alive_only:
        return [e for e in entries if isinstance(e, dict) and "pid" in e]
    alive = []
    for entry in entries:
        try:
            if abs(psutil.Process(entry["pid"]).create_time() - entry["create_time"]) < 1.0:
                alive.append(entry)
        except (psutil.Error, KeyError, TypeError):
            pass
    return alive


def record_started(temp_dir: str, entries: list) -> None:
    """Add ``entries`` (dicts with pid, role, address, ...) to this host's record."""
    import psutil
    kept = read_started(temp_dir)
    for entry in entries:
        entry = dict(entry, create_time=psutil.Process(entry["pid"]).create_time())
        kept.append(entry)
    write_started(temp_dir, kept)


def write_started(temp_dir: str, entries: list) -> None:
    os.makedirs(temp_dir, mode=0o700, exist_ok=True)
    path = _started_path(temp_dir)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(path + ".tmp", path)


def find_local_cluster(temp_dir: str) -> str:
    """The head address of the cluster `zray start` started on this host."""
    entries = read_started(temp_dir)
    heads = [entry["address"] for entry in entries if entry.get("role") == "head"]
    if len(heads) > 1:
        raise ConnectionError(
            f"address='auto' found {len(heads)} clusters started on this host "
            f"({', '.join(heads)}, recorded in {_started_path(temp_dir)}); pass the one "
            "you mean as address='HOST:PORT' (or --address HOST:PORT)")
    if heads:
        return heads[0]
    for entry in entries:
        if entry.get("address"):
            return entry["address"]
    raise ConnectionError(
        "address='auto' found no cluster started on this host (nothing running in "
        f"{_started_path(temp_dir)}); start one with `zray start --head`, or pass "
        "address='HOST:PORT'")


# --- which key opens which cluster, for clusters started on this host ------------------

KEYS_FILE = "keys.json"


def remember_cluster_key(temp_dir: str, address: str, key_file: str | None) -> None:
    """Note that the cluster at ``address`` (HOST:PORT) uses ``key_file``
    (None: it was started insecure, on purpose)."""
    path = os.path.join(temp_dir, KEYS_FILE)
    known = _known_keys(path)
    known[address] = os.path.abspath(key_file) if key_file else None
    os.makedirs(temp_dir, mode=0o700, exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(known, f)
    os.replace(path + ".tmp", path)


def _known_keys(path: str) -> dict:
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        return {}
    return {a: k for a, k in known.items()
            if k is None or (isinstance(k, str) and os.path.exists(k))}


def local_addresses() -> set:
    """This host's IPv4 addresses (in this network namespace), and "localhost"."""
    import psutil
    found = {"localhost", "127.0.0.1"}
    for addresses in psutil.net_if_addrs().values():
        found.update(a.address for a in addresses if a.family == socket.AF_INET)
    return found


def _same_cluster_here(address: str, known: dict) -> str | None:
    """The recorded address of the head that ``address`` reaches when both are
    this host's: same port, another of its interfaces."""
    host, _, port = address.rpartition(":")
    local = local_addresses()
    if host not in local:
        return None
    matches = [a for a in known if a.rpartition(":")[2] == port
               and a.rpartition(":")[0] in local]
    return matches[0] if len(matches) == 1 else None


def with_cluster_key(config: Config, endpoint: str) -> Config:
    """``config`` with the key file of the cluster at ``endpoint``: the one
    configured, else the one this host recorded when it started that cluster."""
    import dataclasses
    if config.insecure or config.cluster_key_file or not endpoint.startswith("tcp://"):
        return config
    address = endpoint[len("tcp://"):]
    known = _known_keys(os.path.join(config.temp_dir, KEYS_FILE))
    if address not in known:          # e.g. 127.0.0.1:PORT for a head started here
        address = _same_cluster_here(address, known) or address
    if address in known and known[address] is None:    # started here with --insecure
        return dataclasses.replace(config, insecure=True)
    key_file = known.get(address)
    if key_file is None:
        from zray.security import KeyFileError
        raise KeyFileError(
            f"the cluster at {address} needs its key file: pass --key FILE (zray start) "
            "or set ZRAY_CLUSTER_KEY_FILE to a copy of the head's cluster.key; "
            "ZRAY_INSECURE=1 only if the cluster was started with --insecure")
    return dataclasses.replace(config, cluster_key_file=key_file)


class LocalCluster:
    """The embedded default of ``zray.init()``: a head and one node, on loopback."""

    def __init__(self, config: Config, resources: dict):
        self.config = config
        self.session_name, self.session_dir = make_session_dir(config)
        self.head_address = f"ipc://{self.session_dir}/head.sock"
        self.node_id = os.urandom(16)
        me = os.getpid()
        self.head = start_head(config, self.session_name, self.session_dir,
                               [self.head_address], me)
        self.node = start_node(config, self.head_address, self.node_id, resources,
                               self.session_dir, "127.0.0.1", me)
        self.dashboard = None       # zray.dashboard.launch.Dashboard, when asked for

    def check(self) -> None:
        self.head.check()
        self.node.check()

    def stop(self) -> None:
        grace = self.config.shutdown_grace_s
        if self.dashboard is not None:
            self.dashboard.stop(grace)
        self.node.stop(grace)
        self.head.stop(grace)
        remove_segments(self.config.shm_dir, self.node_id)
        from zray.node.spill import remove_spill_dir
        remove_spill_dir(self.config.object_spilling_directory or self.session_dir,
                         self.node_id)
        for name in os.listdir(self.session_dir):
            if name.endswith(".sock"):
                try:
                    os.unlink(os.path.join(self.session_dir, name))
                except FileNotFoundError:
                    pass


def hostname() -> str:
    return socket.gethostname()
