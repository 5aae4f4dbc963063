"""Metrics at the head: user-metric aggregation and the exposition text (no sockets)."""

from __future__ import annotations

import pytest

from tests.unit.test_head_state import DRIVER, Harness, NODE_A, WORKER, executed, spec
from zray.head.metrics import UserMetrics, metric_name, render
from zray.protocol import Msg, STATUS_OK

pytestmark = pytest.mark.timeout(10)


def test_counters_add_gauges_keep_the_last_and_histograms_bucket():
    m = UserMetrics()
    m.record([("calls", "counter", "calls made", {"k": "a"}, 2.0, ()),
              ("calls", "counter", "calls made", {"k": "a"}, 1.0, ()),
              ("calls", "counter", "calls made", {"k": "b"}, 1.0, ()),
              ("temp", "gauge", "", {}, 5.0, ()), ("temp", "gauge", "", {}, 3.5, ()),
              ("lat", "histogram", "latency", {}, 0.5, (1.0, 10.0)),
              ("lat", "histogram", "latency", {}, 5.0, (1.0, 10.0)),
              ("lat", "histogram", "latency", {}, 50.0, (1.0, 10.0))])
    lines = m.lines()
    assert "# TYPE calls counter" in lines and "# HELP calls calls made" in lines
    assert 'calls{k="a"} 3' in lines and 'calls{k="b"} 1' in lines
    assert "temp 3.5" in lines
    assert ['lat_bucket{le="1"} 1', 'lat_bucket{le="10"} 2', 'lat_bucket{le="+Inf"} 3',
            "lat_sum 55.5", "lat_count 3"] == [x for x in lines if x.startswith("lat")]


def test_bad_records_are_counted_not_raised():
    m = UserMetrics(max_series=1)
    m.record([("x", "counter", "", {}, 1.0, ()), ("x", "gauge", "", {}, 1.0, ()),
              ("x", "counter", "", {"t": "new"}, 1.0, ()), ("y", "nope", "", {}, 1, ()),
              ("x", "counter", "", {}, -1.0, ()), ("z",)])
    assert m.refused == 5 and m.lines()[-1] == "x 1"
    assert metric_name("my.metric-1") == "my_metric_1" and metric_name("1a") == "_1a"


def test_label_values_are_escaped():
    m = UserMetrics()
    m.record([("c", "counter", "", {"path": 'a"b\\c\nd'}, 1.0, ())])
    assert m.lines()[-1] == 'c{path="a\\"b\\\\c\\nd"} 1'


def test_cluster_metrics_follow_the_head_tables():
    h = Harness()
    h.add_node()
    h.connect_driver()
    h.connect_worker()
    s = spec()
    out = h.send(DRIVER, Msg.SUBMIT_TASKS, (s,))
    assert [e.task_id for e in executed(out)] == [s.task_id]
    text = render(h.state)
    assert 'zray_tasks{State="SUBMITTED_TO_WORKER"} 1' in text
    assert "zray_cluster_active_nodes 1" in text
    node = NODE_A[1:].hex()
    assert f'zray_resources_total{{Name="CPU",NodeId="{node}"}} 2' in text
    assert f'zray_resources_used{{Name="CPU",NodeId="{node}"}} 1' in text
    assert "zray_scheduler_queue_length 0" in text
    h.send(WORKER, Msg.TASKS_FINISHED, (s.task_id, 0, STATUS_OK, (), 0.01))
    text = render(h.state)
    assert 'zray_tasks{State="FINISHED"} 1' in text
    assert f'zray_resources_used{{Name="CPU",NodeId="{node}"}} 0' in text
    (row,) = h.state.events.select()
    assert row["worker_pid"] == 2 and row["node_id"] == node
    assert row["duration_ms"] == pytest.approx(10.0)


def test_record_metrics_query_wants_no_reply():
    h = Harness()
    h.connect_driver()
    out = h.send(DRIVER, Msg.QUERY, (-1, "record_metrics",
                                     [("c", "counter", "", {}, 2.0, ())]))
    assert (DRIVER, Msg.QUERY_REPLY) not in out
    assert h.state.user_metrics.lines()[-1] == "c 2"
