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


class PlacementGroupSchedulingStrategy:
    """Run in a placement group: in bundle ``placement_group_bundle_index``, or in
    any bundle with room when it is -1; with ``placement_group_capture_child_tasks``
    the tasks and actors this one starts run in the group too (unless they say
    otherwise)."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks=None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self):
        return (f"PlacementGroupSchedulingStrategy(placement_group={self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index}, "
                f"placement_group_capture_child_tasks="
                f"{self.placement_group_capture_child_tasks})")
