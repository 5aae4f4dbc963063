"""The many-host harness: real namespaces, processes and sockets.

Skipped where network namespaces cannot be made (not root, no iproute2, no
permission), with the reason `netns_harness.available()` gives.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools"))
import netns_harness  # noqa: E402
from netns_harness import NetnsHarness, echo_client_argv, echo_server_argv  # noqa: E402

AVAILABLE, REASON = netns_harness.available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

PORT = 7400
CONNECT_TIMEOUT_S = 1.5

# Holds one connection open and, per stdin line "TOKEN TIMEOUT_S", sends TOKEN and
# prints "echoed" once it comes back or "stalled" after TIMEOUT_S.
HOLDER = """
import socket, sys

conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
received = b""
for line in sys.stdin:
    token, timeout_s = line.split()
    conn.sendall(token.encode())
    conn.settimeout(float(timeout_s))
    try:
        while token.encode() not in received:
            received += conn.recv(4096)
        print("echoed", flush=True)
    except TimeoutError:
        print("stalled", flush=True)
"""

# Starts a sleeper in a session of its own, as a daemon would, and prints its pid.
DAEMONIZE = """
import subprocess, sys

sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                           start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(sleeper.pid)
"""

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def read_line(proc: subprocess.Popen, timeout_s: float = 10.0) -> str:
    """The next line ``proc`` prints, failing the test if none comes in time."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no output from pid {proc.pid} within {timeout_s}s"
    return proc.stdout.readline().strip()


def start_echo_server(harness: NetnsHarness, index: int) -> subprocess.Popen:
    server = harness.popen(index, echo_server_argv("0.0.0.0", PORT),
                           stdout=subprocess.PIPE, text=True)
    assert read_line(server) == "ready"
    return server


def echo(harness: NetnsHarness, index: int, ip: str) -> subprocess.CompletedProcess:
    """Ask host ``index`` to get a message echoed by ``ip:PORT``."""
    return harness.run(index, echo_client_argv(ip, PORT, CONNECT_TIMEOUT_S), timeout_s=10)


def send_token(holder: subprocess.Popen, token: str, timeout_s: float) -> str:
    holder.stdin.write(f"{token} {timeout_s}\n")
    holder.stdin.flush()
    return read_line(holder, timeout_s + 5)


def is_gone(pid: int) -> bool:
    """Exited; a zombie waiting for init to reap it counts as exited."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def netns_names() -> set:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


@pytest.mark.timeout(60)
def test_hosts_reach_each_other_by_ip_but_not_by_loopback():
    with NetnsHarness(n_hosts=3) as harness:
        ips = [host.ip for host in harness.hosts]
        assert len(set(ips)) == 3
        assert [host.index for host in harness.hosts] == [0, 1, 2]
        start_echo_server(harness, 0)
        for index in (1, 2):
            result = echo(harness, index, ips[0])
            assert result.returncode == 0, result.stderr
        assert echo(harness, 0, "127.0.0.1").returncode == 0
        for index in (1, 2):
            assert echo(harness, index, "127.0.0.1").returncode != 0


@pytest.mark.timeout(60)
def test_cut_host_is_unreachable_until_healed():
    with NetnsHarness(n_hosts=3) as harness:
        server_ip = harness.hosts[0].ip
        start_echo_server(harness, 0)
        holder = harness.popen(1, [sys.executable, "-c", HOLDER, server_ip, str(PORT)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert send_token(holder, "before-cut", 5) == "echoed"

        harness.cut(1)
        started = time.monotonic()
        assert echo(harness, 1, server_ip).returncode != 0
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1.5
        assert echo(harness, 2, server_ip).returncode == 0
        assert send_token(holder, "during-cut", 1) == "stalled"

        harness.heal(1)
        result = echo(harness, 1, server_ip)
        assert result.returncode == 0, result.stderr
        assert send_token(holder, "after-heal", 10) == "echoed"
        holder.stdin.close()


@pytest.mark.timeout(60)
def test_kill_signals_only_processes_inside_the_hosts():
    with NetnsHarness(n_hosts=1) as harness:
        sleeper = harness.popen(0, SLEEP)
        daemon_pid = int(harness.run(0, [sys.executable, "-c", DAEMONIZE]).stdout)
        with pytest.raises(ValueError):
            harness.kill(os.getpid())
        harness.kill(sleeper)
        harness.kill(daemon_pid)
        assert sleeper.wait(timeout=5) == -9
        assert wait_for(lambda: is_gone(daemon_pid), timeout_s=5)


@pytest.mark.timeout(60)
def test_close_removes_namespaces_and_processes_even_when_the_body_raises():
    with pytest.raises(RuntimeError, match="body failed"):
        with NetnsHarness(n_hosts=2) as harness:
            names = {host.netns for host in harness.hosts}
            assert all(harness.tag in name for name in names)
            sleepers = [harness.popen(index, SLEEP) for index in (0, 1)]
            daemon_pid = int(harness.run(1, [sys.executable, "-c", DAEMONIZE]).stdout)
            raise RuntimeError("body failed")

    assert not {name for name in netns_names() if harness.tag in name}
    assert all(sleeper.returncode is not None for sleeper in sleepers)
    assert is_gone(daemon_pid)
    harness.close()  # a second close is a no-op
    with pytest.raises(RuntimeError, match="closed"):
        harness.popen(0, SLEEP)
