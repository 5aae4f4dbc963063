"""Which placement group a task or actor runs in, and what it then asks for.

Submitters call ``choose`` once per set of options: a group named by
``scheduling_strategy=PlacementGroupSchedulingStrategy(...)`` or by the older
``placement_group=`` options is checked against the group's bundles (Ray's
errors: a bundle index out of range, a request no bundle can hold) and the
request is renamed into the bundle's resources (``zray.resources.in_bundle``).
With neither, ``inherited`` is asked at each submission: a task or actor
running in a group that captures child tasks passes its group on.
"""

from __future__ import annotations

from zray.options import strategy_wire
from zray.resources import fits, in_bundle


def choose(resolved: dict, request: dict, what: str):
    """(wire strategy, resources, may inherit a group) for these options."""
    strategy = resolved.get("scheduling_strategy")
    group = resolved.get("placement_group", "default")
    index = resolved.get("placement_group_bundle_index", -1)
    capture = resolved.get("placement_group_capture_child_tasks")
    if hasattr(strategy, "placement_group_bundle_index"):
        if group not in (None, "default"):
            raise ValueError("Placement groups should be specified via the "
                             "scheduling_strategy option; the placement_group option is "
                             "deprecated and cannot be used with it.")
        group, index = strategy.placement_group, strategy.placement_group_bundle_index
        capture = strategy.placement_group_capture_child_tasks
    elif group in (None, "default"):
        if index != -1:
            raise ValueError("If placement group is not set, the value of bundle index "
                             "must be -1.")
        return strategy_wire(strategy), request, strategy is None and group == "default"
    elif strategy is not None:
        raise ValueError("Placement groups should be specified via the scheduling_strategy "
                         "option; it cannot be combined with another scheduling_strategy.")
    if group is None:
        return None, request, False
    return in_group(group.id, group.bundle_specs, index, bool(capture), request, what)


def in_group(pg_id: bytes, bundles: list, index: int, capture: bool, request: dict,
             what: str):
    if index < -1 or index >= len(bundles):
        raise ValueError(f"placement group bundle index {index} is invalid. Valid "
                         f"placement group indexes: 0-{len(bundles) - 1} (or -1: any)")
    candidates = bundles if index == -1 else [bundles[index]]
    if not any(fits(request, bundle) for bundle in candidates):
        raise ValueError(f"Cannot schedule {what} with the placement group because the "
                         f"resource request {request} cannot fit into any bundles for the "
                         f"placement group, {list(candidates)}.")
    wire = ("placement_group", bytes(pg_id), index, capture)
    return wire, in_bundle(request, bytes(pg_id).hex(), index), False


def current_group(runtime):
    """(pg_id, capture) of the task or actor this process runs, or None."""
    worker = getattr(runtime, "worker", None)
    if worker is None:
        return None
    actor = getattr(worker, "actor", None)
    spec = actor.spec if actor is not None else getattr(worker, "current_spec", None)
    strategy = getattr(spec, "strategy", None)
    if type(strategy) is tuple and strategy and strategy[0] == "placement_group":
        return strategy[1], strategy[3]
    return None


def inherited(runtime, request: dict):
    """(strategy, resources) for a child of a task that captures its children
    into its placement group, else None."""
    current = current_group(runtime)
    if current is None or not current[1]:
        return None
    pg_id = current[0]
    return ("placement_group", pg_id, -1, True), in_bundle(request, pg_id.hex(), -1)


__all__ = ["choose", "in_group", "current_group", "inherited"]
