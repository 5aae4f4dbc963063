"""Every option of remote functions (and, later, actors), declared once.

``TASK_OPTIONS`` maps an option's name to its default and its check; the
decorator, ``.options()`` and the task spec all read from here, so an option is
never listed twice.  Unknown options raise ValueError naming the valid ones.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    default: Any
    check: Callable[[str, Any], None]


def _number(name, value):
    if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)
                              or value < 0):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def _int_at_least(low):
    def check(name, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return check


def _num_returns(name, value):
    if isinstance(value, str) and value in ("streaming", "dynamic"):
        return
    _int_at_least(0)(name, value)


def _resources(name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"resources must be a dict of name -> amount, got {value!r}")
    for key, amount in value.items():
        if key in ("CPU", "GPU"):
            raise ValueError(f"Use the 'num_cpus' and 'num_gpus' keywords instead of "
                             f"'{key}' in 'resources'.")
        if not isinstance(key, str):
            raise ValueError(f"resource names must be strings, got {key!r}")
        _number(f"resources[{key!r}]", amount)


def _retry_exceptions(name, value):
    if isinstance(value, bool):
        return
    if isinstance(value, (list, tuple)) and all(
            isinstance(e, type) and issubclass(e, BaseException) for e in value):
        return
    raise ValueError("retry_exceptions must be a bool or a list of exception classes, "
                     f"got {value!r}")


def _runtime_env(name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"runtime_env must be a dict, got {value!r}")
    unsupported = set(value) - {"env_vars"}
    if unsupported:
        raise ValueError(f"runtime_env fields {sorted(unsupported)} are not supported by "
                         "zray; supported: ['env_vars']")
    env_vars = value.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise ValueError("runtime_env['env_vars'] must be a dict of str -> str")


def _strategy(name, value):
    from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    if value is None or value in ("DEFAULT", "SPREAD") or \
            isinstance(value, NodeAffinitySchedulingStrategy):
        return
    raise ValueError("scheduling_strategy must be 'DEFAULT', 'SPREAD' or a "
                     f"NodeAffinitySchedulingStrategy, got {value!r}")


def _name(name, value):
    if value is not None and not isinstance(value, str):
        raise ValueError(f"name must be a string, got {value!r}")


def _timeout(name, value):
    if value is not None:
        _number(name, value)


def _anything(name, value):
    return None


TASK_OPTIONS = {
    "num_cpus": Option(1, _number),
    "num_gpus": Option(0, _number),
    "resources": Option(None, _resources),
    "memory": Option(None, _number),
    "num_returns": Option(1, _num_returns),
    "max_retries": Option(3, _int_at_least(-1)),
    "retry_exceptions": Option(False, _retry_exceptions),
    "name": Option(None, _name),
    "max_calls": Option(0, _int_at_least(0)),
    "runtime_env": Option(None, _runtime_env),
    "scheduling_strategy": Option(None, _strategy),
    "timeout_s": Option(None, _timeout),
    "accelerator_type": Option(None, _anything),
    "_metadata": Option(None, _anything),
}


def _lifetime(name, value):
    if value not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached', 'non_detached' or None, got {value!r}")


def _concurrency(name, value):
    if value is not None:
        _int_at_least(1)(name, value)


def _pending(name, value):
    _int_at_least(-1)(name, value)
    if value == 0:
        raise ValueError("max_pending_calls must be -1 (no limit) or a positive integer")


def _bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


ACTOR_OPTIONS = {
    "num_cpus": Option(None, _number),
    "num_gpus": Option(0, _number),
    "resources": Option(None, _resources),
    "memory": Option(None, _number),
    "name": Option(None, _name),
    "namespace": Option(None, _name),
    "lifetime": Option(None, _lifetime),
    "get_if_exists": Option(False, _bool),
    "max_restarts": Option(0, _int_at_least(-1)),
    "max_task_retries": Option(0, _int_at_least(-1)),
    "max_concurrency": Option(None, _concurrency),
    "max_pending_calls": Option(-1, _pending),
    "runtime_env": Option(None, _runtime_env),
    "scheduling_strategy": Option(None, _strategy),
    "accelerator_type": Option(None, _anything),
    "concurrency_groups": Option(None, _anything),
    "_metadata": Option(None, _anything),
}


def validate(options: dict, table: dict, what: str) -> dict:
    """Check ``options`` against ``table``; return them merged over the defaults."""
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise ValueError(f"Invalid option(s) {unknown} for {what}; valid options are: "
                         f"{sorted(k for k in table if not k.startswith('_'))}")
    for name, value in options.items():
        table[name].check(name, value)
    return options


def resolve(options: dict, table: dict) -> dict:
    return {name: options.get(name, opt.default) for name, opt in table.items()}


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
    from zray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    if value is None or value == "DEFAULT":
        return None
    if isinstance(value, NodeAffinitySchedulingStrategy):
        node_id = value.node_id
        return ("node_affinity", bytes.fromhex(node_id) if isinstance(node_id, str)
                else node_id, bool(value.soft))
    return value
