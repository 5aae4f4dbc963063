"""zray.data's progress bars (drawn only on a terminal, when enabled) and the
Dask scheduler's graph walk, without a cluster."""

from __future__ import annotations

import io
import sys

import pytest

from zray.data import progress
from zray.data.context import DataContext


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal_and_when_enabled(monkeypatch):
    context = DataContext()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress.enabled(context)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress.enabled(context)
    context.enable_progress_bars = False
    assert not progress.enabled(context)


def test_a_disabled_bar_does_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress.ProgressBar("Read", 3, 0, enabled=False)
    bar.update(10)
    bar.close()
    assert sys.stderr.getvalue() == ""


def test_a_bar_counts_blocks_and_rows(monkeypatch):
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress.ProgressBar("ReadRange->MapBatches(f)", 2, 0, enabled=True)
    bar.update(5)
    bar.update(10)
    bar.close()
    bar.close()                                    # closing twice is harmless
    drawn = terminal.getvalue()
    assert "ReadRange->MapBatches(f)" in drawn and "2/2" in drawn and "10 rows" in drawn


def test_dask_graph_order_puts_dependencies_first_and_culls():
    pytest.importorskip("dask")
    import operator
    from dask._task_spec import convert_legacy_graph
    from zray.util.dask import _order, _pack
    graph = convert_legacy_graph({"a": 1, "b": (operator.add, "a", 1),
                                  "c": (operator.mul, "b", "a"), "unused": (abs, -1)})
    order = _order(graph, ["c"])
    assert set(order) == {"a", "b", "c"} and order.index("a") < order.index("b") < \
        order.index("c")
    deep = {f"k{i}": (operator.add, f"k{i - 1}", 1) for i in range(1, 5000)}
    deep["k0"] = 0
    assert len(_order(convert_legacy_graph(deep), ["k4999"])) == 5000   # no recursion
    assert _pack([["x", "y"], "z"], {"x": 1, "y": 2, "z": 3}) == [[1, 2], 3]
    with pytest.raises(KeyError, match="nope"):
        _order(graph, ["nope"])
