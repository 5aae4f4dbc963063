"""Generator tasks this process owns (see zray.generators): part of ``ClientState``.

The head pushes each item as it is stored; the completion (return index
``COMPLETION``) brings the count, or the error that ended the task.  A stream
holds each arrived item's ref until ``next`` hands it out.
"""

from __future__ import annotations

from zray.ids import item_index, object_id_for_item
from zray.serialization import KIND_ERROR, KIND_INLINE, deserialize

COMPLETION = b"\x00\x01"        # return index of a generator task's completion


class Stream:
    """The owner's view of one streaming generator task (one ObjectRefGenerator)."""

    __slots__ = ("task_id", "completion_id", "next_index", "arrived", "count", "failed",
                 "exhausted", "waiters", "on_completion")

    def __init__(self, completion_id: bytes):
        self.task_id = completion_id[:16]
        self.completion_id = completion_id
        self.next_index = 0       # the item next() hands out next
        self.arrived = 0          # items 0..arrived-1 reached us (the head sends in order)
        self.count = None         # how many items the task made, once it finished
        self.failed = None        # the completion's entry when it is an error, not a count
        self.exhausted = False    # next() has handed out an error (item or completion)
        self.waiters = []         # Waiter-likes to hit() when next() would not block
        self.on_completion = None  # our callback for the completion's arrival


class Streams:
    def __init__(self, client):
        self.client = client               # the ClientState this is part of
        self.by_task: dict[bytes, Stream] = {}

    def expect(self, completion_id: bytes) -> None:
        """Submitted: from now on its items are kept (none is missed)."""
        self.by_task[completion_id[:16]] = Stream(completion_id)

    def open(self, completion_id: bytes) -> Stream:
        """The stream of a generator task (the caller sets ``on_completion``)."""
        stream = self.by_task.get(completion_id[:16])
        if stream is None:
            stream = self.by_task[completion_id[:16]] = Stream(completion_id)
        return stream

    def close(self, stream: Stream) -> list:
        """The generator is gone: return the ids of the items it received and never
        handed out (their refs are to be released)."""
        if self.by_task.pop(stream.task_id, None) is None:
            return []
        callbacks = self.client.callbacks.get(stream.completion_id)
        if callbacks and stream.on_completion in callbacks:
            callbacks.remove(stream.on_completion)
            if not callbacks:
                del self.client.callbacks[stream.completion_id]
        ids = (object_id_for_item(stream.task_id, index)
               for index in range(stream.next_index, stream.arrived))
        return [object_id for object_id in ids if object_id in self.client.refs]

    def next(self, stream: Stream):
        """The id of the stream's next ref (the caller now owns one count of it), or
        None if it is not here yet; StopIteration after the last."""
        client = self.client
        object_id = object_id_for_item(stream.task_id, stream.next_index)
        entry = client.objects.get(object_id)
        if entry is not None:
            stream.next_index += 1
            if entry[0] == KIND_ERROR:
                # an error item is the last, whatever count the completion has: the
                # head may have failed an actor's call (it was killed, or its process
                # went) after the actor answered us with the count of all it yielded
                stream.exhausted = True
            return object_id
        if stream.failed is not None and not stream.exhausted:
            stream.exhausted = True      # the completion itself holds the error
            client.refs[stream.completion_id] = client.refs.get(stream.completion_id, 0) + 1
            return stream.completion_id
        if self.finished(stream):
            raise StopIteration
        return None

    def ready(self, stream: Stream) -> bool:
        """Would next() return at once?"""
        return object_id_for_item(stream.task_id, stream.next_index) in self.client.objects \
            or stream.exhausted or stream.failed is not None \
            or (stream.count is not None and stream.next_index >= stream.count)

    def finished(self, stream: Stream) -> bool:
        return stream.exhausted or stream.failed is None and \
            stream.count is not None and stream.next_index >= stream.count

    def when_ready(self, stream: Stream, waiter) -> None:
        """``waiter.hit()`` once ready (now, or on the arrival that makes it so)."""
        if self.ready(stream):
            waiter.hit()
        else:
            stream.waiters.append(waiter)

    def completed(self, stream: Stream, entry) -> None:
        """The completion arrived (a callback: the caller takes the lock)."""
        kind, data, _size, _node_ids = entry
        if kind == KIND_INLINE:
            stream.count = deserialize(data)
        else:                   # not a count: the task failed as a whole
            stream.failed = entry
        self.changed(stream)

    def arrival(self, stream: Stream, object_id: bytes, woken: list) -> None:
        """An item (or the completion) reached us: the stream holds the item's ref
        until next() hands it out (the head pins it until then).  Called before
        the entry is stored."""
        woken.append(stream)
        if object_id[16:] == COMPLETION or object_id in self.client.refs:
            return
        index = item_index(object_id)
        if index >= stream.next_index:         # not one handed out and dropped since
            self.client.add_ref(object_id)
            stream.arrived = max(stream.arrived, index + 1)

    def changed(self, stream: Stream) -> None:
        if stream.waiters and self.ready(stream):
            waiters, stream.waiters = stream.waiters, []
            for waiter in waiters:
                waiter.hit()
