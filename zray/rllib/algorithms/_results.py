"""The result dict of ``Algorithm.train()``: RLlib 2.x's nested keys
(``env_runners/episode_return_mean``, ``learners/default_policy/...``,
``num_env_steps_sampled_lifetime``, ``timers``) and Ray 1.x's flat ones
(``episode_reward_mean``, ``timesteps_total``, ``info/learner``, ``hist_stats``),
so programs of either era read what they expect."""

from __future__ import annotations

import collections
import math

from zray.rllib.core import DEFAULT_MODULE_ID


class MetricsTracker:
    """Episode statistics over a window of the last episodes (RLlib's
    ``metrics_num_episodes_for_smoothing``) and lifetime counters."""

    def __init__(self, window: int):
        self.returns: collections.deque = collections.deque(maxlen=window)
        self.lengths: collections.deque = collections.deque(maxlen=window)
        self.lifetime = {"env_steps_sampled": 0, "env_steps_trained": 0, "episodes": 0}

    def add_episodes(self, episodes: list) -> None:
        for episode_return, length in episodes:
            self.returns.append(episode_return)
            self.lengths.append(length)
        self.lifetime["episodes"] += len(episodes)

    def get_state(self) -> dict:
        return {"returns": list(self.returns), "lengths": list(self.lengths),
                "lifetime": dict(self.lifetime)}

    def set_state(self, state: dict) -> None:
        self.returns.extend(state["returns"])
        self.lengths.extend(state["lengths"])
        self.lifetime.update(state["lifetime"])

    def env_runner_results(self, episodes_this_iter: int, env_steps: int) -> dict:
        returns, lengths = list(self.returns), list(self.lengths)
        mean_return = _mean(returns)
        return {
            "episode_return_mean": mean_return,
            "episode_return_min": min(returns) if returns else math.nan,
            "episode_return_max": max(returns) if returns else math.nan,
            "episode_len_mean": _mean(lengths),
            "episode_len_min": min(lengths) if lengths else math.nan,
            "episode_len_max": max(lengths) if lengths else math.nan,
            "num_episodes": episodes_this_iter,
            "num_episodes_lifetime": self.lifetime["episodes"],
            "num_env_steps_sampled": env_steps,
            "num_env_steps_sampled_lifetime": self.lifetime["env_steps_sampled"],
            "num_agent_steps_sampled": {"default_agent": env_steps},
            "num_module_steps_sampled": {DEFAULT_MODULE_ID: env_steps},
            "agent_episode_returns_mean": {"default_agent": mean_return},
            "module_episode_returns_mean": {DEFAULT_MODULE_ID: mean_return},
        }


def _mean(values: list) -> float:
    return sum(values) / len(values) if values else math.nan


def training_result(tracker: MetricsTracker, step: dict, healthy: int, restarts: int) -> dict:
    """The whole result of one iteration from what ``training_step`` measured:
    ``step`` = {episodes, env_steps, trained_steps, learner_stats, timers}."""
    env_steps, trained = step["env_steps"], step["trained_steps"]
    runners = tracker.env_runner_results(len(step["episodes"]), env_steps)
    lifetime = tracker.lifetime
    learner_stats = dict(step["learner_stats"], num_module_steps_trained=trained)
    result = {
        "env_runners": runners,
        "learners": {DEFAULT_MODULE_ID: learner_stats,
                     "__all_modules__": {
                         "num_env_steps_trained": trained,
                         "num_env_steps_trained_lifetime": lifetime["env_steps_trained"],
                         "num_module_steps_trained": trained}},
        "num_env_steps_sampled_lifetime": lifetime["env_steps_sampled"],
        "num_agent_steps_sampled_lifetime": {"default_agent": lifetime["env_steps_sampled"]},
        "num_env_steps_trained_lifetime": lifetime["env_steps_trained"],
        "num_episodes_lifetime": lifetime["episodes"],
        "num_training_step_calls_per_iteration": 1,
        "timers": dict(step["timers"]),
        "fault_tolerance": {"num_healthy_workers": healthy,
                            "num_remote_worker_restarts": restarts},
    }
    result.update(_old_api_keys(tracker, runners, learner_stats, env_steps, trained))
    return result


def _old_api_keys(tracker, runners: dict, learner_stats: dict, env_steps: int,
                  trained: int) -> dict:
    """Ray 1.x's flat keys."""
    lifetime = tracker.lifetime
    return {
        "episode_reward_mean": runners["episode_return_mean"],
        "episode_reward_min": runners["episode_return_min"],
        "episode_reward_max": runners["episode_return_max"],
        "episode_len_mean": runners["episode_len_mean"],
        "episodes_this_iter": runners["num_episodes"],
        "episodes_total": lifetime["episodes"],
        "timesteps_total": lifetime["env_steps_sampled"],
        "timesteps_this_iter": env_steps,
        "num_env_steps_sampled": lifetime["env_steps_sampled"],
        "num_env_steps_trained": lifetime["env_steps_trained"],
        "num_agent_steps_sampled": lifetime["env_steps_sampled"],
        "num_steps_trained_this_iter": trained,
        "hist_stats": {"episode_reward": list(tracker.returns),
                       "episode_lengths": list(tracker.lengths)},
        "info": {"learner": {DEFAULT_MODULE_ID: {"learner_stats": learner_stats}},
                 "num_env_steps_sampled": lifetime["env_steps_sampled"],
                 "num_env_steps_trained": lifetime["env_steps_trained"]},
    }


def evaluation_result(episodes: list, env_steps: int) -> dict:
    """What ``Algorithm.evaluate()`` returns: ``{"env_runners": {...}}``."""
    tracker = MetricsTracker(window=max(len(episodes), 1))
    tracker.add_episodes(episodes)
    tracker.lifetime["env_steps_sampled"] = env_steps
    runners = tracker.env_runner_results(len(episodes), env_steps)
    return {"env_runners": runners,
            # Ray 1.x's flat evaluation keys
            "episode_reward_mean": runners["episode_return_mean"],
            "episode_reward_min": runners["episode_return_min"],
            "episode_reward_max": runners["episode_return_max"],
            "episode_len_mean": runners["episode_len_mean"],
            "episodes_this_iter": len(episodes)}
