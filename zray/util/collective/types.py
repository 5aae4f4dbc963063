"""Names shared by the collective backends: backends and reduce operations."""

from __future__ import annotations

import enum

import numpy as np


class Backend(str, enum.Enum):
    ZMQ = "zmq"
    GLOO = "gloo"
    NCCL = "nccl"

    @classmethod
    def parse(cls, value) -> "Backend":
        try:
            return cls(str(getattr(value, "value", value)).lower())
        except ValueError:
            raise ValueError(f"unknown collective backend {value!r}; use 'zmq' (numpy, "
                             "no torch needed), 'gloo' or 'nccl' (torch)") from None


class ReduceOp(enum.Enum):
    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3


#: How each op folds an incoming array into a local one, in place.
NUMPY_REDUCERS = {
    ReduceOp.SUM: np.add,
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
}


class CollectiveError(RuntimeError):
    """A collective operation could not complete (a peer is gone, a timeout)."""
