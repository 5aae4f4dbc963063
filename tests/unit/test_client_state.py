"""The client's state machine, fed events directly: no sockets, no threads, no clock."""

import pytest

from zray import ids
from zray.client.routes import HEAD, Actor, ActorCancel, CloseActor, ConnectActor, Grant
from zray.client.state import ClientState
from zray.exceptions import PendingCallsLimitExceeded
from zray.protocol import Msg, STATUS_OK
from zray.serialization import KIND_ERROR, KIND_INLINE, KIND_SHM, deserialize, dumps_error
from zray.task_spec import STREAMING, TaskSpec

pytestmark = pytest.mark.timeout(10)

OWNER = "ipc:///tmp/driver.sock"
ACTOR = ids.new_task_id()
ADDRESS = "tcp://10.0.0.2:5000"
WORKER_ID = b"w" * 8


class Harness:
    """Feeds events, checks invariants after each, and hands back what went out
    as ``{(route, msg_type): [items]}``."""

    def __init__(self, role="driver", owner_address=OWNER):
        self.state = ClientState(role)
        self.state.owner_address = owner_address
        self.now = 0.0

    def do(self, method, *args):
        result = method(*args)
        self.state.validate()
        return result

    def out(self):
        sent = {}
        while self.state.out:
            route, msg_type, item = self.state.out.popleft()
            sent.setdefault((route, msg_type), []).append(item)
        return sent

    def arrive(self, object_id, value=None, kind=KIND_INLINE):
        data = dumps_error(value) if kind == KIND_ERROR else b"x"
        self.do(self.state.objects_ready, [(object_id, kind, data, len(data), ())], self.now)
        return self.state.take_callbacks()

    def call(self, method="m", deps=(), max_pending=-1, num_returns=1):
        spec = TaskSpec(ids.new_task_id(), b"job1", f"A.{method}", b"fid", b"", tuple(deps),
                        (), num_returns, {}, 0, actor_id=ACTOR, method=method)
        [result] = self.do(self.state.submit_actor_call, spec, max_pending)
        return spec, result

    def answer(self, spec, contained=(), kind=KIND_INLINE, node_id=b"n"):
        result = (spec.return_ids()[0], kind, b"v", 1, tuple(contained))
        self.do(self.state.calls.results_arrived,
                [(spec.task_id, node_id, [result], STATUS_OK)], self.now)
        return result

    def actor_alive(self, address=ADDRESS):
        return self.do(self.state.calls.actor_moved, (ACTOR, "ALIVE", address, None))


def task(**kwargs):
    options = dict(resources={"CPU": 1.0}, owner_address=OWNER)
    options.update(kwargs)
    return TaskSpec(ids.new_task_id(), b"job1", "f", b"fid", b"", **options)


# --- references -------------------------------------------------------------------


def test_first_reference_announces_and_last_release_removes():
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.add_ref, object_id)
    h.do(h.state.add_ref, object_id)
    assert h.out() == {(HEAD, Msg.ADD_REFS): [(object_id,)]}
    h.do(h.state.release, object_id)
    assert h.out() == {} and h.state.refs[object_id] == 1
    h.do(h.state.release, object_id)
    assert h.out() == {(HEAD, Msg.REMOVE_REFS): [(object_id,)]}
    assert object_id not in h.state.refs


def test_returns_of_a_submitted_task_are_counted_without_add_refs():
    h = Harness(owner_address=None)
    spec = task()
    [result] = h.do(h.state.submit, spec, h.now)
    assert h.out() == {(HEAD, Msg.SUBMIT_TASKS): [(spec,)]}
    assert h.state.refs[result] == 1 and result in h.state.pushed
    h.do(h.state.release, result)
    assert h.out() == {(HEAD, Msg.REMOVE_REFS): [(result,)]}


def test_a_ref_nested_in_an_arriving_object_is_counted_by_whoever_holds_it():
    h = Harness(owner_address=None)
    outer = ids.new_put_id()
    inner = ids.new_put_id()
    h.do(h.state.put, outer, (KIND_INLINE, b"o", 1, ()),
         (outer, KIND_INLINE, b"o", 1, None, (inner,)))
    assert h.out() == {(HEAD, Msg.PUT_OBJECTS): [(outer, KIND_INLINE, b"o", 1, None,
                                                  (inner,))]}
    h.do(h.state.add_ref, inner)          # deserializing ``outer`` made an ObjectRef
    assert h.out() == {(HEAD, Msg.ADD_REFS): [(inner,)]}
    h.do(h.state.release, outer)
    assert h.out() == {(HEAD, Msg.REMOVE_REFS): [(outer,)]}
    assert h.state.refs == {inner: 1}


def test_releasing_the_last_ref_of_a_shm_object_says_its_map_may_go():
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.add_ref, object_id)
    h.do(h.state.objects_ready, [(object_id, KIND_SHM, None, 10, (b"n",))], 0.0)
    assert h.do(h.state.release, object_id) is True
    assert object_id not in h.state.objects


def test_an_object_nobody_here_holds_is_not_kept():
    h = Harness()
    stranger = ids.new_put_id()
    h.arrive(stranger)
    assert stranger not in h.state.objects


# --- waits ------------------------------------------------------------------------


class Wakes:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1


def test_a_wait_for_ready_objects_needs_no_waiter():
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.put, object_id, (KIND_INLINE, b"v", 1, ()),
         (object_id, KIND_INLINE, b"v", 1, None, ()))
    waiter, missing, _ = h.do(h.state.begin_wait, {object_id}, 1, (), Wakes())
    assert waiter is None and missing == []


def test_num_returns_decides_when_the_waiter_wakes_and_missing_ones_are_subscribed():
    h = Harness()
    a, b, c = (ids.new_put_id() for _ in range(3))
    for object_id in (a, b, c):
        h.do(h.state.add_ref, object_id)
    h.out()
    wake = Wakes()
    waiter, missing, pending = h.do(h.state.begin_wait, {a, b, c}, 2, (), wake)
    assert sorted(missing) == sorted([a, b, c])
    assert sorted(h.out()[(HEAD, Msg.SUBSCRIBE_OBJECTS)]) == sorted([(a,), (b,), (c,)])
    h.arrive(a)
    assert wake.count == 0
    h.arrive(c)
    assert wake.count == 1
    h.do(h.state.end_wait, waiter, missing, pending)
    assert h.state.waiters == {}


def test_a_timed_out_wait_leaves_no_waiter_behind():
    """The facade decides the timeout (it reads the clock); the state only forgets."""
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.add_ref, object_id)
    waiter, missing, pending = h.do(h.state.begin_wait, {object_id}, 1, (), Wakes())
    assert h.state.waiters == {object_id: [waiter]}
    h.do(h.state.end_wait, waiter, missing, pending)      # timed out
    assert h.state.waiters == {}
    h.arrive(object_id)                      # arrives later: kept, nobody woken
    assert object_id in h.state.objects


def test_returns_of_our_tasks_are_not_subscribed_until_the_push_grace_passes():
    h = Harness(owner_address=None)
    [result] = h.do(h.state.submit, task(), h.now)
    h.out()
    h.do(h.state.begin_wait, {result}, 1, (), Wakes())
    assert (HEAD, Msg.SUBSCRIBE_OBJECTS) not in h.out()
    h.do(h.state.subscribe_pushed, [result])
    assert h.out() == {(HEAD, Msg.SUBSCRIBE_OBJECTS): [(result,)]}


def test_callbacks_run_outside_the_state_once_the_object_arrives():
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.add_ref, object_id)
    seen = []
    assert h.do(h.state.add_callback, object_id, seen.append) is None
    [(callback, entry)] = h.arrive(object_id)
    callback(entry)
    assert seen == [(KIND_INLINE, b"x", 1, ())]


def test_a_fatal_error_wakes_every_waiter():
    h = Harness()
    object_id = ids.new_put_id()
    h.do(h.state.add_ref, object_id)
    wake = Wakes()
    h.do(h.state.begin_wait, {object_id}, 1, (), wake)
    h.state.fail(RuntimeError("head lost"))
    assert wake.count == 1 and isinstance(h.state.fatal, RuntimeError)


# --- actor calls ------------------------------------------------------------------


def test_calls_wait_for_the_actor_address_then_go_in_order():
    h = Harness()
    first, _ = h.call()
    second, _ = h.call()
    assert h.out() == {(HEAD, Msg.SUBSCRIBE_ACTOR): [(ACTOR,)]}   # asked once
    [connect] = h.actor_alive()
    assert connect == ConnectActor(ACTOR, ADDRESS, (first, second), ())
    third, _ = h.call()
    assert h.out() == {(Actor(ACTOR, ADDRESS), Msg.ACTOR_CALLS): [(third,)]}


def test_a_call_the_head_never_hears_of_is_answered_and_freed_silently():
    h = Harness()
    h.actor_alive()
    spec, result = h.call()
    h.out()
    h.answer(spec)
    assert result in h.state.objects
    assert h.state.calls.pending == {}
    h.do(h.state.release, result)
    assert h.out() == {}                  # no REMOVE_REFS: the head never knew it
    assert spec.task_id not in h.state.calls.unregistered


def test_a_result_that_escapes_registers_the_call_and_forwards_its_answer():
    h = Harness()
    h.actor_alive()
    spec, result = h.call()
    h.answer(spec)
    h.out()
    h.do(h.state.calls.register_escaping, [result])
    out = h.out()
    assert out[(HEAD, Msg.SUBMIT_TASKS)] == [(spec,)]
    [(task_id, _attempt, status, _results)] = out[(HEAD, Msg.ACTOR_TASKS_FINISHED)]
    assert task_id == spec.task_id and status == STATUS_OK


def test_a_ref_escaping_before_the_answer_forwards_it_when_it_comes():
    h = Harness()
    h.actor_alive()
    spec, result = h.call()
    h.do(h.state.calls.register_escaping, [result])
    assert h.out()[(HEAD, Msg.SUBMIT_TASKS)] == [(spec,)]
    h.answer(spec)
    assert [item[0] for item in h.out()[(HEAD, Msg.ACTOR_TASKS_FINISHED)]] == [spec.task_id]


def test_a_result_holding_refs_is_claimed_from_the_head_with_its_results():
    """The actor told the head too, but its report may reach the head after a
    kill of the actor that we send next: our claim carries the results."""
    h = Harness()
    h.actor_alive()
    spec, _result = h.call()
    h.out()
    h.answer(spec, contained=(ids.new_put_id(),))
    out = h.out()
    assert out[(HEAD, Msg.SUBMIT_TASKS)] == [(spec,)]
    [(task_id, attempt, status, results)] = out[(HEAD, Msg.ACTOR_TASKS_FINISHED)]
    assert task_id == spec.task_id and status == 0 and results[0][4]


def test_calls_with_ref_arguments_are_registered_at_once():
    h = Harness()
    h.actor_alive()
    spec, _ = h.call(deps=(ids.new_put_id(),))
    out = h.out()
    assert out[(HEAD, Msg.SUBMIT_TASKS)] == [(spec,)]
    assert out[(Actor(ACTOR, ADDRESS), Msg.ACTOR_CALLS)] == [(spec,)]


def test_max_pending_calls_is_enforced():
    h = Harness()
    h.call(max_pending=1)
    with pytest.raises(PendingCallsLimitExceeded):
        h.call(max_pending=1)


def test_a_dropped_handle_is_released_after_our_last_call():
    h = Harness()
    handle = ids.handle_id(ACTOR)
    h.do(h.state.add_ref, handle, False)
    h.actor_alive()
    spec, _ = h.call()
    h.out()
    h.do(h.state.release, handle)
    assert h.out() == {}                  # held while the call runs
    h.answer(spec)
    assert h.out() == {(HEAD, Msg.REMOVE_REFS): [(handle,)]}


def test_an_actor_that_dies_fails_unregistered_calls_here():
    h = Harness()
    h.actor_alive()
    spec, result = h.call()
    commands = h.do(h.state.calls.actor_moved, (ACTOR, "DEAD", None, "killed"))
    assert commands == [CloseActor(ACTOR)]
    kind, data, _size, _nodes = h.state.objects[result]
    assert kind == KIND_ERROR and "killed" in str(deserialize(data))
    assert h.state.calls.pending == {}


def test_a_restart_resends_unfinished_calls_with_retries_to_the_new_address():
    h = Harness()
    h.actor_alive()
    spec, _ = h.call()
    spec.max_retries = 1
    h.out()
    assert h.do(h.state.calls.actor_moved, (ACTOR, "RESTARTING", None, None)) == \
        [CloseActor(ACTOR)]
    [connect] = h.actor_alive("tcp://10.0.0.3:5000")
    assert connect.calls == (spec,) and spec.attempt == 1


def test_a_cancel_before_the_actor_is_reachable_follows_the_calls():
    h = Harness()
    spec, _ = h.call()
    h.do(h.state.calls.cancel, spec.task_id, ACTOR)
    [connect] = h.actor_alive()
    assert connect.cancels == ((spec.task_id, False),)
    h.do(h.state.calls.cancel, spec.task_id, ACTOR)
    assert h.out()[(ActorCancel(ACTOR), Msg.CANCEL_TASKS)] == [(spec.task_id, False)]


def test_a_call_queued_for_an_old_address_is_not_sent_there():
    h = Harness()
    h.actor_alive()
    spec, _ = h.call()
    [(route, _type, _item)] = list(h.state.out)
    assert route == Actor(ACTOR, ADDRESS) and route != Actor(ACTOR, "tcp://elsewhere:1")


# --- grants -----------------------------------------------------------------------


def granted(h):
    [result] = h.do(h.state.submit, task(), h.now)      # the head runs the first one
    h.arrive(result)
    h.do(h.state.grants.granted, [(WORKER_ID, b"t" * 16)], h.now)
    h.out()


def test_a_granted_task_goes_to_the_worker_and_the_head_is_told():
    h = Harness()
    granted(h)
    spec = task()
    h.do(h.state.submit, spec, h.now)
    out = h.out()
    [(sent,)] = out[(Grant(b"W" + WORKER_ID, spec.task_id), Msg.EXECUTE_TASKS)]
    assert sent.task_id == spec.task_id and sent.function_blob is None  # not registered
    assert out[(HEAD, Msg.SUBMIT_LEASED)] == [(spec, WORKER_ID)]


def test_a_burst_gives_the_grant_back():
    h = Harness()
    granted(h)
    h.do(h.state.submit, task(), h.now)
    h.out()
    second = task()
    h.do(h.state.submit, second, h.now)
    assert h.out() == {(HEAD, Msg.LEASE_RETURN): [(WORKER_ID,)],
                       (HEAD, Msg.SUBMIT_TASKS): [(second,)]}
    assert h.state.grants.lease is None


def test_a_second_grant_goes_back_and_a_recall_drops_ours():
    h = Harness()
    granted(h)
    h.do(h.state.grants.granted, [(b"v" * 8, b"u" * 16)], h.now)
    assert h.out() == {(HEAD, Msg.LEASE_RETURN): [(b"v" * 8,)]}
    h.do(h.state.grants.recalled, [(WORKER_ID,)])
    assert h.out() == {(HEAD, Msg.LEASE_RETURN): [(WORKER_ID,)]}
    assert h.state.grants.lease is None


def test_an_idle_grant_goes_back_after_lease_idle_s():
    h = Harness()
    granted(h)
    h.do(h.state.grants.return_idle, 0.5, 1.0)
    assert h.state.grants.lease is not None
    h.do(h.state.grants.return_idle, 1.5, 1.0)
    assert h.out() == {(HEAD, Msg.LEASE_RETURN): [(WORKER_ID,)]}


def test_an_unreachable_grant_sends_the_task_to_the_head_instead():
    h = Harness()
    granted(h)
    spec = task()
    h.do(h.state.submit, spec, h.now)
    h.do(h.state.grants.unreachable, spec.task_id)      # the I/O loop's send failed
    assert h.state.grants.to_head(Msg.SUBMIT_LEASED, (spec, WORKER_ID)) == \
        (Msg.SUBMIT_TASKS, (spec,))
    assert h.state.grants.lease is None


def test_no_grant_without_a_results_socket():
    h = Harness(owner_address=None)
    h.do(h.state.grants.granted, [(WORKER_ID, b"t" * 16)], h.now)
    assert h.out() == {(HEAD, Msg.LEASE_RETURN): [(WORKER_ID,)]}


# --- streams ----------------------------------------------------------------------


def test_stream_items_are_held_until_next_hands_them_out():
    h = Harness()
    spec = task(num_returns=STREAMING)
    [completion] = h.do(h.state.submit, spec, h.now)
    stream = h.state.streams.open(completion)
    assert h.state.streams.next(stream) is None
    item = ids.object_id_for_item(spec.task_id, 0)
    h.arrive(item)
    assert h.state.refs[item] == 1
    assert h.state.streams.next(stream) == item
    h.do(h.state.streams.completed, stream, (KIND_INLINE, _count(1), 1, ()))
    with pytest.raises(StopIteration):
        h.state.streams.next(stream)


def test_stream_ends_at_an_error_item_whatever_the_count():
    """The head failed an actor's generator call at its second item (the actor
    was killed, or its process went, before the head had its last items) after
    the actor had answered with the count of all four: the error still ends
    the stream, as it does at the head."""
    h = Harness()
    h.actor_alive()
    spec, completion = h.call("stream", num_returns=STREAMING)
    stream = h.state.streams.open(completion)
    first, second = (ids.object_id_for_item(spec.task_id, i) for i in (0, 1))
    h.do(h.state.calls.results_arrived, [(spec.task_id, b"n", [
        (completion, KIND_INLINE, _count(4), 1, ())], STATUS_OK)], h.now)
    h.do(h.state.streams.completed, stream, (KIND_INLINE, _count(4), 1, ()))
    h.arrive(first)
    h.arrive(second, RuntimeError("the actor died"), kind=KIND_ERROR)
    assert h.state.streams.next(stream) == first
    assert h.state.streams.next(stream) == second
    assert h.state.streams.ready(stream) and h.state.streams.finished(stream)
    with pytest.raises(StopIteration):
        h.state.streams.next(stream)


def _count(n):
    from zray.serialization import inline_bytes, serialize
    return inline_bytes(serialize(n))
