"""`zray start/stop/status` on one host: loopback, restarts on the same port,
owner-only files, cleanup after a crashed node, two heads in one temp dir."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys

import numpy as np
import psutil
import pytest

import zray
from tests.conftest import SHM_DIR, wait_for
from tests.integration.test_cli import temp_dir, zray_cli  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def outward_ip() -> str:
    from zray._process import route_ip
    return route_ip()


def start_head(temp_dir, *args):
    head = zray_cli("start", "--head", "--num-cpus", "1", *args, temp_dir=temp_dir)
    assert head.returncode == 0, head.stderr
    return re.search(r"zray head started at (\S+)", head.stdout).group(1)


@zray.remote
def where():
    return zray.get_runtime_context().get_node_id()


def test_head_answers_on_loopback_and_on_its_outward_address(temp_dir, monkeypatch):
    ip = outward_ip()
    if ip.startswith("127."):
        pytest.skip("this host has no address besides loopback")
    port = free_port()
    address = start_head(temp_dir, "--port", str(port), "--node-ip-address", ip)
    assert address == f"{ip}:{port}"
    for asked in (f"127.0.0.1:{port}", f"localhost:{port}", address):
        status = zray_cli("status", "--address", asked, temp_dir=temp_dir)
        assert status.returncode == 0, (asked, status.stderr)
        assert "1 node(s) alive" in status.stdout
    joined = zray_cli("start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                      "--resources", '{"joiner": 1}', temp_dir=temp_dir)
    assert joined.returncode == 0, joined.stderr
    monkeypatch.setenv("ZRAY_TEMP_DIR", str(temp_dir))
    for asked in (f"127.0.0.1:{port}", address):
        zray.init(address=asked)
        try:
            assert zray.get(where.options(resources={"joiner": 1}).remote())
            big = np.arange(2_000_000, dtype=np.int64)       # through the local store
            assert np.array_equal(zray.get(zray.put(big)), big)
        finally:
            zray.shutdown()


def test_bind_address_listens_on_one_interface_only(temp_dir):
    ip = outward_ip()
    if ip.startswith("127."):
        pytest.skip("this host has no address besides loopback")
    port = free_port()
    start_head(temp_dir, "--port", str(port), "--node-ip-address", ip,
               "--bind-address", ip)
    assert zray_cli("status", "--address", f"{ip}:{port}",
                    temp_dir=temp_dir).returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_head_restarts_on_the_same_port_after_a_refused_client(temp_dir):
    port = free_port()
    start_head(temp_dir, "--port", str(port), "--node-ip-address", "127.0.0.1")
    # a client with the wrong key is refused: the head closes first, which leaves
    # TIME-WAIT connections on its port
    import zmq
    from zmq.utils.monitor import recv_monitor_message
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    client.curve_publickey, client.curve_secretkey = zmq.curve_keypair()
    client.curve_serverkey = zmq.curve_keypair()[0]
    monitor = client.get_monitor_socket()
    client.connect(f"tcp://127.0.0.1:{port}")
    client.send(b"hello")
    closed = 0
    while closed < 2 and monitor.poll(10_000):
        event = recv_monitor_message(monitor)
        closed += event["event"] == zmq.EVENT_DISCONNECTED
    client.close(linger=0)
    monitor.close()
    ctx.term()
    assert zray_cli("stop", temp_dir=temp_dir).returncode == 0
    start_head(temp_dir, "--port", str(port), "--node-ip-address", "127.0.0.1")


def test_session_files_are_owner_only(temp_dir):
    start_head(temp_dir, "--port", "0", "--node-ip-address", "127.0.0.1")
    [entry] = [e for e in json.loads((temp_dir / "started.json").read_text())
               if e["role"] == "head"]
    session = entry["session_dir"]
    paths = [temp_dir / "started.json", session]
    for folder, dirs, files in os.walk(session):
        paths += [os.path.join(folder, name) for name in dirs + files]
    assert len(paths) > 5
    for path in paths:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:o}"


def test_stop_removes_the_segments_of_a_crashed_node(temp_dir, monkeypatch):
    address = start_head(temp_dir, "--port", "0", "--node-ip-address", "127.0.0.1")
    monkeypatch.setenv("ZRAY_TEMP_DIR", str(temp_dir))
    entries = json.loads((temp_dir / "started.json").read_text())
    [node] = [e for e in entries if e["role"] == "node"]
    script = (f"import zray, numpy as np\nzray.init(address={address!r})\n"
              "ref = zray.put(np.ones(4_000_000))\nzray.get(ref)\n"
              "import os; os._exit(0)\n")      # leaves the object in the store
    driver = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                            capture_output=True, text=True, timeout=60)
    assert driver.returncode == 0, driver.stderr

    def node_segments():
        return [n for n in os.listdir(SHM_DIR) if n.startswith("zray_" + node["node_id"][:16])
                and "_spare" not in n]
    assert wait_for(lambda: node_segments(), 10)
    os.kill(node["pid"], signal.SIGKILL)
    assert wait_for(lambda: not psutil.pid_exists(node["pid"]) or
                    psutil.Process(node["pid"]).status() == psutil.STATUS_ZOMBIE, 10)
    assert node_segments(), "the crashed node's segment should still be there"
    stopped = zray_cli("stop", temp_dir=temp_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert not node_segments()


def test_two_heads_in_one_temp_dir_are_named_not_picked(temp_dir):
    first = start_head(temp_dir, "--port", "0", "--node-ip-address", "127.0.0.1")
    second = start_head(temp_dir, "--port", "0", "--node-ip-address", "127.0.0.1")
    status = zray_cli("status", temp_dir=temp_dir)
    assert status.returncode != 0
    assert first in status.stderr and second in status.stderr and "--address" in status.stderr
    assert zray_cli("status", "--address", second, temp_dir=temp_dir).returncode == 0
