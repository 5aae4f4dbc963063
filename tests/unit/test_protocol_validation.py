"""decode checks every item: its shape (a tuple of the message's arity) and each
field's type (zray.protocol.FIELD_TYPES), and hands back named, typed items.
Unit tests: no processes, no sockets."""

from __future__ import annotations

import pickle
from fractions import Fraction

import pytest

from zray import protocol
from zray.exceptions import ProtocolError
from zray.protocol import Msg, SPECS
from zray.task_spec import TaskSpec

from tests.unit.test_protocol_docs import _sample_item, _sample_spec

pytestmark = pytest.mark.timeout(10)

NOT_ANY_TYPE = 1j     # a value no field accepts, except those typed "any value"


def _decode(msg, items, **kwargs):
    return protocol.decode(protocol.encode(msg, items), **kwargs)


def test_add_refs_with_an_id_that_is_not_bytes_is_refused_at_the_edge():
    """It used to pass decode, leave a placeholder keyed by 12345 in the head, and
    end the head at the next expiry sweep (AttributeError: int has no .hex)."""
    for msg in (Msg.ADD_REFS, Msg.SUBSCRIBE_OBJECTS):
        with pytest.raises(ProtocolError, match=f"{msg.name} item 0: field object_id "
                                                r"should be bytes \(18\), got int"):
            _decode(msg, [(12345,)])


def test_chunk_request_that_is_not_a_tuple_is_refused():
    with pytest.raises(ProtocolError, match="CHUNK_REQUEST item 0: is a float, not a tuple"):
        _decode(Msg.CHUNK_REQUEST, [1.5])


def test_every_field_has_a_type():
    for msg in Msg:
        assert len(protocol.field_types(msg)) == len(SPECS[msg].fields)


@pytest.mark.parametrize("msg", list(Msg), ids=lambda m: m.name)
def test_items_are_named_tuples_with_the_spec_fields(msg):
    item = _sample_item(msg)
    [got] = _decode(msg, [item]).items
    assert type(got) is protocol.ITEMS[msg]
    assert got._fields == SPECS[msg].fields
    assert isinstance(got, tuple) and len(got) == len(item)
    for name, value in zip(SPECS[msg].fields, got):
        assert getattr(got, name) is value


def test_typed_items_pickle_as_plain_tuples():
    [item] = _decode(Msg.TASKS_DONE, [(b"t" * 16,)]).items
    again = pickle.loads(pickle.dumps([item], 5))
    assert type(again[0]) is tuple and again == [(b"t" * 16,)]
    assert _decode(Msg.TASKS_DONE, [item]).items == [(b"t" * 16,)]   # forwarded as is


@pytest.mark.parametrize("msg", list(Msg), ids=lambda m: m.name)
def test_wrong_arity_is_refused_naming_the_fields(msg):
    item = _sample_item(msg)
    for bad in (item + (1,), item[:-1]):
        with pytest.raises(ProtocolError, match=f"{msg.name} item 0: has {len(bad)} "
                                                f"fields, expected {len(item)}"):
            _decode(msg, [bad])


@pytest.mark.parametrize("msg", list(Msg), ids=lambda m: m.name)
def test_a_wrong_type_in_any_field_is_refused_naming_the_field(msg):
    item = _sample_item(msg)
    for i, (name, field_type) in enumerate(zip(SPECS[msg].fields, protocol.field_types(msg))):
        if field_type is protocol.ANY:
            continue
        bad = item[:i] + (NOT_ANY_TYPE,) + item[i + 1:]
        with pytest.raises(ProtocolError, match=f"{msg.name} item 0: field {name} should "
                                                "be .*, got complex"):
            _decode(msg, [bad])


@pytest.mark.parametrize("field, value, why", [
    ("task_id", b"short", r"task_id should be bytes \(16\), got bytes of length 5"),
    ("resources", {"CPU": "one"}, "resources should be a dict of str -> number in \\[0, 1e18\\]"),
    ("resources", {"CPU": float("nan")}, "resources should be a dict"),
    ("resources", {"CPU": 2**1000}, "resources should be a dict"),   # float() overflows
    ("dep_ids", [b"d" * 18], r"dep_ids should be a tuple of bytes \(18\), got list"),
    ("dep_ids", (b"d" * 17,), r"dep_ids should be a tuple of bytes \(18\)"),
    ("num_returns", 70000, r"num_returns should be int in \[-2, 65534\]"),
    ("strategy", ("node_affinity", b"n" * 16), "strategy should be None, a str,"),
    ("timeout_s", "soon", "timeout_s should be number or None"),
    ("timeout_s", Fraction(1, 2), "timeout_s should be number or None"),   # no :g in 3.11
    ("actor_options", {"held": {"CPU": -1.0}}, "actor_options should be a dict of actor "
                                               ".*its key 'held' should be a dict"),
])
def test_task_spec_fields_are_checked(field, value, why):
    spec = _sample_spec()
    setattr(spec, field, value)
    with pytest.raises(ProtocolError, match=f"SUBMIT_TASKS item 0: field spec should be "
                                            f"a zray.task_spec.TaskSpec, got TaskSpec "
                                            f"\\(its {why}"):
        _decode(Msg.SUBMIT_TASKS, [(spec,)])


def test_nested_results_are_checked():
    item = _sample_item(Msg.TASKS_FINISHED)
    bad_result = (b"o" * 18, 0, b"data", -4, ())
    with pytest.raises(ProtocolError, match=r"field results .*element 0 .*its size should "
                                            r"be int in \[0, 2\*\*63\)"):
        _decode(Msg.TASKS_FINISHED, [item[:3] + ([bad_result],) + item[4:]])


def test_numpy_like_integers_are_accepted():
    np = pytest.importorskip("numpy")
    [item] = _decode(Msg.OBJECT_COPIED, [(b"o" * 18, np.int64(5))]).items
    assert item.size == 5


def test_keep_good_items_drops_only_the_malformed_ones():
    good = [(b"a" * 18,), (b"b" * 18,)]
    message = _decode(Msg.REMOVE_REFS, [good[0], (None,), "x", good[1]],
                      keep_good_items=True)
    assert message.items == good
    assert [type(i) for i in message.items] == [protocol.ITEMS[Msg.REMOVE_REFS]] * 2
    assert message.rejected == [
        "malformed REMOVE_REFS item 1: field object_id should be bytes (18), got NoneType",
        "malformed REMOVE_REFS item 2: is a str of length 1, not a tuple"]
    with pytest.raises(ProtocolError, match=r"item 1: .* \(and 1 more\)"):
        _decode(Msg.REMOVE_REFS, [good[0], (None,), "x", good[1]])


def test_encode_within_splits_a_batch_over_the_limit_in_order():
    items = [(b"%02d" % i * 9,) for i in range(40)]
    limit = len(protocol.encode(Msg.ADD_REFS, items)[0]) // 3
    messages = protocol.encode_within(Msg.ADD_REFS, items, limit)
    assert len(messages) > 1 and all(len(frames[0]) <= limit for frames in messages)
    assert [i for frames in messages for i in protocol.decode(frames).items] == items
    assert protocol.encode_within(Msg.ADD_REFS, items, 0) == [protocol.encode(Msg.ADD_REFS,
                                                                              items)]
    one = [(b"x" * 18,)]                      # a single item goes alone, whatever its size
    assert protocol.encode_within(Msg.ADD_REFS, one, 1) == [protocol.encode(Msg.ADD_REFS, one)]


def test_task_spec_check_knows_every_spec_field():
    assert tuple(name for name, _ in protocol.SPEC_FIELDS) == TaskSpec.__slots__


def test_a_task_spec_pickles_every_field_in_place():
    import pickle
    spec = TaskSpec(*[f"value {i}" for i in range(len(TaskSpec.__slots__))])
    copy = pickle.loads(pickle.dumps(spec, 5))
    for name in TaskSpec.__slots__:
        assert getattr(copy, name) == getattr(spec, name), name
