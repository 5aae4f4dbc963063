"""The head's buffer of recent worker output, for ``zray logs`` (socket-free).

Workers send what they print as ``LOG_LINES`` through the head to their job's
driver; the head also keeps the last ``Config.log_buffer_lines`` chunks here
(each a tuple: sequence number, wall time, node id, pid, stream, text), so that
``zray logs`` can read any worker's output from any host, through the cluster.
Output printed while no job was connected, or before this head started, is
not here; nor is what a worker wrote past ``sys.stdout``/``sys.stderr``.
"""

from __future__ import annotations

import collections
import time

SEQ, TIME, NODE, PID, STREAM, TEXT = range(6)


class LogBuffer:
    def __init__(self, max_chunks: int):
        self.chunks = collections.deque(maxlen=max(1, int(max_chunks)))
        self.next_seq = 0

    def add(self, node_id, pid, stream, text, when=None) -> None:
        self.chunks.append((self.next_seq, time.time() if when is None else when,
                            node_id.hex() if node_id else None, pid, stream, text))
        self.next_seq += 1

    def read(self, node_id=None, pid=None, since_seq=0, tail=None, start=None, end=None):
        """Chunks matching every given filter, oldest first: ``tail`` keeps the last
        ones; ``start``/``end`` bound their wall time.  Returns (chunks, next_seq)."""
        out = []
        for chunk in self.chunks:
            if chunk[SEQ] < since_seq or node_id and chunk[NODE] != node_id \
                    or pid is not None and chunk[PID] != pid \
                    or start is not None and chunk[TIME] < start \
                    or end is not None and chunk[TIME] > end:
                continue
            out.append(chunk)
        if tail is not None:
            out = out[-tail:] if tail > 0 else []
        return out, self.next_seq

    def sources(self) -> list:
        """One row per (node, pid) with output kept: its chunk count, first and
        last wall time, and whether it wrote to stderr; oldest first."""
        found = {}
        for chunk in self.chunks:
            key = (chunk[NODE], chunk[PID])
            row = found.get(key)
            if row is None:
                row = found[key] = {"node_id": chunk[NODE], "pid": chunk[PID], "chunks": 0,
                                    "first_time": chunk[TIME], "stderr": False}
            row["chunks"] += 1
            row["last_time"] = chunk[TIME]
            row["stderr"] = row["stderr"] or chunk[STREAM] == "stderr"
        return list(found.values())


__all__ = ["LogBuffer"]
