"""The fork server: a template process that forks workers in milliseconds.

The node manager starts it once.  It imports what every worker needs (zmq,
cloudpickle, zray's worker) and then waits for commands on a pipe; ``spawn
<worker_id>`` forks a worker, which starts with those modules already loaded
instead of paying an interpreter's import time.  ``preload`` imports
Config.worker_preload_modules (numpy by default): the node sends it after its
prestarted workers' ``spawn``, so they start without waiting for numpy's
import (~60 ms of a cluster's start), and workers forked afterwards have it.
It reports ``started <worker_id> <pid>``, ``preloaded`` once the preload is
done, and, when it reaps a child, ``exited <pid> <code>`` on a second pipe.
It holds no ZeroMQ context, so forking is safe.  When the command pipe closes
(the node manager is gone) it kills its workers and exits.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import sys

#: How many threads OpenMP and BLAS libraries start; see default_thread_counts.
THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Names the THREAD_COUNT_VARS zray set (the user did not): workers change those
#: to their task's num_cpus.
DEFAULTED_THREAD_VARS = "ZRAY_DEFAULTED_THREAD_VARS"

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1      # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3


def worker_endpoint(session_dir: str, node_id_hex: str) -> str:
    """Where a node manager's workers reach it (its ROUTER binds there)."""
    return f"ipc://{session_dir}/node-{node_id_hex[:12]}.sock"


def spawn(worker_args: str) -> tuple:
    """Start a fork server; return (its Popen, command pipe, event pipe)."""
    import subprocess
    cmd_r, cmd_w = os.pipe()
    events_r, events_w = os.pipe()
    popen = subprocess.Popen(
        [sys.executable, "-m", "zray.node.forkserver", "--cmd-fd", str(cmd_r),
         "--event-fd", str(events_w), "--worker-args", worker_args],
        pass_fds=(cmd_r, events_w), stdin=subprocess.DEVNULL)
    os.close(cmd_r)
    os.close(events_w)
    return popen, cmd_w, events_r


def worker_args(node_id_hex, head_endpoint, session_dir, config_json, host) -> str:
    import json
    return json.dumps({
        "node_endpoint": worker_endpoint(session_dir, node_id_hex), "node_id": node_id_hex,
        "head_endpoint": head_endpoint, "session_dir": session_dir,
        "config": config_json, "host": host})


def spawn_for_node(argv) -> tuple | None:
    """``python -m zray.node`` calls this before importing the node manager, so
    the fork server's imports overlap the node's own (~0.1-0.15 s off a
    cluster's start).  None if the arguments do not parse: the node then
    starts one itself."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in ("--config", "--head", "--node-id", "--session-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    try:
        args, _ = parser.parse_known_args(argv)
    except SystemExit:
        return None
    return spawn(worker_args(args.node_id, args.head, args.session_dir, args.config,
                             args.host))


def kill_worker(pid: int) -> None:
    """SIGKILL a worker and what its tasks started: a worker leads a process
    group of its own from its first task on (worker.main.take_own_group), so
    the group goes with it; a process that is not a group leader (one that
    never ran a task) is killed alone."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def set_parent_death_signal(sig=signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="zray.node.forkserver")
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--event-fd", type=int, required=True)
    parser.add_argument("--worker-args", required=True)
    args = parser.parse_args(argv)
    parent = os.getppid()
    set_parent_death_signal()
    if os.getppid() != parent:
        sys.exit(0)
    default_thread_counts(os.environ)
    from zray.worker import main as worker_main   # the imports workers inherit
    prepare_workers(args.worker_args)
    server = Server(args.cmd_fd, args.event_fd, args.worker_args, worker_main)
    freeze_imports()
    server.run()


def freeze_imports() -> None:
    """What the imports made lives as long as any worker: out of every later
    collection's walk, in here and in each worker (whose collector would
    otherwise visit them all again, and write to their pages, unsharing them
    from this process's: CPU and memory in every worker)."""
    import gc
    gc.freeze()


def default_thread_counts(environ) -> None:
    """One OpenMP/BLAS thread per worker unless the user set the variables, as
    Ray does; a worker then sets them to its task's num_cpus (see
    WorkerProcess._apply_env).  Set here, before anything is imported, because
    the libraries read them once, when loaded: a module preloaded here
    (worker_preload_modules=numpy) keeps this one thread in every worker
    whatever its task's num_cpus; one a task imports sees that task's count."""
    defaulted = [name for name in THREAD_COUNT_VARS if name not in environ]
    for name in defaulted:
        environ[name] = "1"
    environ[DEFAULTED_THREAD_VARS] = ",".join(defaulted)


def keep_freed_heap(keep_bytes: int) -> None:
    """Tune glibc's malloc for workers (inherited by every fork); see
    Config.worker_heap_keep_bytes.  Elsewhere than glibc this does nothing."""
    if keep_bytes <= 0:
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(keep_bytes, 2**31 - 1)))
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(keep_bytes // 4, 2**31 - 1)))
    except (OSError, AttributeError):
        pass


def _config(worker_args: str):
    import json
    from zray.config import Config
    return Config.from_json(json.loads(worker_args)["config"])


def prepare_workers(worker_args: str) -> None:
    """What every worker forked from here inherits: glibc's malloc tuned
    (Config.worker_heap_keep_bytes)."""
    keep_freed_heap(_config(worker_args).worker_heap_keep_bytes)


def preload_modules(worker_args: str) -> None:
    """Import the modules named by Config.worker_preload_modules (the
    ``preload`` command); one that fails to import is reported on stderr (the
    node's log) and skipped."""
    from zray._process import preload
    names = _config(worker_args).worker_preload_modules.split(",")
    preload(filter(None, (n.strip() for n in names)), "fork server (worker_preload_modules)")
    freeze_imports()


class Server:
    def __init__(self, cmd_fd, event_fd, worker_args, worker_main):
        self.cmd_fd = cmd_fd
        self.event_fd = event_fd
        self.worker_args = worker_args
        self.worker_main = worker_main
        self.children: set[int] = set()
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, lambda *a: self._exit())

    def run(self) -> None:
        while True:
            readable, _, _ = select.select([self.cmd_fd, self.wake_r], [], [], 1.0)
            if self.wake_r in readable:
                os.read(self.wake_r, 4096)
            self._reap()
            if self.cmd_fd in readable:
                data = os.read(self.cmd_fd, 65536)
                if not data:
                    self._exit()
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    self._command(line.decode().split())

    def _command(self, words) -> None:
        if words and words[0] == "spawn":
            pid = os.fork()
            if pid == 0:
                self._child(bytes.fromhex(words[1]))
            self.children.add(pid)
            self._report(f"started {words[1]} {pid}")
        elif words == ["preload"]:
            preload_modules(self.worker_args)
            self._report("preloaded")

    def _child(self, worker_id: bytes) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (self.cmd_fd, self.event_fd, self.wake_r, self.wake_w):
                os.close(fd)
            set_parent_death_signal()
            # Its own process group (and, for an actor, session) comes with its
            # first task: zray.worker.main.take_own_group.
            code = self.worker_main.run_forked(worker_id, self.worker_args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code or 0)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._report(f"exited {pid} {os.waitstatus_to_exitcode(status)}")

    def _report(self, line: str) -> None:
        try:
            os.write(self.event_fd, (line + "\n").encode())
        except OSError:
            self._exit()

    def _exit(self) -> None:
        for pid in list(self.children):
            kill_worker(pid)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(0)


if __name__ == "__main__":
    main()
