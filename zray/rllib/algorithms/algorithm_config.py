"""``AlgorithmConfig``: RLlib's fluent builder (``.environment()``,
``.env_runners()``, ``.training()``, ``.framework()``, ``.debugging()``,
``.evaluation()``, ``.reporting()``, ...) with Ray 2.x names and defaults, its
dict form (``to_dict``/``from_dict``, which also reads Ray 1.x keys such as
``num_workers`` or ``sgd_minibatch_size``), and ``build_algo()``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

logger = logging.getLogger(__name__)

#: Ray 1.x / old-API-stack keys -> the attribute they set now.
LEGACY_KEYS = {
    "num_workers": "num_env_runners", "num_rollout_workers": "num_env_runners",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "num_cpus_per_worker": "num_cpus_per_env_runner",
    "sgd_minibatch_size": "minibatch_size", "num_sgd_iter": "num_epochs",
    "lambda": "lambda_", "framework": "framework_str",
    "evaluation_num_workers": "evaluation_num_env_runners",
    "recreate_failed_workers": "restart_failed_env_runners",
    "recreate_failed_env_runners": "restart_failed_env_runners",
}
#: Attributes shown under another name in ``to_dict()`` (as Ray does).
_DICT_NAMES = {"lambda_": "lambda", "framework_str": "framework"}
_FRAMEWORKS = ("torch",)


class _NotProvided:
    def __repr__(self):
        return "NotProvided"


#: The default of every builder argument: "leave this setting as it is".
NotProvided = _NotProvided()


class AlgorithmConfig:
    """Settings of an RL algorithm; subclasses (``PPOConfig``) add their own."""

    def __init__(self, algo_class=None):
        self.algo_class = algo_class
        # environment
        self.env = None
        self.env_config: dict = {}
        self.clip_actions = False
        self.normalize_actions = True
        # env runners
        self.num_env_runners = 0
        self.num_envs_per_env_runner = 1
        self.num_cpus_per_env_runner = 1
        self.rollout_fragment_length = 200
        self.batch_mode = "truncate_episodes"
        self.explore = True
        self.restart_failed_env_runners = True
        # framework, learners, resources
        self.framework_str = "torch"
        self.num_learners = 0
        self.num_cpus_for_main_process = 1
        # training
        self.gamma = 0.99
        self.lr = 0.001
        self.grad_clip = None
        self.grad_clip_by = "global_norm"
        self.train_batch_size = 32
        self.train_batch_size_per_learner = None
        self.model: dict = {}
        # evaluation
        self.evaluation_interval = None
        self.evaluation_duration = 10
        self.evaluation_duration_unit = "episodes"
        self.evaluation_num_env_runners = 0
        self.evaluation_config: dict | None = None
        # reporting, debugging
        self.metrics_num_episodes_for_smoothing = 100
        self.min_sample_timesteps_per_iteration = 0
        self.min_time_s_per_iteration = None
        self.seed = None
        self.log_level = "WARN"
        self._frozen = False

    # -- the builder ------------------------------------------------------------------
    def _set(self, **values) -> "AlgorithmConfig":
        if self._frozen:
            raise AttributeError("this config is frozen (the algorithm built from it uses "
                                 "it): change a copy, config.copy(copy_frozen=False)")
        for name, value in values.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def environment(self, env=NotProvided, *, env_config=NotProvided,
                    observation_space=NotProvided, action_space=NotProvided,
                    clip_rewards=NotProvided, normalize_actions=NotProvided,
                    clip_actions=NotProvided, disable_env_checking=NotProvided,
                    **_ignored) -> "AlgorithmConfig":
        return self._set(env=env, env_config=env_config, clip_actions=clip_actions,
                         normalize_actions=normalize_actions)

    def env_runners(self, *, num_env_runners=NotProvided, num_envs_per_env_runner=NotProvided,
                    num_cpus_per_env_runner=NotProvided, rollout_fragment_length=NotProvided,
                    batch_mode=NotProvided, explore=NotProvided, **_ignored):
        if num_env_runners is not NotProvided and (
                not isinstance(num_env_runners, int) or num_env_runners < 0):
            raise ValueError(f"num_env_runners must be an int >= 0, got {num_env_runners!r}")
        return self._set(num_env_runners=num_env_runners,
                         num_envs_per_env_runner=num_envs_per_env_runner,
                         num_cpus_per_env_runner=num_cpus_per_env_runner,
                         rollout_fragment_length=rollout_fragment_length,
                         batch_mode=batch_mode, explore=explore)

    rollouts = env_runners         # the Ray 2.0-2.9 name

    def framework(self, framework=NotProvided, **_ignored) -> "AlgorithmConfig":
        if framework is not NotProvided and framework not in _FRAMEWORKS:
            if framework not in ("tf", "tf2", "tfe", "jax"):
                raise ValueError(f"unknown framework {framework!r}: use 'torch'")
            logger.warning("zray.rllib runs on torch only; framework=%r runs on torch",
                           framework)
            framework = "torch"
        return self._set(framework_str=framework)

    def training(self, *, gamma=NotProvided, lr=NotProvided, grad_clip=NotProvided,
                 grad_clip_by=NotProvided, train_batch_size=NotProvided,
                 train_batch_size_per_learner=NotProvided, model=NotProvided,
                 **unknown) -> "AlgorithmConfig":
        if unknown:
            raise TypeError(f"{type(self).__name__}.training() got unexpected keyword "
                            f"arguments {sorted(unknown)}")
        return self._set(gamma=gamma, lr=lr, grad_clip=grad_clip, grad_clip_by=grad_clip_by,
                         train_batch_size=train_batch_size,
                         train_batch_size_per_learner=train_batch_size_per_learner,
                         model=model)

    def rl_module(self, *, model_config=NotProvided, **_ignored) -> "AlgorithmConfig":
        if model_config is not NotProvided and dataclasses.is_dataclass(model_config):
            model_config = dataclasses.asdict(model_config)
        return self._set(model=model_config)

    def learners(self, *, num_learners=NotProvided, **_ignored) -> "AlgorithmConfig":
        if num_learners not in (NotProvided, 0):
            logger.warning("zray.rllib trains in the driver process (num_learners=0); "
                           "num_learners=%s is ignored", num_learners)
        return self

    def resources(self, *, num_cpus_for_main_process=NotProvided, **_ignored):
        return self._set(num_cpus_for_main_process=num_cpus_for_main_process)

    def api_stack(self, **_ignored) -> "AlgorithmConfig":
        return self                     # zray.rllib only has the new API stack

    def debugging(self, *, seed=NotProvided, log_level=NotProvided, **_ignored):
        return self._set(seed=seed, log_level=log_level)

    def fault_tolerance(self, *, restart_failed_env_runners=NotProvided, **_ignored):
        return self._set(restart_failed_env_runners=restart_failed_env_runners)

    def evaluation(self, *, evaluation_interval=NotProvided, evaluation_duration=NotProvided,
                   evaluation_duration_unit=NotProvided,
                   evaluation_num_env_runners=NotProvided, evaluation_config=NotProvided,
                   **_ignored) -> "AlgorithmConfig":
        if evaluation_duration_unit not in (NotProvided, "episodes", "timesteps"):
            raise ValueError("evaluation_duration_unit must be 'episodes' or 'timesteps'")
        return self._set(evaluation_interval=evaluation_interval,
                         evaluation_duration=evaluation_duration,
                         evaluation_duration_unit=evaluation_duration_unit,
                         evaluation_num_env_runners=evaluation_num_env_runners,
                         evaluation_config=evaluation_config)

    def reporting(self, *, metrics_num_episodes_for_smoothing=NotProvided,
                  min_sample_timesteps_per_iteration=NotProvided,
                  min_time_s_per_iteration=NotProvided, **_ignored) -> "AlgorithmConfig":
        return self._set(metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing,
                         min_sample_timesteps_per_iteration=min_sample_timesteps_per_iteration,
                         min_time_s_per_iteration=min_time_s_per_iteration)

    # -- derived values ---------------------------------------------------------------
    @property
    def framework_str_(self) -> str:
        return self.framework_str

    @property
    def total_train_batch_size(self) -> int:
        return int(self.train_batch_size_per_learner or self.train_batch_size)

    def get_rollout_fragment_length(self, worker_index: int = 0) -> int:
        """Steps per env per sample call; "auto" splits the train batch evenly."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = max(self.num_env_runners, 1) * self.num_envs_per_env_runner
        return max(1, math.ceil(self.total_train_batch_size / envs))

    def validate(self) -> None:
        if self.framework_str not in _FRAMEWORKS:
            raise ValueError(f"zray.rllib runs on torch only, not {self.framework_str!r}")
        if self.num_envs_per_env_runner < 1:
            raise ValueError("num_envs_per_env_runner must be >= 1")
        if self.env is None:
            raise ValueError("no environment: call config.environment('CartPole-v1') (a "
                             "gymnasium id, a name given to tune.register_env, or an env "
                             "class)")

    # -- dict form --------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {}
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            out[_DICT_NAMES.get(name, name)] = value
        return out

    def update_from_dict(self, config: dict) -> "AlgorithmConfig":
        for key, value in config.items():
            name = LEGACY_KEYS.get(key, key)
            if name == "framework_str":
                self.framework(value)
            elif name in vars(self) and not name.startswith("_"):
                self._set(**{name: value})
            elif name not in ("algo_class",):
                logger.warning("%s: unknown config key %r ignored", type(self).__name__, key)
        return self

    @classmethod
    def from_dict(cls, config: dict) -> "AlgorithmConfig":
        return cls().update_from_dict(config)

    def copy(self, copy_frozen: bool | None = None) -> "AlgorithmConfig":
        clone = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, (dict, list)):
                setattr(clone, name, copy.deepcopy(value))
        clone._frozen = self._frozen if copy_frozen is None else copy_frozen
        return clone

    def freeze(self) -> None:
        self._frozen = True

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    # dict-style reads, as RLlib allows (config["lr"])
    def __getitem__(self, key: str):
        return getattr(self, LEGACY_KEYS.get(key, key))

    def get(self, key: str, default=None):
        return getattr(self, LEGACY_KEYS.get(key, key), default)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, LEGACY_KEYS.get(key, key))

    # -- building ---------------------------------------------------------------------
    def build_algo(self, env=None, logger_creator=None, use_copy: bool = True):
        """The algorithm this config describes (``PPOConfig().build_algo()`` -> PPO)."""
        if self.algo_class is None:
            raise ValueError("this AlgorithmConfig names no algorithm: use PPOConfig()")
        config = self.copy(copy_frozen=False) if use_copy else self
        if env is not None:
            config.env = env
        return self.algo_class(config=config)

    build = build_algo

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.env!r}, lr={self.lr})"
