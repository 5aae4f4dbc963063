"""The `zray` command line, run as a real subprocess against real processes."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

import zray

pytestmark = pytest.mark.timeout(90)


def zray_cli(*args, temp_dir=None, timeout_s=60, env=None):
    environ = dict(os.environ, **(env or {}))
    if temp_dir is not None:
        environ["ZRAY_TEMP_DIR"] = str(temp_dir)
    return subprocess.run([sys.executable, "-m", "zray", *args], capture_output=True,
                          text=True, timeout=timeout_s, env=environ)


@pytest.fixture
def temp_dir():
    path = pathlib.Path(tempfile.mkdtemp(prefix="zc", dir="/tmp"))  # short: socket paths
    yield path
    zray_cli("stop", "--grace-s", "5", temp_dir=path)      # whatever a test left
    shutil.rmtree(path, ignore_errors=True)


@zray.remote
def node_id():
    return zray.get_runtime_context().get_node_id()


def test_start_status_list_connect_stop_round_trip(temp_dir, monkeypatch):
    head = zray_cli("start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1",
                    "--num-cpus", "1", temp_dir=temp_dir)
    assert head.returncode == 0, head.stderr
    address = re.search(r"zray head started at (\S+)", head.stdout).group(1)
    assert f"zray start --address {address}" in head.stdout

    joined = zray_cli("start", "--address", address, "--num-cpus", "1",
                      "--resources", '{"joiner": 1}', temp_dir=temp_dir)
    assert joined.returncode == 0, joined.stderr
    assert "joined the head" in joined.stdout

    status = zray_cli("status", temp_dir=temp_dir)          # finds the cluster here
    assert status.returncode == 0, status.stderr
    assert "2 node(s) alive" in status.stdout
    assert re.search(r"CPU\s+0 / 2", status.stdout)

    listed = zray_cli("list", "nodes", "--format", "json", "--address", address,
                      temp_dir=temp_dir)
    assert listed.returncode == 0, listed.stderr
    nodes = json.loads(listed.stdout)
    assert len(nodes) == 2 and all(n["Alive"] for n in nodes)

    monkeypatch.setenv("ZRAY_TEMP_DIR", str(temp_dir))
    zray.init(address="auto")
    try:
        joiner = [n["NodeID"] for n in nodes if n["Resources"].get("joiner")][0]
        assert zray.get(node_id.options(resources={"joiner": 1}).remote()) == joiner
        ref = zray.put(b"x" * 1000)
        memory = zray_cli("memory", "--address", address, temp_dir=temp_dir)
        assert memory.returncode == 0 and ref.hex() in memory.stdout
    finally:
        zray.shutdown()

    stopped = zray_cli("stop", temp_dir=temp_dir)
    assert stopped.returncode == 0 and "stopped 3 zray process(es)" in stopped.stdout
    assert json.loads((temp_dir / "started.json").read_text()) == []
    again = zray_cli("status", temp_dir=temp_dir)
    assert again.returncode == 1 and "no cluster started on this host" in again.stderr


def _one_line_error(result, code=1):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_bad_input_gets_one_line_errors(temp_dir):
    line = _one_line_error(zray_cli("start", "--head", "--resources", "{oops",
                                    temp_dir=temp_dir), code=2)
    assert "not JSON" in line and "accelerator" in line
    line = _one_line_error(zray_cli("start", "--head", "--resources", '{"x": -1}',
                                    temp_dir=temp_dir), code=2)
    assert "non-negative" in line
    line = _one_line_error(zray_cli("start", temp_dir=temp_dir))
    assert "--head" in line and "--address" in line
    line = _one_line_error(zray_cli("start", "--address", "127.0.0.1:1", temp_dir=temp_dir))
    assert "cannot reach a zray head at 127.0.0.1:1" in line
    line = _one_line_error(zray_cli("start", "--address", "nonsense", temp_dir=temp_dir))
    assert "HOST:PORT" in line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line_error(zray_cli("start", "--head", "--port", str(port),
                                        "--node-ip-address", "127.0.0.1",
                                        temp_dir=temp_dir))
    assert f":{port}" in line and "--port" in line
    assert "nothing to stop" in zray_cli("stop", temp_dir=temp_dir).stdout


def test_options_read_environment_variables(temp_dir):
    result = zray_cli("start", "--head", temp_dir=temp_dir,
                      env={"ZRAY_RESOURCES": "[1, 2]"})
    line = _one_line_error(result, code=2)
    assert "JSON object" in line
    help_text = zray_cli("start", "--help").stdout
    for var in ("ZRAY_PORT", "ZRAY_NUM_CPUS", "ZRAY_RESOURCES", "ZRAY_ADDRESS",
                "ZRAY_NODE_IP_ADDRESS", "ZRAY_OBJECT_STORE_MEMORY"):
        assert var in help_text


def test_microbenchmark_command_runs_the_tool():
    result = zray_cli("microbenchmark", "--only", "put_small", "--quick", timeout_s=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "put_small" in result.stdout and "puts/s" in result.stdout


#: Every workload BENCHMARKS.md defines (the shared spec lives outside the repo).
SPEC_WORKLOADS = (
    "tasks_sync", "tasks_async", "tasks_async_ref_arg", "actor_calls_sync",
    "actor_calls_async", "actor_calls_2actors_async", "put_small", "get_small",
    "put_large", "get_large_from_task", "task_large_arg", "wait_1000", "nested_fanout",
    "map_reduce", "init_time", "idle_rss", "transfer_100mb_cross_node")


def test_microbenchmark_defines_every_spec_workload():
    listing = subprocess.run(
        [sys.executable, "tools/microbenchmark.py", "--only", "no_such_workload"],
        cwd=pathlib.Path(__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=60)
    known = listing.stderr.rsplit("known:", 1)[-1]
    missing = [name for name in SPEC_WORKLOADS if name not in known.replace(",", " ").split()]
    assert not missing, f"tools/microbenchmark.py lost workloads: {missing}"
