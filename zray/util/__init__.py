"""Utilities built on zray's core API."""

from zray.util import state
from zray.util.actor_pool import ActorPool
from zray.util.placement_group import (
    PlacementGroup, get_current_placement_group, get_placement_group, placement_group,
    placement_group_table, remove_placement_group,
)

__all__ = ["ActorPool", "state", "PlacementGroup", "placement_group",
           "remove_placement_group", "get_placement_group", "placement_group_table",
           "get_current_placement_group"]
