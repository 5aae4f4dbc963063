"""Ray's state API (``ray.util.state``): what the cluster holds, as lists of dicts.

Each call asks the head once; ``limit`` caps the rows.  The CLI's ``zray list``
prints the same rows.
"""

from __future__ import annotations

from zray import _runtime


def _ask(name: str, limit: int):
    return _runtime.client().query(name, {"limit": int(limit)})


def list_nodes(limit: int = 1000) -> list:
    return _runtime.client().query("nodes")[:limit]


def list_tasks(limit: int = 1000) -> list:
    return _ask("list_tasks", limit)


def list_actors(limit: int = 1000) -> list:
    return _ask("list_actors", limit)


def list_objects(limit: int = 1000) -> list:
    return _ask("list_objects", limit)
