"""Identifiers, made by whoever creates the thing, without a round trip.

A task id is 16 bytes: an 8-byte random prefix per process and an 8-byte
counter.  An object id is the id of the task that makes it plus a 2-byte return
index (1, 2, ...); index 0 marks an object made by ``put``, whose "task id" is a
fresh id of its own.  So ``object_id[:16]`` always names the producer, which is
what lineage needs.
"""

import itertools
import os

HANDLE_SUFFIX = b"\xff\xff"   # an actor handle, counted like an object: actor_id + this

_prefix = os.urandom(8)
_counter = itertools.count(1)
_pid = os.getpid()


def _reseed_after_fork():
    global _prefix, _counter, _pid
    _prefix = os.urandom(8)
    _counter = itertools.count(1)
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_task_id() -> bytes:
    return _prefix + next(_counter).to_bytes(8, "big")


def new_code_id() -> bytes:
    """Names a pickled function or actor class, cached by id wherever it runs.

    Random rather than a hash of the pickle: hashlib loads OpenSSL's libcrypto,
    ~3.6 MB of resident memory in every process.  The id travels with the
    RemoteFunction or ActorClass when it is pickled, so a task that submits the
    same function reuses the id and workers keep one cached copy.
    """
    return new_task_id()


def object_id_for_return(task_id: bytes, index: int) -> bytes:
    return task_id + index.to_bytes(2, "big")


#: A streaming or dynamic generator task's item i is its return index i + 2 (index
#: 1 is the task's completion, holding the item count); 0xffff marks handles.
FIRST_ITEM_INDEX = 2
MAX_GENERATOR_ITEMS = 0xfffe - FIRST_ITEM_INDEX + 1


def object_id_for_item(task_id: bytes, item: int) -> bytes:
    """The id of the ``item``-th value a generator task yields (0-based)."""
    return task_id + (item + FIRST_ITEM_INDEX).to_bytes(2, "big")


def item_index(object_id: bytes) -> int:
    """The inverse of object_id_for_item."""
    return int.from_bytes(object_id[16:], "big") - FIRST_ITEM_INDEX


def new_put_id() -> bytes:
    return new_task_id() + b"\x00\x00"


def is_put_id(object_id: bytes) -> bool:
    return object_id[16:] == b"\x00\x00"


def handle_id(actor_id: bytes) -> bytes:
    return actor_id + HANDLE_SUFFIX


def is_handle_id(object_id: bytes) -> bool:
    return object_id[16:] == HANDLE_SUFFIX


def task_id_of(object_id: bytes) -> bytes:
    return object_id[:16]

