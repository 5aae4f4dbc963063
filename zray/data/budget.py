"""The streaming executor's memory budget: how many bytes of blocks an
execution lets sit in the object store before its operators stop running ahead.

    operator wants to submit task k+1 ─► MemoryBudget.may_submit(k, window, mean)
        yes: k < window, k x mean block bytes <= limit, store use <= limit
        no:  the operator waits for its oldest task and hands that block on
             (it always keeps one task going, so a pipeline never stalls)

The limit is ``DataContext.object_store_memory_limit`` when set, else
``object_store_memory_limit_fraction`` of the cluster's object store bound (the
sum of ``bound_bytes`` of the live nodes' stores, ``zray.nodes()[i]["ObjectStore"]``).
Store use is the same table's ``used_bytes``, which nodes report with each
heartbeat (~1 s old at most), read at most every ``_POLL_S``.
"""

from __future__ import annotations

import math
import time

import zray
from zray.data.context import DataContext

_POLL_S = 0.05


def _cluster_store() -> tuple:
    """(used bytes, bound bytes) summed over the live nodes' object stores."""
    used = bound = 0
    for node in zray.nodes():
        if node.get("Alive", True):
            store = node.get("ObjectStore") or {}
            used += int(store.get("used_bytes", 0))
            bound += int(store.get("bound_bytes", 0))
    return used, bound


class MemoryBudget:
    """One execution's view of the object store (see the module docstring)."""

    def __init__(self, context: DataContext, read_store=_cluster_store,
                 clock=time.monotonic):
        self.context = context
        self._read_store = read_store
        self._clock = clock
        self._limit = None
        self._used = 0
        self._read_at = -math.inf
        self.waits = 0          # times an operator held back because of the budget

    @property
    def limit_bytes(self) -> int:
        if self._limit is None:
            self._refresh(force=True)
        return self._limit

    def used_bytes(self) -> int:
        self._refresh()
        return self._used

    def _refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._read_at < _POLL_S:
            return
        self._read_at = now
        used, bound = self._read_store()
        self._used = used
        if self._limit is None:
            fixed = self.context.object_store_memory_limit
            self._limit = int(fixed) if fixed else (
                int(bound * self.context.object_store_memory_limit_fraction) if bound
                else 0)

    def may_submit(self, pending: int, window: int, mean_block_bytes: float) -> bool:
        """Whether an operator with ``pending`` tasks in flight may start one more."""
        if pending == 0:
            return True
        if pending >= window:
            return False
        limit = self.limit_bytes
        if not limit:                 # no bound known: the task window alone applies
            return True
        if pending * mean_block_bytes > limit or self.used_bytes() > limit:
            self.waits += 1
            return False
        return True


def target_block_bytes(context: DataContext | None = None) -> int:
    """Bytes a read block should stay under: ``target_max_block_size``, and a
    quarter of the memory budget, so a few blocks fit in flight at once."""
    context = context or DataContext.get_current()
    target = int(context.target_max_block_size)
    if zray.is_initialized():
        limit = MemoryBudget(context).limit_bytes
        if limit:
            target = min(target, max(1, limit // 4))
    return max(1, target)
