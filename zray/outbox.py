"""Messages a state machine wants sent, batched per (peer, type)."""

from __future__ import annotations


class Outbox:
    def __init__(self):
        self.batches: dict = {}

    def send(self, identity: bytes, msg_type, item: tuple) -> None:
        key = (identity, msg_type)
        batch = self.batches.get(key)
        if batch is None:
            self.batches[key] = [item]
        else:
            batch.append(item)

    def drain(self) -> dict:
        batches, self.batches = self.batches, {}
        return batches
