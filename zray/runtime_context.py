"""``zray.get_runtime_context()``: who and where the caller is."""

from __future__ import annotations

import os

from zray import _runtime


class RuntimeContext:
    def __init__(self, runtime):
        self._runtime = runtime

    def get_job_id(self) -> str:
        job_id = self._runtime.client.job_id
        return job_id.hex() if job_id else None

    def get_node_id(self) -> str:
        node_id = self._runtime.client.local_node_id
        return node_id.hex() if node_id else None

    def get_task_id(self):
        task_id = getattr(self._runtime.client.current_task, "task_id", None)
        return task_id.hex() if task_id else None

    def get_worker_id(self) -> str:
        return self._runtime.client.identity.hex()

    def get_actor_id(self):
        worker = getattr(self._runtime, "worker", None)
        actor = getattr(worker, "actor", None) if worker is not None else None
        return actor.actor_id.hex() if actor is not None else None

    def get_assigned_resources(self) -> dict:
        worker = getattr(self._runtime, "worker", None)
        spec = getattr(worker, "current_spec", None) if worker else None
        return dict(spec.resources) if spec is not None and self.get_task_id() else {}

    def get_accelerator_ids(self) -> dict:
        return {"GPU": [str(g) for g in _gpu_ids()]}

    @property
    def job_id(self):
        return self.get_job_id()

    @property
    def node_id(self):
        return self.get_node_id()

    @property
    def task_id(self):
        return self.get_task_id()

    @property
    def namespace(self):
        return self._runtime.namespace

    @property
    def gcs_address(self):
        return self._runtime.address

    @property
    def was_current_actor_reconstructed(self) -> bool:
        worker = getattr(self._runtime, "worker", None)
        actor = getattr(worker, "actor", None) if worker is not None else None
        return bool(actor is not None and actor.spec.attempt > 0)

    def get(self) -> dict:
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "namespace": self.namespace}


def _gpu_ids() -> list:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(x) for x in visible.split(",") if x.strip().isdigit()]


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_runtime.runtime())


def get_gpu_ids() -> list:
    _runtime.runtime()
    return _gpu_ids()
