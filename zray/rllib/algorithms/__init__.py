"""RLlib's algorithms: ``Algorithm``, ``AlgorithmConfig`` and PPO."""

from zray.rllib.algorithms.algorithm import Algorithm
from zray.rllib.algorithms.algorithm_config import AlgorithmConfig
from zray.rllib.algorithms.ppo import PPO, PPOConfig

__all__ = ["Algorithm", "AlgorithmConfig", "PPO", "PPOConfig"]
