"""Placement groups (Ray's ``ray.util.placement_group``): bundles of resources
reserved together across the cluster, all or nothing, for tasks and actors
that must run side by side (PACK, STRICT_PACK) or apart (SPREAD, STRICT_SPREAD).

The head places and keeps the bundles (``zray.head.placement``); this module
asks it with CREATE_PLACEMENT_GROUP / REMOVE_PLACEMENT_GROUP and reads its
table with queries.  See docs/placement_groups.md.
"""

from __future__ import annotations

import time

from zray import _placement, _runtime, ids
from zray.protocol import Msg

VALID_PLACEMENT_GROUP_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupID(bytes):
    """A placement group's id: 16 bytes, with Ray's ``hex()`` and ``binary()``."""

    def binary(self) -> bytes:
        return bytes(self)

    def __repr__(self):
        return f"PlacementGroupID({self.hex()})"


class PlacementGroup:
    """A handle to a placement group; it pickles, so tasks can be given one."""

    def __init__(self, id, bundle_cache=None):
        self.id = PlacementGroupID(id)
        self.bundle_cache = bundle_cache

    @property
    def bundle_specs(self) -> list:
        """The bundles, as given to ``placement_group``."""
        if self.bundle_cache is None:
            row = _runtime.client().query("placement_group_table", bytes(self.id))
            self.bundle_cache = [dict(b) for _, b in sorted((row or {}).get(
                "bundles", {}).items())]
        return self.bundle_cache

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self):
        """An ObjectRef that resolves (to this group) once every bundle is reserved:
        a zero-CPU task that runs in the group."""
        from zray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        global _ready_check
        if _ready_check is None:
            from zray.remote_function import RemoteFunction
            _ready_check = RemoteFunction(_bundle_reservation_check,
                                          {"num_cpus": 0, "max_retries": -1})
        return _ready_check.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            self, -1, False)).remote(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """True once the group is CREATED, False if it is not within the timeout."""
        deadline = time.monotonic() + timeout_seconds
        client = _runtime.client()
        while True:
            row = client.query("placement_group_table", bytes(self.id))
            if (row or {}).get("state") == "CREATED":
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(bytes(self.id))

    def __repr__(self):
        return f"PlacementGroup(id={self.id.hex()})"


_ready_check = None      # the remote function ready() runs, made on first use


def _bundle_reservation_check(placement_group):
    return placement_group


def placement_group(bundles: list, strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, _max_cpu_fraction_per_node=None,
                    _soft_target_node_id=None, bundle_label_selector=None) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts, e.g. ``{"CPU": 1, "GPU": 1}``)
    by ``strategy``; returns at once, with the group PENDING until every bundle
    has a node (see ``ready()`` and ``wait()``)."""
    _check(bundles, strategy, lifetime, name)
    client = _runtime.client()
    pg_id = ids.new_task_id()
    wire = [{k: float(v) for k, v in bundle.items()} for bundle in bundles]
    try:
        client.request(Msg.CREATE_PLACEMENT_GROUP, (pg_id, wire, strategy, name or "",
                                                    lifetime))
    except Exception as exc:
        if "already exists" in str(exc) or "Bundle" in str(exc):
            raise ValueError(str(exc)) from None
        raise
    return PlacementGroup(pg_id, wire)


def _check(bundles, strategy, lifetime, name) -> None:
    if strategy not in VALID_PLACEMENT_GROUP_STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}. Supported "
                         f"strategies are: {list(VALID_PLACEMENT_GROUP_STRATEGIES)}.")
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("The placement group `bundles` argument must be a non-empty list "
                         f"of resource dicts, got {bundles!r}.")
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle or \
                not any(isinstance(v, (int, float)) and v > 0 for v in bundle.values()):
            raise ValueError("Bundles cannot be an empty dictionary or resources with only "
                             f"0 values. Bundles: {list(bundles)}")
        for key, value in bundle.items():
            if not isinstance(key, str) or not isinstance(value, (int, float)) \
                    or isinstance(value, bool) or value < 0:
                raise ValueError(f"Bundle resources must map names to non-negative "
                                 f"numbers, got {bundle}.")
    if lifetime not in (None, "detached"):
        raise ValueError("Placement group `lifetime` argument must be either `None` or "
                         f"'detached'. Got {lifetime!r}.")
    if not isinstance(name, str):
        raise TypeError(f"The placement group `name` must be a str, got {name!r}.")


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Free the group's bundles; its actors are killed and its tasks cancelled."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group needs a PlacementGroup, got "
                        f"{placement_group!r}")
    _runtime.client().request(Msg.REMOVE_PLACEMENT_GROUP, (bytes(placement_group.id),))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The group of this name in the caller's namespace (ValueError if none)."""
    if not placement_group_name:
        raise ValueError("Please supply a non-empty value to get_placement_group")
    runtime = _runtime.runtime()
    client = runtime.client
    found = client.query("get_placement_group",
                         (placement_group_name, runtime.namespace, client.job_id))
    if found is None:
        raise ValueError(f"Failed to look up placement group with name: "
                         f"{placement_group_name}")
    pg_id, bundles = found
    return PlacementGroup(pg_id, [dict(b) for b in bundles])


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """One group's state (Ray's keys: placement_group_id, name, bundles,
    bundles_to_node_id, strategy, state, stats), or every group's by id hex."""
    client = _runtime.client()
    if placement_group is None:
        return client.query("placement_group_table", None)
    return client.query("placement_group_table", bytes(placement_group.id))


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling task or actor runs in; None in a driver or outside
    any group."""
    runtime = _runtime.get_runtime()
    if runtime is None:
        return None
    current = _placement.current_group(runtime)
    return PlacementGroup(current[0]) if current is not None else None


__all__ = ["PlacementGroup", "PlacementGroupID", "placement_group",
           "remove_placement_group", "get_placement_group", "placement_group_table",
           "get_current_placement_group", "VALID_PLACEMENT_GROUP_STRATEGIES"]
