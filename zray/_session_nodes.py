"""Which nodes a session ran, for cleaning up after crashed ones (``zray stop``).

A leaf module (no zray imports): a node writes its entry at start without
loading the launcher (zray._launch), which it has no other use for."""

from __future__ import annotations

import os


def record_node(session_dir: str, node_id_hex: str) -> None:
    """Note that a node of this id ran from ``session_dir`` (a node that rejoins
    gets a new id, so the entry `zray start` made is not enough)."""
    folder = os.path.join(session_dir, "nodes")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.close(os.open(os.path.join(folder, node_id_hex), os.O_CREAT | os.O_WRONLY, 0o600))


def session_node_ids(session_dir: str) -> list:
    try:
        names = os.listdir(os.path.join(session_dir, "nodes"))
    except OSError:
        return []
    return [n for n in names if len(n) == 32 and all(c in "0123456789abcdef" for c in n)]
