"""DataContext: the process's settings for zray.data, with Ray's name."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

_lock = threading.Lock()
_current = None


@dataclass
class DataContext:
    """Settings read when a dataset executes (so set them before consuming)."""

    #: Blocks a read is split into when ``override_num_blocks`` is not given:
    #: at least this many (when the source can be split that finely).
    read_op_min_num_blocks: int = 8
    #: Tasks (or actor calls) one operator keeps in flight at once; the bound
    #: that keeps a streaming execution's memory use flat.
    max_tasks_in_flight_per_operator: int = 4
    #: Rows a map_batches batch holds when ``batch_size="default"``.
    target_batch_size: int = 1024
    #: Rows sampled from each block to choose a sort's range boundaries.
    sort_sample_rows_per_block: int = 32
    #: Actor calls an actor of a map_batches pool has queued at once.
    max_tasks_in_flight_per_actor: int = 2
    #: A progress bar per operator on the driver's terminal while a dataset
    #: runs (tqdm, or rich), drawn only when stderr is a terminal.
    enable_progress_bars: bool = True
    #: Bytes of blocks an execution lets sit in the object store before its
    #: operators stop running ahead (see ``budget.py``); None: the fraction below
    #: of the cluster's object store bound.
    object_store_memory_limit: int | None = None
    #: Share of the object store bound the budget takes when no limit is set.
    object_store_memory_limit_fraction: float = 0.5
    #: Reads of a known size are split into blocks under this many bytes (and
    #: under a quarter of the memory budget).
    target_max_block_size: int = 128 * 1024 * 1024

    @staticmethod
    def get_current() -> "DataContext":
        global _current
        with _lock:
            if _current is None:
                _current = DataContext()
            return _current

    @staticmethod
    def _set_current(context: "DataContext") -> None:
        global _current
        with _lock:
            _current = context

    def copy(self) -> "DataContext":
        return copy.copy(self)
