"""Environments: how envs are made (``EnvContext``, registered creators) and
the env runners that step them."""

from zray.rllib.env.env_context import EnvContext

__all__ = ["EnvContext"]
