"""The head's side of generator tasks (``num_returns="streaming"``/``"dynamic"``).

A part of ``HeadState``.  A generator task has one return, its *completion*
(``task_id + 1``), created at submission and held by the caller like any
return.  Each value the task yields arrives in ITEMS_YIELDED as item ``i``
(object id ``task_id + i + 2``): the head makes its record, lists it in the
completion's ``contained_ids`` (so the completion pins it, and freeing the
completion, when the caller drops its ObjectRefGenerator, frees the items
nobody took), counts it as a live output of the task (so the task's lineage
stays while any item lives), and, for a streaming task whose caller still holds
the completion, pushes it to the caller at once (OBJECTS_READY).

Retries and lineage re-runs yield the items again: an item the head already has
is ignored, and a lost one is stored anew.  When the task fails as a whole
(worker or node death out of retries, cancellation, the actor died), the error
becomes the next item and the completion counts it, so the caller sees it where
the stream stopped.

Items of an actor call can reach the head before the caller's registration of
the call (they come from the actor, the registration from the caller): they
wait in ``early_items`` until it arrives, like early actor results.
"""

from __future__ import annotations

import pickle

from zray.head.records import EarlyItem, ObjectState, TaskState
from zray.ids import MAX_GENERATOR_ITEMS, item_index, object_id_for_item
from zray.protocol import Msg
from zray.serialization import KIND_ERROR, KIND_INLINE, KIND_SHM
from zray.task_spec import STREAMING

#: Seconds an actor's items wait for the caller's registration of the call.
EARLY_ITEMS_S = 60.0


class GeneratorItems:
    """The part of HeadState that stores generator items and owns early items."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        #: task id -> items of an actor call not registered yet
        self.early_items = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.actors = head.actors
        self.clients = head.clients
        self.nodes = head.nodes
        self.objects = head.objects
        self.placeholders = head.placeholders
        self.tasks = head.tasks
        self.directory = head.directory

    def on_items_yielded(self, key, items, now):
        client = self.clients.get(key)
        node = self.nodes.get(client.node_id) if client is not None else None
        for item in items:
            task = self.tasks.get(item.task_id)
            if task is None:     # an actor call the caller has not registered yet
                self.early_items.setdefault(item.task_id, []).append(EarlyItem(
                    now, item, node.node_id if node is not None else None))
                self._pin_ids(item.contained_ids, +1)
                continue
            self._store_item(task, item, node)

    def _store_item(self, task, item, node):
        object_id, kind = item.object_id, item.kind
        spec = task.spec
        node = node or self.nodes.get(self._item_node_id(task))
        obj = self.objects.get(object_id)
        current = task.state is TaskState.ASSIGNED and \
            (spec.actor_id is not None or spec.attempt == item.attempt)
        if obj is not None and object_id not in self.placeholders and \
                obj.state is not ObjectState.PENDING:
            current = False                      # a replay of an item we have
        completion = self.objects.get(spec.return_ids()[0])
        if not current or (obj is None and completion is None) or \
                (kind == KIND_SHM and node is None):
            # stale, a replay, or nobody wants the stream any more
            self._discard_item(task, obj, object_id, kind, node, completion)
            return
        if obj is None or object_id in self.placeholders:
            obj = self._new_item(task, object_id, completion)
        obj.lost = False
        self.directory.store_result(object_id, kind, item.data, item.size,
                                    item.contained_ids, node, push_owner=False)
        self._push_item(task, obj, completion)

    def _discard_item(self, task, obj, object_id, kind, node, completion):
        """Free the segment of an item report the head does not keep, unless it
        may be the very file a record names, or one the running attempt writes
        on the same node (the path is the same for every attempt)."""
        if kind != KIND_SHM or node is None:
            return
        if obj is not None:
            keep = node.node_id in obj.locations
        else:
            keep = completion is not None and task.state is TaskState.ASSIGNED
        if not keep:
            self.out.send(node.identity, Msg.FREE_OBJECTS, (object_id,))

    def _new_item(self, task, object_id, completion):
        obj = self.directory.claim(object_id)
        if completion is not None:
            if type(completion.contained_ids) is not list:
                completion.contained_ids = list(completion.contained_ids)
            completion.contained_ids.append(object_id)
            obj.pins += 1
        task.live_returns += 1
        task.items = max(task.items, item_index(object_id) + 1)
        return obj

    def _push_item(self, task, obj, completion):
        """A streaming task's caller gets each item as it comes, while it still
        holds the completion (that is, its ObjectRefGenerator)."""
        if task.spec.num_returns == STREAMING and completion is not None and \
                completion.held_by(task.owner):
            self.out.send(task.owner, Msg.OBJECTS_READY, obj.ready_item())

    def _item_node_id(self, task):
        if task.spec.actor_id is not None:
            actor = self.actors.get(task.spec.actor_id)
            return actor.node_id if actor is not None else None
        return task.node_id

    def _pin_ids(self, object_ids, delta):
        for object_id in object_ids:
            inner = self.objects.get(object_id)
            if inner is not None:
                inner.pins += delta
                if delta < 0:
                    self.directory.maybe_free(inner)

    def generator_failed(self, task, blob) -> bool:
        """The streaming task failed as a whole: the error becomes its next item
        and the completion counts it.  False when the caller should see the error
        on the completion itself (dynamic tasks, no room, nobody listening)."""
        spec = task.spec
        completion = self.objects.get(spec.return_ids()[0])
        if spec.num_returns != STREAMING or completion is None or \
                task.items >= MAX_GENERATOR_ITEMS:
            return False
        object_id = object_id_for_item(spec.task_id, task.items)
        obj = self._new_item(task, object_id, completion)
        obj.kind, obj.data, obj.size = KIND_ERROR, blob, len(blob)
        self.directory.object_ready(obj, push_owner=False)
        self._push_item(task, obj, completion)
        count = pickle.dumps(task.items, 5)
        completion.kind, completion.data, completion.size = KIND_INLINE, count, len(count)
        self.directory.object_ready(completion)
        return True

    def generator_output_ids(self, task) -> list:
        """Every object the task made: its returns, and the items of a generator."""
        ids = task.spec.return_ids()
        if task.items:
            ids += [object_id_for_item(task.spec.task_id, i) for i in range(task.items)]
        return ids

    # --- items of actor calls that came before the call's registration ----------------

    def apply_early_items(self, task):
        for early in self.early_items.pop(task.spec.task_id, ()):
            self._store_item(task, early.item, self.nodes.get(early.node_id))
            self._pin_ids(early.item.contained_ids, -1)

    def expire_early_items(self, now):
        for task_id, entries in list(self.early_items.items()):
            if now - entries[0].since < EARLY_ITEMS_S:
                continue
            del self.early_items[task_id]
            for early in entries:
                item = early.item
                self._pin_ids(item.contained_ids, -1)
                node = self.nodes.get(early.node_id)
                if item.kind == KIND_SHM and node is not None:
                    self.out.send(node.identity, Msg.FREE_OBJECTS, (item.object_id,))


__all__ = ["GeneratorItems", "EARLY_ITEMS_S"]
