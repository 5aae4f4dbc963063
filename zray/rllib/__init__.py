"""zray.rllib: the parts of RLlib's API (new API stack, Ray 2.x names) that PPO
needs, on zray actors.

    from zray.rllib.algorithms.ppo import PPOConfig
    algo = (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2).training(lr=3e-4).build_algo())
    result = algo.train()     # result["env_runners"]["episode_return_mean"]

Env runners are zray actors stepping gymnasium envs with a numpy copy of the
policy; the learner (torch) runs in the driver.  Ray 1.x's form,
``zray.rllib.agents.ppo.PPOTrainer(config={...}, env=...)``, works too.
See docs/rllib.md.  Importing this package loads neither torch nor gymnasium.
"""

import importlib

_API = {"Algorithm": "zray.rllib.algorithms.algorithm",
        "AlgorithmConfig": "zray.rllib.algorithms.algorithm_config"}
_SUBMODULES = ("agents", "algorithms", "core", "env", "utils")


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"zray.rllib.{name}")
    else:
        raise AttributeError(f"module 'zray.rllib' has no attribute {name!r}")
    globals()[name] = value
    return value
