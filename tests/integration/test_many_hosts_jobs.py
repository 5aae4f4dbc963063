"""Jobs and runtime_env across simulated hosts: network namespaces, the real
`zray start` CLI on each host, each host with its own temp dir (the hosts share
one filesystem, so a task proves its code was shipped by running it from under
its own host's temp dir).  Jobs are submitted with the real `zray job` CLI from
hosts other than the head's (tools/many_hosts.py)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
from many_hosts import ZrayHosts  # noqa: E402
from netns_harness import available  # noqa: E402
from tests.conftest import wait_for  # noqa: E402

AVAILABLE, REASON = available()
pytestmark = [pytest.mark.skipif(not AVAILABLE, reason=REASON), pytest.mark.timeout(180)]

#: The start of every job entrypoint here: join the cluster, list its nodes.
PRELUDE = """\
import importlib.util, json, os, sys, time
import zray
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
zray.init()
NODES = sorted(n["NodeID"] for n in zray.nodes() if n["Alive"])
assert len(NODES) == 3, NODES

def on(node):
    return NodeAffinitySchedulingStrategy(node, soft=False)

def node_id():
    return zray.get_runtime_context().get_node_id()
"""


@pytest.fixture(scope="module")
def cluster():
    with ZrayHosts(n_hosts=3, num_cpus=2) as hosts:
        yield hosts


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _submit(cluster, index, *args, timeout_s=150, env=None):
    """`zray job submit --address HEAD ARGS` on host ``index`` (following the logs)."""
    return cluster.cli(index, "job", "submit", "--address", cluster.address, *args,
                       timeout_s=timeout_s, env=env)


def _result(stdout: str):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT "):])


def _host_of(cluster, path: str) -> int:
    """Which host's temp dir ``path`` lies under."""
    owners = [h.index for h in cluster.hosts
              if path.startswith(cluster.temp_dir(h.index) + os.sep)]
    assert len(owners) == 1, (path, owners)
    return owners[0]


def _status(cluster, submission_id, index=1):
    out = cluster.cli(index, "job", "status", "--address", cluster.address, submission_id)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_init_working_dir_reaches_every_host(cluster, tmp_path):
    wd = tmp_path / "wd"
    _write(wd / "host_mod.py", "VALUE = 'shipped'\n")
    body = f"zray.shutdown()\nzray.init(address=os.environ['ZRAY_TEST_HEAD'], " \
           f"runtime_env={{'working_dir': {str(wd)!r}}})\n" + """
from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
@zray.remote
def where():
    import host_mod
    return host_mod.VALUE, os.getcwd(), zray.get_runtime_context().get_node_id()
nodes = [n["NodeID"] for n in zray.nodes() if n["Alive"]]
print(json.dumps([zray.get(where.options(scheduling_strategy=On(n, soft=False)).remote())
                  for n in nodes]))
"""
    seen = json.loads(cluster.run_driver(1, body).strip().splitlines()[-1])
    assert {value for value, _, _ in seen} == {"shipped"}
    assert len({node for _, _, node in seen}) == 3
    assert sorted(_host_of(cluster, cwd) for _, cwd, _ in seen) == [0, 1, 2]


def test_job_working_dir_py_modules_and_env_vars_on_every_host(cluster, tmp_path):
    wd, mods = tmp_path / "wd", tmp_path / "mods"
    _write(wd / "wd_only.py", "VALUE = 'from the working_dir'\n")
    _write(mods / "shipped_pkg" / "__init__.py", "VALUE = 'from py_modules'\n")
    _write(wd / "main.py", PRELUDE + """
import wd_only, shipped_pkg
@zray.remote
def probe():
    import wd_only, shipped_pkg
    return [wd_only.VALUE, shipped_pkg.VALUE, os.environ.get("JOB_FLAVOUR"), os.getcwd(),
            shipped_pkg.__file__, node_id()]
print("entrypoint sees", os.environ["JOB_FLAVOUR"], wd_only.VALUE, shipped_pkg.VALUE)
print("RESULT " + json.dumps(zray.get([probe.options(scheduling_strategy=on(n)).remote()
                                       for n in NODES])))
""")
    env = {"py_modules": [str(mods / "shipped_pkg")], "env_vars": {"JOB_FLAVOUR": "mint"}}
    done = _submit(cluster, 2, "--working-dir", str(wd), "--runtime-env-json",
                   json.dumps(env), "--submission-id", "everywhere", "--", "python main.py")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "entrypoint sees mint from the working_dir from py_modules" in done.stdout
    rows = _result(done.stdout)
    assert len({row[5] for row in rows}) == 3
    for wd_value, pkg_value, flavour, cwd, pkg_file, _ in rows:
        assert (wd_value, pkg_value, flavour) == ("from the working_dir", "from py_modules",
                                                  "mint")
        assert _host_of(cluster, cwd) == _host_of(cluster, pkg_file)  # its own copies
    assert sorted(_host_of(cluster, row[3]) for row in rows) == [0, 1, 2]
    assert "SUCCEEDED" in _status(cluster, "everywhere")


def _pip_dirs(cluster) -> dict:
    """host -> [(path, inode)] of the pip environments in its node cache."""
    found = {}
    for host in cluster.hosts:
        pattern = os.path.join(cluster.temp_dir(host.index), "session_*",
                               "runtime_resources", "node-*", "pip-*")
        found[host.index] = sorted((p, os.stat(p).st_ino)
                                   for p in glob.glob(pattern) if os.path.isdir(p))
    return found


def _download_small_package(dest) -> str:
    """A small pure-Python wheel from the package registry this machine reaches (the
    hosts' namespaces have no route out, so pip on each host installs it from this
    folder, as a cluster with a local mirror would)."""
    errors = []
    for requirement in ("inflection==0.5.1", "text-unidecode==1.3", "termcolor"):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(dest), requirement],
            capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return requirement.split("==")[0]
        errors.append(f"{requirement}: {done.stderr.strip().splitlines()[-1:]}")
    pytest.skip("no small pure-Python package could be downloaded from the package "
                f"registry here: {errors}")


def test_pip_installs_once_per_node_and_the_next_job_reuses_it(cluster, tmp_path):
    wheels = tmp_path / "wheels"
    package = _download_small_package(wheels)
    module = package.replace("-", "_")
    if importlib_available(module):
        pytest.skip(f"{module} is installed on this machine: it would not prove the install")
    _write(tmp_path / "main.py", PRELUDE + f"""
import {module}
@zray.remote
def probe():
    import {module}
    return [{module}.__file__, node_id()]
print("RESULT " + json.dumps(zray.get([probe.options(scheduling_strategy=on(n)).remote()
                                       for n in NODES])))
""")
    env = json.dumps({"pip": ["--no-index", "--find-links", str(wheels), package]})
    timings, rows = [], []
    for attempt in range(2):
        started = time.monotonic()
        done = _submit(cluster, 1, "--runtime-env-json", env, "--submission-id",
                       f"pip-{attempt}", "--", f"python {tmp_path / 'main.py'}")
        timings.append(time.monotonic() - started)
        assert done.returncode == 0, (done.stdout, done.stderr)
        rows.append(_result(done.stdout))
        if attempt == 0:
            installed = _pip_dirs(cluster)
    print(f"\npip runtime_env ({package}) on 3 hosts, `zray job submit` to the end: "
          f"first job {timings[0]:.2f} s (installs on each node), second job "
          f"{timings[1]:.2f} s (reuses them)")
    for files in rows:
        assert len({node for _, node in files}) == 3
        assert sorted(_host_of(cluster, path) for path, _ in files) == [0, 1, 2]
    assert sorted(path for path, _ in rows[0]) == sorted(path for path, _ in rows[1])
    assert all(len(dirs) == 1 for dirs in installed.values()), installed  # one per node
    assert _pip_dirs(cluster) == installed                     # not installed again
    assert timings[1] < timings[0]


def importlib_available(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


TWO_ENVS = PRELUDE + """
import which
MARK = os.environ["MARK_DIR"]
other = "two" if which.NAME == "one" else "one"
open(os.path.join(MARK, "started-" + which.NAME), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(MARK, "started-" + other)):     # both at once
    assert time.monotonic() < deadline, "the other job never started"
    time.sleep(0.05)

@zray.remote
def probe(other):
    import importlib.util, same_name, which
    return [which.NAME, same_name.VALUE, importlib.util.find_spec("only_" + other) is None,
            node_id()]
rows = []
for _ in range(3):
    rows += zray.get([probe.options(scheduling_strategy=on(n)).remote(other)
                      for n in NODES])
print("RESULT " + json.dumps(rows))
"""


def test_two_jobs_with_different_environments_at_once_do_not_mix(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = {}
    for index, name in ((1, "one"), (2, "two")):
        wd = tmp_path / name
        _write(wd / "which.py", f"NAME = {name!r}\n")
        _write(wd / "same_name.py", f"VALUE = 'value of {name}'\n")
        _write(wd / f"only_{name}.py", "X = 1\n")
        _write(wd / "main.py", TWO_ENVS)
        env = json.dumps({"env_vars": {"MARK_DIR": str(marks)}})
        procs[name] = cluster.cli(index, "job", "submit", "--address", cluster.address,
                                  "--working-dir", str(wd), "--runtime-env-json", env,
                                  "--submission-id", f"env-{name}", "--", "python main.py",
                                  popen=True)
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=150)
        assert proc.returncode == 0, (name, stdout, stderr)
        rows = _result(stdout)
        assert len({row[3] for row in rows}) == 3
        assert all(row[:3] == [name, f"value of {name}", True] for row in rows), rows


STOPPABLE = PRELUDE + """
MARK = os.environ["MARK_DIR"]

def mark(kind, where=None):
    open(os.path.join(MARK, f"{kind}-{where or node_id()}-{os.getpid()}"), "w").close()

@zray.remote(num_cpus=1)
def hold():
    mark("task")
    time.sleep(600)

@zray.remote(num_cpus=0)
class Holder:
    def __init__(self):
        mark("actor")

    def ready(self):
        return True

actors = [Holder.options(scheduling_strategy=on(n)).remote() for n in NODES]
zray.get([a.ready.remote() for a in actors])
tasks = [hold.options(scheduling_strategy=on(n)).remote() for n in NODES]
mark("driver", "entrypoint")
print("holding", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_leaves_no_process_of_the_job_on_any_host(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    _write(tmp_path / "hold.py", STOPPABLE)
    env = json.dumps({"env_vars": {"MARK_DIR": str(marks)}})
    done = _submit(cluster, 1, "--no-wait", "--runtime-env-json", env, "--submission-id",
                   "to-stop", "--", f"python {tmp_path / 'hold.py'}")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: len(os.listdir(marks)) == 7, 60), \
        (os.listdir(marks), _status(cluster, "to-stop"))
    recorded = [name.split("-") for name in os.listdir(marks)]   # kind, node, pid
    assert {node for kind, node, _ in recorded if kind == "task"} == \
        {node for kind, node, _ in recorded if kind == "actor"}
    assert len({node for _, node, _ in recorded}) == 4     # 3 nodes + the driver's
    pids = {int(pid): (kind, node) for kind, node, pid in recorded}
    assert not any(_gone(pid) for pid in pids)
    stopped = cluster.cli(2, "job", "stop", "--address", cluster.address, "to-stop")
    assert stopped.returncode == 0 and "is being stopped" in stopped.stdout, stopped.stderr
    assert wait_for(lambda: "STOPPED" in _status(cluster, "to-stop"), 30)
    for pid, what in pids.items():
        assert wait_for(lambda: _gone(pid), 15), f"{what} (pid {pid}) outlived the stop"


def test_a_client_without_the_key_is_refused_and_logged(cluster, tmp_path):
    from zray.security import create_key_file
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    create_key_file(str(other / "cluster.key"))
    wrong = cluster.cli(2, "job", "list", "--address", cluster.address,
                        env={"ZRAY_CLUSTER_KEY_FILE": str(other / "cluster.key"),
                             "ZRAY_STARTUP_TIMEOUT_S": "3"})
    assert wrong.returncode == 1, (wrong.stdout, wrong.stderr)
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    assert "cluster key that is not the head's" in wrong.stderr and not wrong.stdout
    assert wait_for(lambda: f"refused a connection from {cluster.hosts[2].ip}" in
                    cluster.head_log(), 15), cluster.head_log()[-2000:]
    # a host that never had the key (no node, no record): refused before connecting
    outsider = tmp_path / "outsider"
    outsider.mkdir(mode=0o700)
    nokey = cluster.cli(2, "job", "submit", "--address", cluster.address, "--", "touch",
                        str(tmp_path / "must-not-run"),
                        env={"ZRAY_CLUSTER_KEY_FILE": None, "ZRAY_TEMP_DIR": str(outsider)})
    assert nokey.returncode == 1 and "needs its key file" in nokey.stderr, nokey.stderr
    assert len(nokey.stderr.strip().splitlines()) == 1
    time.sleep(1.0)
    assert not (tmp_path / "must-not-run").exists()


def test_a_failing_entrypoint_is_failed_with_its_output(cluster):
    done = _submit(cluster, 1, "--submission-id", "fails", "--",
                   "python -c \"import sys; print('partial output', flush=True); "
                   "sys.exit(7)\"")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "partial output" in done.stdout and "Job 'fails' failed" in done.stdout
    status = _status(cluster, "fails", index=2)
    assert "Status for job 'fails': FAILED" in status
    assert "exit code 7" in status and "partial output" in status
