"""Worker side: make a resolved runtime_env's packages this process's code.

Each package is fetched from the PackageStore once per node and unpacked
under ``<session>/runtime_resources/node-<id>/<digest>/`` (a file lock makes
the workers of one node take turns; the folder appears by an atomic rename,
so a half-unpacked package is never used).  The worker then chdirs into the
working_dir and puts it, and each py_module's folder, first on sys.path.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import zipfile

from zray.runtime_env.keys import digest_of, pip_digest


def cache_dir(session_dir: str, node_id: bytes) -> str:
    return os.path.join(session_dir, "runtime_resources", f"node-{node_id.hex()[:12]}")


def ensure_package(uri: str, cache: str, fetch) -> str:
    """The local folder holding ``uri`` unpacked, fetching it if needed."""
    digest = digest_of(uri)
    target = os.path.join(cache, digest)
    if os.path.isdir(target):
        return target
    os.makedirs(cache, mode=0o700, exist_ok=True)
    with open(os.path.join(cache, digest + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return target
        data = fetch(digest)
        partial = target + f".tmp-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)            # (an empty package unpacks to nothing)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in member.split("/"):
                    raise ValueError(f"package {digest} holds an unsafe path {member!r}")
            zf.extractall(partial)
        os.rename(partial, target)
    return target


def ensure_pip(requirements: list, cache: str) -> str:
    """A folder holding ``requirements`` installed (``pip install --target``,
    once per node per requirement list); the system's packages stay visible
    behind it, as in a virtualenv made with --system-site-packages."""
    target = os.path.join(cache, "pip-" + pip_digest(requirements))
    if os.path.isdir(target):
        return target
    os.makedirs(cache, mode=0o700, exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return target
        partial = target + f".tmp-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "--root-user-action=ignore", "--target", partial, *requirements],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"pip install {' '.join(requirements)} failed "
                               f"(exit {done.returncode}): " + " | ".join(tail))
        os.rename(partial, target)
    return target


def code_paths(runtime_env: dict, cache: str, fetch) -> tuple:
    """(the unpacked working_dir or None, the folders to put first on sys.path)."""
    paths = [ensure_package(uri, cache, fetch)
             for uri in runtime_env.get("py_modules") or ()]
    if runtime_env.get("pip"):
        paths.append(ensure_pip(runtime_env["pip"], cache))
    working_dir = None
    if runtime_env.get("working_dir"):
        working_dir = ensure_package(runtime_env["working_dir"], cache, fetch)
        paths.insert(0, working_dir)
    return working_dir, paths


def apply_code_env(runtime_env: dict, cache: str, fetch) -> None:
    """chdir into the working_dir; it, the py_modules and the pip folder go
    first on sys.path."""
    working_dir, paths = code_paths(runtime_env, cache, fetch)
    if working_dir:
        os.chdir(working_dir)
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
