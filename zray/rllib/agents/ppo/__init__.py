"""Ray 1.x's PPO: ``PPOTrainer(config={...}, env=...)`` and ``DEFAULT_CONFIG``
(Ray 1.x's key names: ``num_workers``, ``sgd_minibatch_size``, ``num_sgd_iter``,
``lambda``, ...; they map onto ``PPOConfig``)."""

from __future__ import annotations

import copy

from zray.rllib.algorithms.ppo import PPO, PPOConfig

#: Ray 1.x's PPO defaults (framework: torch, the only one zray.rllib runs).
DEFAULT_CONFIG = {
    "env": None, "env_config": {}, "framework": "torch", "seed": None,
    "num_workers": 2, "num_envs_per_worker": 1, "num_cpus_per_worker": 1,
    "rollout_fragment_length": 200, "batch_mode": "truncate_episodes",
    "train_batch_size": 4000, "sgd_minibatch_size": 128, "num_sgd_iter": 30,
    "shuffle_sequences": True, "lr": 5e-5, "gamma": 0.99, "lambda": 1.0,
    "use_critic": True, "use_gae": True, "kl_coeff": 0.2, "kl_target": 0.01,
    "clip_param": 0.3, "vf_clip_param": 10.0, "vf_loss_coeff": 1.0,
    "entropy_coeff": 0.0, "grad_clip": None, "explore": True,
    "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh",
              "vf_share_layers": False},
    "evaluation_interval": None, "evaluation_duration": 10,
    "evaluation_config": {}, "evaluation_num_workers": 0,
    "metrics_num_episodes_for_smoothing": 100,
}
_DROPPED = {"shuffle_sequences"}


class PPOTrainer(PPO):
    """``PPOTrainer(config={"num_workers": 2, "lr": ...}, env="CartPole-v1")``."""

    @classmethod
    def get_default_config(cls) -> PPOConfig:
        config = PPOConfig(algo_class=cls)
        config.update_from_dict({k: v for k, v in DEFAULT_CONFIG.items()
                                 if k not in _DROPPED and k != "env"})
        return config

    @classmethod
    def _as_config(cls, config):
        if isinstance(config, dict):
            config = {k: v for k, v in config.items() if k not in _DROPPED}
        return super()._as_config(copy.copy(config))

    def compute_action(self, observation, state=None, *, explore=None, **kwargs):
        """Ray 1.x's name for ``compute_single_action``."""
        return self.compute_single_action(observation, state, explore=explore, **kwargs)


__all__ = ["DEFAULT_CONFIG", "PPOTrainer"]
