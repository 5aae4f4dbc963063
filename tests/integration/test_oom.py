"""Out-of-memory protection on a real local cluster.

The node's memory monitor reads the host's real memory (psutil); the test sets
``memory_usage_threshold`` just above what the host uses when it starts, by
less than what the test task allocates, so the task's own (real, touched)
allocation crosses the threshold.  Attempts are counted with marker files.
"""

import os

import psutil
import pytest

import zray
from zray import exceptions as zerr
from tests import tasks as t
from tests.actors import Counter

pytestmark = pytest.mark.timeout(180)

GB = 1024 ** 3
MARGIN_BYTES = 1 * GB      # the threshold sits this far above the host's use at start
HOG_BYTES = 3 * GB         # what the test task allocates: well past the threshold


@pytest.fixture(scope="module")
def oom_cluster():
    memory = psutil.virtual_memory()
    if memory.available < HOG_BYTES + 2 * GB:
        pytest.skip("the host has too little free memory for this test")
    used = memory.total - memory.available
    threshold = (used + MARGIN_BYTES) / memory.total
    zray.init(num_cpus=2, _system_config={
        "memory_usage_threshold": threshold, "memory_monitor_refresh_ms": 100,
        "task_oom_retry_delay_base_ms": 100, "spare_blank_bytes": 0})
    yield threshold
    zray.shutdown()


def attempts(folder):
    return len(os.listdir(folder))


def test_a_task_over_the_threshold_fails_with_out_of_memory_after_its_retries(
        oom_cluster, tmp_path):
    survivor = Counter.remote()
    survivor_pid = zray.get(survivor.pid.remote(), timeout=30)
    ref = t.hog_memory.options(max_retries=2).remote(str(tmp_path), HOG_BYTES)
    with pytest.raises(zerr.OutOfMemoryError) as info:
        zray.get(ref, timeout=120)
    assert attempts(tmp_path) == 3                  # the first run and two retries
    text = str(info.value)
    assert "hog_memory" in text and "running low on memory" in text
    assert "max_retries" in text                    # what to do about it
    assert isinstance(info.value, zerr.RayError)
    # the node, the actor (non-retriable, older) and new tasks live on
    assert zray.get(survivor.pid.remote(), timeout=30) == survivor_pid
    assert zray.get(t.echo.remote(7), timeout=30) == 7
    assert all(node["Alive"] for node in zray.nodes())


def test_a_retried_task_that_fits_succeeds(oom_cluster, tmp_path):
    ref = t.hog_memory.options(max_retries=1).remote(str(tmp_path), HOG_BYTES,
                                                     only_first_attempt=True)
    assert zray.get(ref, timeout=120) == "fits"
    assert attempts(tmp_path) == 2


def test_a_task_without_retries_fails_at_once(oom_cluster, tmp_path):
    ref = t.hog_memory.options(max_retries=0).remote(str(tmp_path), HOG_BYTES)
    with pytest.raises(zerr.OutOfMemoryError):
        zray.get(ref, timeout=120)
    assert attempts(tmp_path) == 1
