"""Names of resolved runtime_env packages (a leaf module: no zray imports)."""

from __future__ import annotations

URI_PREFIX = "zray://pkg_"
URI_SUFFIX = ".zip"


def uri_for(digest: str) -> str:
    return f"{URI_PREFIX}{digest}{URI_SUFFIX}"


def digest_of(uri: str) -> str:
    """The content hash a package URI names (ValueError for anything else)."""
    if not (isinstance(uri, str) and uri.startswith(URI_PREFIX) and uri.endswith(URI_SUFFIX)):
        raise ValueError(f"{uri!r} is not a zray package URI")
    digest = uri[len(URI_PREFIX):-len(URI_SUFFIX)]
    if not digest or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"{uri!r} is not a zray package URI")
    return digest


def is_uri(value) -> bool:
    return isinstance(value, str) and value.startswith(URI_PREFIX)


def code_env_key(runtime_env) -> str:
    """What a worker's Python state depends on: its working_dir and py_modules
    ('' for none).  A worker that ran with one key never runs a task with
    another (env_vars are set and restored per task, so they do not count)."""
    if not runtime_env:
        return ""
    working_dir = runtime_env.get("working_dir") or ""
    modules = runtime_env.get("py_modules") or ()
    pip = runtime_env.get("pip") or ()
    if not working_dir and not modules and not pip:
        return ""
    key = working_dir + "|" + ",".join(modules)
    return key + "|pip:" + pip_digest(pip) if pip else key


def pip_digest(requirements) -> str:
    """Names a resolved pip requirement list (a list of str)."""
    import hashlib
    return hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
