"""Tuner.restore: a driver killed mid-run (by one of its trials) leaves an
experiment that a new driver finishes without re-running finished trials."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import zray
from tests import tune_trainables as tt
from zray import tune

pytestmark = pytest.mark.timeout(60)

SCRIPT = textwrap.dedent("""
    import os, sys
    import zray
    from zray import tune
    from tests import tune_trainables as tt
    zray.init(num_cpus=2)
    tune.Tuner(tt.kills_driver_on_marker,
               param_space={"x": tune.grid_search([1, 2, 3, 4, 5]),
                            "marker_dir": sys.argv[1], "driver_pid": os.getpid()},
               tune_config=tune.TuneConfig(max_concurrent_trials=1),
               run_config=tune.RunConfig(name="exp", storage_path=sys.argv[2],
                                         verbose=0)).fit()
""")


def test_restore_finishes_an_interrupted_run(tmp_path):
    markers, storage = tmp_path / "markers", tmp_path / "storage"
    markers.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    killed = subprocess.run([sys.executable, "-c", SCRIPT, str(markers), str(storage)],
                            env=env, timeout=40, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert sorted(os.listdir(markers)) == ["killed", "ran-1", "ran-2", "ran-3"]
    path = storage / "exp"
    assert tune.Tuner.can_restore(path)
    zray.init(num_cpus=2)
    try:
        grid = tune.Tuner.restore(str(path), tt.kills_driver_on_marker).fit()
    finally:
        zray.shutdown()
    assert grid.num_terminated == 5 and grid.num_errors == 0
    assert sorted(r.metrics["score"] for r in grid) == [1, 2, 3, 4, 5]
    runs = {n: (markers / n).read_text().count("1") for n in os.listdir(markers)
            if n.startswith("ran-")}
    assert runs == {"ran-1": 1, "ran-2": 1, "ran-3": 2, "ran-4": 1, "ran-5": 1}
