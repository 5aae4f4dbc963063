"""Names for trainables and environments: ``register_trainable(name, trainable)``,
``register_env(name, creator)``, ``get_trainable_cls(name)``, as in
``ray.tune.registry``.

RLlib's algorithms ("PPO") are known by name without registering; their module
loads on first lookup.  A registry lives in the process that fills it: the
Tuner ships a snapshot of it with the trainable (``with_registry``) so that a
trial's runner process sees the names the driver registered.
"""

from __future__ import annotations

import importlib

#: Built-in trainable names -> "module:attribute", loaded on first use.
_BUILTIN_TRAINABLES = {
    "PPO": "zray.rllib.algorithms.ppo:PPO",
}

_trainables: dict = {}
_envs: dict = {}


def register_trainable(name: str, trainable, warn: bool = True) -> None:
    """Make ``Tuner(name, ...)`` run ``trainable`` (a function or Trainable class)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_trainable needs a non-empty str name, got {name!r}")
    if not callable(trainable):
        raise TypeError(f"register_trainable({name!r}, ...) needs a function or a "
                        f"Trainable class, got {type(trainable).__name__}")
    _trainables[name] = trainable


def register_env(name: str, env_creator) -> None:
    """Make ``config.environment(name, env_config=...)`` build its env with
    ``env_creator(env_config)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_env needs a non-empty str name, got {name!r}")
    if not callable(env_creator):
        raise TypeError(f"register_env({name!r}, ...) needs a callable env_config -> env, "
                        f"got {type(env_creator).__name__}")
    _envs[name] = env_creator


def get_trainable_cls(name: str):
    """The trainable registered (or built in) as ``name``."""
    if name in _trainables:
        return _trainables[name]
    if name in _BUILTIN_TRAINABLES:
        module, attribute = _BUILTIN_TRAINABLES[name].split(":")
        return getattr(importlib.import_module(module), attribute)
    known = sorted({*_trainables, *_BUILTIN_TRAINABLES})
    raise ValueError(f"unknown trainable {name!r}: register it first with "
                     f"tune.register_trainable({name!r}, trainable); known: {known}")


def get_env_creator(name: str):
    """The creator registered as ``name``, or None."""
    return _envs.get(name)


def snapshot() -> dict:
    return {"trainables": dict(_trainables), "envs": dict(_envs)}


def install(saved: dict) -> None:
    """Add the names of a snapshot taken in another process (ours win)."""
    for name, value in saved.get("trainables", {}).items():
        _trainables.setdefault(name, value)
    for name, value in saved.get("envs", {}).items():
        _envs.setdefault(name, value)


def with_registry(trainable):
    """``trainable``, carrying this process's registry to whichever process runs it."""
    saved = snapshot()
    if not saved["trainables"] and not saved["envs"]:
        return trainable
    if isinstance(trainable, type):
        def __init__(self, *args, **kwargs):
            install(saved)
            trainable.__init__(self, *args, **kwargs)
        return type(trainable.__name__, (trainable,),
                    {"__init__": __init__, "_tune_inner": trainable})
    return _FunctionWithRegistry(trainable, saved)


class _FunctionWithRegistry:
    def __init__(self, function, saved: dict):
        self._tune_inner = function
        self.saved = saved
        self.__name__ = getattr(function, "__name__", "trainable")
        for attribute in ("_tune_resources",):
            if hasattr(function, attribute):
                setattr(self, attribute, getattr(function, attribute))

    def __call__(self, config):
        install(self.saved)
        return self._tune_inner(config)
