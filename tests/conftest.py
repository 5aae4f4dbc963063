"""Fixtures: real local clusters, and a check that nothing outlives a test module."""

from __future__ import annotations

import os
import time

import psutil
import pytest

import zray

# ZRAY_SHM_DIR lets two checkouts run their suites side by side without
# seeing each other's segments.
SHM_DIR = os.environ.get("ZRAY_SHM_DIR", "/dev/shm")
TEMP_DIR = os.environ.get("ZRAY_TEMP_DIR", "/tmp/zray-sessions")
# `zray start --head` starts the dashboard by default where its extra is
# installed; the CLI tests count and stop what they start without it (the
# dashboard's own tests start it on purpose).
os.environ.setdefault("ZRAY_INCLUDE_DASHBOARD", "0")
#: Folders tests spill to besides the session folders (they add theirs here).
SPILL_BASES: set = set()


def zray_segments() -> set:
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith("zray_")}
    except FileNotFoundError:
        return set()


def object_segments() -> set:
    """Segments holding objects (not the spares a node keeps for reuse, nor
    freed ones waiting to become spares)."""
    return {n for n in zray_segments() if "_spare" not in n and "_drain_" not in n}


def spill_files() -> set:
    """Files in nodes' spill folders (``zray-spill-*``, in session folders or a
    test's own spill folder); a node removes its folder when it stops."""
    bases = set(SPILL_BASES)
    try:
        bases.update(os.path.join(TEMP_DIR, n) for n in os.listdir(TEMP_DIR)
                     if n.startswith("session_"))
    except FileNotFoundError:
        pass
    found = set()
    for base in bases:
        try:
            folders = [n for n in os.listdir(base) if n.startswith("zray-spill-")]
        except OSError:
            continue
        for folder in folders:
            path = os.path.join(base, folder)
            found.add(path)
            try:
                found.update(os.path.join(path, n) for n in os.listdir(path))
            except OSError:
                pass
    return found


def _same_shm_dir(proc) -> bool:
    """Whether an orphan uses this run's shared-memory folder (an orphan of
    another test run on the machine, with its own ZRAY_SHM_DIR, is not ours)."""
    try:
        theirs = proc.environ().get("ZRAY_SHM_DIR")
    except (psutil.Error, OSError):
        return True
    return theirs == os.environ.get("ZRAY_SHM_DIR")


def zray_processes(since: float) -> list:
    """zray processes started after ``since`` that are ours: our descendants, and
    orphans (adopted by init, or whose ancestor chain leads to us)."""
    found = []
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.info["pid"] == os.getpid() or proc.info["create_time"] < since - 1:
            continue
        if proc.info["pid"] not in mine and (proc.info["ppid"] != 1 or
                                             not _same_shm_dir(proc)):
            continue
        # an orphan is ours only if it uses our shared-memory folder: on a machine
        # shared by several checkouts (each with its ZRAY_SHM_DIR), another's
        # `zray start` leaves orphans too
        if proc.info["pid"] not in mine and f'"shm_dir": "{SHM_DIR}"' not in cmdline:
            continue
        if "zray.head" in cmdline or "zray.node" in cmdline or "zray.dashboard" in cmdline:
            found.append((proc.info["pid"], cmdline[:120]))
    return found


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or the time is up; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def node_preloaded(session_dir: str, node_id_hex: str = "") -> bool:
    """A node's log says its fork server has imported worker_preload_modules:
    the workers forked before are being replaced (idle ones already retire),
    and a task sent from now on runs on a worker forked after (any node of the
    session when ``node_id_hex`` is empty)."""
    import glob
    pattern = os.path.join(session_dir, "logs", f"node-{node_id_hex[:12]}*.log")
    for path in glob.glob(pattern):
        with open(path, errors="replace") as f:
            if "the fork server preloaded worker_preload_modules" in f.read():
                return True
    return False


def wait_until_clean(since: float, timeout_s: float = 10.0, spilled_before=frozenset()):
    deadline = time.monotonic() + timeout_s
    while True:
        procs, segments = zray_processes(since), zray_segments()
        spilled = spill_files() - spilled_before
        if (not procs and not segments and not spilled) or time.monotonic() > deadline:
            return procs, segments, spilled
        time.sleep(0.1)


@pytest.fixture(autouse=True, scope="module")
def no_leaks():
    """Fail the module if a zray process, /dev/shm segment or spill file outlives it."""
    started = time.time()
    before = zray_segments()
    spilled_before = spill_files()
    yield
    if zray.is_initialized():
        zray.shutdown()
    procs, segments, spilled = wait_until_clean(started, spilled_before=spilled_before)
    segments -= before
    assert not procs, f"zray processes outlived the test module: {procs}"
    assert not segments, f"shared-memory segments outlived the test module: {sorted(segments)[:5]}"
    assert not spilled, f"spill files outlived the test module: {sorted(spilled)[:5]}"


@pytest.fixture(scope="module")
def cluster():
    """One local cluster with 2 CPUs shared by a module's tests."""
    zray.init(num_cpus=2, num_gpus=1, resources={"custom": 2})
    yield zray
    zray.shutdown()


@pytest.fixture
def fresh_cluster():
    """A cluster of one's own, for tests that break things."""
    started = []

    def start(**kwargs):
        kwargs.setdefault("num_cpus", 2)
        started.append(True)
        return zray.init(**kwargs)

    yield start
    if zray.is_initialized():
        zray.shutdown()
