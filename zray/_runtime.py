"""The process's connection to a cluster: set by ``init`` in a driver, by the
worker loop in a worker.  Everything in the public API reaches the client
through ``client()``, so there is exactly one place that knows whether zray is
initialized."""

from __future__ import annotations

_active = None


class Runtime:
    def __init__(self, client, mode: str, namespace: str | None = None):
        self.client = client
        self.mode = mode          # "driver" or "worker"
        self.namespace = namespace
        self.cluster = None       # the local cluster a driver started, if any
        self.address = None
        #: What tasks and actors submitted from here inherit (Ray's runtime_env
        #: inheritance): the job's in a driver, the running task's in a worker.
        self.runtime_env = None
        #: Turns local working_dir/py_modules paths into uploaded package URIs
        #: (zray.runtime_env.packaging.resolver, set by init and the worker).
        self.resolve_env = _unchanged


def _unchanged(runtime_env):
    return runtime_env


def set_runtime(runtime) -> None:
    global _active
    _active = runtime


def get_runtime():
    return _active


def runtime() -> Runtime:
    if _active is None:
        raise RuntimeError("zray is not initialized: call zray.init() first.")
    return _active


def client():
    return runtime().client
