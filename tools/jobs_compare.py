"""`tools/jobs_benchmark.py --compare ray`: zray's `zray job submit` on three
simulated hosts (network namespaces, the real CLI, tools/many_hosts.py) against
Ray's `ray job submit` on one host, in the same run.  Needs root.

Each figure is the wall time of the CLI process, from its start until a line of
the job's output appears on its stdout (both CLIs follow the job's logs):

- empty job: `-- python -c "print('first')"` until `first`;
- a job whose entrypoint connects and runs one task on every node (3 for zray,
  1 for Ray), until its `done` line: with no working_dir (the script by
  absolute path), with a fresh --working-dir of --mb MB of random bytes (first:
  pack, upload, unpack on every node) and with the same content again (cached).
  The working_dir's overhead is the median over runs of (with it) - (without
  it), each run against its own no-working_dir time.

Ray is started with `ray start --head --block` under a tag in its environment;
afterwards the processes carrying that tag (that `ray start`, its services, its
workers, the jobs) are ended by pid, so another user's Ray on this machine is
left alone.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOOLS = os.path.dirname(os.path.abspath(__file__))
RAY = os.environ.get("ZRAY_BENCH_RAY", "/root/peers-venv/bin/ray")
EMPTY = "python -c \"print('first', flush=True)\""

SCRIPT = """\
import sys
import {lib} as rt
from {lib}.util.scheduling_strategies import NodeAffinitySchedulingStrategy
rt.init()

@rt.remote(num_cpus=1)
def probe(use_working_dir):
    if use_working_dir:
        import payload_marker
        return payload_marker.X
    return 1

nodes = [n["NodeID"] for n in rt.nodes() if n["Alive"]]
refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
        .remote(len(sys.argv) > 1) for n in nodes]
assert sum(rt.get(refs)) == len(nodes)
print("done", len(nodes), flush=True)
"""


def timed(argv, env, marker: str, timeout_s: float = 180.0, popen=None) -> float:
    """Seconds from starting ``argv`` until a stdout line starts with ``marker``;
    the process is then waited for (it must exit 0)."""
    started = time.perf_counter()
    proc = popen(argv, env) if popen else subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed, seen = None, []
    import threading
    watchdog = threading.Timer(timeout_s, proc.kill)       # a hung CLI ends the run
    watchdog.start()
    try:
        for line in proc.stdout:
            seen.append(line)
            if elapsed is None and line.startswith(marker):
                elapsed = time.perf_counter() - started
        proc.wait()
    finally:
        watchdog.cancel()
    if elapsed is None or proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}:\n{''.join(seen)}")
    return elapsed


def _payload(mb: int, root: str, lib: str) -> str:
    wd = tempfile.mkdtemp(prefix=f"jc{lib[0]}", dir=root)
    with open(os.path.join(wd, "payload.bin"), "wb") as f:
        f.write(os.urandom(mb * 10**6))
    with open(os.path.join(wd, "payload_marker.py"), "w") as f:
        f.write("X = 1\n")
    with open(os.path.join(wd, "main.py"), "w") as f:
        f.write(SCRIPT.format(lib=lib))
    return wd


def series(submit, runs: int, mb: int, root: str, lib: str) -> dict:
    """The medians for one system; ``submit(extra_args, entrypoint, marker)``
    runs its CLI and returns the seconds."""
    script = os.path.join(root, f"plain_{lib}.py")
    with open(script, "w") as f:
        f.write(SCRIPT.format(lib=lib))
    for attempt in range(10):       # warm-up (starts supervisors; Ray's agent may lag)
        try:
            submit([], EMPTY, "first")
            break
        except RuntimeError as exc:
            if attempt == 9:
                raise
            print(f"warm-up {attempt}: {str(exc)[-300:]}", file=sys.stderr)
            time.sleep(5)
    submit([], f"python {script}", "done")
    out = {"empty": [], "no_wd": [], "wd_first": [], "wd_cached": []}
    for _ in range(runs):
        out["empty"].append(submit([], EMPTY, "first"))
        out["no_wd"].append(submit([], f"python {script}", "done"))
        wd = _payload(mb, root, lib)
        out["wd_first"].append(submit(["--working-dir", wd], "python main.py wd", "done"))
        out["wd_cached"].append(submit(["--working-dir", wd], "python main.py wd", "done"))
        shutil.rmtree(wd)
    medians = {k: statistics.median(v) for k, v in out.items()}
    for kind in ("wd_first", "wd_cached"):       # paired: each run's own baseline
        medians[f"{kind}_overhead"] = statistics.median(
            with_wd - without for with_wd, without in zip(out[kind], out["no_wd"]))
    medians["runs"] = {k: [round(x, 3) for x in v] for k, v in out.items()}
    return medians


def zray_side(runs: int, mb: int, root: str, hosts: int = 3, index: int = 0) -> dict:
    sys.path.insert(0, TOOLS)
    from many_hosts import ZrayHosts
    with ZrayHosts(n_hosts=hosts, num_cpus=2) as cluster:
        def popen(argv, env):
            environ = dict(cluster.env, ZRAY_TEMP_DIR=cluster.temp_dir(index))
            return cluster.net.popen(index, [sys.executable, "-m", "zray", *argv],
                                     env=environ, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

        def submit(extra, entrypoint, marker):
            argv = ["job", "submit", "--address", cluster.address, *extra, "--",
                    *shlex.split(entrypoint)]
            return timed(argv, None, marker, popen=popen)
        return series(submit, runs, mb, root, "zray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_side(runs: int, mb: int, root: str) -> dict:
    tag = f"zray-bench-{os.getpid()}-{os.urandom(3).hex()}"
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    # RAY_AUTH_MODE=token: Ray's own authentication (its token in ~/.ray/auth_token),
    # as zray's channel is authenticated; this Ray asks for it.
    env = dict(os.environ, ZRAY_BENCH_TAG=tag, RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token",
               PATH=os.path.dirname(RAY) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    ports = {name: _free_port() for name in (
        "port", "dashboard-port", "node-manager-port", "object-manager-port",
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")}
    argv = [RAY, "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", temp,
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--disable-usage-stats"] + [f"--{k}={v}" for k, v in ports.items()]
    head = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_for_dashboard(address, head)

        def submit(extra, entrypoint, marker):
            return timed([RAY, "job", "submit", "--address", address, *extra, "--",
                          *shlex.split(entrypoint)], env, marker)
        return series(submit, runs, mb, root, "ray")
    finally:
        stop_tagged(tag, head)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_dashboard(address: str, head, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {head.returncode}")
        try:
            with urllib.request.urlopen(address + "/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return                  # it answers (401 without the token)
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Ray's dashboard at {address} did not answer in {timeout_s} s")


def _tagged(tag: str) -> list:
    import psutil
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("ZRAY_BENCH_TAG") == tag:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def stop_tagged(tag: str, head) -> None:
    """End the processes this run's Ray started (by pid, found by the tag in their
    environment): SIGTERM to `ray start --block` (it stops its services), then
    SIGKILL to whatever still carries the tag."""
    import psutil
    try:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        pass
    for _ in range(3):
        left = _tagged(tag)
        if not left:
            return
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
    left = [p.pid for p in _tagged(tag)]
    if left:
        print(f"warning: Ray processes still running: {left}", file=sys.stderr)


def compare(runs: int, mb: int) -> dict:
    root = tempfile.mkdtemp(prefix="jcmp", dir="/tmp")
    try:
        load_before = os.getloadavg()
        zray = zray_side(runs, mb, root)
        print(f"zray: {zray}", file=sys.stderr, flush=True)
        load_between = os.getloadavg()
        ray = ray_side(runs, mb, root)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = {k: ray[k] / zray[k] for k in ("empty", "wd_first", "wd_cached")}
    return {"zray_3_hosts": zray, "ray_1_host": ray, "ray_over_zray": ratios,
            "loadavg": {"before": load_before, "between": load_between,
                        "after": load_after}}
