"""``EnvRunnerGroup``: the env runner actors of one algorithm, sampled in
parallel with one weights broadcast per iteration, and replaced when they die.

    Algorithm.training_step ── zray.put(weights) ──► ObjectRef (once per iteration)
         │ sample.remote(ref, steps) to each runner
         ▼
    runner 1 .. N (actors)  ── {batch, episodes, env_steps} ──► concatenated by PPO

A runner whose call fails (its process died, or its env raised) is replaced
by a fresh actor with the same index (unless ``restart_failed_env_runners``
is False: then the error is raised); the iteration goes on with the others'
samples, so nothing is counted twice.  With ``num_env_runners=0`` the driver
samples itself.
"""

from __future__ import annotations

import logging

import zray
from zray.exceptions import RayActorError, RayError
from zray.rllib.env.env_runner import SingleAgentEnvRunner

logger = logging.getLogger(__name__)


class EnvRunnerGroup:
    def __init__(self, env_maker, spec, config, num_runners: int | None = None,
                 seed_offset: int = 0):
        """``num_runners``: actors to start (``config.num_env_runners`` by default;
        0: sample in this process); ``seed_offset`` keeps evaluation envs apart."""
        self.env_maker, self.spec, self.config = env_maker, spec, config
        self.num_runners = config.num_env_runners if num_runners is None else num_runners
        self.seed_offset = seed_offset
        self.num_restarts = 0
        self.local = None
        self.actors: dict = {}
        self.stopped = False
        if self.num_runners == 0:
            self.local = self._runner_kwargs_call(SingleAgentEnvRunner, 0)
        else:
            self._remote_cls = zray.remote(SingleAgentEnvRunner)
            for index in range(1, self.num_runners + 1):
                self.actors[index] = self._start(index)

    def _runner_kwargs_call(self, factory, index: int):
        config = self.config
        seed = None if config.seed is None else \
            config.seed + self.seed_offset + 100_000 * self.num_restarts
        return factory(self.env_maker, self.spec, num_envs=config.num_envs_per_env_runner,
                       worker_index=index, num_workers=self.num_runners, seed=seed,
                       gamma=config.gamma, lambda_=config.lambda_)

    def _start(self, index: int):
        options = {"num_cpus": self.config.num_cpus_per_env_runner}
        return self._runner_kwargs_call(self._remote_cls.options(**options).remote, index)

    @property
    def num_healthy_env_runners(self) -> int:
        return len(self.actors) if self.local is None else 1

    def sample(self, weights: dict, num_steps: int, explore: bool = True,
               retries: int = 3) -> list:
        """One sample per healthy runner: [{batch, episodes, env_steps}, ...].
        Failed runners are replaced (their samples of this round are lost)."""
        return self._call_all("sample", weights, [num_steps] * max(len(self.actors), 1),
                              explore, retries)

    def sample_episodes(self, weights: dict, num_episodes: int, explore: bool,
                        retries: int = 3) -> list:
        """``num_episodes`` fresh episodes split over the runners: [[(return,
        length), ...] per runner]."""
        count = max(len(self.actors), 1)
        shares = [num_episodes // count + (i < num_episodes % count) for i in range(count)]
        return self._call_all("sample_episodes", weights, shares, explore, retries)

    def _call_all(self, method: str, weights: dict, amounts: list, explore: bool,
                  retries: int) -> list:
        if self.stopped:
            raise RuntimeError("this algorithm was stopped (algo.stop()): its env runners "
                               "are gone; build a new one or restore a checkpoint")
        if self.local is not None:
            return [getattr(self.local, method)(weights, amounts[0], explore)]
        ref = zray.put(weights)
        calls = {index: getattr(actor, method).remote(ref, amount, explore)
                 for (index, actor), amount in zip(self.actors.items(), amounts) if amount}
        if not calls:
            return []
        results, errors = [], []
        for index, call in calls.items():
            try:
                results.append(zray.get(call))
            except RayError as exc:
                if not self.config.restart_failed_env_runners:
                    raise
                errors.append(exc)
                self._replace(index, exc)
        if not results:
            died = all(isinstance(e, RayActorError) for e in errors)
            if not died or retries == 0:
                raise errors[0]
            logger.warning("all %d env runners died; sampling again with their "
                           "replacements", len(errors))
            return self._call_all(method, weights, amounts, explore, retries - 1)
        return results

    def _replace(self, index: int, error: Exception) -> None:
        logger.warning("env runner %d failed (%s: %s); starting a replacement", index,
                       type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        try:
            zray.kill(self.actors[index])
        except RayError:
            logger.debug("env runner %d was already gone", index)
        self.num_restarts += 1
        self.actors[index] = self._start(index)

    def actor(self, index: int):
        """The actor handle of runner ``index`` (1-based), e.g. to probe it."""
        return self.actors[index]

    def stop(self) -> None:
        self.stopped = True
        if self.local is not None:
            self.local.stop()
        for actor in self.actors.values():
            try:
                zray.kill(actor)
            except RayError:
                logger.debug("env runner already gone at stop")
        self.actors = {}
