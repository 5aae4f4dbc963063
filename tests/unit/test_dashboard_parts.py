"""The dashboard's socket-free parts: who may read it, the token, metrics parsing,
and the head's list of workers with output.  No processes, no sockets."""

from __future__ import annotations

import os

import pytest

from zray.config import Config
from zray.dashboard import auth
from zray.dashboard.reader import parse_metrics
from zray.head.logs import LogBuffer
from zray.security import create_key_file

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("my-host.example", False), ("", False)])
def test_is_loopback_follows_the_bound_address(host, loopback):
    assert auth.is_loopback(host) is loopback


@pytest.mark.parametrize("header,local", [
    ("127.0.0.1:8265", True), ("localhost:8265", True), ("LOCALHOST", True),
    ("[::1]:8265", True), ("app.localhost:1", True), (None, True),
    ("evil.example:8265", False), ("10.0.0.5:8265", False), ("127.0.0.1.evil.example", False)])
def test_host_header_check_refuses_rebound_names(header, local):
    assert auth.host_header_is_local(header) is local


def test_token_is_derived_from_the_cluster_key(tmp_path):
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    create_key_file(str(key_a))
    create_key_file(str(key_b))
    token_a = auth.dashboard_token(Config(cluster_key_file=str(key_a)))
    assert token_a == auth.dashboard_token(Config(cluster_key_file=str(key_a)))
    assert token_a != auth.dashboard_token(Config(cluster_key_file=str(key_b)))
    assert len(token_a) == 40 and token_a not in key_a.read_text()
    assert auth.token_matches(token_a, token_a)
    assert not auth.token_matches(token_a[:-1] + "0" if token_a[-1] != "0" else token_a[:-1] + "1",
                                  token_a)
    assert not auth.token_matches(None, token_a) and not auth.token_matches("", token_a)


def test_a_keyless_cluster_gets_a_session_secret(tmp_path):
    config = Config(insecure=True)
    token = auth.dashboard_token(config, str(tmp_path))
    secret = tmp_path / auth.SECRET_FILE
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"
    assert auth.dashboard_token(config, str(tmp_path)) == token
    other = tmp_path / "other"
    other.mkdir()
    assert auth.dashboard_token(config, str(other)) != token
    with pytest.raises(ValueError):
        auth.dashboard_token(config, None)


def test_bearer_header():
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("Basic abc") is None and auth.bearer(None) is None


def test_safe_target_stays_on_this_site():
    server = pytest.importorskip("zray.dashboard.server")
    assert server._safe_target("/tasks?state=FAILED") == "/tasks?state=FAILED"
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example/x",
                "javascript:alert(1)", "", None):
        assert server._safe_target(bad) == "/"


def test_parse_metrics_groups_samples_into_families():
    text = "\n".join([
        "# HELP zray_tasks task attempts by state", "# TYPE zray_tasks gauge",
        'zray_tasks{State="FINISHED"} 3', 'zray_tasks{State="FAILED"} 1',
        "# TYPE latency_s histogram", 'latency_s_bucket{le="0.1",route="a,b"} 2',
        "latency_s_sum 0.3", "latency_s_count 2", "zray_cluster_active_nodes 2", ""])
    families = {f["name"]: f for f in parse_metrics(text)}
    assert families["zray_tasks"]["type"] == "gauge"
    assert families["zray_tasks"]["help"] == "task attempts by state"
    assert [(s["labels"]["State"], s["value"]) for s in families["zray_tasks"]["samples"]] == \
        [("FINISHED", 3.0), ("FAILED", 1.0)]
    latency = families["latency_s"]["samples"]
    assert [s["name"] for s in latency] == ["latency_s_bucket", "latency_s_sum", "latency_s_count"]
    assert latency[0]["labels"] == {"le": "0.1", "route": "a,b"}
    assert families["zray_cluster_active_nodes"]["samples"][0]["value"] == 2.0


def test_log_sources_counts_chunks_per_worker():
    logs = LogBuffer(10)
    node = bytes(16)
    logs.add(node, 11, "stdout", "a\n", when=1.0)
    logs.add(node, 12, "stderr", "b\n", when=2.0)
    logs.add(node, 11, "stdout", "c\n", when=3.0)
    sources = {s["pid"]: s for s in logs.sources()}
    assert sources[11]["chunks"] == 2 and sources[11]["first_time"] == 1.0
    assert sources[11]["last_time"] == 3.0 and not sources[11]["stderr"]
    assert sources[12]["stderr"] and sources[12]["node_id"] == node.hex()
