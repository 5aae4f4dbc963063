"""``EnvContext`` (the ``env_config`` dict an env creator receives, with the
runner's index) and ``EnvMaker`` (a picklable recipe for an env)."""

from __future__ import annotations


class EnvContext(dict):
    """``env_config`` plus ``worker_index`` (0: the driver's local runner),
    ``num_workers`` and ``vector_index`` (which env of the runner's vector)."""

    def __init__(self, env_config: dict | None, worker_index: int = 0,
                 num_workers: int = 0, vector_index: int = 0, remote: bool = False):
        super().__init__(env_config or {})
        self.worker_index, self.num_workers = worker_index, num_workers
        self.vector_index, self.remote = vector_index, remote

    def copy_with_overrides(self, env_config=None, worker_index=None, num_workers=None,
                            vector_index=None, remote=None) -> "EnvContext":
        return EnvContext(self if env_config is None else env_config,
                          self.worker_index if worker_index is None else worker_index,
                          self.num_workers if num_workers is None else num_workers,
                          self.vector_index if vector_index is None else vector_index,
                          self.remote if remote is None else remote)

    def __reduce__(self):
        return (EnvContext, (dict(self), self.worker_index, self.num_workers,
                             self.vector_index, self.remote))


class EnvMaker:
    """Makes the env ``config.environment(env=...)`` names: a creator registered
    with ``tune.register_env``, a gymnasium id, an env class or a function of
    ``env_config``.  Resolved where the algorithm is built, then pickled to
    the env runners, which need no registry of their own."""

    def __init__(self, env, env_config: dict | None):
        from zray.tune.registry import get_env_creator
        if env is None:
            raise ValueError("no environment: call config.environment('CartPole-v1') (a "
                             "gymnasium id, a name given to tune.register_env, or an "
                             "env class)")
        self.env_config = dict(env_config or {})
        self.gym_id = None
        self.creator = None
        if isinstance(env, str):
            self.creator = get_env_creator(env)
            self.gym_id = env if self.creator is None else None
        elif callable(env):
            self.creator = env
        else:
            raise TypeError(f"config.environment(env=...) must be a str, an env class or "
                            f"a callable; got {type(env).__name__}")
        self.name = env if isinstance(env, str) else getattr(env, "__name__", repr(env))

    def __call__(self, worker_index: int = 0, num_workers: int = 0, vector_index: int = 0):
        context = EnvContext(self.env_config, worker_index, num_workers, vector_index,
                             remote=worker_index > 0)
        if self.gym_id is not None:
            import gymnasium as gym
            try:
                return gym.make(self.gym_id, **self.env_config)
            except gym.error.Error as exc:
                raise ValueError(f"env {self.gym_id!r} is neither a gymnasium id nor a "
                                 f"name given to tune.register_env ({exc})") from exc
        return self.creator(context)     # an env class or a creator function
