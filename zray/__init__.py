"""zray: Ray's core programming model (tasks, objects, actors) on ZeroMQ.

``import zray as ray`` and a Ray core program runs unchanged.

The public names load on first use (PEP 562): the head, node manager, fork
server and workers import ``zray.<module>`` for what they run, and would
otherwise each pay for the whole driver API in memory (~2 MB a process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Public name -> the module defining it.
_API = {
    "DynamicObjectRefGenerator": "zray.generators",
    "ObjectRef": "zray.object_ref",
    "ObjectRefGenerator": "zray.generators",
    "available_resources": "zray.api",
    "cancel": "zray.api",
    "cluster_resources": "zray.api",
    "get": "zray.api",
    "get_actor": "zray.api",
    "get_gpu_ids": "zray.runtime_context",
    "get_runtime_context": "zray.runtime_context",
    "init": "zray.api",
    "is_initialized": "zray.api",
    "kill": "zray.api",
    "method": "zray.actor",
    "nodes": "zray.api",
    "put": "zray.api",
    "remote": "zray.api",
    "shutdown": "zray.api",
    "timeline": "zray._timeline",
    "wait": "zray.api",
}
#: Subpackages reachable as attributes after a bare ``import zray``, as in Ray.
_SUBMODULES = ("actor", "data", "exceptions", "rllib", "train", "tune", "util")

__all__ = sorted([*_API, "actor", "exceptions", "__version__"])


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"zray.{name}")
    else:
        raise AttributeError(f"module 'zray' has no attribute {name!r}")
    globals()[name] = value            # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_API, *_SUBMODULES})


if TYPE_CHECKING:                      # static analysers see the eager imports
    from zray import actor, exceptions, util  # noqa: F401
    from zray.actor import method  # noqa: F401
    from zray.api import (  # noqa: F401
        available_resources, cancel, cluster_resources, get, get_actor,
        init, is_initialized, kill, nodes, put, remote, shutdown, wait)
    from zray.generators import DynamicObjectRefGenerator, ObjectRefGenerator  # noqa: F401
    from zray.object_ref import ObjectRef  # noqa: F401
    from zray.runtime_context import get_gpu_ids, get_runtime_context  # noqa: F401
