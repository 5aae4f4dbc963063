"""The streaming executor: walks a plan and yields its output blocks in order.

    Read ─► MapOp ─► ... each operator is a Python generator pulling from the
    one below; a map operator keeps at most ``max_tasks_in_flight_per_operator``
    tasks submitted ahead of what its consumer has taken, so blocks flow through
    the pipeline without the whole dataset existing at once.

A Read followed by a task-based MapOp runs as one task per block (read and
transform fused).  A MapOp with an ActorPoolStrategy runs on a pool of
``MapWorker`` actors that grows from its minimum to its maximum size while
every actor is busy and input is waiting.  All-to-all operators (shuffle,
sort, groupby, repartition) take every input block first, then run their own
map and reduce task stages (``shuffle.py``).  Output order is input order.

Memory: besides the task window, a map operator starts another task only while
the execution's ``MemoryBudget`` allows it (``budget.py``): its tasks in flight
times its mean output block size, and the object store's use, stay under the
budget; otherwise it waits for its oldest task and hands that block on.  Below
an all-to-all operator or a zip, which hold all their input anyway, only the
task window applies.
"""

from __future__ import annotations

import time
from collections import deque

import zray
from zray import _runtime
from zray.data import _tasks, plan as P, progress
from zray.data.budget import MemoryBudget
from zray.data.context import DataContext


class OpStats:
    """What one operator did in one execution; drives its progress bar."""

    def __init__(self, name: str, budget: MemoryBudget | None = None, bar=None):
        self.name = name
        self.tasks = 0
        self.blocks = 0
        self.rows = 0
        self.bytes = 0
        self.started = time.perf_counter()
        self.wall_s = 0.0
        self.peak_store_bytes = 0
        self._budget = budget
        self._bar = bar

    def mean_block_bytes(self) -> float:
        return self.bytes / self.blocks if self.blocks else 0.0

    def add(self, meta) -> None:
        self.blocks += 1
        self.rows += meta.num_rows
        self.bytes += meta.size_bytes
        self.wall_s = time.perf_counter() - self.started
        if self._budget is not None:
            self.peak_store_bytes = max(self.peak_store_bytes, self._budget.used_bytes())
        if self._bar is not None:
            self._bar.update(self.rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self) -> str:
        return (f"Operator {self.name}: {self.tasks} tasks, {self.blocks} blocks, "
                f"{self.rows} rows, {self.bytes / 2**20:.2f} MiB out, "
                f"{self.wall_s:.3f} s wall, peak object store use "
                f"{self.peak_store_bytes / 2**20:.2f} MiB")


class Execution:
    """One run of a plan; ``stats`` fills in as blocks come out."""

    def __init__(self, root: P.Op, context: DataContext | None = None):
        self.root = root
        self.context = context or DataContext.get_current()
        self.stats: list[OpStats] = []
        self.budget = MemoryBudget(self.context)

    def bundles(self):
        """The plan's output bundles in order (a generator: run as consumed)."""
        try:
            yield from self._run(self.root)
        finally:
            for stats in self.stats:
                stats.close()

    def summary(self) -> str:
        return "\n".join(s.line() for s in self.stats) or "not executed yet"

    def _run(self, op: P.Op, budgeted: bool = True):
        handler = {P.Read: self._read, P.FromBlocks: self._from_blocks, P.MapOp: self._map,
                   P.AllToAll: self._all_to_all, P.Limit: self._limit,
                   P.Union: self._union, P.Zip: self._zip}[type(op)]
        return handler(op, budgeted)

    def may_submit(self, pending: int, window: int, stats: OpStats, budgeted: bool) -> bool:
        if not budgeted:
            return pending < window
        return self.budget.may_submit(pending, window, stats.mean_block_bytes())

    def _stats(self, name: str, total_blocks: int | None = None) -> OpStats:
        bar = progress.ProgressBar(name, total_blocks, len(self.stats),
                                   progress.enabled(self.context))
        stats = OpStats(name, self.budget, bar)
        self.stats.append(stats)
        return stats

    # --- sources and maps ------------------------------------------------------------

    def _read(self, op: P.Read, budgeted: bool):
        return self._task_stage(iter(op.tasks), [], {},
                                self._stats(op.name, len(op.tasks)), budgeted)

    def _from_blocks(self, op: P.FromBlocks, budgeted: bool):
        stats = self._stats(op.name)
        for bundle in op.bundles:
            stats.add(bundle.meta)
            yield bundle

    def _map(self, op: P.MapOp, budgeted: bool):
        below = op.inputs[0]
        fuse_read = isinstance(below, P.Read) and (op.compute is not None or
                                                   not op.remote_args)
        stats = self._stats(f"{below.name}->{op.name}" if fuse_read else op.name,
                            len(below.tasks) if fuse_read else None)
        if fuse_read:
            sources = iter(below.tasks)
        else:
            sources = (bundle.ref for bundle in self._run(below, budgeted))
        if op.compute is not None:
            return ActorPoolStage(op, self, budgeted).run(sources, stats)
        return self._task_stage(sources, op.transforms, op.remote_args, stats, budgeted)

    def _task_stage(self, sources, transforms, remote_args, stats, budgeted):
        transforms_ref = zray.put(transforms)
        task = _tasks.run_map.options(num_returns=2, **remote_args)
        window = max(1, self.context.max_tasks_in_flight_per_operator)
        pending: deque = deque()
        for source in sources:
            while pending and not self.may_submit(len(pending), window + 1, stats,
                                                  budgeted):
                yield self._finish(pending.popleft(), stats)
            pending.append(task.remote(source, transforms_ref))
            stats.tasks += 1
            if len(pending) >= window:
                yield self._finish(pending.popleft(), stats)
        while pending:
            yield self._finish(pending.popleft(), stats)

    @staticmethod
    def _finish(refs, stats) -> P.Bundle:
        block_ref, meta_ref = refs
        meta = zray.get(meta_ref)
        stats.add(meta)
        return P.Bundle(block_ref, meta)

    # --- the rest --------------------------------------------------------------------

    def _all_to_all(self, op: P.AllToAll, budgeted: bool):
        inputs = list(self._run(op.inputs[0], budgeted=False))
        stats = self._stats(op.name)
        for bundle in op.run(inputs):
            stats.add(bundle.meta)
            yield bundle

    def _limit(self, op: P.Limit, budgeted: bool):
        stats = self._stats(op.name)
        remaining = op.limit
        if remaining <= 0:
            return
        for bundle in self._run(op.inputs[0], budgeted):
            if bundle.meta.num_rows > remaining:
                stats.tasks += 1
                bundle = self._finish(_tasks.slice_concat.options(num_returns=2).remote(
                    [(0, 0, remaining)], bundle.ref), stats)
            else:
                stats.add(bundle.meta)
            remaining -= bundle.meta.num_rows
            yield bundle
            if remaining <= 0:
                return

    def _union(self, op: P.Union, budgeted: bool):
        for child in op.inputs:
            yield from self._run(child, budgeted)

    def _zip(self, op: P.Zip, budgeted: bool):
        stats = self._stats(op.name)
        left = list(self._run(op.inputs[0], budgeted=False))
        rights = [list(self._run(child, budgeted=False)) for child in op.inputs[1:]]
        total = sum(b.meta.num_rows for b in left)
        for right in rights:
            if sum(b.meta.num_rows for b in right) != total:
                raise ValueError("zip() needs datasets with the same number of rows; got "
                                 f"{total} and {sum(b.meta.num_rows for b in right)}")
        offset = 0
        for bundle in left:
            specs, refs = [], []
            for right in rights:
                spec, found = P.row_range(right, offset, bundle.meta.num_rows)
                specs.append([(i + len(refs), lo, n) for i, lo, n in spec])
                refs.extend(found)
            stats.tasks += 1
            yield self._finish(_tasks.zip_blocks.options(num_returns=2).remote(
                bundle.ref, specs, *refs), stats)
            offset += bundle.meta.num_rows


class ActorPoolStage:
    """A MapOp on a pool of MapWorker actors, grown while all are busy."""

    def __init__(self, op: P.MapOp, execution: Execution, budgeted: bool):
        context = execution.context
        self.op = op
        self.execution = execution
        self.budgeted = budgeted
        self.low, self.high = op.compute.bounds()
        self.per_actor = max(1, context.max_tasks_in_flight_per_actor)
        args = dict(op.remote_args)
        args.setdefault("num_cpus", 1)
        self.actor_class = zray.remote(_tasks.MapWorker).options(**args)
        self.actors: list = []
        self.load: list = []
        self.inline_bytes = _runtime.client().config.max_inline_object_bytes

    def run(self, sources, stats):
        transforms_ref = zray.put(self.op.transforms)
        try:
            for _ in range(self.low):
                self._add_actor(transforms_ref)
            zray.get([actor.ready.remote() for actor in self.actors])
            pending: deque = deque()
            sources = iter(sources)
            source = next(sources, None)
            while source is not None or pending:
                while source is not None:
                    if not self.execution.may_submit(len(pending), len(pending) + 1, stats,
                                                     self.budgeted):
                        break
                    index = self._free_actor(transforms_ref)
                    if index is None:
                        break
                    pending.append((index, self.actors[index].run.remote(source)))
                    self.load[index] += 1
                    stats.tasks += 1
                    source = next(sources, None)
                index, refs = pending.popleft()
                self.load[index] -= 1
                yield self._outliving(Execution._finish(refs, stats))
        finally:
            # the pool goes as soon as its input is done (or its consumer
            # stops): the blocks it made are owned by this process and outlive
            # their actors, and its CPUs are free for the stages after it
            for actor in self.actors:
                zray.kill(actor)
            self.actors.clear()

    def _outliving(self, bundle: P.Bundle) -> P.Bundle:
        """The bundle, with a small block copied into an object this process
        puts: an actor call's inline result (one under max_inline_object_bytes)
        fails with ActorDiedError once its actor is killed and the ref is then
        passed to a task; a shared-memory result outlives its actor."""
        if bundle.meta.size_bytes > self.inline_bytes:
            return bundle
        return P.Bundle(zray.put(zray.get(bundle.ref)), bundle.meta)

    def _add_actor(self, transforms_ref) -> None:
        self.actors.append(self.actor_class.remote(transforms_ref))
        self.load.append(0)

    def _free_actor(self, transforms_ref) -> int | None:
        index = min(range(len(self.actors)), key=self.load.__getitem__)
        if self.load[index] < self.per_actor:
            return index
        if len(self.actors) < self.high:
            self._add_actor(transforms_ref)
            return len(self.actors) - 1
        return None
