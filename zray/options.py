"""Every option of remote functions and actors, declared once.

``TASK_OPTIONS`` and ``ACTOR_OPTIONS`` map an option's name to its default, the
types it takes and a check of its value; the decorator, ``.options()`` and the
task spec all read from here, so an option is never listed twice.  As in Ray, an
unknown option or a bad value raises ValueError and a wrong type TypeError, each
naming the option, when the decorator or ``.options()`` is called.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable


_NONE = type(None)
_NUMBER = (int, float, _NONE)


@dataclass(frozen=True)
class Option:
    """An option's default, the types it may have (a wrong type is a TypeError,
    as in Ray) and a check of its value (which raises ValueError)."""
    default: Any
    types: tuple
    check: Callable[[str, Any], None] | None = None


def _non_negative(name, value):
    if value is not None and value < 0:
        raise ValueError(f"The option '{name}' cannot be negative, got {value!r}")


def _int_at_least(low):
    def check(name, value):
        if value is not None and value < low:
            raise ValueError(f"The option '{name}' must be an integer >= {low}, "
                             f"got {value!r}")
    return check


def _num_returns(name, value):
    if isinstance(value, str):
        if value in ("streaming", "dynamic"):
            return
        raise ValueError(f"num_returns must be a non-negative integer, 'streaming' or "
                         f"'dynamic', got {value!r}")
    _int_at_least(0)(name, value)


def _resources(name, value):
    if value is None:
        return
    for key, amount in value.items():
        if key in ("CPU", "GPU"):
            raise ValueError(f"Use the 'num_cpus' and 'num_gpus' keywords instead of "
                             f"'{key}' in 'resources'.")
        if not isinstance(key, str):
            raise TypeError(f"resource names must be strings, got {key!r}")
        if not isinstance(amount, (int, float)):
            raise TypeError(f"The amount of resource {key!r} must be a number, got "
                            f"{type(amount).__name__}: {amount!r}")
        _non_negative(f"resources[{key!r}]", amount)


def _retry_exceptions(name, value):
    if isinstance(value, bool):
        return
    if all(isinstance(e, type) and issubclass(e, BaseException) for e in value):
        return
    raise ValueError("retry_exceptions must be either a boolean or a list of exceptions, "
                     f"got {value!r}")


#: runtime_env fields zray applies; those it refuses (NotImplementedError) and
#: those it accepts and ignores (with a warning, once per field).
RUNTIME_ENV_FIELDS = frozenset({"env_vars", "working_dir", "py_modules", "excludes", "pip"})
RUNTIME_ENV_UNSUPPORTED = frozenset({
    "conda", "uv", "container", "image_uri", "py_executable", "java_jars",
    "nsight", "worker_process_setup_hook"})
RUNTIME_ENV_IGNORED = frozenset({"config", "eager_install", "_ray_release", "_ray_commit"})


def _runtime_env(name, value):
    if value is None:
        return
    unknown = set(value) - RUNTIME_ENV_FIELDS - RUNTIME_ENV_UNSUPPORTED - RUNTIME_ENV_IGNORED
    if unknown:
        import difflib
        known = sorted(RUNTIME_ENV_FIELDS | RUNTIME_ENV_IGNORED - {"_ray_release",
                                                                    "_ray_commit"})
        hints = [f"{close[0]!r} for {name!r}" for name in sorted(unknown)
                 for close in [difflib.get_close_matches(str(name), known, 1)] if close]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ValueError(f"Unknown runtime_env field(s) {sorted(unknown)}{hint}; zray "
                         f"supports {sorted(RUNTIME_ENV_FIELDS)}")
    refused = sorted(set(value) & RUNTIME_ENV_UNSUPPORTED)
    if refused:
        raise NotImplementedError(
            f"runtime_env field(s) {refused} are not supported by zray: it supports "
            f"{sorted(RUNTIME_ENV_FIELDS)}; install packages on every node (or in the "
            "image), or use pip, and ship your code with working_dir/py_modules")
    for field in sorted(set(value) & RUNTIME_ENV_IGNORED):
        warn_once(f"runtime_env:{field}", f"runtime_env field {field!r} is ignored by zray")
    env_vars = value.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise TypeError("runtime_env['env_vars'] must be a dict of str -> str")
    working_dir = value.get("working_dir")
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise TypeError("runtime_env['working_dir'] must be a local directory path (str), "
                        f"got {type(working_dir).__name__}")
    pip = value.get("pip")
    if isinstance(pip, dict):
        pip = pip.get("packages")
    if pip is not None and not isinstance(pip, str) and not (
            isinstance(pip, (list, tuple)) and all(isinstance(p, str) for p in pip)):
        raise TypeError("runtime_env['pip'] must be a list of requirements (str), a "
                        "requirements.txt path, or {'packages': [...]}, got "
                        f"{value.get('pip')!r}")
    for field in ("py_modules", "excludes"):
        items = value.get(field)
        if items is not None and (isinstance(items, (str, bytes)) or not isinstance(
                items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike))
                                                  for i in items)):
            raise TypeError(f"runtime_env[{field!r}] must be a list of "
                            f"{'directory paths' if field == 'py_modules' else 'patterns'} "
                            f"(str), got {items!r}")


def _strategy(name, value):
    if value is None or value in ("DEFAULT", "SPREAD") or not isinstance(value, str):
        return
    raise ValueError("scheduling_strategy must be 'DEFAULT', 'SPREAD', a "
                     "NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy, "
                     f"got {value!r}")


def _strategy_types() -> tuple:
    """The types scheduling_strategy takes (its Option lists none: they are
    looked up when needed, as zray.util imports this module)."""
    from zray.util.scheduling_strategies import (
        NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)
    return (str, NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy, _NONE)


def _placement_group(name, value):
    if value is None or value == "default" or hasattr(value, "bundle_specs"):
        return
    raise ValueError(f"The option '{name}' must be a PlacementGroup, 'default' or None, "
                     f"got {value!r}")


def _lifetime(name, value):
    if value not in (None, "detached", "non_detached"):
        raise ValueError("actor `lifetime` argument must be one of 'detached', "
                         f"'non_detached' and 'None', got {value!r}")


def _pending(name, value):
    _int_at_least(-1)(name, value)
    if value == 0:
        raise ValueError("max_pending_calls must be -1 (no limit) or a positive integer")


def _ignored_by_zray(what):
    def check(name, value):
        if value:
            warn_once(f"option:{name}", f"The option {name!r} is accepted for Ray "
                      f"compatibility but ignored by zray: {what}.")
    return check


def _task_object_store_memory(name, value):
    if value is not None:
        raise ValueError("Setting 'object_store_memory' is not implemented for tasks")


TASK_OPTIONS = {
    "num_cpus": Option(1, _NUMBER, _non_negative),
    "num_gpus": Option(0, _NUMBER, _non_negative),
    "resources": Option(None, (dict, _NONE), _resources),
    "memory": Option(None, _NUMBER, _non_negative),
    "object_store_memory": Option(None, (int, _NONE), _task_object_store_memory),
    "num_returns": Option(1, (int, str, _NONE), _num_returns),
    "max_retries": Option(3, (int, _NONE), _int_at_least(-1)),
    "retry_exceptions": Option(False, (bool, list, tuple), _retry_exceptions),
    "name": Option(None, (str, _NONE)),
    "max_calls": Option(0, (int, _NONE), _int_at_least(0)),
    "runtime_env": Option(None, (dict, _NONE), _runtime_env),
    "scheduling_strategy": Option(None, (), _strategy),
    "placement_group": Option("default", (object,), _placement_group),
    "placement_group_bundle_index": Option(-1, (int, _NONE), _int_at_least(-1)),
    "placement_group_capture_child_tasks": Option(None, (bool, _NONE)),
    "timeout_s": Option(None, _NUMBER, _non_negative),
    "accelerator_type": Option(None, (str, _NONE)),
    "_metadata": Option(None, (dict, _NONE)),
}

ACTOR_OPTIONS = {
    "num_cpus": Option(None, _NUMBER, _non_negative),
    "num_gpus": Option(0, _NUMBER, _non_negative),
    "resources": Option(None, (dict, _NONE), _resources),
    "memory": Option(None, _NUMBER, _non_negative),
    "object_store_memory": Option(None, (int, _NONE), _ignored_by_zray(
        "it reserves nothing (as in Ray, where it is deprecated)")),
    "name": Option(None, (str, _NONE)),
    "namespace": Option(None, (str, _NONE)),
    "lifetime": Option(None, (str, _NONE), _lifetime),
    "get_if_exists": Option(False, (bool,)),
    "max_restarts": Option(0, (int, _NONE), _int_at_least(-1)),
    "max_task_retries": Option(0, (int, _NONE), _int_at_least(-1)),
    "max_concurrency": Option(None, (int, _NONE), _int_at_least(1)),
    "max_pending_calls": Option(-1, (int, _NONE), _pending),
    "runtime_env": Option(None, (dict, _NONE), _runtime_env),
    "scheduling_strategy": Option(None, (), _strategy),
    "placement_group": Option("default", (object,), _placement_group),
    "placement_group_bundle_index": Option(-1, (int, _NONE), _int_at_least(-1)),
    "placement_group_capture_child_tasks": Option(None, (bool, _NONE)),
    "accelerator_type": Option(None, (str, _NONE)),
    "concurrency_groups": Option(None, (list, dict, _NONE), _ignored_by_zray(
        "every method shares the actor's one pool of max_concurrency")),
    "_metadata": Option(None, (dict, _NONE)),
}

#: Options that only the decorator may set, not ``.options()`` (as in Ray; Ray
#: refuses max_calls there too, which zray applies either way).
DECORATOR_ONLY = frozenset({"concurrency_groups"})


def validate(options: dict, table: dict, what: str, in_options: bool = False) -> dict:
    """Check ``options`` against ``table`` (unknown name: ValueError; wrong type:
    TypeError; bad value: ValueError, each naming the option, as Ray does)."""
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise ValueError(f"Invalid option(s) {unknown} for {what}; valid options are: "
                         f"{sorted(k for k in table if not k.startswith('_'))}")
    for name, value in options.items():
        if in_options and name in DECORATOR_ONLY:
            raise ValueError(f"Setting '{name}' is not supported in '.options()'.")
        option = table[name]
        types = option.types or _strategy_types()
        if not isinstance(value, types):
            raise TypeError(f"The type of option '{name}' of {what} must be one of "
                            f"{_type_names(types)}, but got {type(value).__name__}: "
                            f"{value!r}")
        if option.check is not None:
            option.check(name, value)
    return options


def _type_names(types) -> str:
    return "(" + ", ".join("None" if t is _NONE else t.__name__ for t in types) + ")"


def resolve(options: dict, table: dict) -> dict:
    """Every option of ``table``: the value given, or its default (also for None)."""
    resolved = {}
    for name, opt in table.items():
        value = options.get(name)
        resolved[name] = opt.default if value is None else value
    return resolved


_warned: set = set()


def warn_once(key: str, message: str) -> None:
    """A UserWarning the first time ``key`` comes up in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """The stacklevel of the first caller outside zray, so that a warning
    points at the user's line."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("zray"):
        frame, level = frame.f_back, level + 1
    return level


def merge_runtime_env(parent: dict | None, child: dict | None) -> dict | None:
    """A task's runtime_env over the one it inherits (its job's or its parent
    task's), as in Ray: env_vars are merged (the child's win), other fields
    are the child's."""
    if not parent:
        return child
    if not child:
        return parent
    merged = {**parent, **child}
    if parent.get("env_vars") and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **(child["env_vars"] or {})}
    return merged


def resource_request(options: dict) -> dict:
    """The logical resources a task asks for, as the scheduler sees them."""
    request = {}
    cpus = options.get("num_cpus")
    if cpus:
        request["CPU"] = float(cpus)
    gpus = options.get("num_gpus")
    if gpus:
        request["GPU"] = float(gpus)
    if options.get("memory"):
        request["memory"] = float(options["memory"])
    for name, amount in (options.get("resources") or {}).items():
        if amount:
            request[name] = float(amount)
    return request


def strategy_wire(value):
    """The scheduling strategy in the form the head understands."""
    if value is None or value == "DEFAULT":
        return None         # (before the import: zray.util loads all of its modules)
    from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    if isinstance(value, NodeAffinitySchedulingStrategy):
        node_id = value.node_id
        return ("node_affinity", bytes.fromhex(node_id) if isinstance(node_id, str)
                else node_id, bool(value.soft))
    return value
