"""The streaming executor's memory budget, without a cluster."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")

from zray.data.budget import MemoryBudget  # noqa: E402
from zray.data.context import DataContext  # noqa: E402


class Store:
    def __init__(self, used, bound):
        self.used, self.bound, self.reads = used, bound, 0

    def __call__(self):
        self.reads += 1
        return self.used, self.bound


def _budget(store, now=None, **fields):
    clock = now or (lambda: 0.0)
    return MemoryBudget(DataContext(**fields), read_store=store, clock=clock)


def test_limit_is_a_fraction_of_the_bound_or_the_fixed_limit():
    assert _budget(Store(0, 1000)).limit_bytes == 500
    assert _budget(Store(0, 1000), object_store_memory_limit_fraction=0.25).limit_bytes == 250
    assert _budget(Store(0, 1000), object_store_memory_limit=123).limit_bytes == 123


def test_one_task_is_always_allowed_and_the_window_caps_the_rest():
    budget = _budget(Store(10**9, 1000))
    assert budget.may_submit(0, 4, 10**9)
    assert not budget.may_submit(4, 4, 0)


def test_store_use_or_blocks_in_flight_over_the_limit_hold_an_operator_back():
    store = Store(100, 1000)
    budget = _budget(store)
    assert budget.may_submit(2, 8, 100)           # 200 in flight, 100 used, limit 500
    assert not budget.may_submit(3, 8, 200)       # 600 in flight
    store.used = 600
    budget._read_at = float("-inf")
    assert not budget.may_submit(1, 8, 1)
    assert budget.waits == 2


def test_store_use_is_polled_at_most_every_50_ms():
    now = [0.0]
    store = Store(0, 1000)
    budget = _budget(store, now=lambda: now[0])
    for _ in range(10):
        budget.used_bytes()
    assert store.reads == 1
    now[0] = 0.06
    budget.used_bytes()
    assert store.reads == 2


def test_no_known_bound_leaves_only_the_window():
    budget = _budget(Store(10**9, 0))
    assert budget.may_submit(3, 4, 10**9)
