"""The head's outbox: batches per (peer, type), plus whole messages and broadcasts.

``Outbox.send`` appends one item to the batch of a (peer, type); the process
loop sends one message per batch.  The head also sends messages whose items
are built once and shared by many peers (the node table, see
``zray.head.node_table``): ``send_whole`` queues a list of items as one
message to one peer, ``broadcast`` as one message to every alive node.  A
``Shared`` list is encoded once (again only if it grew) however many peers get
it, so telling N nodes about one change costs the head one encoding and N sends
of the same frame, and no per-peer work in the state machine.

    state ──send──────▶ batches {(peer, type): [items]}  ─┐
          ──send_whole─▶ whole [(peer, type, items)]     ─┼─▶ loop: frames_of, send
          ──broadcast──▶ whole [(BROADCAST, type, items)] ─┘   (BROADCAST: every alive node)
"""

from __future__ import annotations

from zray import protocol
from zray.outbox import Outbox

#: The peer of a broadcast: every node alive when the loop sends it.
BROADCAST = None


class Shared(list):
    """Items many messages carry: encoded once, and again only when it grew."""

    __slots__ = ("frame", "encoded_len")

    def __init__(self, items=()):
        super().__init__(items)
        self.frame = None
        self.encoded_len = -1


def frames_of(msg_type, items) -> list:
    """The frames of one message carrying ``items`` (a Shared list's cached)."""
    if type(items) is Shared:
        if items.encoded_len != len(items):
            # as a plain list: the wire carries no class names
            items.frame = protocol.encode(msg_type, list(items))[0]
            items.encoded_len = len(items)
        return [items.frame]
    return protocol.encode(msg_type, items)


class HeadOutbox(Outbox):
    def __init__(self):
        super().__init__()
        self.whole: list = []

    def send_whole(self, identity: bytes, msg_type, items: list) -> None:
        """``items`` as one message of their own to ``identity``."""
        self.whole.append((identity, msg_type, items))

    def broadcast(self, msg_type, items: list) -> None:
        """``items`` as one message to every alive node."""
        self.whole.append((BROADCAST, msg_type, items))

    def drain_whole(self) -> list:
        whole, self.whole = self.whole, []
        return whole


__all__ = ["BROADCAST", "HeadOutbox", "Shared", "frames_of"]
