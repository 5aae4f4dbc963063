"""The node table (zray.head.node_table) and the head's outbox of shared messages."""

import pytest

from zray import protocol
from zray.head.node_table import BLOCK, NodeTable
from zray.head.outbox import BROADCAST, HeadOutbox, Shared, frames_of
from zray.head.records import ObjectRecord
from zray.protocol import Msg

pytestmark = pytest.mark.timeout(10)


def node_id(i):
    return i.to_bytes(16, "big")


def applied(messages, table=None):
    """What a node knows after applying NODE_TABLE items in order, as it does."""
    known = dict(table or {})
    for items in messages:
        for nid, endpoint, alive in protocol.decode(frames_of(Msg.NODE_TABLE, items)).items:
            if alive:
                known[nid] = endpoint
            else:
                known.pop(nid, None)
    return known


def test_a_joiner_gets_the_table_in_shared_blocks_and_the_others_one_broadcast():
    out = HeadOutbox()
    table = NodeTable(out)
    for i in range(BLOCK + 10):
        table.set(node_id(i), f"tcp://h:{i}", True)
    table.flush()
    first = out.drain_whole()
    assert len(first) == 1 and first[0][0] is BROADCAST
    table.set(node_id(999), "tcp://h:999", True)
    table.send_to(b"Njoiner")
    table.flush()
    whole = out.drain_whole()
    to_joiner = [items for peer, _kind, items in whole if peer == b"Njoiner"]
    assert len(to_joiner) == 2                      # two blocks, not BLOCK + 11 items
    assert to_joiner[0] is table.blocks[0]           # shared, encoded once
    assert applied(to_joiner) == {node_id(i): f"tcp://h:{i}" for i in
                                  [*range(BLOCK + 10), 999]}
    broadcasts = [items for peer, _kind, items in whole if peer is BROADCAST]
    assert broadcasts == [[(node_id(999), "tcp://h:999", True)]]
    table.validate({node_id(i) for i in [*range(BLOCK + 10), 999]})


def test_deaths_are_told_and_the_log_is_compacted():
    out = HeadOutbox()
    table = NodeTable(out)
    alive = set()
    for i in range(4 * BLOCK):
        table.set(node_id(i), f"tcp://h:{i}", True)
        alive.add(node_id(i))
    for i in range(0, 4 * BLOCK, 2):
        table.set(node_id(i), f"tcp://h:{i}", False)
        alive.discard(node_id(i))
        table.validate(alive)
    table.set(node_id(10 ** 6), "tcp://never", False)      # unknown: nothing to tell
    assert table.length <= 2 * len(alive) + BLOCK
    table.send_to(b"Njoiner")
    table.flush()
    whole = out.drain_whole()
    joiner = applied([items for peer, _k, items in whole if peer == b"Njoiner"])
    assert set(joiner) == alive
    everyone = applied([items for peer, _k, items in whole if peer is BROADCAST],
                       {node_id(i): "x" for i in range(4 * BLOCK)})
    assert set(everyone) == alive


def test_a_shared_list_is_encoded_again_only_when_it_grew():
    items = Shared([(node_id(1), "tcp://a", True)])
    first = frames_of(Msg.NODE_TABLE, items)
    assert frames_of(Msg.NODE_TABLE, items)[0] is first[0]
    items.append((node_id(2), "tcp://b", True))
    assert len(protocol.decode(frames_of(Msg.NODE_TABLE, items)).items) == 2


def test_an_object_record_keeps_one_holder_in_slots_and_the_rest_in_a_dict():
    obj = ObjectRecord(b"o" * 18)
    assert obj.holder is None and obj.holders == {}
    obj.hold(b"A")
    obj.hold(b"A")
    obj.hold(b"B")
    assert obj.holders == {b"A": 2, b"B": 1} and obj.held_by(b"B")
    obj.unhold(b"A")
    obj.unhold(b"A")             # A's last: B takes its place
    assert obj.holder == b"B" and obj.holders == {b"B": 1}
    obj.unhold(b"C")             # held nothing: no change
    obj.hold(b"C")
    obj.drop_holder(b"B")
    assert obj.holders == {b"C": 1} and not obj.held_by(b"B")
    obj.unhold(b"C")
    assert obj.holder is None and obj.holders == {}
