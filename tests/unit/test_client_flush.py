"""The client I/O loop's flush: what leaves in which message, in which order.
The senders are replaced by recorders: no sockets, no thread."""

import os
import threading
import types

import pytest

from zray.client.io import ClientIO
from zray.client.routes import HEAD, NODE, Grant, Owner, Reply, Sent
from zray.client.state import ClientState
from zray.config import Config
from zray.protocol import Msg

pytestmark = pytest.mark.timeout(10)

OWNER = Owner("ipc:///tmp/driver.sock")
OTHER_OWNER = Owner("ipc:///tmp/other-driver.sock")


@pytest.fixture
def flushing_io():
    state = ClientState("worker")
    client = types.SimpleNamespace(state=state, lock=threading.RLock(), config=Config())
    io = ClientIO(client)         # (its thread is never started)
    sent = []

    def recorder(route, msg_type, items):
        sent.append((route, msg_type, list(items)))
    io.senders = {kind: recorder for kind in io.senders}
    yield io, state, sent
    os.close(io.wake_fd)


def test_a_turns_items_for_the_node_and_owners_leave_as_one_message_per_run(flushing_io):
    io, state, sent = flushing_io
    for task in (b"a", b"b", b"c"):
        state.send(OWNER, Msg.OBJECTS_READY, (task, 0, b"", 0, ()))
        state.send(NODE, Msg.TASKS_DONE, (task,))
    state.send(OTHER_OWNER, Msg.OBJECTS_READY, (b"d", 0, b"", 0, ()))
    state.send(NODE, Msg.WORKER_BLOCKED, (b"d", ()))
    state.send(NODE, Msg.TASKS_DONE, (b"e",))
    io.flush()
    assert sent == [
        (OWNER, Msg.OBJECTS_READY, [(t, 0, b"", 0, ()) for t in (b"a", b"b", b"c")]),
        (NODE, Msg.TASKS_DONE, [(b"a",), (b"b",), (b"c",)]),
        (NODE, Msg.WORKER_BLOCKED, [(b"d", ())]),
        (NODE, Msg.TASKS_DONE, [(b"e",)]),
        (OTHER_OWNER, Msg.OBJECTS_READY, [(b"d", 0, b"", 0, ())]),
    ]


def test_gathered_items_leave_before_a_later_message_for_another_socket(flushing_io):
    io, state, sent = flushing_io
    grant = Grant(b"w" * 9, b"t" * 16)
    state.send(NODE, Msg.TASKS_DONE, (b"a",))
    state.send(grant, Msg.EXECUTE_TASKS, ("spec",))
    state.send(NODE, Msg.TASKS_DONE, (b"b",))
    state.send(HEAD, Msg.SUBSCRIBE_OBJECTS, (b"o" * 18,))
    event = threading.Event()
    state.send(Sent(event), None, None)
    io.flush()
    assert sent == [
        (NODE, Msg.TASKS_DONE, [(b"a",)]),
        (grant, Msg.EXECUTE_TASKS, [("spec",)]),
        (NODE, Msg.TASKS_DONE, [(b"b",)]),
        (HEAD, Msg.SUBSCRIBE_OBJECTS, [(b"o" * 18,)]),     # the head's: last, at once
    ]
    assert event.is_set()


def test_a_held_submit_local_leaves_after_its_node_offer_and_before_anything_to_an_owner(
        flushing_io):
    """A task our node placed is registered with the head (SUBMIT_LOCAL, held as
    bookkeeping) after the node has it, and before its refs can reach an owner
    or an actor's caller."""
    io, state, sent = flushing_io
    state.send(HEAD, Msg.ADD_REFS, (b"x" * 18,))
    state.send(NODE, Msg.PLACE_TASKS, ("spec",))
    state.send(HEAD, Msg.SUBMIT_LOCAL, ("spec",))
    state.send(OWNER, Msg.OBJECTS_READY, (b"a", 0, b"", 0, ()))
    io.flush()
    assert sent == [
        (NODE, Msg.PLACE_TASKS, [("spec",)]),
        (HEAD, Msg.ADD_REFS, [(b"x" * 18,)]),
        (HEAD, Msg.SUBMIT_LOCAL, [("spec",)]),
        (OWNER, Msg.OBJECTS_READY, [(b"a", 0, b"", 0, ())]),
    ]
    sent.clear()
    state.send(NODE, Msg.PLACE_TASKS, ("spec2",))
    state.send(HEAD, Msg.SUBMIT_LOCAL, ("spec2",))
    state.send(Reply(b"caller"), Msg.ACTOR_RESULTS, ("result",))
    io.flush()
    assert sent == [
        (NODE, Msg.PLACE_TASKS, [("spec2",)]),
        (HEAD, Msg.SUBMIT_LOCAL, [("spec2",)]),
        (Reply(b"caller"), Msg.ACTOR_RESULTS, [("result",)]),
    ]
    sent.clear()
    state.send(NODE, Msg.PLACE_TASKS, ("spec3",))
    state.send(HEAD, Msg.SUBMIT_LOCAL, ("spec3",))
    io.flush()                       # nothing else: it may wait for company
    assert sent == [(NODE, Msg.PLACE_TASKS, [("spec3",)])]
