"""Leases: a worker lent by its node for direct dispatch.

A part of ``HeadState``.  A node offers an idle worker (LEASE_OFFER); the head
sends a lone plain 1-CPU task straight to it, and may grant the lease on to a
driver that submits one task at a time (LEASE_GRANT), which then registers each
task it sent itself (SUBMIT_LEASED).  Idle leases go back after
``lease_idle_s``; a burst of tasks recalls them all (LEASE_RECALL).
"""

from __future__ import annotations

import logging

from zray.head.records import Lease, NodeState, TaskState
from zray.head.tasks import death_error
from zray.protocol import Msg
from zray.resources import leasable

log = logging.getLogger("zray.head")


class Leases:
    """The part of HeadState that lends and takes back leases (each node holds at most one)."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        #: TASKS_FINISHED of granted tasks that came before their SUBMIT_LEASED
        self.early_granted = {}
        #: WORKER_BLOCKED/UNBLOCKED of granted tasks not registered yet
        self.early_blocked = {}
        #: node id -> node, of the nodes holding a lease (``node.lease``): the
        #: loops over leases cost the leases, not the nodes
        self.lent = {}
        #: worker id -> node, of the same leases: a granted task's SUBMIT_LEASED
        #: finds its lease by a lookup, not a pass over every lease
        self.lent_by_worker = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.clients = head.clients
        self.node_by_identity = head.node_by_identity
        self.nodes = head.nodes
        self.objects = head.objects
        self.tasks = head.tasks
        self.directory = head.directory
        self.membership = head.membership
        self.scheduler = head.scheduler
        self.task_flow = head.task_flow

    def set_lease(self, node, lease) -> None:
        """The only way ``node.lease`` changes: keeps ``lent`` in step."""
        old = node.lease
        if old is not None and self.lent_by_worker.get(old.worker_id) is node:
            del self.lent_by_worker[old.worker_id]
        node.lease = lease
        if lease is None:
            self.lent.pop(node.node_id, None)
        else:
            self.lent[node.node_id] = node
            self.lent_by_worker[lease.worker_id] = node

    def keep_early_finish(self, task_id, early) -> None:
        self.early_granted[task_id] = early

    def keep_early_block(self, task_id, early) -> None:
        self.early_blocked[task_id] = early

    def has_early_block(self, task_id) -> bool:
        return task_id in self.early_blocked

    def on_lease_offer(self, key, items, now):
        node = self.node_by_identity.get(key)
        if node is None or node.state is not NodeState.ALIVE:
            return
        for (worker_id,) in items:
            self.set_lease(node, Lease(worker_id, now))
            node.available["CPU"] = node.available.get("CPU", 0.0) - 1.0
            self.scheduler.node_changed(node)
            self.head.dirty = True

    def free_lease_for(self, task):
        """A node with an unused lease, when ``task`` is a plain 1-CPU task."""
        spec = task.spec
        if not leasable(spec):
            return None
        wanted = None       # nodes holding its shared-memory arguments: locality first
        for dep_id in spec.dep_ids:
            obj = self.objects.get(dep_id)
            if obj is not None and obj.locations:
                wanted = (wanted or set()) | obj.locations
        clients = self.clients
        for node in self.lent.values():
            lease = node.lease
            if lease.task_id is None and not lease.tasks and \
                    lease.granted_to is None and node.state is NodeState.ALIVE and \
                    (wanted is None or node.node_id in wanted) and \
                    b"W" + lease.worker_id in clients:
                # (A worker whose own HELLO has not reached us yet is unroutable:
                # its node's offer can overtake it, and a task sent to it is lost.)
                return node
        return None

    def assign_lease(self, task, node):
        """Send the task straight to the leased worker (no node hop)."""
        lease = node.lease
        spec = task.spec
        self.scheduler.count_dispatch("lease")
        task.move(TaskState.ASSIGNED)
        task.node_id = node.node_id
        task.lease = lease
        self.head.events.assigned(task, node.node_id, self.head.now)
        lease.task_id = spec.task_id
        self.out.send(b"W" + lease.worker_id, Msg.EXECUTE_TASKS,
                      (self.scheduler.to_send(spec, lease.known_functions),))
        if spec.owner_address and spec.num_returns == 1 and not spec.dep_ids and \
                not spec.nested_ids and \
                not any(n.lease.granted_to == task.owner for n in self.lent.values()):
            # A driver that serves results and submits one task at a time: let it
            # send the next ones to this worker itself, two hops instead of three
            # (only after a task it could have sent: a lease picked for where a
            # task's arguments are stays the head's, for the next such task).
            client = self.clients.get(task.owner)
            if client is not None and client.kind == "driver":
                lease.grant(task.owner)      # busy with this task until it ends
                self.out.send(task.owner, Msg.LEASE_GRANT, (lease.worker_id, spec.task_id))

    def on_submit_leased(self, key, items, now):
        """Tasks a driver sent straight to the worker it was granted."""
        client = self.membership.client(key, now)
        for spec, worker_id in items:
            task = self.task_flow.new_task(spec, client)
            self.directory.pin_task_args(task)
            node = self._granted_node(key, worker_id)
            early = self.early_granted.pop(spec.task_id, None)
            if node is None and early is None:
                # The lease died before this arrived: the worker is gone, so the
                # task did not finish there; run it like any other.
                self.task_flow.wait_for_deps(task)
                continue
            early_node = self.nodes.get(early.node_id) if node is None else None
            if node is None and (early_node is None or early_node.state is not NodeState.ALIVE):
                # It finished on a node that died since: its results went with it.
                self.directory.discard_results(early.item.results, None)
                self.task_flow.wait_for_deps(task)
                continue
            self.scheduler.count_dispatch("granted")
            task.move(TaskState.PENDING)
            task.move(TaskState.ASSIGNED)
            if node is not None:
                task.node_id = node.node_id
                self.head.events.assigned(task, node.node_id, self.head.now)
                task.lease = node.lease
                node.lease.tasks.add(spec.task_id)
                node.lease.known_functions.add(spec.function_id)
                node.lease.last_used = now
                early_blocked = self.early_blocked.pop(spec.task_id, None)
                blocked = early_blocked is not None and early_blocked.blocked
                if blocked:                # it waits in get: its CPU is lent back
                    node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
                    self.scheduler.node_changed(node)
                    task.blocked = True
                    self.head.dirty = True
            else:
                # It finished there before its worker died: the lease (and its
                # CPU) is gone, so a detached one stands in for the books.
                task.node_id = early.node_id
                task.lease = Lease(b"", now)
            if early is not None:
                self.task_flow.on_tasks_finished(early.worker_key, [early.item], now)

    def _granted_node(self, driver_key, worker_id):
        node = self.lent_by_worker.get(worker_id)
        if node is None:
            return None
        lease = node.lease
        if lease is not None and lease.worker_id == worker_id and \
                lease.granted_to == driver_key and node.state is NodeState.ALIVE:
            return node
        return None

    def on_lease_return(self, key, items, now):
        """A driver gives back the lease it was granted."""
        for (worker_id,) in items:
            node = self._granted_node(key, worker_id)
            if node is not None:
                node.lease.take_back()
                node.lease.last_used = now
                self.head.dirty = True

    def granted_on(self, node_key) -> bool:
        node = self.node_by_identity.get(node_key)
        return node is not None and node.lease is not None and \
            node.lease.granted_to is not None

    def _recall_grant(self, lease):
        if lease.granted_to is not None and not lease.recalled:
            lease.recall()
            self.out.send(lease.granted_to, Msg.LEASE_RECALL, (lease.worker_id,))

    def expire_early_granted(self, now, limit_s: float = 60.0):
        """Drop finishes whose SUBMIT_LEASED never came (its driver died)."""
        for task_id, early in list(self.early_granted.items()):
            if now - early.since >= limit_s:
                del self.early_granted[task_id]
                self.directory.discard_results(early.item.results,
                                               self.nodes.get(early.node_id))
        for task_id, early in list(self.early_blocked.items()):
            if now - early.since >= limit_s:
                del self.early_blocked[task_id]

    def lease_worker_died(self, node, pid, exit_code, now, cause=None):
        """The leased worker died: its tasks fail (retriably), with
        OutOfMemoryError when ``cause`` says its node killed it for memory."""
        lease = node.lease
        for task_id in (lease.task_id, *lease.tasks):   # the head's and granted tasks
            task = self.tasks.get(task_id) if task_id else None
            if task is not None and task.state is TaskState.ASSIGNED and task.lease is lease:
                self.task_flow.task_failed(task, death_error(cause, task, pid, exit_code),
                                           retriable=True, now=now)
        self.end_grant(lease)
        self.set_lease(node, None)
        node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
        self.scheduler.node_changed(node)
        self.head.dirty = True

    def end_grant(self, lease):
        """The lease is gone: its driver must stop using it."""
        if lease.granted_to is not None:
            self.out.send(lease.granted_to, Msg.LEASE_RECALL, (lease.worker_id,))
            lease.take_back()

    def return_free_leases(self):
        """A burst: nodes need all their workers, granted ones included."""
        for node in self.lent.values():
            self._recall_grant(node.lease)
        self.return_idle_leases(self.head.now, idle_s=-1.0)

    def return_idle_leases(self, now, idle_s=None):
        idle_s = self.config.lease_idle_s if idle_s is None else idle_s
        for node in list(self.lent.values()):
            lease = node.lease
            if lease.task_id is None and not lease.tasks and \
                    lease.granted_to is None and now - lease.last_used > idle_s:
                self.set_lease(node, None)
                node.available["CPU"] = node.available.get("CPU", 0.0) + 1.0
                self.scheduler.node_changed(node)
                if node.state is NodeState.ALIVE:
                    self.out.send(node.identity, Msg.LEASE_RETURN, (lease.worker_id,))
                self.head.dirty = True


__all__ = ["Leases"]
