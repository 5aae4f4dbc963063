"""The object directory: where each object is, who refers to it, and lineage.

A part of ``HeadState``.  Handles PUT_OBJECTS, ADD_REFS, REMOVE_REFS,
SUBSCRIBE_OBJECTS and OBJECT_COPIED.  An object is freed once no client holds
it and no task or containing object pins it.  Placeholders stand for objects
heard of before their PUT or SUBMIT (messages from different processes are not
ordered) and turn into ``ObjectLostError`` if nothing claims them.  Objects
whose only copy was on a dead node are made again by re-running the task that
made them (its lost inputs first); those made by put are lost for good.
"""

from __future__ import annotations

import logging

from zray import exceptions as zerr
from zray.head.records import (
    NONE_YET, NodeState, ObjectRecord, ObjectState, TaskState, TERMINAL,
)
from zray.ids import is_handle_id, is_put_id
from zray.protocol import Msg
from zray.serialization import KIND_ERROR, KIND_SHM, dumps_error

log = logging.getLogger("zray.head")


class ObjectDirectory:
    """The part of HeadState that owns objects and placeholders, and rebuilds lost ones."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.objects = {}
        #: object id -> when it was first heard of without its PUT or SUBMIT
        self.placeholders = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.clients = head.clients
        self.node_by_identity = head.node_by_identity
        self.nodes = head.nodes
        self.tasks = head.tasks
        self.actor_table = head.actor_table
        self.generator_items = head.generator_items
        self.membership = head.membership
        self.task_flow = head.task_flow

    def on_put_objects(self, key, items, now):
        client = self.membership.client(key, now)
        for object_id, kind, data, size, node_id, contained in items:
            obj = self.objects.get(object_id)
            placeholder = obj is not None
            if obj is None:
                obj = self.objects[object_id] = ObjectRecord(object_id, ObjectState.READY)
            self.placeholders.pop(object_id, None)
            obj.kind, obj.data, obj.size = kind, data, size
            if node_id is not None:
                obj.add_location(node_id)
            obj.hold(key)
            client.holding[object_id] = client.holding.get(object_id, 0) + 1
            self._set_contained(obj, contained)
            if placeholder:
                self.object_ready(obj)

    def on_add_refs(self, key, items, now):
        client = self.membership.client(key, now)
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if obj is None:
                obj = self.unknown_object(object_id)
            obj.hold(key)
            client.holding[object_id] = client.holding.get(object_id, 0) + 1

    def on_remove_refs(self, key, items, now):
        client = self.clients.get(key)
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if client is not None:
                count = client.holding.get(object_id, 0) - 1
                if count > 0:
                    client.holding[object_id] = count
                else:
                    client.holding.pop(object_id, None)
            if obj is None:
                continue
            obj.unhold(key)
            if obj.holder is None:
                self.maybe_free(obj)

    def on_subscribe_objects(self, key, items, now):
        for (object_id,) in items:
            obj = self.objects.get(object_id)
            if obj is None:
                obj = self.unknown_object(object_id)
            if obj.state is ObjectState.PENDING:
                obj.add_subscriber(key)
                if obj.lost:
                    self.rebuild(obj)
            else:
                self.out.send(key, Msg.OBJECTS_READY, obj.ready_item())

    def on_object_copied(self, key, items, now):
        node = self.node_by_identity.get(key)
        if node is None or node.state is not NodeState.ALIVE:
            return
        for object_id, _size in items:
            obj = self.objects.get(object_id)
            if obj is not None and obj.kind == KIND_SHM:
                obj.add_location(node.node_id)
            else:        # freed meanwhile: the copy is not wanted
                self.out.send(key, Msg.FREE_OBJECTS, (object_id,))

    def claim(self, object_id):
        """The record of a return or item whose maker the head now knows: made
        if new, and no longer a placeholder."""
        self.placeholders.pop(object_id, None)
        obj = self.objects.get(object_id)
        if obj is None:
            obj = self.objects[object_id] = ObjectRecord(object_id)
        return obj

    def ready_record(self, object_id):
        """The record of an object that exists once it is named (an actor handle)."""
        obj = self.objects.get(object_id)
        if obj is None:
            obj = self.objects[object_id] = ObjectRecord(object_id, ObjectState.READY)
        return obj

    def unknown_object(self, object_id):
        """A placeholder for an object we have not heard of yet: its PUT or SUBMIT
        may still be on its way from another process (messages from different
        processes are not ordered).  If nothing claims it soon, it is lost."""
        obj = ObjectRecord(object_id)
        self.objects[object_id] = obj
        self.placeholders[object_id] = self.head.now
        return obj

    def expire_placeholders(self, now, limit_s: float = 30.0):
        for object_id, since in list(self.placeholders.items()):
            if now - since < limit_s:
                continue
            del self.placeholders[object_id]
            obj = self.objects.get(object_id)
            if obj is None or obj.state is not ObjectState.PENDING:
                continue
            self._make_error(obj, zerr.ObjectLostError(object_id.hex(), (
                f"Object {object_id.hex()} is unknown to the head: it was freed, or "
                "made by a process that has gone.")))
            obj.move(ObjectState.LOST)
            self.maybe_free(obj)

    def pin_task_args(self, task):
        spec = task.spec
        if spec.dep_ids or spec.nested_ids:
            for object_id in spec.dep_ids + tuple(spec.nested_ids):
                obj = self.objects.get(object_id)
                if obj is not None:
                    obj.pins += 1
        task.pinned = True

    def unpin_task_args(self, task):
        if not task.pinned:
            return
        task.pinned = False
        spec = task.spec
        if not spec.dep_ids and not spec.nested_ids:
            return
        for object_id in spec.dep_ids + tuple(spec.nested_ids):
            obj = self.objects.get(object_id)
            if obj is not None:
                obj.pins -= 1
                self.maybe_free(obj)

    def maybe_free(self, obj):
        if obj.holder is not None or obj.pins > 0:
            return
        self.objects.pop(obj.object_id, None)
        self.placeholders.pop(obj.object_id, None)
        if is_handle_id(obj.object_id):
            self.actor_table.actor_handle_released(obj.object_id[:16])
            return
        for node_id in obj.locations:
            node = self.nodes.get(node_id)
            if node is not None and node.state is NodeState.ALIVE:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (obj.object_id,))
        for cid in obj.contained_ids:
            inner = self.objects.get(cid)
            if inner is not None:
                inner.pins -= 1
                self.maybe_free(inner)
        task = self.tasks.get(obj.object_id[:16])
        if task is not None and not is_put_id(obj.object_id):
            task.live_returns -= 1
            if task.live_returns <= 0 and task.state in TERMINAL:
                self.task_flow.forget(task.spec.task_id)
                self.unpin_task_args(task)      # its lineage is no longer needed

    def store_result(self, object_id, kind, data, size, contained, node,
                      push_owner=True):
        obj = self.objects.get(object_id)
        if obj is None:
            if kind == KIND_SHM and node is not None:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (object_id,))
            return
        obj.kind, obj.data, obj.size = kind, data, size
        if kind == KIND_SHM:
            obj.add_location(node.node_id)
        self._set_contained(obj, contained)
        self.object_ready(obj, push_owner)

    def discard_results(self, results, node):
        for object_id, kind, data, size, contained in results:
            if kind == KIND_SHM and node is not None:
                self.out.send(node.identity, Msg.FREE_OBJECTS, (object_id,))

    def _set_contained(self, obj, contained):
        if not contained:       # (a generator's completion keeps the items it lists)
            return
        obj.contained_ids = tuple(contained)
        for cid in obj.contained_ids:
            inner = self.objects.get(cid)
            if inner is not None:
                inner.pins += 1

    def object_ready(self, obj, push_owner=True):
        obj.move(ObjectState.READY)
        item = None
        if obj.subscribers:
            item = obj.ready_item()
            for client_key in obj.subscribers:
                self.out.send(client_key, Msg.OBJECTS_READY, item)
            obj.subscribers = NONE_YET
        if push_owner:
            task = self.tasks.get(obj.object_id[:16])
            if task is not None and obj.held_by(task.owner):
                self.out.send(task.owner, Msg.OBJECTS_READY,
                              obj.ready_item() if item is None else item)
        dependents, obj.dependents = obj.dependents, ()
        for task_id in dependents:
            waiter = self.tasks.get(task_id)
            if waiter is not None and waiter.state is TaskState.WAITING:
                waiter.waiting_on -= 1
                if waiter.waiting_on == 0:
                    self.task_flow.deps_ready(waiter)

    def _make_error(self, obj, error):
        obj.kind, obj.data = KIND_ERROR, dumps_error(error)
        obj.size = len(obj.data)
        obj.locations = NONE_YET
        self.object_ready(obj)

    def rebuild_or_lose(self, lost, node):
        """Objects whose only copy was on ``node``: those a task made are made
        again by re-running it (its own lost inputs first, since they are rebuilt
        the same way); those made by put are lost for good."""
        rebuild = []
        for obj in lost:
            task = self.tasks.get(obj.object_id[:16])
            if is_put_id(obj.object_id) or task is None or task.spec.actor_id is not None:
                self._object_lost(obj, node)
            elif task.state is TaskState.FINISHED and not self.task_flow.retries_left(task):
                self._make_error(obj, zerr.ObjectReconstructionFailedError(
                    obj.object_id.hex(), (
                        f"Object {obj.object_id.hex()} was lost with node "
                        f"{node.node_id.hex()} and cannot be rebuilt: task "
                        f"{task.spec.name} that made it has used all "
                        f"{task.spec.max_retries} retries (max_retries).")))
                obj.move(ObjectState.LOST)
            else:
                obj.move(ObjectState.PENDING)      # readers wait for the new copy
                obj.data, obj.size = None, 0
                obj.lost = task.state is TaskState.FINISHED
                if obj.lost:
                    rebuild.append(obj)
        for task in list(self.tasks.values()):       # queued work on a lost input waits
            if task.state is TaskState.PENDING and task.spec.actor_id is None and \
                    any(self.objects.get(d) is not None and
                        self.objects[d].state is ObjectState.PENDING
                        for d in task.spec.dep_ids):
                task.move(TaskState.WAITING)
                self.task_flow.wait_for_deps(task)
        for obj in rebuild:
            if obj.holder is not None:   # someone may get it: rebuild now; the rest
                self.rebuild(obj)       # only when a task or a reader needs it

    def rebuild(self, obj):
        """Re-run the finished task that made ``obj`` (once, for all its results)."""
        if not obj.lost:
            return
        task = self.tasks.get(obj.object_id[:16])
        for object_id in self.generator_items.generator_output_ids(task):
            sibling = self.objects.get(object_id)
            if sibling is not None:
                sibling.lost = False
        if not self.task_flow.retries_left(task):
            self._make_error(obj, zerr.ObjectReconstructionFailedError(
                obj.object_id.hex(), (
                    f"Object {obj.object_id.hex()} was lost with its node and cannot be "
                    f"rebuilt: task {task.spec.name} that made it has used all "
                    f"{task.spec.max_retries} retries (max_retries).")))
            obj.move(ObjectState.LOST)
            return
        log.info("re-running %s to rebuild lost object %s", task.spec.name,
                 obj.object_id.hex()[:16])
        self.head.events.keep(task)
        task.spec.attempt += 1
        task.node_id = None
        task.move(TaskState.WAITING)
        self.task_flow.wait_for_deps(task)

    def _object_lost(self, obj, node):
        err = zerr.ObjectLostError(obj.object_id.hex(), (
            f"Object {obj.object_id.hex()} is lost: its only copy was on node "
            f"{node.node_id.hex()}, which died."))
        self._make_error(obj, err)
        obj.move(ObjectState.LOST)


__all__ = ["ObjectDirectory"]
