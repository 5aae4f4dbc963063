"""Small helpers shared by the head, node and worker process loops."""

from __future__ import annotations

import logging
import os
import signal
import sys

import zmq


def setup_logging(role: str, level: str, log_path: str | None = None) -> None:
    handler = logging.FileHandler(log_path) if log_path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {role}[%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def install_stop_handler(flag: dict) -> None:
    """SIGTERM/SIGINT set ``flag["stop"]``; the loop exits cleanly at its next turn."""
    def _stop(signum, frame):
        flag["stop"] = True
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def parent_alive(parent_pid: int | None) -> bool:
    return parent_pid is None or os.getppid() == parent_pid


def configure_socket(sock, config) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if config.max_message_bytes > 0:
        sock.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)


def bind_private(sock, address: str) -> str:
    """Bind; an ipc socket file is made owner-only.  Returns the bound endpoint."""
    sock.bind(address)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], 0o600)
    return endpoint
