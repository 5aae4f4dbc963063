"""The PackageStore: a detached actor on the head node that keeps packages.

Packages arrive in chunks (``put_chunk`` then ``commit``, which checks the
content hash's length only: the name is the uploader's claim, and only
cluster members, who hold the key, can call it) and are kept as
``<session>/runtime_resources/packages/<digest>.zip`` on the head's host.
Workers call ``fetch(digest)``; the zip comes back as an ordinary object,
so a large one travels by the store's chunked transfer.
"""

from __future__ import annotations

import os
import threading

import zray

STORE_NAME = "_zray_package_store"
SYSTEM_NAMESPACE = "_zray_system"


class PackageStore:
    def __init__(self):
        from zray import _runtime
        worker = getattr(_runtime.runtime(), "worker", None)
        session = worker.session_dir if worker is not None else "/tmp"
        self.folder = os.path.join(session, "runtime_resources", "packages")
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self.lock = threading.Lock()

    def _path(self, digest: str) -> str:
        if not digest or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"bad package digest {digest!r}")
        return os.path.join(self.folder, digest + ".zip")

    def has(self, digest: str) -> bool:
        return os.path.exists(self._path(digest))

    def put_chunk(self, digest: str, index: int, data: bytes) -> None:
        mode = "wb" if index == 0 else "ab"
        with self.lock, open(self._path(digest) + ".part", mode) as f:
            f.write(data)

    def commit(self, digest: str) -> int:
        path = self._path(digest)
        os.replace(path + ".part", path)
        return os.path.getsize(path)

    def fetch(self, digest: str) -> bytes:
        try:
            with open(self._path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"package {digest} is not on the head: upload it again "
                                    "(resubmit the job or restart the driver)") from None


class StoreClient:
    """Synchronous calls to the cluster's PackageStore (started on first use)."""

    def __init__(self):
        self.actor = _store_actor()

    def has(self, digest: str) -> bool:
        return zray.get(self.actor.has.remote(digest))

    def upload(self, digest: str, chunks) -> None:
        pending = [self.actor.put_chunk.remote(digest, i, chunk)
                   for i, chunk in enumerate(chunks)]
        zray.get(pending)       # one actor, max_concurrency=1: in order
        zray.get(self.actor.commit.remote(digest))

    def fetch(self, digest: str) -> bytes:
        return zray.get(self.actor.fetch.remote(digest))


def _store_actor():
    return zray.remote(PackageStore).options(
        name=STORE_NAME, namespace=SYSTEM_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0, max_concurrency=1,
        runtime_env={"working_dir": None, "py_modules": None},   # not the job's code
        resources={"node:__internal_head__": 0.001}).remote()
