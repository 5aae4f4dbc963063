"""Where a client's outgoing message goes: typed routes, not tuples matched by
position (``Head() != Node()``, unlike empty tuples).  ``ClientState`` puts
``(route, msg_type, item)`` in its outbox; the I/O loop picks the sender by
``type(route)``.

Each is a small immutable value: equal when of the same class with equal
fields, hashable, read-only.  (Written out rather than made by
``dataclass(frozen=True, slots=True)``, whose code generation cost every
driver and fork server ~4 ms of start-up for these ten classes.)
"""

from __future__ import annotations


class _Value:
    """Immutable, compared and hashed by class and ``__slots__`` values."""

    __slots__ = ()

    def __init__(self, *values):
        if len(values) != len(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} "
                            f"argument(s) ({', '.join(self.__slots__)}), got {len(values)}")
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self):
        return hash((type(self).__name__, self._values()))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self):
        return (type(self), self._values())


class Head(_Value):
    """The head (the client's first DEALER)."""
    __slots__ = ()


class Node(_Value):
    """This process's node manager (a driver connects it on first use)."""
    __slots__ = ()


class Actor(_Value):
    """Method calls for one actor, on the DEALER connected to ``address``; queued
    for an address the actor has left, they are not sent (the state resends its
    unfinished calls with the ``ConnectActor`` for the new one)."""
    __slots__ = ("actor_id", "address")
    actor_id: bytes
    address: str | None


class ActorCancel(_Value):
    """A cancel for one actor; held until its socket is up."""
    __slots__ = ("actor_id",)
    actor_id: bytes


class Grant(_Value):
    """A worker the head leased to this driver, reached through our ROUTER;
    ``task_id`` names the task it carries (None for a REPORT_NOW)."""
    __slots__ = ("identity", "task_id")
    identity: bytes
    task_id: bytes | None


class Owner(_Value):
    """The driver that owns a task (its results socket)."""
    __slots__ = ("address",)
    address: str


class Reply(_Value):
    """A caller of this actor worker, through our ROUTER."""
    __slots__ = ("identity",)
    identity: bytes


class Sent(_Value):
    """Not a destination: the I/O loop sends everything queued before it (head
    bookkeeping included), then sets ``event``.  Equal only to itself."""
    __slots__ = ("event",)
    event: object
    __eq__ = object.__eq__
    __hash__ = object.__hash__


HEAD = Head()
NODE = Node()


class ConnectActor(_Value):
    """Command: (re)connect the actor's socket to ``address`` and send ``calls``
    then ``cancels`` on it."""
    __slots__ = ("actor_id", "address", "calls", "cancels")
    actor_id: bytes
    address: str
    calls: tuple
    cancels: tuple


class CloseActor(_Value):
    """Command: read what the actor's socket still holds, then close it."""
    __slots__ = ("actor_id",)
    actor_id: bytes
