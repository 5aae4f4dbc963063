"""PPO: ``PPOConfig`` (RLlib's defaults) and the ``PPO`` algorithm, whose
``training_step`` samples ``train_batch_size`` env steps on the env runners
(GAE computed there), then runs the learner's minibatch SGD here."""

from __future__ import annotations

import time

import numpy as np

from zray.rllib.algorithms.algorithm import Algorithm
from zray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided


class PPOConfig(AlgorithmConfig):
    """``PPOConfig().environment("CartPole-v1").training(lr=3e-4).build_algo()``."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or PPO)
        self.lr = 5e-5
        self.rollout_fragment_length = "auto"
        self.train_batch_size = 4000
        self.use_critic = True
        self.use_gae = True
        self.num_epochs = 30
        self.minibatch_size = 128
        self.shuffle_batch_per_epoch = True
        self.lambda_ = 1.0
        self.use_kl_loss = True
        self.kl_coeff = 0.2
        self.kl_target = 0.01
        self.vf_loss_coeff = 1.0
        self.entropy_coeff = 0.0
        self.clip_param = 0.3
        self.vf_clip_param = 10.0
        self.grad_clip = None
        self.num_env_runners = 2

    def training(self, *, use_critic=NotProvided, use_gae=NotProvided, lambda_=NotProvided,
                 use_kl_loss=NotProvided, kl_coeff=NotProvided, kl_target=NotProvided,
                 vf_loss_coeff=NotProvided, entropy_coeff=NotProvided,
                 clip_param=NotProvided, vf_clip_param=NotProvided, num_epochs=NotProvided,
                 minibatch_size=NotProvided, shuffle_batch_per_epoch=NotProvided,
                 num_sgd_iter=NotProvided, sgd_minibatch_size=NotProvided,
                 **kwargs) -> "PPOConfig":
        super().training(**kwargs)
        if not use_gae and use_gae is not NotProvided:
            raise ValueError("zray.rllib's PPO always uses GAE (use_gae=True); set "
                             "lambda_=1.0 for plain discounted returns minus the baseline")
        num_epochs = num_sgd_iter if num_epochs is NotProvided else num_epochs
        minibatch_size = sgd_minibatch_size if minibatch_size is NotProvided \
            else minibatch_size
        return self._set(use_critic=use_critic, use_gae=use_gae, lambda_=lambda_,
                         use_kl_loss=use_kl_loss, kl_coeff=kl_coeff, kl_target=kl_target,
                         vf_loss_coeff=vf_loss_coeff, entropy_coeff=entropy_coeff,
                         clip_param=clip_param, vf_clip_param=vf_clip_param,
                         num_epochs=num_epochs, minibatch_size=minibatch_size,
                         shuffle_batch_per_epoch=shuffle_batch_per_epoch)

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size > self.total_train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must be <= "
                             f"train_batch_size ({self.total_train_batch_size})")


class PPO(Algorithm):
    @classmethod
    def get_default_config(cls) -> PPOConfig:
        return PPOConfig(algo_class=cls)

    def _build_learner(self) -> None:
        import torch
        from zray.rllib.algorithms.ppo.ppo_learner import PPOTorchLearner
        from zray.rllib.core.rl_module import RLModule
        threads = int(self.config.num_cpus_for_main_process or 1)
        if torch.get_num_threads() > threads:
            torch.set_num_threads(threads)     # tiny MLPs: more threads only contend
        # seeded without touching the process's global generators (Tune, the
        # user's code): the runners and the learner have their own
        with torch.random.fork_rng(devices=[]):
            if self.config.seed is not None:
                torch.manual_seed(self.config.seed)
            self.module = RLModule(self.spec)
        self.learner = PPOTorchLearner(self.module, self.config)

    def _steps_per_env(self) -> int:
        """Steps each env takes per iteration: enough for ``train_batch_size`` in
        one call (Ray 1.x sampled several 200-step fragments instead; same data)."""
        config = self.config
        envs = max(config.num_env_runners, 1) * config.num_envs_per_env_runner
        return max(config.get_rollout_fragment_length(),
                   -(-config.total_train_batch_size // envs))

    def training_step(self) -> dict:
        started = time.perf_counter()
        weights = self.module.get_state()
        samples = self.env_runner_group.sample(weights, self._steps_per_env())
        sampled = time.perf_counter()
        batch = {key: np.concatenate([s["batch"][key] for s in samples])
                 for key in samples[0]["batch"]}
        episodes = [episode for s in samples for episode in s["episodes"]]
        env_steps = sum(s["env_steps"] for s in samples)
        self.metrics.add_episodes(episodes)
        self.metrics.lifetime["env_steps_sampled"] += env_steps
        learner_stats = self.learner.update(batch)
        trained = len(batch["obs"])
        self.metrics.lifetime["env_steps_trained"] += trained
        learned = time.perf_counter()
        return {"episodes": episodes, "env_steps": env_steps, "trained_steps": trained,
                "learner_stats": learner_stats,
                "timers": {"env_runner_sampling_timer": sampled - started,
                           "learner_update_timer": learned - sampled,
                           "training_step": learned - started}}
