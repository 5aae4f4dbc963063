"""The node table: where every node serves object chunks, as the nodes learn it.

Nodes pull objects from each other's chunk servers, so each must know the
others' transfer endpoints (NODE_TABLE items ``(node_id, endpoint, alive)``,
applied in order: the last item about a node wins).  The head keeps them as an
append-only log cut into blocks of ``BLOCK`` entries:

- a join or a death appends one entry (O(1));
- a node that joins is sent the log, one message per block: full blocks never
  change and are encoded once (``zray.head.outbox.Shared``), so a join costs
  N / BLOCK queued messages and one small encoding, not N items;
- the entries appended since the last flush go to every alive node as one
  broadcast after each batch of messages (``flush``): one encoding and one send
  per node per batch, however many nodes joined or died in it, and no
  per-node work in the state machine.

A death appends the node's entry again with ``alive`` False, so the log
outgrows the table; when superseded entries are more than half of it, it is
rebuilt from the alive nodes (amortized O(1) per change).
"""

from __future__ import annotations

from zray.head.outbox import Shared
from zray.protocol import Msg

#: Entries per block of the log (a full block is about 16 KB encoded).
BLOCK = 256


class NodeTable:
    def __init__(self, out):
        self.out = out
        self.blocks: list[Shared] = [Shared()]
        self.length = 0            # entries in the log
        self.current: dict = {}    # node id -> its newest entry (alive nodes only)
        self.pending = Shared()    # entries appended since the last flush

    def set(self, node_id: bytes, endpoint: str, alive: bool) -> None:
        """A node with a transfer endpoint joined (``alive``) or died."""
        entry = (node_id, endpoint, alive)
        if alive:
            self.current[node_id] = entry
        elif self.current.pop(node_id, None) is None:
            return                  # never in the table: no one needs to hear of it
        self._append(entry)
        self.pending.append(entry)
        if self.length > 2 * len(self.current) + BLOCK:
            self._compact()

    def send_to(self, identity: bytes) -> None:
        """The whole table to a node that just joined, one message per block."""
        for block in self.blocks:
            if block:
                self.out.send_whole(identity, Msg.NODE_TABLE, block)

    def flush(self) -> None:
        """The entries of this batch to every alive node, in one broadcast."""
        if self.pending:
            self.out.broadcast(Msg.NODE_TABLE, self.pending)
            self.pending = Shared()

    def entries(self) -> list:
        """The log in order (for checks)."""
        return [entry for block in self.blocks for entry in block]

    def validate(self, alive_ids) -> None:
        """The log ends, for each node, in its current entry; ``alive_ids``: the
        ids of the alive nodes."""
        final = {}
        for node_id, endpoint, alive in self.entries():
            final[node_id] = (endpoint, alive)
        assert self.length == sum(len(b) for b in self.blocks), "node table length"
        for node_id, (_endpoint, alive) in final.items():
            assert not alive or node_id in self.current, \
                f"node table: {node_id.hex()} alive in the log, not in the table"
        for node_id, entry in self.current.items():
            assert node_id in alive_ids, f"node table: {node_id.hex()} is not alive"
            assert final.get(node_id) == (entry[1], True), \
                f"node table: the log ends elsewhere for {node_id.hex()}"

    def _append(self, entry) -> None:
        last = self.blocks[-1]
        if len(last) >= BLOCK:
            last = Shared()
            self.blocks.append(last)
        last.append(entry)
        self.length += 1

    def _compact(self) -> None:
        """Rebuild the log from the alive nodes (new blocks: the old ones may
        still be queued for a joiner, and stay as they were)."""
        self.blocks = [Shared()]
        self.length = 0
        for entry in self.current.values():
            self._append(entry)


__all__ = ["BLOCK", "NodeTable"]
