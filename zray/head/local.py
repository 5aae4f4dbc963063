"""Local placement: tasks a node manager placed itself, and what the head keeps of them.

A part of ``HeadState``.  A worker sends each plain task it submits
(``zray.resources.local_placeable``) to its own node (PLACE_TASKS), which
queues it if it fits the node's free resources now and spills it back
otherwise (TASKS_SPILLED); the worker registers every such task with the head
itself (SUBMIT_LOCAL, bookkeeping), on the socket that carries all its other
traffic about the task's refs.  The head records the task as SUBMIT_TASKS
would (record, pinned arguments, return objects held by the submitter: lineage
as for any task) and marks it ASSIGNED to the submitter's node, committing its
resources there; a spilled one is queued like any other task.

The three reports about one task travel different paths (the submitter's
socket, the node's, the executing worker's), so the head may hear that a task
was spilled, finished, or lost its worker before its registration: it keeps
those (up to ``EARLY_LIMIT_S``) and applies them when the registration comes.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from zray import exceptions as zerr
from zray.head.records import EarlyGranted, NodeState, TaskState
from zray.resources import held, local_placeable

log = logging.getLogger("zray.head")

#: Seconds the head keeps a report about a task whose SUBMIT_LOCAL has not come
#: (its submitter died before sending it: then nobody can hold its refs).
EARLY_LIMIT_S = 60.0


class EarlyDeath(NamedTuple):
    """WORKER_DIED for a locally placed task not registered yet."""
    error: Exception
    since: float


class LocalTasks:
    """The part of HeadState that registers tasks placed by their node."""

    def __init__(self, head):
        self.head = head
        self.config = head.config
        #: task id -> EarlyGranted: TASKS_FINISHED before SUBMIT_LOCAL
        self.early_finished = {}
        #: task id -> time: TASKS_SPILLED before SUBMIT_LOCAL
        self.early_spilled = {}
        #: task id -> EarlyDeath: its worker died before SUBMIT_LOCAL
        self.early_died = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.nodes = head.nodes
        self.tasks = head.tasks
        self.node_by_identity = head.node_by_identity
        self.directory = head.directory
        self.membership = head.membership
        self.scheduler = head.scheduler
        self.task_flow = head.task_flow

    # --- registration ------------------------------------------------------------------

    def on_submit_local(self, key, items, now):
        """Tasks a worker sent to its own node: ASSIGNED there, or queued if the
        node spilled them (or died)."""
        client = self.membership.client(key, now)
        node = self.nodes.get(client.node_id) if client.node_id else None
        assigned = False
        for (spec,) in items:
            task_id = spec.task_id
            task = self.task_flow.new_task(spec, client)
            self.directory.pin_task_args(task)
            spilled = self.early_spilled.pop(task_id, None) is not None
            early = self.early_finished.pop(task_id, None)
            died = self.early_died.pop(task_id, None)
            alive = node is not None and node.state is NodeState.ALIVE
            if spilled or not alive or not local_placeable(spec):
                # The node did not keep it, or is gone (with whatever it ran:
                # a finish from there is void), or the peer sent what no node
                # may place: the head places it like any task.
                if early is not None:
                    self.directory.discard_results(early.item.results, None)
                self.scheduler.count_dispatch("spilled")
                self.task_flow.wait_for_deps(task)
                continue
            self.scheduler.count_dispatch("local")
            self._assign(task, node, now)
            assigned = True
            if early is not None:
                self.task_flow.on_tasks_finished(early.worker_key, [early.item], now)
            elif died is not None:
                self.task_flow.task_failed(task, died.error, retriable=True, now=now)
        if assigned:         # the index learns once per message (one node: the sender's)
            self.scheduler.node_changed(node)
        elif node is None or node.state is not NodeState.ALIVE:
            # The submitter died with its node after sending this: it holds
            # nothing any more (a ref that escaped it was counted on its own).
            self.membership.client_gone(client)

    def _assign(self, task, node, now):
        task.move(TaskState.PENDING)
        task.move(TaskState.ASSIGNED)
        task.node_id = node.node_id
        self.head.events.assigned(task, node.node_id, now)
        for name, amount in held(task.spec).items():
            node.available[name] = node.available.get(name, 0.0) - amount

    # --- what the node and the workers report ------------------------------------------

    def on_tasks_spilled(self, key, items, now):
        """The node did not keep these: place them here (from their SUBMIT_LOCAL)."""
        node = self.node_by_identity.get(key)
        if node is None:
            return
        for task_id, attempt in items:
            task = self.tasks.get(task_id)
            if task is None:
                self.early_spilled[task_id] = now
                continue
            if task.state is not TaskState.ASSIGNED or task.node_id != node.node_id \
                    or task.spec.attempt != attempt or task.lease is not None:
                continue
            counts = self.scheduler.dispatch_counts    # counted as local at registration
            counts["local"] -= 1
            counts["spilled"] += 1
            self.scheduler.release(task)
            if task.cancel_requested:
                self.task_flow.finish_with_error(task, zerr.TaskCancelledError(
                    task_id.hex()), TaskState.CANCELLED)
                continue
            task.move(TaskState.PENDING)
            self.scheduler.enqueue(task)

    def expects(self, client_node) -> bool:
        """A report about a task the head does not know, from a worker of
        ``client_node``, may be about a locally placed task whose SUBMIT_LOCAL is
        still on its way (whatever the head's own ``local_placement``: a node
        started with another setting may place tasks)."""
        return client_node is not None and client_node.state is NodeState.ALIVE

    def keep_early_finish(self, task_id, key, item, now, node_id) -> None:
        self.early_finished[task_id] = EarlyGranted(key, item, now, node_id)

    def keep_early_death(self, task_id, error, now) -> None:
        self.early_died[task_id] = EarlyDeath(error, now)

    def expire_early(self, now, limit_s: float = EARLY_LIMIT_S):
        """Drop reports whose SUBMIT_LOCAL never came (its submitter died first)."""
        for task_id, early in list(self.early_finished.items()):
            if now - early.since >= limit_s:
                del self.early_finished[task_id]
                self.directory.discard_results(early.item.results,
                                               self.nodes.get(early.node_id))
        for task_id, since in list(self.early_spilled.items()):
            if now - since >= limit_s:
                del self.early_spilled[task_id]
        for task_id, early in list(self.early_died.items()):
            if now - early.since >= limit_s:
                del self.early_died[task_id]

    def validate(self) -> None:
        for table in (self.early_finished, self.early_spilled, self.early_died):
            for task_id in table:
                assert task_id not in self.tasks, \
                    f"an early report kept for registered task {task_id.hex()}"


__all__ = ["LocalTasks", "EarlyDeath", "EARLY_LIMIT_S"]
