"""A dashboard bound beyond loopback refuses requests without the cluster's token.

It is bound to every interface (0.0.0.0) and requested over 127.0.0.1 on
purpose: the rule follows the address the dashboard is bound to, never the
peer's, so a request from loopback to a dashboard that listens beyond it needs
the token as much as one from another host would (binding 127.0.0.2 would not
test it: that is a loopback address, and the code treats it as one).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zray import dashboard
from zray.cluster_utils import Cluster
from zray.dashboard.auth import dashboard_token
from tests.dashboard import request

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not dashboard.available(),
                                 reason="the dashboard extra (aiohttp) is not installed")]


@pytest.fixture(scope="module")
def open_board():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "0.0.0.0"})
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_a_dashboard_beyond_loopback_refuses_requests_without_the_token(open_board):
    cluster = open_board
    url = cluster.dashboard_url
    assert cluster.dashboard.host == "0.0.0.0"
    token = dashboard_token(cluster.config)
    assert cluster.dashboard.token == token
    for path in ("/api/nodes", "/api/tasks", "/api/logs", "/metrics", "/api/timeline"):
        status, headers, body = request(url, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert request(url, path, token="0" * 40)[0] == 401
        assert request(url, path, headers={"Cookie": "zray_dashboard_token=nope"})[0] == 401
    status, _, body = request(url, "/tasks")
    assert status == 401 and b'name="token"' in body and token.encode() not in body
    nodes = request(url, "/api/nodes", token=token)
    assert nodes[0] == 200 and len(nodes[2]) == 1
    assert request(url, "/static/app.css")[0] == 200          # the login page's style
    # the login form sets an HttpOnly cookie that then admits the browser
    status, headers, _ = request(url, "/login", data=f"token={token}&next=/tasks".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"] == "/tasks"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    pair = cookie.split(";", 1)[0]
    assert request(url, "/api/nodes", headers={"Cookie": pair})[0] == 200
    status, _, body = request(url, "/login", data=b"token=wrong&next=/",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and b"not this cluster" in body


def test_the_cli_prints_the_same_token(open_board):
    cluster = open_board
    env = dict(os.environ, ZRAY_TEMP_DIR=cluster.config.temp_dir)
    out = subprocess.run([sys.executable, "-m", "zray", "dashboard-token", "--address",
                          cluster.address], capture_output=True, text=True, timeout=30,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == dashboard_token(cluster.config)


