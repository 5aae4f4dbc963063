"""Starting the dashboard process beside a head (no aiohttp needed here).

``zray start --head``, ``zray.init(include_dashboard=True)`` and
``cluster_utils.Cluster`` call ``start_dashboard``; it returns once the
dashboard listens (or raises with the end of its log), with its URL.
"""

from __future__ import annotations

import json
import os
import sys
import time

from zray._launch import ManagedProcess
from zray.dashboard import DEFAULT_HOST, DEFAULT_PORT, PORT_RETRIES, available
from zray.dashboard.auth import dashboard_token, is_loopback
from zray.exceptions import RaySystemError


class Dashboard:
    """A running dashboard process: its ``url``, ``host``, ``port`` and token."""

    def __init__(self, process: ManagedProcess, info: dict, token: str | None):
        self.process = process
        self.url = info["url"]
        self.host = info["host"]
        self.port = info["port"]
        self.token = token            # None when it listens on loopback (none needed)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        """HOST:PORT as Ray's ``dashboard_url`` (no scheme)."""
        return self.url.split("://", 1)[1]

    def stop(self, grace_s: float) -> None:
        self.process.stop(grace_s)


def missing_dependencies_message() -> str:
    return ("the dashboard needs its extra: pip install 'zray[dashboard]' (aiohttp); or "
            "start without it (include_dashboard=False, --no-include-dashboard)")


def start_dashboard(config, head_endpoint: str, session_dir: str, host: str | None = None,
                    port: int | None = None, head_pid: int | None = None) -> Dashboard:
    """Start a dashboard for the head at ``head_endpoint`` and wait until it
    listens.  ``port`` None: 8265, or the next free of the following 50 (as
    Ray); 0: any free port; else that port or an error."""
    if not available():
        raise RaySystemError(missing_dependencies_message())
    host = host or DEFAULT_HOST
    token = dashboard_token(config, session_dir)       # makes a keyless session's secret
    ready = os.path.join(session_dir, f"dashboard-{os.getpid()}-{os.urandom(3).hex()}.json")
    argv = [sys.executable, "-m", "zray.dashboard", "--head", head_endpoint,
            "--config", config.to_json(), "--session-dir", session_dir, "--host", host,
            "--port", str(DEFAULT_PORT if port is None else port),
            "--port-retries", str(PORT_RETRIES if port is None else 0),
            "--ready-file", ready]
    if head_pid:
        argv += ["--head-pid", str(head_pid)]
    process = ManagedProcess("dashboard", argv,
                             os.path.join(session_dir, "logs", "dashboard.out"))
    deadline = time.monotonic() + config.startup_timeout_s
    while not os.path.exists(ready):
        if process.popen.poll() is not None:
            raise RaySystemError(f"the dashboard did not start: {process.log_tail(4).strip()}"
                                 f" (its log: {process.log_path})")
        if time.monotonic() > deadline:
            process.stop(config.shutdown_grace_s)
            raise RaySystemError(f"the dashboard did not start in {config.startup_timeout_s:g}"
                                 f" s; see {process.log_path}")
        time.sleep(0.02)
    with open(ready) as f:
        info = json.load(f)
    os.unlink(ready)
    return Dashboard(process, info, None if is_loopback(host) else token)


def describe(dashboard: Dashboard) -> str:
    """What to tell the user who started it."""
    if dashboard.token is None:
        return f"View the dashboard at {dashboard.url}"
    return (f"View the dashboard at {dashboard.url} (listening on {dashboard.host}; from "
            f"other hosts use this host's address).\n  It asks for its token: "
            f"{dashboard.token}\n  (derived from the cluster key; `zray dashboard-token` "
            "prints it again)")


__all__ = ["Dashboard", "start_dashboard", "describe", "missing_dependencies_message"]
