"""A joblib backend that runs ``Parallel`` batches as zray tasks, as Ray's
``ray.util.joblib`` does::

    import joblib
    from zray.util.joblib import register_zray
    register_zray()
    with joblib.parallel_backend("zray"):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(i) for i in range(100))

Each batch joblib makes (``BatchedCalls``) becomes one task; ``n_jobs=-1``
means the cluster's CPUs.  ``zray.init()`` runs first if no cluster is up.
Needs joblib (``pip install joblib``).
"""

from __future__ import annotations

from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase
from joblib.parallel import register_parallel_backend

import zray


@zray.remote
def _run_batch(batch):
    return batch()


class ZrayBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ParallelBackendBase on zray tasks (futures from ``ref.future()``)."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    default_n_jobs = -1

    def __init__(self, nesting_level=None, inner_max_num_threads=None,
                 ray_remote_args: dict | None = None, **kwargs):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)
        self.remote_args = dict(ray_remote_args or {})
        self._task = _run_batch

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 has no meaning for joblib's zray backend")
        if not zray.is_initialized():
            zray.init()
        cpus = max(1, int(zray.cluster_resources().get("CPU", 1)))
        if n_jobs is None or n_jobs < 0:
            return max(1, cpus + 1 + n_jobs) if n_jobs is not None else cpus
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        self._task = _run_batch.options(**self.remote_args) if self.remote_args \
            else _run_batch
        return n_jobs

    def submit(self, func, callback=None):
        future = self._task.remote(func).future()
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        return future.result()

    def abort_everything(self, ensure_ready=True):
        """Nothing to tear down: unfinished batches' results are dropped."""


def register_zray() -> None:
    """Register ``"zray"`` (and ``"ray"``, for code written for Ray) as joblib
    backends."""
    register_parallel_backend("zray", ZrayBackend)
    register_parallel_backend("ray", ZrayBackend)


register_ray = register_zray
