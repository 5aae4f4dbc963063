"""``SingleAgentEnvRunner``: steps a vector of gymnasium envs with the current
policy and returns what PPO learns from.  Runs as a zray actor (one per
``num_env_runners``) or in the driver (``num_env_runners=0``, evaluation).

One ``sample`` call: set the weights (broadcast once per iteration through the
object store), step every env ``num_steps`` times (episodes carry on across
calls, as RLlib's do), then compute GAE here, where the values already are,
and return flat arrays plus the episodes that finished.
"""

from __future__ import annotations

import os

import numpy as np

from zray.rllib.core.columns import Columns
from zray.rllib.core.model_spec import ModelSpec
from zray.rllib.core.numpy_policy import NumpyPolicy
from zray.rllib.utils.postprocessing import compute_gae, next_values_of


class SingleAgentEnvRunner:
    def __init__(self, env_maker, spec: ModelSpec, *, num_envs: int = 1,
                 worker_index: int = 0, num_workers: int = 0, seed: int | None = None,
                 gamma: float = 0.99, lambda_: float = 1.0):
        self.spec, self.gamma, self.lambda_ = spec, gamma, lambda_
        self.worker_index = worker_index
        self.envs = [env_maker(worker_index, num_workers, i) for i in range(num_envs)]
        base = None if seed is None else seed + 1000 * worker_index
        self.rng = np.random.default_rng(base)
        self.obs = np.stack([self._reset(env, None if base is None else base + i)
                             for i, env in enumerate(self.envs)])
        self.episode_return = np.zeros(num_envs)
        self.episode_len = np.zeros(num_envs, np.int64)
        self.policy = NumpyPolicy(spec)
        if spec.discrete:
            self.low = self.high = None
        else:
            self.low = np.asarray(spec.action_low, np.float32)
            self.high = np.asarray(spec.action_high, np.float32)

    @staticmethod
    def _reset(env, seed) -> np.ndarray:
        if seed is not None:
            env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        return np.asarray(obs, np.float32).reshape(-1)

    def ping(self) -> str:
        return "ok"

    def pid(self) -> int:
        """This runner's process id (to watch or, in tests, kill it)."""
        return os.getpid()

    def set_weights(self, weights: dict) -> None:
        self.policy.set_weights(weights)

    # -- stepping -------------------------------------------------------------------
    def _step_all(self, actions: np.ndarray, finished: list) -> tuple:
        """Step each env once; (rewards, terminated, truncated, final obs of truncated)."""
        count = len(self.envs)
        rewards = np.zeros(count, np.float32)
        terminated = np.zeros(count, bool)
        truncated = np.zeros(count, bool)
        final_obs = {}
        for i, env in enumerate(self.envs):
            action = actions[i]
            if self.low is not None:
                action = np.clip(action, self.low, self.high)
            else:
                action = int(action)
            obs, reward, term, trunc, _ = env.step(action)
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            self.episode_return[i] += reward
            self.episode_len[i] += 1
            obs = np.asarray(obs, np.float32).reshape(-1)
            if term or trunc:
                finished.append((float(self.episode_return[i]), int(self.episode_len[i])))
                self.episode_return[i], self.episode_len[i] = 0.0, 0
                if trunc and not term:
                    final_obs[i] = obs
                obs = self._reset(env, None)
            self.obs[i] = obs
        return rewards, terminated, truncated & ~terminated, final_obs

    def sample(self, weights: dict | None, num_steps: int, explore: bool = True) -> dict:
        """Step every env ``num_steps`` times; flat arrays of ``num_steps * num_envs``
        rows with GAE advantages and value targets, and the finished episodes."""
        if weights is not None:
            self.set_weights(weights)
        count, policy = len(self.envs), self.policy
        shape = (num_steps, count)
        obs = np.zeros((num_steps, count, self.spec.obs_dim), np.float32)
        inputs = np.zeros((num_steps, count, self.spec.dist_inputs_dim), np.float32)
        actions = np.zeros(shape if self.spec.discrete else (*shape, self.spec.action_dim),
                           np.int64 if self.spec.discrete else np.float32)
        logp, values, rewards, truncated_values = (np.zeros(shape, np.float32)
                                                   for _ in range(4))
        terminated, truncated = np.zeros(shape, bool), np.zeros(shape, bool)
        finished: list = []
        for t in range(num_steps):
            obs[t] = self.obs
            step_inputs, values[t] = policy.forward(self.obs)
            actions[t], logp[t], inputs[t] = policy.act(self.obs, self.rng, explore,
                                                        step_inputs)
            rewards[t], terminated[t], truncated[t], final_obs = self._step_all(
                actions[t], finished)
            if final_obs:
                index = sorted(final_obs)
                truncated_values[t, index] = policy.values(np.stack(
                    [final_obs[i] for i in index]))
        next_values, boundaries = next_values_of(values, policy.values(self.obs),
                                                 terminated, truncated, truncated_values)
        advantages, targets = compute_gae(rewards, values, next_values, boundaries,
                                          self.gamma, self.lambda_)

        def flat(array):
            return np.ascontiguousarray(array.reshape(num_steps * count, *array.shape[2:]))
        batch = {Columns.OBS: flat(obs), Columns.ACTIONS: flat(actions),
                 Columns.ACTION_LOGP: flat(logp), Columns.ACTION_DIST_INPUTS: flat(inputs),
                 Columns.VF_PREDS: flat(values), Columns.ADVANTAGES: flat(advantages),
                 Columns.VALUE_TARGETS: flat(targets)}
        return {"batch": batch, "episodes": finished, "env_steps": num_steps * count}

    def sample_episodes(self, weights: dict | None, num_episodes: int,
                        explore: bool = False) -> list:
        """Run until ``num_episodes`` episodes finish (fresh ones: the envs are
        reset first); [(return, length), ...]."""
        if weights is not None:
            self.set_weights(weights)
        for i, env in enumerate(self.envs):
            self.obs[i] = self._reset(env, None)
        self.episode_return[:] = 0.0
        self.episode_len[:] = 0
        finished: list = []
        while len(finished) < num_episodes:
            actions, _, _ = self.policy.act(self.obs, self.rng, explore)
            self._step_all(actions, finished)
        return finished[:num_episodes]

    def stop(self) -> None:
        for env in self.envs:
            env.close()
