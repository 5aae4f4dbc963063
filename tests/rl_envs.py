"""Environments for the zray.rllib tests (importable by env runner processes)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right to the end of a corridor of ``env_config["length"]`` cells:
    -0.1 a step, +1 at the end.  Discrete(2) actions (0: left, 1: right)."""

    def __init__(self, env_config=None):
        self.length = int((env_config or {}).get("length", 5))
        self.observation_space = gym.spaces.Box(0.0, self.length, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return np.array([self.position], np.float32), {}

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        done = self.position >= self.length
        return (np.array([self.position], np.float32), 1.0 if done else -0.1, done,
                False, {})


def pendulum(env_config):
    """A creator for tune.register_env: Pendulum-v1 with shorter episodes."""
    return gym.make("Pendulum-v1", max_episode_steps=int(env_config.get("max_steps", 100)))


class Exploding(Corridor):
    """A corridor whose step raises: a bug in the user's env."""

    def step(self, action):
        raise ValueError("the env exploded")
