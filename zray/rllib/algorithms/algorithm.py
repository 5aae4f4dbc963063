"""``Algorithm``: an RL algorithm as a Tune trainable (RLlib's base class).

    Algorithm.train()                              (driver process)
      └ training_step()  (PPO: sample on the env runner actors, learn here)
      └ evaluate() every ``evaluation_interval`` iterations
    save_to_path / restore_from_path / from_checkpoint: one directory holding
    ``rllib_checkpoint.json`` and ``algorithm_state.pkl`` (config, weights,
    optimizer, KL coefficient, counters).

``algo.save()`` returns the checkpoint directory as a ``str`` that also has
``.checkpoint`` (a ``zray.train.Checkpoint``), so both Ray 1.x code
(``path = algo.save()``) and Ray 2.x code (``algo.save().checkpoint.path``) work.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import cloudpickle
import numpy as np

from zray.rllib.algorithms._results import MetricsTracker, evaluation_result, training_result
from zray.rllib.algorithms.algorithm_config import AlgorithmConfig
from zray.rllib.core import DEFAULT_MODULE_ID
from zray.rllib.core.model_spec import model_spec
from zray.rllib.env.env_context import EnvMaker
from zray.rllib.env.env_runner_group import EnvRunnerGroup
from zray.train._checkpoint import Checkpoint
from zray.tune._trainable import PlacementGroupFactory, Trainable

STATE_FILE = "algorithm_state.pkl"
METADATA_FILE = "rllib_checkpoint.json"


class SavedPath(str):
    """A checkpoint directory (a str, as Ray 1.x returned) with Ray 2.x's
    ``.checkpoint`` attribute."""

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(str(self))


class Algorithm(Trainable):
    """Subclasses set ``get_default_config()`` and ``training_step()``."""

    def __init__(self, config=None, env=None, logger_creator=None, **kwargs):
        algo_config = self._as_config(config)
        if env is not None:
            algo_config.env = env
        super().__init__(config=algo_config, **kwargs)

    @classmethod
    def get_default_config(cls) -> AlgorithmConfig:
        return AlgorithmConfig(algo_class=cls)

    @classmethod
    def _as_config(cls, config) -> AlgorithmConfig:
        if isinstance(config, AlgorithmConfig):
            return config.copy(copy_frozen=False)
        if config is None or isinstance(config, dict):
            return cls.get_default_config().update_from_dict(config or {})
        raise TypeError(f"{cls.__name__}(config=...) takes an AlgorithmConfig or a dict, "
                        f"got {type(config).__name__}")

    @classmethod
    def default_resource_request(cls, config) -> PlacementGroupFactory:
        """One bundle for the driver's learner, one per env runner (as RLlib asks Tune)."""
        config = cls._as_config(config)
        runners = [{"CPU": config.num_cpus_per_env_runner}] * config.num_env_runners
        return PlacementGroupFactory([{"CPU": config.num_cpus_for_main_process}, *runners])

    # -- Trainable --------------------------------------------------------------------
    def setup(self, config: AlgorithmConfig) -> None:
        config.validate()
        config.freeze()
        self.config = config
        self.env_maker = EnvMaker(config.env, config.env_config)
        probe = self.env_maker(0, config.num_env_runners, 0)
        try:
            self.spec = model_spec(probe.observation_space, probe.action_space, config.model)
        finally:
            probe.close()
        self.metrics = MetricsTracker(config.metrics_num_episodes_for_smoothing)
        self._build_learner()
        self.env_runner_group = EnvRunnerGroup(self.env_maker, self.spec, config)
        self._evaluation_runners = None
        self._results_dir = None
        self._time_total_s = 0.0

    def _build_learner(self) -> None:
        raise NotImplementedError("an Algorithm subclass builds its module and learner")

    def training_step(self) -> dict:
        raise NotImplementedError("an Algorithm subclass defines training_step()")

    def step(self) -> dict:
        """``training_step()`` until ``min_sample_timesteps_per_iteration`` env steps
        and ``min_time_s_per_iteration`` seconds are reached (once by default)."""
        config, started = self.config, time.perf_counter()
        measured = self.training_step()
        while (measured["env_steps"] < (config.min_sample_timesteps_per_iteration or 0)
               or time.perf_counter() - started < (config.min_time_s_per_iteration or 0)):
            measured = _merge_steps(measured, self.training_step())
        return training_result(self.metrics, measured,
                               self.env_runner_group.num_healthy_env_runners,
                               self.env_runner_group.num_restarts)

    def train(self) -> dict:
        started = time.time()
        result = super().train()
        interval = self.config.evaluation_interval
        if interval and self.iteration % interval == 0:
            result["evaluation"] = self.evaluate()
        took = time.time() - started
        self._time_total_s += took
        result["timers"]["training_iteration"] = took
        result.update(training_iteration=self.iteration, time_this_iter_s=took,
                      time_total_s=self._time_total_s, timestamp=int(time.time()),
                      done=False)
        return result

    def cleanup(self) -> None:
        group = getattr(self, "env_runner_group", None)
        if group is not None:
            group.stop()
        if getattr(self, "_evaluation_runners", None) is not None:
            self._evaluation_runners.stop()

    @property
    def workers(self) -> EnvRunnerGroup:
        """The old API stack's name for ``env_runner_group``."""
        return self.env_runner_group

    # -- the module -------------------------------------------------------------------
    def get_module(self, module_id: str = DEFAULT_MODULE_ID):
        """The RLModule the learner trains (a torch ``nn.Module``)."""
        if module_id != DEFAULT_MODULE_ID:
            raise KeyError(f"no module {module_id!r}: single-agent algorithms have only "
                           f"{DEFAULT_MODULE_ID!r}")
        return self.module

    def get_weights(self, policies=None) -> dict:
        return {DEFAULT_MODULE_ID: self.module.get_state()}

    def set_weights(self, weights: dict) -> None:
        self.module.set_state(weights[DEFAULT_MODULE_ID])

    def compute_single_action(self, observation=None, state=None, *, explore=None,
                              policy_id: str = DEFAULT_MODULE_ID, **_ignored):
        """The action for one observation (the old API stack's call, kept)."""
        import torch
        explore = self.config.explore if explore is None else explore
        obs = torch.as_tensor(np.asarray(observation, np.float32)[None])
        module = self.get_module(policy_id)
        with torch.no_grad():
            inputs = module.forward_inference({"obs": obs})["action_dist_inputs"]
        dist = module.get_inference_action_dist_cls().from_logits(inputs)
        action = (dist.sample() if explore else dist.to_deterministic().sample())[0].numpy()
        if self.spec.discrete:
            return int(action)
        return np.clip(action, self.spec.action_low, self.spec.action_high).astype(np.float32)

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Run ``evaluation_duration`` episodes (or timesteps) with the current
        weights, on ``evaluation_num_env_runners`` actors (0: in this process);
        ``{"env_runners": {"episode_return_mean": ...}}``."""
        config = self.config
        if self._evaluation_runners is None:
            self._evaluation_runners = EnvRunnerGroup(
                self.env_maker, self.spec, config,
                num_runners=config.evaluation_num_env_runners, seed_offset=7_777)
        group = self._evaluation_runners
        explore = (config.evaluation_config or {}).get("explore", config.explore)
        weights = self.module.get_state()
        if config.evaluation_duration_unit == "timesteps":
            envs = max(group.num_runners, 1) * config.num_envs_per_env_runner
            steps = -(-int(config.evaluation_duration) // envs)
            sampled = group.sample(weights, steps, explore)
            return evaluation_result([e for s in sampled for e in s["episodes"]],
                                     sum(s["env_steps"] for s in sampled))
        shares = group.sample_episodes(weights, int(config.evaluation_duration), explore)
        episodes = [episode for share in shares for episode in share]
        return evaluation_result(episodes, sum(length for _, length in episodes))

    # -- checkpoints ------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"config": self.config.to_dict(), "iteration": self.iteration,
                "time_total_s": self._time_total_s, "metrics": self.metrics.get_state(),
                "learner": self.learner.get_state()}

    def set_state(self, state: dict) -> None:
        self.learner.set_state(state["learner"])
        self.metrics = MetricsTracker(self.config.metrics_num_episodes_for_smoothing)
        self.metrics.set_state(state["metrics"])
        self._iteration = state["iteration"]
        self._time_total_s = state["time_total_s"]

    def save_to_path(self, path=None, **_ignored) -> str:
        """Write a checkpoint to ``path`` (a new temporary directory when None)."""
        path = os.path.abspath(os.fspath(path)) if path is not None else tempfile.mkdtemp(
            prefix="zray_rllib_checkpoint_")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, STATE_FILE), "wb") as f:
            cloudpickle.dump({"algo_class": type(self), "state": self.get_state()}, f)
        with open(os.path.join(path, METADATA_FILE), "w") as f:
            json.dump({"type": "Algorithm", "checkpoint_version": "2.1",
                       "format": "cloudpickle", "state_file": STATE_FILE}, f)
        return path

    def restore_from_path(self, path, **_ignored) -> None:
        self.set_state(_read_state(path)["state"])

    @classmethod
    def from_checkpoint(cls, path, **_ignored) -> "Algorithm":
        """A new algorithm built from the config stored in ``path``, with its state."""
        saved = _read_state(path)
        algo_class = saved["algo_class"]
        algo = algo_class(config=saved["state"]["config"])
        algo.set_state(saved["state"])
        return algo

    def save(self, checkpoint_dir=None, **_ignored) -> SavedPath:
        """Write a checkpoint to ``checkpoint_dir``, by default (as Ray 1.x did)
        ``~/zray_results/<Algo>_<env>_<date>/checkpoint_<iteration>``."""
        if checkpoint_dir is None:
            if self._results_dir is None:
                env = str(self.env_maker.name).replace(os.sep, "_")
                self._results_dir = os.path.join(os.path.expanduser("~/zray_results"), (
                    f"{type(self).__name__}_{env}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"))
            checkpoint_dir = os.path.join(self._results_dir,
                                          f"checkpoint_{self.iteration:06d}")
        return SavedPath(super().save(os.fspath(checkpoint_dir)))

    def save_checkpoint(self, checkpoint_dir: str):
        self.save_to_path(checkpoint_dir)
        return None

    def load_checkpoint(self, checkpoint) -> None:
        self.restore_from_path(checkpoint)

    def restore(self, checkpoint_path, iteration: int | None = None, **_ignored) -> None:
        self.restore_from_path(checkpoint_path)
        if iteration is not None:
            self._iteration = iteration


def _merge_steps(first: dict, second: dict) -> dict:
    """Two training_step measurements as one (the later learner stats)."""
    timers = dict(first["timers"])
    for key, value in second["timers"].items():
        timers[key] = timers.get(key, 0.0) + value
    return {"episodes": first["episodes"] + second["episodes"],
            "env_steps": first["env_steps"] + second["env_steps"],
            "trained_steps": first["trained_steps"] + second["trained_steps"],
            "learner_stats": second["learner_stats"], "timers": timers}


def _checkpoint_dir(path) -> str:
    if hasattr(path, "path") and not isinstance(path, (str, os.PathLike)):
        path = path.path                       # a Checkpoint
    return os.fspath(path)


def _read_state(path) -> dict:
    directory = _checkpoint_dir(path)
    state_file = os.path.join(directory, STATE_FILE)
    if not os.path.exists(state_file):
        raise FileNotFoundError(f"{directory} is not a zray.rllib checkpoint (no "
                                f"{STATE_FILE}): give the directory algo.save() or "
                                f"algo.save_to_path() wrote")
    with open(state_file, "rb") as f:
        return cloudpickle.load(f)
