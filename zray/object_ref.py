"""ObjectRef: a reference to an object that exists, or will, somewhere in the cluster."""

from __future__ import annotations

import concurrent.futures

from zray import _runtime
from zray.serialization import record_contained_ref

#: A task id (16 bytes) and a return index (2 bytes); see zray.ids.
OBJECT_ID_BYTES = 18


class ObjectRef:
    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, *, _client=None, _registered: bool = False):
        if not _registered and (type(object_id) is not bytes or
                                len(object_id) != OBJECT_ID_BYTES):
            self._client = None         # for __del__
            _bad_id(object_id)
        self._id = object_id
        if _client is None:
            active = _runtime.get_runtime()
            _client = active.client if active is not None else None
        self._client = _client
        if _client is not None and not _registered:
            _client.add_ref(object_id)

    def __del__(self):
        client = self._client
        if client is not None:
            try:
                client.release_ref(self._id)
            except Exception:
                pass

    def __reduce__(self):
        record_contained_ref(self._id)
        return (_rebuild, (self._id,))

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return self._id[:16]

    def is_nil(self) -> bool:
        return not any(self._id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future that resolves to the object's value."""
        future = concurrent.futures.Future()
        client = self._client or _runtime.client()
        object_id = self._id
        keep_alive = self

        def resolve(entry):
            try:
                future.set_result(client.value_of(object_id, entry))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                del_ref = keep_alive  # noqa: F841  (holds the ref until resolved)

        client.add_callback(object_id, resolve)
        return future

    def __await__(self):
        return self.as_future().__await__()

    def as_future(self):
        import asyncio     # here, not at import: asyncio (and ssl) cost ~8 MB a process
        return asyncio.wrap_future(self.future())


def _bad_id(object_id) -> None:
    if not isinstance(object_id, bytes):
        raise TypeError(f"ObjectRef() takes the object's id as bytes, got "
                        f"{type(object_id).__name__}: {object_id!r}")
    raise ValueError(f"An ObjectRef's id is {OBJECT_ID_BYTES} bytes, got "
                     f"{len(object_id)}: {object_id!r}")


def stale_ref_error(ref: ObjectRef):
    """The error for a ref made before the current ``init``: its object went
    with the cluster (or connection) that ``shutdown`` ended."""
    from zray.exceptions import OwnerDiedError
    return OwnerDiedError(ref.hex(), (
        f"{ref!r} was made before zray.shutdown() and belongs to an earlier "
        "zray.init(); its object went away with that session. Create it again "
        "after init (ObjectRefs cannot outlive the session that made them)."))


def _rebuild(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id)
