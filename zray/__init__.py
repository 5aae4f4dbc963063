"""zray: Ray's core programming model (tasks, objects, actors) on ZeroMQ.

``import zray as ray`` and a Ray core program runs unchanged.
"""

from zray import exceptions
from zray.api import (available_resources, cancel, cluster_resources, get, init,
                      is_initialized, nodes, put, remote, shutdown, wait)
from zray.object_ref import ObjectRef
from zray.runtime_context import get_gpu_ids, get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "ObjectRef", "available_resources", "cancel", "cluster_resources", "exceptions",
    "get", "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "nodes", "put",
    "remote", "shutdown", "wait", "__version__",
]
