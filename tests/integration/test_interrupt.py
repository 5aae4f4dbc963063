"""Ctrl-C (a real SIGINT) during get and wait raises KeyboardInterrupt in the driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)

DRIVER = textwrap.dedent("""
    import signal, sys, time
    import zray

    # Python leaves SIGINT ignored when it starts with it ignored, as every
    # command a non-interactive shell runs in the background does (a suite run
    # as `bash -c '... &'`): take Python's usual Ctrl-C handler, as a program
    # started from a terminal has it
    signal.signal(signal.SIGINT, signal.default_int_handler)

    out_dir = sys.argv[1]
    zray.init(num_cpus=1)

    @zray.remote
    def forever():
        time.sleep(3600)

    ref = forever.remote()
    outcome = []
    for name, call in (("get", lambda: zray.get(ref)),
                       ("wait", lambda: zray.wait([ref]))):
        try:
            open(f"{out_dir}/{name}", "w").close()      # the test sends SIGINT soon
            call()
            outcome.append(f"{name}:returned")
        except KeyboardInterrupt:
            outcome.append(f"{name}:KeyboardInterrupt")
        except BaseException as exc:
            outcome.append(f"{name}:{type(exc).__name__}")
    # the task the user did not cancel still runs
    ready, _ = zray.wait([ref], timeout=0.2)
    outcome.append(f"still_running:{not ready}")
    zray.shutdown()
    with open(f"{out_dir}/outcome", "w") as f:
        f.write(" ".join(outcome))
""")


def test_ctrl_c_during_get_and_wait_raises_keyboard_interrupt(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        for name in ("get", "wait"):
            assert wait_for(lambda: (tmp_path / name).exists(), 30), f"no {name} marker"
            # the marker is written just before the call: give it time to block
            # (a SIGINT before the call would be caught the same and prove less)
            wait_for(lambda: False, 0.5)
            driver.send_signal(signal.SIGINT)
        assert driver.wait(30) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    outcome = (tmp_path / "outcome").read_text().split()
    assert outcome == ["get:KeyboardInterrupt", "wait:KeyboardInterrupt",
                       "still_running:True"], outcome
