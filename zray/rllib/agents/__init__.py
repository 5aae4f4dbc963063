"""Ray 1.x's RLlib entry points (``ray.rllib.agents.ppo.PPOTrainer``), kept so
that programs of that era run; new code uses ``zray.rllib.algorithms``."""

import importlib


def __getattr__(name: str):
    if name == "ppo":                  # ray.rllib.agents.ppo.PPOTrainer after `import ray`
        value = importlib.import_module("zray.rllib.agents.ppo")
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zray.rllib.agents' has no attribute {name!r}")
