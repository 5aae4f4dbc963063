"""What the dashboard's tests share: a workload of known shape, and HTTP requests
with the standard library (importable by workers: the tasks live here)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import zray

MARKER = "dashboard-log-marker-7f3a"


@zray.remote
def finishes(i):
    time.sleep(0.01)
    return i


@zray.remote(max_retries=0)
def broken():
    raise ValueError("broken on purpose")


@zray.remote
def prints():
    print(f"{MARKER} from pid {os.getpid()}", flush=True)
    return os.getpid(), zray.get_runtime_context().get_node_id()


@zray.remote
class Greeter:
    def hello(self, name):
        print(f"hello {name}", flush=True)
        return f"hello {name}"

    def pid(self):
        return os.getpid()


def run_workload(n: int = 6) -> dict:
    """n finished tasks across the nodes, one failure, one print, one actor."""
    done = [finishes.options(scheduling_strategy="SPREAD").remote(i) for i in range(n)]
    assert zray.get(done) == list(range(n))
    failed = broken.remote()
    try:
        zray.get(failed)
    except ValueError:
        pass
    printed = prints.remote()
    pid, node_id = zray.get(printed)
    greeter = Greeter.options(name="greeter").remote()
    assert zray.get(greeter.hello.remote("dashboard")) == "hello dashboard"
    return {"done": [r.task_id().hex() for r in done], "failed": failed.task_id().hex(),
            "printed": printed.task_id().hex(), "pid": pid, "node_id": node_id,
            "actor": greeter, "actor_pid": zray.get(greeter.pid.remote())}


def request(url: str, path: str, token: str | None = None, headers=None, data=None,
            timeout_s: float = 10.0):
    """(status, headers, body) of one request; JSON bodies are decoded."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, headers=headers, data=data)
    try:
        with _opener.open(req, timeout=timeout_s) as response:
            status, got, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, got, body = exc.code, exc.headers, exc.read()
    if (got.get("Content-Type") or "").startswith("application/json"):
        body = json.loads(body)
    return status, got, body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def eventually(produce, ok, timeout_s: float = 15.0):
    """``produce()`` once ``ok`` of it holds (a worker's reports reach the head
    with its bookkeeping, possibly after the owner got the result)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = produce()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
