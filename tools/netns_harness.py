"""Simulated hosts for many-host tests: one Linux network namespace per host.

Each host gets its own namespace, loopback and IPv4 address; a bridge in a
namespace of its own joins them, so the root namespace is never touched:

    zr<tag>h0  eth0 10.a.b.1/24 ==veth== h0 --+
    zr<tag>h1  eth0 10.a.b.2/24 ==veth== h1 --+-- br0    (namespace zr<tag>br)
    zr<tag>h2  eth0 10.a.b.3/24 ==veth== h2 --+

``cut(i)`` sets the bridge end ``h<i>`` down: packets to and from host i then
vanish, as with a pulled cable, while host i keeps its address and routes, so
programs see timeouts rather than "network unreachable". ``heal(i)`` sets it up
again. Every process started through the harness, and anything those processes
leave running inside its namespaces, is stopped by ``close()``.

Needs root and iproute2. Run ``python tools/netns_harness.py selftest`` to
check a machine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

IP = shutil.which("ip") or "ip"
NETNS_DIR = "/run/netns"
BRIDGE = "br0"
HOST_LINK = "eth0"
MAX_HOSTS = 254  # .1 to .254 of one /24
KILL_WAIT_S = 5.0
POLL_S = 0.02


class NetnsError(RuntimeError):
    """An `ip` command failed while building or changing the simulated network."""


@dataclass(frozen=True)
class Host:
    """One simulated host: its position, namespace name and address."""

    index: int
    netns: str
    ip: str


def available() -> tuple[bool, str]:
    """Whether namespaces, veth pairs and bridges can be made here, and if not why
    (a reason fit for ``pytest.skip``)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return False, "the `ip` tool (iproute2) is not installed"
    probe = f"zr{new_tag()}probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "name", "veth0", "type", "veth", "peer", "name", "veth1")
        _ip("-n", probe, "link", "add", "name", BRIDGE, "type", "bridge")
    except NetnsError as error:
        return False, f"cannot build a namespace network here: {error}"
    finally:
        subprocess.run([IP, "netns", "del", probe], capture_output=True, check=False)
    return True, "network namespaces work"


def new_tag() -> str:
    """Five random hex characters that keep concurrent or leftover runs apart."""
    return os.urandom(3).hex()[:5]


def _ip(*args: str) -> str:
    """Run ``ip ARGS`` and return its output; raise NetnsError with its stderr on failure."""
    result = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


class NetnsHarness:
    """N simulated hosts on one bridge; a context manager that removes all it made.

    ``with NetnsHarness(n_hosts=3) as h: h.popen(0, [...])``
    """

    def __init__(self, n_hosts: int = 3):
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise ValueError(f"n_hosts must be between 1 and {MAX_HOSTS}, got {n_hosts}")
        self.tag = new_tag()
        octets = os.urandom(2)
        self.subnet = f"10.{octets[0]}.{octets[1]}.0/24"
        self.hosts = [
            Host(i, f"zr{self.tag}h{i}", f"10.{octets[0]}.{octets[1]}.{i + 1}")
            for i in range(n_hosts)
        ]
        self._bridge_netns = f"zr{self.tag}br"
        self._made_netns: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> NetnsHarness:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- building -----------------------------------------------------------

    def _build(self) -> None:
        self._add_netns(self._bridge_netns)
        _ip("-n", self._bridge_netns, "link", "add", "name", BRIDGE, "type", "bridge")
        _ip("-n", self._bridge_netns, "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._add_host(host)

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made_netns.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_host(self, host: Host) -> None:
        """Make the host's namespace and wire its eth0 to the bridge.

        The default route lets programs that find their own address by
        "connecting" a UDP socket to a public IP (as Ray does) get ``host.ip``.
        """
        self._add_netns(host.netns)
        port = _bridge_port(host)
        _ip("-n", self._bridge_netns, "link", "add", "name", port, "type", "veth",
            "peer", "name", HOST_LINK, "netns", host.netns)
        _ip("-n", self._bridge_netns, "link", "set", port, "master", BRIDGE, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", HOST_LINK)
        _ip("-n", host.netns, "link", "set", HOST_LINK, "up")
        _ip("-n", host.netns, "route", "add", "default", "dev", HOST_LINK)

    # -- processes ----------------------------------------------------------

    def popen(self, index: int, argv: list[str], env: dict | None = None,
              **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside host ``index``; the Popen's pid is the command's own
        (``ip netns exec`` execs it). ``env`` and other keywords go to Popen as is."""
        self._check_open()
        proc = subprocess.Popen(self._exec_argv(index, argv), env=env, **popen_kwargs)
        self._procs.append(proc)
        return proc

    def run(self, index: int, argv: list[str], timeout_s: float = 30.0,
            env: dict | None = None, **run_kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` inside host ``index`` to completion, capturing its output as text."""
        self._check_open()
        return subprocess.run(self._exec_argv(index, argv), env=env, timeout=timeout_s,
                              capture_output=True, text=True, check=False, **run_kwargs)

    def kill(self, target: subprocess.Popen | int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a process this harness started or that lives in its namespaces.

        Does not wait; refuses any other pid, so a reused pid is never hit.
        """
        if isinstance(target, subprocess.Popen):
            target.send_signal(sig)
        elif target in self._pids_in_netns():
            os.kill(target, sig)
        else:
            raise ValueError(f"pid {target} is not running inside this harness's hosts")

    def _exec_argv(self, index: int, argv: list[str]) -> list[str]:
        return [IP, "netns", "exec", self.hosts[index].netns, *argv]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"netns harness {self.tag} is closed")

    # -- faults -------------------------------------------------------------

    def cut(self, index: int) -> None:
        """Disconnect host ``index`` from the others; its traffic is dropped both ways."""
        _ip("-n", self._bridge_netns, "link", "set", _bridge_port(self.hosts[index]), "down")

    def heal(self, index: int) -> None:
        """Reconnect host ``index``; TCP connections stalled by ``cut`` resume.

        ARP lookups that failed during the cut leave neighbour entries that make
        new connections fail at once with "No route to host" for seconds after
        the link is back, so those entries are flushed on both sides.
        """
        healed = self.hosts[index]
        _ip("-n", self._bridge_netns, "link", "set", _bridge_port(healed), "up")
        _ip("-n", healed.netns, "neigh", "flush", "dev", HOST_LINK)
        for host in self.hosts:
            if host is not healed:
                _ip("-n", host.netns, "neigh", "flush", "to", healed.ip)

    # -- teardown -----------------------------------------------------------

    def close(self, grace_s: float = 2.0) -> None:
        """Stop every process in the hosts (SIGTERM, then SIGKILL after ``grace_s``)
        and delete the namespaces. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._stop_processes(grace_s)
        finally:
            self._delete_netns()

    def _stop_processes(self, grace_s: float) -> None:
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
            for pid in self._live_pids():
                _signal_quietly(pid, sig)
            if self._wait_until_no_process(wait_s):
                return
        raise NetnsError(f"processes outlived SIGKILL in harness {self.tag}: "
                         f"{sorted(self._live_pids())}")

    def _wait_until_no_process(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._live_pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _live_pids(self) -> set[int]:
        """Started processes not yet reaped, plus anything else in our namespaces
        (such as daemons those processes spawned)."""
        started = {proc.pid for proc in self._procs if proc.poll() is None}
        return started | self._pids_in_netns()

    def _pids_in_netns(self) -> set[int]:
        """Pids whose network namespace is one of ours (what `ip netns pids` does)."""
        ours = set()
        for name in self._made_netns:
            try:
                stat = os.stat(os.path.join(NETNS_DIR, name))
            except FileNotFoundError:
                continue
            ours.add((stat.st_dev, stat.st_ino))
        pids = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = os.stat(f"/proc/{entry}/ns/net")
            except OSError:  # exited, or a zombie
                continue
            if (stat.st_dev, stat.st_ino) in ours:
                pids.add(int(entry))
        return pids

    def _delete_netns(self) -> None:
        """Delete our namespaces (their veth ends go with them); report any that stay."""
        failures = []
        for name in reversed(self._made_netns):
            try:
                _ip("netns", "del", name)
            except NetnsError as error:
                failures.append(str(error))
        self._made_netns.clear()
        if failures:
            raise NetnsError("; ".join(failures))


def _bridge_port(host: Host) -> str:
    return f"h{host.index}"


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- self-check ---------------------------------------------------------------

ECHO_SERVER = """
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
server = socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), Echo)
print("ready", flush=True)
server.serve_forever()
"""

ECHO_CLIENT = """
import socket, sys

with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as conn:
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
"""


def echo_server_argv(bind_ip: str, port: int) -> list[str]:
    """A command that echoes TCP on ``bind_ip:port`` and prints "ready" once listening."""
    return [sys.executable, "-c", ECHO_SERVER, bind_ip, str(port)]


def echo_client_argv(ip: str, port: int, timeout_s: float) -> list[str]:
    """A command that exits 0 only if ``ip:port`` echoes a message within ``timeout_s``."""
    return [sys.executable, "-c", ECHO_CLIENT, ip, str(port), str(timeout_s)]


def _selftest() -> int:
    ok, reason = available()
    if not ok:
        print(f"skipped: {reason}")
        return 0
    port = 7400
    with NetnsHarness(n_hosts=3) as harness:
        print(f"harness {harness.tag}: subnet {harness.subnet}")
        for host in harness.hosts:
            print(f"  host {host.index}: netns {host.netns}, ip {host.ip}")
        server = harness.popen(0, echo_server_argv("0.0.0.0", port),
                               stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        server_ip = harness.hosts[0].ip

        def reachable(index: int) -> bool:
            result = harness.run(index, echo_client_argv(server_ip, port, 1.5))
            return result.returncode == 0

        checks = [("host 1 reaches host 0", reachable(1), True),
                  ("host 2 reaches host 0", reachable(2), True)]
        harness.cut(1)
        checks += [("cut host 1 reaches host 0", reachable(1), False),
                   ("host 2 reaches host 0 during the cut", reachable(2), True)]
        harness.heal(1)
        checks += [("healed host 1 reaches host 0", reachable(1), True)]
        names = [host.netns for host in harness.hosts]
    leftover = set(names) & set(_ip("netns", "list").split())
    checks += [("server stopped", server.poll() is not None, True),
               ("namespaces deleted", not leftover, True)]
    for what, got, want in checks:
        print(f"{'ok  ' if got == want else 'FAIL'} {what}: {got}")
    return 0 if all(got == want for _, got, want in checks) else 1


if __name__ == "__main__":
    if sys.argv[1:] != ["selftest"]:
        sys.exit(f"usage: {sys.argv[0]} selftest")
    sys.exit(_selftest())
