"""How the dashboard starts and stops: ``zray.init(include_dashboard=True)`` for a
local cluster, and ``zray start --head`` (stopped by ``zray stop``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import psutil
import pytest

import zray
from zray import dashboard
from tests.dashboard import request

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not dashboard.available(),
                                 reason="the dashboard extra (aiohttp) is not installed")]


def test_init_starts_and_stops_a_dashboard_for_a_local_cluster():
    context = zray.init(num_cpus=1, include_dashboard=True, dashboard_port=0)
    try:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", context.dashboard_url)
        [board] = [p for p in psutil.Process().children(recursive=True)
                   if "zray.dashboard" in " ".join(p.cmdline())]
        status, _, nodes = request("http://" + context.dashboard_url, "/api/nodes")
        assert status == 200 and len(nodes) == 1
    finally:
        zray.shutdown()
    assert not board.is_running() or board.status() == psutil.STATUS_ZOMBIE


def test_zray_start_head_starts_the_dashboard_and_stop_ends_it():
    temp_dir = tempfile.mkdtemp(prefix="zd", dir="/tmp")    # short: socket paths
    env = dict(os.environ, ZRAY_TEMP_DIR=str(temp_dir), ZRAY_INCLUDE_DASHBOARD="1")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "zray", *args], capture_output=True,
                              text=True, timeout=60, env=env)
    try:
        started = cli("start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1",
                      "--num-cpus", "1", "--dashboard-port", "0")
        assert started.returncode == 0, started.stderr
        url = re.search(r"Dashboard: +(http://\S+)", started.stdout).group(1)
        status, _, nodes = request(url, "/api/nodes")
        assert status == 200 and len(nodes) == 1
    finally:
        stopped = cli("stop")
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert "stopped 3 zray process(es)" in stopped.stdout, stopped.stdout + stopped.stderr
