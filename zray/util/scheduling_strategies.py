"""Scheduling strategies, with Ray's names."""

from __future__ import annotations


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``; if ``soft``, fall back to any node when it is
    gone or full."""

    def __init__(self, node_id, soft: bool, _spill_on_unavailable=False,
                 _fail_on_unavailable=False):
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"
