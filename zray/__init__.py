"""zray: Ray's core programming model (tasks, objects, actors) on ZeroMQ.

``import zray as ray`` and a Ray core program runs unchanged.
"""

from zray import actor, exceptions
from zray.actor import method
from zray.api import (available_resources, cancel, cluster_resources, get, get_actor,
                      init, is_initialized, kill, nodes, put, remote, shutdown, wait)
from zray.object_ref import ObjectRef
from zray.runtime_context import get_gpu_ids, get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "ObjectRef", "actor", "available_resources", "cancel", "cluster_resources",
    "exceptions", "get", "get_actor", "get_gpu_ids", "get_runtime_context", "init",
    "is_initialized", "kill", "method", "nodes", "put", "remote", "shutdown", "wait",
    "__version__",
]
