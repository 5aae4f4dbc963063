"""The chaos run of tools/chaos.py as a test: a 1,000-task map-reduce over four
nodes while nodes are SIGKILLed and added, compared with the local answer."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import chaos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(170)]


def test_map_reduce_survives_nodes_killed_and_added():
    expected = chaos.expected_total(1000)
    killed = 0
    for run in range(2):
        ok, elapsed_s, kills = chaos.run_once(1000, every_s=1.5, seed=run,
                                              expected=expected, log=print)
        assert ok, f"run {run}: wrong answer after {kills} kills"
        killed += kills
    assert killed >= 2                     # the faults really happened
