"""Tasks: submission, dependencies, results, retries, failures, cancellation.

A part of ``HeadState``.  Task flow: SUBMIT_TASKS -> WAITING (dependencies
not ready) -> PENDING (in the queue of its scheduling class) -> ASSIGNED (sent to
a node) -> FINISHED, or back to PENDING for a retry.  A task record goes when it
is done and none of its returns is alive.
"""

from __future__ import annotations

import heapq
import logging

from zray import exceptions as zerr
from zray.head.events import error_of
from zray.head.records import (
    ActorState, EarlyBlocked, EarlyGranted, ObjectState, Task, TaskState,
)
from zray.protocol import (
    Msg, STATUS_OK, STATUS_RETRIABLE_ERROR, STATUS_CANCELLED, REASON_CANCELLED, REASON_OOM,
    REASON_TIMEOUT,
)
from zray.serialization import KIND_INLINE, KIND_ERROR, dumps_error

log = logging.getLogger("zray.head")


class TaskFlow:
    """The part of HeadState that owns task records, functions and early granted reports."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.tasks = {}
        self.functions = {}
        #: worker id -> (reason, text): workers their node said it is killing
        #: (WORKER_KILLED), until their WORKER_DIED
        self.kill_causes = {}
        #: task id -> out-of-memory kills so far (sets the retry's backoff)
        self.oom_kills = {}
        self.delayed_retries = []     # heap of (due, task id): retries after a backoff

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.actors = head.actors
        self.clients = head.clients
        self.node_by_identity = head.node_by_identity
        self.nodes = head.nodes
        self.objects = head.objects
        self.actor_table = head.actor_table
        self.directory = head.directory
        self.generator_items = head.generator_items
        self.leases = head.leases
        self.membership = head.membership
        self.scheduler = head.scheduler
        self.events = head.events
        self.local = head.local

    def add(self, task):
        self.tasks[task.spec.task_id] = task
        return task

    def forget(self, task_id) -> None:
        """The record is no longer needed (done, and no output alive)."""
        self.tasks.pop(task_id, None)

    def on_register_functions(self, key, items, now):
        for function_id, blob in items:
            self.functions[function_id] = blob

    def on_submit_tasks(self, key, items, now):
        client = self.membership.client(key, now)
        for (spec,) in items:
            task = self.new_task(spec, client)
            if spec.actor_id is not None:
                self.actor_table.register_actor_call(task)
                continue
            self.directory.pin_task_args(task)
            self.wait_for_deps(task)

    def new_task(self, spec, client):
        """The task record, its return objects held by the submitter, and
        placeholders for arguments not heard of yet."""
        key = client.key
        self.scheduler.share_resources(spec)
        task = self.add(Task(spec, key))
        task.created = self.head.now       # its event row is made when it is scheduled
        for object_id in spec.return_ids():
            obj = self.directory.claim(object_id)
            obj.hold(key)
            client.holding[object_id] = client.holding.get(object_id, 0) + 1
        if spec.dep_ids or spec.nested_ids:
            for object_id in spec.dep_ids + tuple(spec.nested_ids):
                if object_id not in self.objects:
                    self.directory.unknown_object(object_id)
        return task

    def wait_for_deps(self, task):
        """A WAITING task: count its pending inputs, or go ahead if there are none."""
        waiting = 0
        for dep_id in task.spec.dep_ids:
            dep = self.objects.get(dep_id) or self.directory.unknown_object(dep_id)
            if dep.state is ObjectState.PENDING:     # once per use, as _object_ready counts
                dep.add_dependent(task.spec.task_id)
                waiting += 1
                if dep.lost:
                    self.directory.rebuild(dep)
        task.waiting_on = waiting
        if waiting == 0:
            self.deps_ready(task)

    def deps_ready(self, task):
        for dep_id in task.spec.dep_ids:        # (most tasks have none)
            dep = self.objects.get(dep_id) or self.directory.unknown_object(dep_id)
            if dep.kind == KIND_ERROR:
                self._finish_with_error_blob(task, dep.data, TaskState.FAILED)
                return
        task.move(TaskState.PENDING)
        self.scheduler.enqueue(task)

    def on_tasks_finished(self, key, items, now):
        client = self.clients.get(key)
        client_node = self.nodes.get(client.node_id) if client is not None else None
        pid = client.info.get("pid") if client is not None else None
        for item in items:
            task_id, attempt, status, results, run_s = item
            task = self.tasks.get(task_id)
            if task is not None:
                self.scheduler.record_run_time(task.spec.function_id, run_s)
            elif client_node is not None and client_node.lease is not None and \
                    client_node.lease.granted_to is not None and \
                    client_node.lease.worker_id == key[1:]:
                # A granted task whose SUBMIT_LEASED (from its driver) is still on
                # its way: keep the finish until it arrives.
                self.leases.keep_early_finish(task_id, EarlyGranted(key, item, now,
                                                                    client_node.node_id))
                continue
            elif key[:1] == b"W" and self.local.expects(client_node):
                # Maybe a task placed by its node whose SUBMIT_LOCAL (from the
                # worker that submitted it) is still on its way: keep the finish.
                self.local.keep_early_finish(task_id, key, item, now, client_node.node_id)
                continue
            node = client_node
            if node is None and task is not None:   # a dead worker's late result
                node = self.nodes.get(task.node_id)
            if not _is_current(task, attempt, node):
                self.directory.discard_results(results, node)
                continue
            self.events.finished(task_id, attempt, status == STATUS_OK, now, run_s,
                                 node.node_id if node is not None else None, pid,
                                 None if status == STATUS_OK else error_of(results), task)
            self.scheduler.release(task)
            if status == STATUS_RETRIABLE_ERROR and self.retries_left(task) \
                    and not task.cancel_requested:
                self.directory.discard_results(results, node)
                self._retry(task)
                continue
            if status == STATUS_CANCELLED or task.cancel_requested and status != STATUS_OK:
                self.directory.discard_results(results, node)
                self.finish_with_error(task, zerr.TaskCancelledError(task_id.hex()),
                                        TaskState.CANCELLED)
                continue
            task.move(TaskState.FINISHED if status == STATUS_OK
                             else TaskState.FAILED)
            # The worker sent a successful task's inline results straight to an
            # owner with a result socket; pushing them again would only cost both.
            direct = status == STATUS_OK and bool(task.spec.owner_address)
            for object_id, kind, data, size, contained in results:
                self.directory.store_result(object_id, kind, data, size, contained, node,
                                   push_owner=not (direct and kind == KIND_INLINE))
            self.task_done(task)

    def task_done(self, task):
        # A finished task keeps its arguments (its lineage) while its results may
        # still be needed, so that a lost result can be made again.
        if task.live_returns <= 0 or task.state is not TaskState.FINISHED \
                or task.spec.actor_id is not None:
            self.directory.unpin_task_args(task)
        if task.live_returns <= 0:
            self.tasks.pop(task.spec.task_id, None)

    def retries_left(self, task) -> bool:
        limit = task.spec.max_retries
        return limit < 0 or task.spec.attempt < limit

    def _retry(self, task, due=None):
        """Back to PENDING; into the scheduler's queue now, or at ``due``."""
        self.events.retried(task, self.head.now)
        self.events.keep(task)
        task.spec.attempt += 1
        task.node_id = None
        task.move(TaskState.PENDING)
        if due is None:
            self.scheduler.enqueue(task)
        else:
            heapq.heappush(self.delayed_retries, (due, task.spec.task_id))

    def run_delayed_retries(self, now):
        """Queue the retries whose backoff is over (a periodic sweep)."""
        while self.delayed_retries and self.delayed_retries[0][0] <= now:
            _due, task_id = heapq.heappop(self.delayed_retries)
            task = self.tasks.get(task_id)
            if task is not None and task.state is TaskState.PENDING:
                self.scheduler.enqueue(task)

    def task_failed(self, task, error, retriable, now):
        """The task's run ended abnormally (worker or node death)."""
        self.scheduler.release(task)
        if task.cancel_requested:
            self.finish_with_error(task, zerr.TaskCancelledError(task.spec.task_id.hex()),
                                    TaskState.CANCELLED)
        elif retriable and self.retries_left(task):
            log.info("retrying %s (attempt %d): %s", task.spec.name,
                     task.spec.attempt + 1, error)
            self._retry(task, self._oom_backoff(task, error, now))
        else:
            self.oom_kills.pop(task.spec.task_id, None)
            self.finish_with_error(task, error, TaskState.FAILED)

    def _oom_backoff(self, task, error, now):
        """When a task killed for lack of memory may run again (None: at once):
        ``task_oom_retry_delay_base_ms``, doubled per such kill, at most 60 s."""
        if not isinstance(error, zerr.OutOfMemoryError):
            return None
        kills = self.oom_kills.get(task.spec.task_id, 0)
        self.oom_kills[task.spec.task_id] = kills + 1
        return now + min(60.0, self.config.task_oom_retry_delay_base_ms / 1e3 * 2 ** kills)

    def on_worker_killed(self, key, items, now):
        """The node is killing these workers on purpose: keep why, for their WORKER_DIED."""
        for worker_id, reason, text in items:
            self.kill_causes[worker_id] = (reason, text)

    def finish_with_error(self, task, error, state):
        self._finish_with_error_blob(task, dumps_error(error), state)

    def _finish_with_error_blob(self, task, blob, state):
        task.move(state)
        self.events.ended(task, state.value, self.head.now, blob)
        if task.spec.is_generator and self.generator_items.generator_failed(task, blob):
            self.task_done(task)
            return
        for object_id in task.spec.return_ids():
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.kind, obj.data, obj.size = KIND_ERROR, blob, len(blob)
                self.directory.object_ready(obj)
        self.task_done(task)

    def on_tasks_failed(self, key, items, now):
        node = self.node_by_identity.get(key)
        for task_id, attempt, reason, text in items:
            task = self.tasks.get(task_id)
            if not _is_current(task, attempt, node):
                continue
            if reason == REASON_CANCELLED:
                self.scheduler.release(task)
                self.finish_with_error(task, zerr.TaskCancelledError(task_id.hex()),
                                        TaskState.CANCELLED)
            elif reason == REASON_TIMEOUT:        # a retriable failure, like a crash
                self.task_failed(task, zerr.TaskTimeoutError(text), retriable=True,
                                  now=now)
            else:
                self.task_failed(task, zerr.RaySystemError(text), retriable=False, now=now)

    def on_worker_died(self, key, items, now):
        node = self.node_by_identity.get(key)
        for worker_id, pid, exit_code, task_id, attempt in items:
            cause = self.kill_causes.pop(worker_id, None)
            if node is not None and node.lease is not None and \
                    node.lease.worker_id == worker_id:
                self.leases.lease_worker_died(node, pid, exit_code, now, cause)
            client = self.clients.get(b"W" + worker_id)
            if client is not None:
                self.membership.client_gone(client)
            task = self.tasks.get(task_id) if task_id else None
            actor = self.actor_table.worker_hosted_actor(b"W" + worker_id)
            if actor is None and task is not None and task.spec.is_actor_creation:
                actor = self.actors.get(task.spec.actor_id)
            if actor is not None:
                self.actor_table.actor_process_died(
                    actor, cause[1] if cause and cause[0] == REASON_OOM else
                    f"its worker process (pid {pid}) exited with code {exit_code}", now)
                continue
            if task is None and task_id and self.local.expects(node):
                # maybe a locally placed task not registered yet (see LocalTasks)
                self.local.keep_early_death(task_id, early_death_error(
                    cause, task_id, pid, exit_code), now)
                continue
            if not _is_current(task, attempt, node):
                continue
            self.task_failed(task, death_error(cause, task, pid, exit_code),
                             retriable=True, now=now)

    def on_worker_blocked(self, key, items, now):
        for task_id, _returned in items:
            task = self.tasks.get(task_id)
            if task is None and self.leases.granted_on(key):
                # its SUBMIT_LEASED is due
                self.leases.keep_early_block(task_id, EarlyBlocked(True, now))
                continue
            if task is None or task.state is not TaskState.ASSIGNED or task.blocked:
                continue
            node = self.nodes.get(task.node_id)
            cpus = task.spec.resources.get("CPU", 0.0)
            if node is not None and cpus:
                node.available["CPU"] = node.available.get("CPU", 0.0) + cpus
                self.scheduler.node_changed(node)
                task.blocked = True
                self.head.dirty = True

    def on_worker_unblocked(self, key, items, now):
        for (task_id,) in items:
            task = self.tasks.get(task_id)
            if task is None and self.leases.has_early_block(task_id):
                self.leases.keep_early_block(task_id, EarlyBlocked(False, now))
                continue
            if task is None or task.state is not TaskState.ASSIGNED or not task.blocked:
                continue
            node = self.nodes.get(task.node_id)
            if node is not None:
                node.available["CPU"] -= task.spec.resources.get("CPU", 0.0)
                self.scheduler.node_changed(node)
            task.blocked = False

    def on_cancel_tasks(self, key, items, now):
        for task_id, force in items:
            task = self.tasks.get(task_id)
            if task is not None:
                self.cancel(task, force)

    def cancel(self, task, force):
        if task.spec.is_actor_call:
            actor = self.actors.get(task.spec.actor_id)
            if task.state is not TaskState.ASSIGNED or actor is None:
                return
            if actor.state is ActorState.ALIVE and actor.worker_key:
                self.out.send(actor.worker_key, Msg.CANCEL_TASKS, (task.spec.task_id, force))
            else:
                actor.pending_cancels.add(task.spec.task_id)
            return
        if task.state in (TaskState.WAITING, TaskState.PENDING):
            self.finish_with_error(task, zerr.TaskCancelledError(task.spec.task_id.hex()),
                                    TaskState.CANCELLED)
        elif task.state is TaskState.ASSIGNED:
            task.cancel_requested = True
            if task.lease is not None:
                self.out.send(b"W" + task.lease.worker_id, Msg.CANCEL_TASKS,
                              (task.spec.task_id, force))
                return
            node = self.nodes.get(task.node_id)
            if node is not None:
                self.out.send(node.identity, Msg.CANCEL_TASKS,
                              (task.spec.task_id, force))


def death_error(cause, task, pid, exit_code):
    """The error a task gets when its worker died: OutOfMemoryError when its
    node killed it for memory (``cause`` from WORKER_KILLED), else WorkerCrashedError."""
    if cause is not None and cause[0] == REASON_OOM:
        return zerr.OutOfMemoryError(cause[1])
    return zerr.WorkerCrashedError(
        f"The worker (pid {pid}) running task {task.spec.name} died with exit "
        f"code {exit_code}; the task was tried {task.spec.attempt + 1} time(s).")


def early_death_error(cause, task_id, pid, exit_code):
    """``death_error`` for a task the head has no record of yet."""
    if cause is not None and cause[0] == REASON_OOM:
        return zerr.OutOfMemoryError(cause[1])
    return zerr.WorkerCrashedError(
        f"The worker (pid {pid}) running task {task_id.hex()} died with exit code "
        f"{exit_code}.")


def _is_current(task, attempt, node) -> bool:
    """The report is about the attempt the head is waiting for, on its node."""
    return task is not None and task.state is TaskState.ASSIGNED \
        and task.spec.attempt == attempt and node is not None \
        and task.node_id == node.node_id


__all__ = ["TaskFlow", "death_error"]

