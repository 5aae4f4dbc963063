"""The head dies under a TCP cluster: drivers and nodes notice within
Config.head_timeout_s and nothing of the cluster is left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.conftest import wait_for
from tests.integration.test_cli import temp_dir, zray_cli  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)

HEAD_TIMEOUT_S = 3.0

DRIVER = textwrap.dedent("""
    import json, sys, threading, time
    import zray

    address, out_dir = sys.argv[1], sys.argv[2]
    zray.init(address=address)

    @zray.remote
    def forever():
        time.sleep(3600)

    @zray.remote
    def one():
        return 1

    assert zray.get(one.remote()) == 1
    results = {}

    def record(name, call):
        try:
            call()
            results[name] = {"error": None}
        except BaseException as exc:
            results[name] = {"error": type(exc).__name__, "text": str(exc),
                             "at": time.time()}

    def submitting():
        open(out_dir + "/submitting", "w").close()
        while True:
            zray.put(b"x")
            one.remote()
            time.sleep(0.01)

    calls = {"get": lambda: zray.get(forever.remote()),
             "wait": lambda: zray.wait([forever.remote()]),
             "submit": submitting}
    threads = [threading.Thread(target=record, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    time.sleep(0.5)          # let get and wait block (the marker says submitting began)
    open(out_dir + "/ready", "w").close()
    for thread in threads:
        thread.join(60)
    record("get_after", lambda: zray.get(one.remote()))
    with open(out_dir + "/results.json", "w") as f:
        json.dump(results, f)
""")


def _pids(temp_dir, role):
    entries = json.loads((temp_dir / "started.json").read_text())
    return [e["pid"] for e in entries if e["role"] == role]


def test_head_death_fails_blocked_and_new_calls_and_stops_nodes(temp_dir, tmp_path):
    env = {"ZRAY_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S), "ZRAY_HEARTBEAT_INTERVAL_S": "0.5"}
    head = zray_cli("start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1",
                    "--num-cpus", "2", temp_dir=temp_dir, env=env)
    assert head.returncode == 0, head.stderr
    address = re.search(r"zray head started at (\S+)", head.stdout).group(1)
    joined = zray_cli("start", "--address", address, "--num-cpus", "1",
                      temp_dir=temp_dir, env=env)
    assert joined.returncode == 0, joined.stderr
    node_pids = _pids(temp_dir, "node")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    environ = dict(os.environ, ZRAY_TEMP_DIR=str(temp_dir), **env)
    driver = subprocess.Popen([sys.executable, str(script), address, str(tmp_path)],
                              env=environ)
    try:
        assert wait_for(lambda: (tmp_path / "ready").exists(), 30), "driver never got going"
        killed_at = time.time()
        os.kill(_pids(temp_dir, "head")[0], signal.SIGKILL)
        assert driver.wait(30) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("get", "wait", "submit", "get_after"):
        result = results[name]
        assert result["error"] == "RaySystemError", (name, result)
        assert address in result["text"] and "presumed dead" in result["text"], result
        if name != "get_after":
            assert result["at"] - killed_at < HEAD_TIMEOUT_S + 3, (name, result)
    # the node managers stop their workers and exit by themselves
    assert wait_for(lambda: not any(psutil.pid_exists(p) and
                                    psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                    for p in node_pids), HEAD_TIMEOUT_S + 10)
    stopped = zray_cli("stop", temp_dir=temp_dir)
    assert stopped.returncode == 0, stopped.stderr
