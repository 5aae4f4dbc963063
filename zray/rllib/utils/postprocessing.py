"""Generalized advantage estimation over time-major arrays ``(T, num_envs)``.

``next_values[t]`` is the value the step bootstraps from: V(s_{t+1}) inside an
episode, V(final observation) when the episode was truncated (time limit),
0 when it terminated.  ``boundaries[t]`` cuts the lambda-recursion: the end of
an episode, or the last step of a fragment (whose next value already
bootstraps).
"""

from __future__ import annotations

import numpy as np


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                boundaries: np.ndarray, gamma: float, lambda_: float) -> tuple:
    """(advantages, value_targets), both shaped like ``rewards``."""
    rewards = np.asarray(rewards, np.float32)
    deltas = rewards + gamma * np.asarray(next_values, np.float32) - values
    carry = 1.0 - np.asarray(boundaries, np.float32)
    advantages = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1:], np.float32)
    for t in range(len(rewards) - 1, -1, -1):
        running = deltas[t] + gamma * lambda_ * carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def next_values_of(values: np.ndarray, last_values: np.ndarray,
                   terminated: np.ndarray, truncated: np.ndarray,
                   truncated_values: np.ndarray) -> tuple:
    """(next_values, boundaries) for a fragment of T steps.

    ``values[t]``: V(s_t); ``last_values``: V of the observation after the
    last step; ``truncated_values[t]``: V(final obs) where ``truncated[t]``."""
    next_values = np.concatenate([values[1:], last_values[None]], axis=0)
    next_values = np.where(truncated, truncated_values, next_values)
    next_values = np.where(terminated, 0.0, next_values).astype(np.float32)
    boundaries = np.logical_or(terminated, truncated)
    boundaries[-1] = True
    return next_values, boundaries
