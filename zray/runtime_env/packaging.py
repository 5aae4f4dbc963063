"""Driver side: local working_dir / py_modules -> content-hashed zip URIs.

``resolve(runtime_env)`` checks the fields, packs each local directory
(``excludes`` patterns and ``.gitignore`` files honoured, as in Ray), hashes
its content, and uploads the zip to the head's PackageStore unless it holds
that hash already.  The result names packages by URI only; it is cached per
process, so a task submitted many times packs its directory once.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
import zipfile

from zray.runtime_env.keys import is_uri, uri_for

#: Bytes per upload call (each is one actor call carrying a bytes argument).
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
#: A job's runtime_env (URIs), JSON, for the driver ``zray job submit`` starts.
JOB_RUNTIME_ENV_VAR = "ZRAY_JOB_RUNTIME_ENV"
_resolved: dict[str, dict] = {}


def resolver(max_bytes: int):
    """``resolve`` bound to this cluster's PackageStore (Runtime.resolve_env)."""
    from zray.runtime_env.store import StoreClient
    return lambda runtime_env: resolve(runtime_env, max_bytes, StoreClient)


def check_local_paths(runtime_env: dict) -> None:
    """Fail early (before connecting) on a working_dir or py_module that is not
    a local directory."""
    paths = [("working_dir", runtime_env.get("working_dir"))] + \
        [("py_modules", m) for m in runtime_env.get("py_modules") or ()]
    for field, path in paths:
        if path and not is_uri(path) and not os.path.isdir(path):
            what = "does not exist" if not os.path.exists(path) else "is not a directory"
            raise ValueError(f"runtime_env[{field!r}] {os.path.abspath(path)!r} {what}: "
                             "give a local directory")


def resolve(runtime_env: dict | None, max_bytes: int, store_factory) -> dict | None:
    """``runtime_env`` with local paths replaced by uploaded package URIs."""
    if not runtime_env or not (runtime_env.get("working_dir") or
                               runtime_env.get("py_modules") or runtime_env.get("pip")):
        return runtime_env
    cache_key = json.dumps(runtime_env, sort_keys=True, default=str)
    done = _resolved.get(cache_key)
    if done is not None:
        return done
    excludes = list(runtime_env.get("excludes") or ())
    result = {k: v for k, v in runtime_env.items() if k != "excludes"}
    working_dir = runtime_env.get("working_dir")
    if working_dir and not is_uri(working_dir):
        result["working_dir"] = _package(working_dir, "working_dir", excludes, False,
                                         max_bytes, store_factory)
    modules = runtime_env.get("py_modules")
    if modules:
        result["py_modules"] = [
            m if is_uri(m) else _package(m, "py_modules", excludes, True, max_bytes,
                                         store_factory) for m in modules]
    if runtime_env.get("pip"):
        result["pip"] = pip_requirements(runtime_env["pip"])
    _resolved[cache_key] = result
    return result


def pip_requirements(pip) -> list:
    """Ray's forms of ``pip`` (a list, a requirements.txt path, or
    {"packages": [...]}) as the list of requirement lines workers install."""
    if isinstance(pip, dict):
        pip = pip.get("packages") or []
    if isinstance(pip, str):
        try:
            with open(pip) as f:
                pip = [line.strip() for line in f
                       if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ValueError(f"runtime_env['pip'] {pip!r} is not a readable requirements "
                             f"file ({exc}): give a list of requirements or a file") from None
    return list(pip)


def _package(path, field, excludes, keep_name, max_bytes, store_factory) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"runtime_env[{field!r}] must be a local directory path, got "
                        f"{type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        what = "does not exist" if not os.path.exists(path) else "is not a directory"
        raise ValueError(f"runtime_env[{field!r}] {path!r} {what}: give a local directory "
                         "(remote URIs and .zip/.whl files are not supported by zray)")
    files = package_files(path, excludes)
    digest = content_hash(path, files, os.path.basename(path) if keep_name else "")
    uri = uri_for(digest)
    store = store_factory()
    if store.has(digest):
        return uri
    prefix = os.path.basename(path) if keep_name else ""
    with tempfile.TemporaryFile() as tmp:
        write_zip(tmp, path, files, prefix)
        size = tmp.tell()
        if size > max_bytes:
            raise ValueError(
                f"runtime_env[{field!r}] {path!r} packs to {_size(size)}, over the "
                f"{_size(max_bytes)} limit: add 'excludes' patterns (or a "
                ".gitignore) for large files, or raise ZRAY_RUNTIME_ENV_MAX_PACKAGE_BYTES")
        tmp.seek(0)
        store.upload(digest, iter(lambda: tmp.read(UPLOAD_CHUNK_BYTES), b""))
    return uri


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes"


def package_files(root: str, excludes) -> list:
    """Relative posix paths of the files to pack, sorted; ``excludes`` (Ray's
    gitignore-style patterns relative to ``root``) and every ``.gitignore`` on
    the way down are honoured; ``.git`` is never packed."""
    found = []
    rules = [("", p) for p in excludes]
    _walk(root, "", rules, found)
    return sorted(found)


def _walk(root, rel_dir, rules, found):
    here = os.path.join(root, rel_dir)
    ignore = os.path.join(here, ".gitignore")
    if os.path.isfile(ignore):
        with open(ignore, errors="replace") as f:
            rules = rules + [(rel_dir, line.strip()) for line in f
                             if line.strip() and not line.startswith("#")]
    for entry in sorted(os.scandir(here), key=lambda e: e.name):
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        is_dir = entry.is_dir(follow_symlinks=True)
        if entry.name == ".git" or excluded(rel, is_dir, rules):
            continue
        if is_dir:
            _walk(root, rel, rules, found)
        elif entry.is_file(follow_symlinks=True):
            found.append(rel)


def excluded(rel: str, is_dir: bool, rules) -> bool:
    """Whether gitignore-style ``rules`` ((base dir, pattern) pairs) exclude
    ``rel``; a later ``!pattern`` re-includes."""
    result = False
    for base, pattern in rules:
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:]
        if base:
            if not rel.startswith(base + "/"):
                continue
            sub = rel[len(base) + 1:]
        else:
            sub = rel
        if _matches(sub, is_dir, pattern):
            result = not negate
    return result


def _matches(rel: str, is_dir: bool, pattern: str) -> bool:
    if pattern.endswith("/"):
        if not is_dir:
            return False
        pattern = pattern.rstrip("/")
    anchored = pattern.startswith("/") or "/" in pattern.strip("/")
    pattern = pattern.lstrip("/")
    if anchored:
        return fnmatch.fnmatchcase(rel, pattern) or \
            (pattern.startswith("**/") and fnmatch.fnmatchcase(rel, pattern[3:]))
    return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)


def content_hash(root: str, files, prefix: str) -> str:
    import hashlib    # here: OpenSSL's libcrypto is ~3.6 MB in every driver that never packs
    digest = hashlib.sha256(prefix.encode() + b"\0")
    for rel in files:
        full = os.path.join(root, rel)
        digest.update(rel.encode() + b"\0" + str(os.stat(full).st_mode & 0o111).encode())
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


#: A file whose first block deflates to more than this share of its size is
#: stored as it is (random or already compressed data: deflating 10 MB of it
#: costs ~0.25 s and saves nothing).
STORE_RATIO = 0.9
SAMPLE_BYTES = 64 * 1024


def write_zip(fileobj, root: str, files, prefix: str) -> None:
    with zipfile.ZipFile(fileobj, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel in files:
            path = os.path.join(root, rel)
            zf.write(path, f"{prefix}/{rel}" if prefix else rel,
                     compress_type=_compression(path))


def _compression(path: str) -> int:
    """ZIP_STORED for a file that does not compress (judged by its first block)."""
    import zlib
    try:
        with open(path, "rb") as f:
            sample = f.read(SAMPLE_BYTES)
    except OSError:
        return zipfile.ZIP_DEFLATED            # zf.write reports the error
    if len(sample) < 4096:
        return zipfile.ZIP_DEFLATED
    packed = len(zlib.compress(sample, 1))
    return zipfile.ZIP_STORED if packed > STORE_RATIO * len(sample) else zipfile.ZIP_DEFLATED
