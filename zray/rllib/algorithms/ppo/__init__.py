"""Proximal Policy Optimization: ``PPOConfig`` and ``PPO``."""

from zray.rllib.algorithms.ppo.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig"]
