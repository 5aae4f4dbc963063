"""The web dashboard: a process beside the head that serves pages and a JSON API.

    browser ──HTTP──► dashboard process (aiohttp) ──QUERY (zray._admin)──► head

It reads the cluster only through the state API (``zray.util.state``,
``zray.timeline``) and the head's read-only queries, like the CLI, so it
costs the head nothing while nobody looks, and no page can run code or
submit work.  It is an optional extra (``pip install 'zray[dashboard]'``);
``available()`` says whether its dependencies are installed.

Started by ``zray start --head`` (``--include-dashboard``, ``--dashboard-host``,
``--dashboard-port``), ``zray.init(include_dashboard=True)`` and
``cluster_utils.Cluster(head_node_args={"include_dashboard": True})``; see
``zray/dashboard/launch.py``.  Security (loopback by default, a token derived
from the cluster key otherwise): ``zray/dashboard/auth.py`` and docs/security.md.
"""

from __future__ import annotations

import importlib.util

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8265           # Ray's
#: ports tried after DEFAULT_PORT when no port was asked for and it is taken (as Ray)
PORT_RETRIES = 50


def available() -> bool:
    """Whether the dashboard's dependencies (aiohttp) are installed."""
    return importlib.util.find_spec("aiohttp") is not None


__all__ = ["available", "DEFAULT_HOST", "DEFAULT_PORT", "PORT_RETRIES"]
