"""Starting and stopping: init, shutdown, re-init, dead drivers, infeasible tasks."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import zray
from tests import tasks as t
from tests.conftest import node_preloaded, wait_for, wait_until_clean, zray_segments

pytestmark = pytest.mark.timeout(60)


def test_init_twice_raises_unless_ignored(fresh_cluster):
    fresh_cluster()
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        zray.init()
    zray.init(ignore_reinit_error=True)
    assert zray.is_initialized()


def test_shutdown_then_init_again(fresh_cluster):
    fresh_cluster(num_cpus=1)
    assert zray.get(t.echo.remote(1)) == 1
    zray.shutdown()
    assert not zray.is_initialized()
    with pytest.raises(RuntimeError, match="init"):
        zray.get(t.echo.remote(1))
    fresh_cluster(num_cpus=1)
    assert zray.get(t.echo.remote(2)) == 2


def test_shutdown_leaves_nothing_behind():
    started = time.time()
    zray.init(num_cpus=2)
    ref = zray.put(b"x" * 10_000_000)
    zray.get([t.echo.remote(i) for i in range(4)])
    children = psutil.Process().children(recursive=True)
    assert len(children) >= 4          # head, node, fork server, workers
    assert zray_segments()
    zray.shutdown()
    del ref
    procs, segments, _ = wait_until_clean(started)
    assert not procs and not segments
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_killed_driver_leaves_no_orphans(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import numpy as np
        import zray
        zray.init(num_cpus=2)
        ref = zray.put(np.ones(2_000_000))

        @zray.remote
        def forever():
            time.sleep(1000)

        running = [forever.remote() for _ in range(2)]
        zray.wait(running, timeout=1.0)
        print("ready", flush=True)
        time.sleep(1000)
    """))
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              text=True, cwd=os.getcwd())
    try:
        assert driver.stdout.readline().strip() == "ready"
        descendants = psutil.Process(driver.pid).children(recursive=True)
        assert len(descendants) >= 4
        time.sleep(0.5)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert not alive, f"orphans still running: {[p.pid for p in alive]}"
        deadline = time.monotonic() + 10
        while zray_segments() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not zray_segments()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_infeasible_task_warns_and_stays_pending(fresh_cluster, caplog):
    fresh_cluster(num_cpus=1)
    ref = t.echo.options(num_cpus=4).remote(1)
    ready, _ = zray.wait([ref], timeout=1.0)
    assert not ready
    deadline = time.monotonic() + 5
    while "cannot be scheduled" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "cannot be scheduled" in caplog.text
    assert "'CPU': 4.0" in caplog.text and "echo" in caplog.text


def test_context_manager_and_shutdown_idempotent():
    with zray.init(num_cpus=1):
        assert zray.get(t.echo.remote(5)) == 5
    assert not zray.is_initialized()
    zray.shutdown()


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py")))
def test_example_programs_run(name):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)],
                            capture_output=True, text=True, timeout=140)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-2000:]}"


SECOND_DRIVER = """
import sys, zray
zray.init(address=sys.argv[1], namespace="shared")
from tests import actors as a
detached = a.Counter.options(name="keeper", lifetime="detached").remote()
scoped = a.Counter.options(name="scoped").remote()
zray.get([detached.increment.remote(), scoped.increment.remote()])
print(zray.get(zray.put(41)) + 1)
"""


def test_second_driver_and_detached_actor_lifetimes(fresh_cluster, tmp_path):
    context = fresh_cluster(num_cpus=2, namespace="shared")
    script = tmp_path / "second.py"
    script.write_text(SECOND_DRIVER)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, str(script), context["address"]], cwd=root,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "42"
    keeper = zray.get_actor("keeper")                 # detached: outlives its driver
    assert zray.get(keeper.get_count.remote()) == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:               # non-detached: dies with its job
        try:
            zray.get_actor("scoped")
        except ValueError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the named, non-detached actor outlived its driver")
    zray.kill(keeper)


def test_bad_address_is_a_clear_error():
    with pytest.raises(ValueError, match="HOST:PORT"):
        zray.init(address="not an address")
    assert not zray.is_initialized()


def test_malformed_messages_never_kill_the_head(fresh_cluster):
    import random
    import pickle
    import zmq
    from zray import protocol
    context = fresh_cluster(num_cpus=1)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(context["address"])
    rng = random.Random(7)
    good = protocol.encode(protocol.Msg.SUBMIT_TASKS, [(None,)])[0]
    for i in range(300):
        choice = i % 6
        if choice == 0:
            frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))]
        elif choice == 1:
            frames = [good[:rng.randrange(1, len(good))]]          # truncated
        elif choice == 2:
            frames = [b"ZR" + bytes([protocol.PROTOCOL_MAJOR + 1, 0, 7]) + good[5:]]
        elif choice == 3:
            frames = [protocol.TAG + bytes([200]) + pickle.dumps([], 5)]   # unknown type
        elif choice == 4:
            frames = [good]                          # a spec of None: the handler fails
        else:
            frames = [good, b"extra", b"frames"]
        sock.send_multipart(frames)
    sock.close()
    ctx.term()
    assert zray.get(t.add.remote(20, 22), timeout=30) == 42


@zray.remote
def loaded(name):
    return name in sys.modules


def fork_server_children():
    """This cluster's workers: the fork server's live children (forked from
    it, they show its command line too)."""
    forked = {p.pid: p for p in psutil.Process().children(recursive=True)
              if "zray.node.forkserver" in " ".join(p.cmdline())}
    [server] = [p for p in forked.values() if p.ppid() not in forked]
    return [c for c in server.children() if c.status() != psutil.STATUS_ZOMBIE]


def test_workers_preload_only_the_modules_configured(fresh_cluster):
    """The node's first worker is forked before the preload (for a fast start)
    and replaced once it is done: the first task after that finds numpy loaded
    without importing it, and the first worker is gone."""
    # (idle workers are not reaped here: the first one must go as replaced)
    context = fresh_cluster(num_cpus=1, _system_config={"idle_worker_timeout_s": 300})
    assert wait_for(lambda: node_preloaded(context.session_dir))   # the default: numpy
    assert zray.get(loaded.remote("numpy")) is True
    assert wait_for(lambda: len(fork_server_children()) == 1)   # the replacement alone
    zray.shutdown()
    context = fresh_cluster(num_cpus=1, _system_config={"worker_preload_modules": ""})
    assert wait_for(lambda: node_preloaded(context.session_dir))
    assert zray.get(loaded.remote("numpy")) is False      # imported on first use only
    zray.shutdown()
    context = fresh_cluster(num_cpus=1,
                            _system_config={"worker_preload_modules": "json, numpy"})
    assert wait_for(lambda: node_preloaded(context.session_dir))
    assert zray.get(loaded.remote("numpy")) is True


def test_the_worker_forked_before_the_preload_is_replaced_while_tasks_run(fresh_cluster,
                                                                         tmp_path):
    """Tasks sent before and during the replacement each run once, and the
    synchronous fast path (a lease) comes back on the replacement."""
    context = fresh_cluster(num_cpus=2, _system_config={"prestart_workers": 2,
                                                        "idle_worker_timeout_s": 300})
    slow = [t.sleep_then.remote(0.2, i) for i in range(4)]   # busy when the preload ends
    counted = [t.count_run.remote(str(tmp_path / str(i))) for i in range(100)]
    assert zray.get(slow + counted, timeout=30) == list(range(4)) + [True] * 100
    assert all((tmp_path / str(i)).read_text() == "x" for i in range(100))
    assert wait_for(lambda: node_preloaded(context.session_dir))
    assert wait_for(lambda: len(fork_server_children()) <= 2)
    assert all(zray.get([loaded.remote("numpy") for _ in range(4)]))
    from tests.integration.test_leases import earn_grant
    earn_grant()
