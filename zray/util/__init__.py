"""Utilities built on zray's core API."""

from zray.util import state
from zray.util.actor_pool import ActorPool

__all__ = ["ActorPool", "state"]
