"""Where a client's outgoing message goes: typed routes, not tuples matched by
position (frozen dataclasses: ``Head() != Node()``, unlike empty tuples).
``ClientState`` puts ``(route, msg_type, item)`` in its outbox; the
I/O loop picks the sender by ``type(route)``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Head:
    """The head (the client's first DEALER)."""


@dataclass(frozen=True, slots=True)
class Node:
    """This process's node manager (a driver connects it on first use)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Method calls for one actor, on the DEALER connected to ``address``; queued
    for an address the actor has left, they are not sent (the state resends its
    unfinished calls with the ``ConnectActor`` for the new one)."""
    actor_id: bytes
    address: str | None


@dataclass(frozen=True, slots=True)
class ActorCancel:
    """A cancel for one actor; held until its socket is up."""
    actor_id: bytes


@dataclass(frozen=True, slots=True)
class Grant:
    """A worker the head leased to this driver, reached through our ROUTER;
    ``task_id`` names the task it carries (None for a REPORT_NOW)."""
    identity: bytes
    task_id: bytes | None


@dataclass(frozen=True, slots=True)
class Owner:
    """The driver that owns a task (its results socket)."""
    address: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A caller of this actor worker, through our ROUTER."""
    identity: bytes


@dataclass(frozen=True, slots=True, eq=False)
class Sent:
    """Not a destination: the I/O loop sends everything queued before it (head
    bookkeeping included), then sets ``event``."""
    event: object


HEAD = Head()
NODE = Node()


@dataclass(frozen=True, slots=True)
class ConnectActor:
    """Command: (re)connect the actor's socket to ``address`` and send ``calls``
    then ``cancels`` on it."""
    actor_id: bytes
    address: str
    calls: tuple
    cancels: tuple


@dataclass(frozen=True, slots=True)
class CloseActor:
    """Command: read what the actor's socket still holds, then close it."""
    actor_id: bytes
