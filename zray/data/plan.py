"""The logical plan: a small tree of operators a Dataset builds lazily.

    Read / FromBlocks ─► MapOp (fused transforms) ─► AllToAll ─► Limit ...
                         Union and Zip join several inputs.

Consecutive map steps with the same compute and resources are fused into one
``MapOp`` when the plan is built, so each block is read, transformed and
written once, in one task.  Nothing runs until the executor walks the tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from zray.data.block import BlockMetadata


class Bundle(NamedTuple):
    """A block in the object store and what the driver knows about it."""
    ref: Any
    meta: BlockMetadata


@dataclass
class ReadTask:
    """A function returning one block, plus what is known before running it."""
    read_fn: Callable
    num_rows: int | None = None
    input_files: tuple = ()

    def __call__(self):
        return self.read_fn()


@dataclass(frozen=True)
class ActorPoolStrategy:
    """Run a map on a pool of actors (Ray's ``ActorPoolStrategy``)."""
    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None

    def bounds(self) -> tuple:
        if self.size is not None:
            return self.size, self.size
        low = self.min_size or 1
        return low, self.max_size or max(low, 4)


class Op:
    name = "Op"
    inputs: tuple = ()

    def known_num_rows(self) -> int | None:
        return None


class Read(Op):
    def __init__(self, name: str, tasks: list):
        self.name = name
        self.tasks = tasks

    def known_num_rows(self):
        counts = [t.num_rows for t in self.tasks]
        return None if None in counts else sum(counts)


class FromBlocks(Op):
    def __init__(self, name: str, bundles: list):
        self.name = name
        self.bundles = list(bundles)

    def known_num_rows(self):
        return sum(b.meta.num_rows for b in self.bundles)


class MapOp(Op):
    def __init__(self, input_op: Op, transforms: list, compute: ActorPoolStrategy | None,
                 remote_args: dict):
        self.inputs = (input_op,)
        self.transforms = list(transforms)
        self.compute = compute
        self.remote_args = dict(remote_args)

    @property
    def name(self):
        return "->".join(t.name for t in self.transforms)

    def known_num_rows(self):
        if all(t.preserves_rows for t in self.transforms):
            return self.inputs[0].known_num_rows()
        return None


def add_map(input_op: Op, transform, compute=None, remote_args=None) -> MapOp:
    """A MapOp for ``transform`` after ``input_op``, fused into it when it is a
    task-based map with the same resources, plain tasks feeding an actor pool,
    or a plain step after an actor pool."""
    remote_args = dict(remote_args or {})
    if (isinstance(input_op, MapOp) and input_op.compute is not None and compute is None
            and not remote_args):
        # a plain step after an actor pool runs in the pool's actors: tasks of
        # its own would wait for CPUs the pool's actors hold until it ends
        return MapOp(input_op.inputs[0], [*input_op.transforms, transform],
                     input_op.compute, input_op.remote_args)
    if isinstance(input_op, MapOp) and input_op.compute is None:
        same = input_op.remote_args == remote_args
        if (compute is None and same) or (compute is not None and
                                          (same or not input_op.remote_args)):
            return MapOp(input_op.inputs[0], [*input_op.transforms, transform], compute,
                         remote_args)
    return MapOp(input_op, [transform], compute, remote_args)


class AllToAll(Op):
    """An operator that needs every input block before it yields any:
    ``run(bundles) -> iterator of bundles`` (shuffle, sort, repartition...)."""

    def __init__(self, name: str, input_op: Op, run: Callable, preserves_rows: bool):
        self.name = name
        self.inputs = (input_op,)
        self.run = run
        self.preserves_rows = preserves_rows

    def known_num_rows(self):
        return self.inputs[0].known_num_rows() if self.preserves_rows else None


class Limit(Op):
    def __init__(self, input_op: Op, limit: int):
        self.name = f"Limit[{limit}]"
        self.inputs = (input_op,)
        self.limit = limit

    def known_num_rows(self):
        below = self.inputs[0].known_num_rows()
        return None if below is None else min(below, self.limit)


class Union(Op):
    name = "Union"

    def __init__(self, inputs: list):
        self.inputs = tuple(inputs)

    def known_num_rows(self):
        counts = [op.known_num_rows() for op in self.inputs]
        return None if None in counts else sum(counts)


class Zip(Op):
    name = "Zip"

    def __init__(self, inputs: list):
        self.inputs = tuple(inputs)

    def known_num_rows(self):
        return self.inputs[0].known_num_rows()


def row_range(bundles: list, start: int, length: int) -> tuple:
    """(spec, refs) for ``slice_concat``: rows ``[start, start+length)`` of the
    blocks ``bundles`` hold, in order."""
    spec, refs = [], []
    offset = 0
    for bundle in bundles:
        rows = bundle.meta.num_rows
        lo, hi = max(start, offset), min(start + length, offset + rows)
        if lo < hi:
            spec.append((len(refs), lo - offset, hi - lo))
            refs.append(bundle.ref)
        offset += rows
    return spec, refs


def describe(op: Op) -> str:
    """``Read->Map(f)->Limit[5]`` style, for reprs and stats."""
    if not op.inputs:
        return op.name
    if len(op.inputs) == 1:
        return f"{describe(op.inputs[0])}->{op.name}"
    return f"{op.name}({', '.join(describe(i) for i in op.inputs)})"
