"""The wire contract: docs/protocol.md documents exactly the messages in
zray.protocol, every message round-trips through encode/decode, and decode
refuses malformed input with ProtocolError.  Unit tests: no processes, no sockets."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from zray import protocol
from zray.exceptions import ProtocolError
from zray.protocol import Msg, SPECS
from zray.task_spec import TaskSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
HEADING = re.compile(r"^### `([A-Za-z0-9_]+)`\s*$")


def doc_sections() -> dict:
    """Map each '### `NAME`' heading to the text up to the next heading of level <= 3."""
    sections, name, lines = {}, None, []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match or re.match(r"^#{1,3} ", line):
            if name is not None:
                sections[name] = "\n".join(lines)
            name, lines = (match.group(1), []) if match else (None, [])
            if match and match.group(1) in sections:
                raise AssertionError(f"message {match.group(1)} is documented twice")
            continue
        if name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = "\n".join(lines)
    return sections


@pytest.mark.timeout(10)
def test_doc_lists_exactly_the_message_types():
    documented = set(doc_sections())
    defined = {m.name for m in Msg}
    assert documented == defined, (
        f"missing from docs/protocol.md: {sorted(defined - documented)}; "
        f"documented but not in zray.protocol.Msg: {sorted(documented - defined)}")


@pytest.mark.timeout(10)
def test_every_message_has_a_spec():
    assert set(SPECS) == set(Msg)


@pytest.mark.timeout(10)
def test_doc_sections_name_every_field():
    """Each field of SPECS[msg].fields appears, in backticks, in the message's section."""
    sections = doc_sections()
    missing = {}
    for msg, spec in SPECS.items():
        text = sections.get(msg.name, "")
        absent = [f for f in spec.fields if f"`{f}`" not in text]
        if absent:
            missing[msg.name] = absent
    assert not missing, f"fields not mentioned in their docs/protocol.md section: {missing}"


def field_table(section: str) -> list:
    """The field names of a section's '| field | type | meaning |' table, in order."""
    names, in_table = [], False
    for line in section.splitlines():
        if line.startswith("| field |"):
            assert not in_table and not names, "a message section has one field table"
            in_table = True
        elif in_table and line.startswith("| `"):
            names.append(re.match(r"^\| `([A-Za-z0-9_]+)` \|", line).group(1))
        elif in_table and not line.startswith("|---"):
            in_table = False
    return names


@pytest.mark.timeout(10)
def test_doc_field_tables_list_exactly_the_spec_fields_in_order():
    """Each message's table of fields is SPECS[msg].fields, which are also the
    names of its typed items (protocol.ITEMS) and have a type (FIELD_TYPES)."""
    sections = doc_sections()
    wrong = {}
    for msg, spec in SPECS.items():
        documented = field_table(sections.get(msg.name, ""))
        if tuple(documented) != spec.fields:
            wrong[msg.name] = (documented, spec.fields)
        assert protocol.ITEMS[msg]._fields == spec.fields
        assert len(protocol.field_types(msg)) == len(spec.fields)
    assert not wrong, f"docs/protocol.md field tables differ from SPECS: {wrong}"


def _sample_spec() -> TaskSpec:
    return TaskSpec(b"t" * 16, b"\x00\x00\x00\x01", "f", b"F" * 16, b"args",
                    dep_ids=(b"d" * 18,), resources={"CPU": 1.0})


_SAMPLES = {
    "role": "driver", "major": protocol.PROTOCOL_MAJOR, "minor": protocol.PROTOCOL_MINOR,
    "pid": 1234, "info": {"node_id": b"n" * 16, "resources": {"CPU": 2.0}},
    "text": "something happened", "node_id": b"n" * 16, "sent_at": 1700000000.5,
    "function_id": b"F" * 16, "blob": b"\x80\x05blob", "spec": None,
    "task_id": b"t" * 16, "attempt": 2, "status": protocol.STATUS_OK,
    "results": [(b"o" * 18, 0, b"data", 4, ())], "reason": "why",
    "returned_task_ids": (b"u" * 16,), "object_id": b"o" * 18, "kind": 2,
    "data": None, "size": 1 << 20, "contained_ids": (b"c" * 18,),
    "node_ids": (b"n" * 16,), "force": True, "job_id": b"\x00\x00\x00\x01",
    "prefix": "(f pid=1)", "stream": "stdout", "request_id": 7, "name": "nodes",
    "args": {"limit": 3}, "ok": True, "value": [{"NodeID": "ab"}],
    "worker_id": b"w" * 8, "exit_code": -9, "actor_id": b"a" * 16,
    "address": "ipc:///tmp/a.sock", "no_restart": True, "state": "ALIVE",
    "run_s": 0.0005, "transfer_endpoint": "tcp://10.0.0.2:40123", "alive": True,
    "error": None, "offset": 8 << 20, "length": 8 << 20,
    "pg_id": b"p" * 16, "bundles": [{"CPU": 1.0}, {"GPU": 1.0}], "pg_strategy": "PACK",
    "lifetime": None, "bundle_index": 1, "resources": {"CPU": 2.0},
    "used_bytes": 3 << 20, "bound_bytes": 200 << 20, "spilled_bytes": 50 << 20,
    "spilled_objects": 1,
}


def _sample_item(msg: Msg) -> tuple:
    fields = SPECS[msg].fields
    unknown = [f for f in fields if f not in _SAMPLES]
    assert not unknown, f"add sample values for {msg.name} fields {unknown}"
    return tuple(_sample_spec() if f == "spec" else _SAMPLES[f] for f in fields)


def _normalise(item: tuple) -> tuple:
    return tuple(pickle.dumps(v, 5) if isinstance(v, TaskSpec) else v for v in item)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("msg", list(Msg), ids=lambda m: m.name)
def test_round_trip(msg):
    items = [_sample_item(msg), _sample_item(msg)]
    frames = protocol.encode(msg, items)
    assert len(frames) == 1
    assert frames[0][:4] == protocol.TAG
    assert frames[0][4] == msg.value
    message = protocol.decode(frames)
    assert message.type is msg
    assert message.buffers == []
    assert len(message.items) == 2
    for got, sent in zip(message.items, items):
        assert len(got) == len(SPECS[msg].fields)
        assert _normalise(got) == _normalise(sent)


@pytest.mark.timeout(10)
def test_round_trip_keeps_buffer_frames():
    buffers = [b"x" * 10, memoryview(b"y" * 3)]
    frames = protocol.encode(Msg.PUT_OBJECTS, [_sample_item(Msg.PUT_OBJECTS)], buffers)
    message = protocol.decode(frames)
    assert [bytes(b) for b in message.buffers] == [b"x" * 10, b"yyy"]


@pytest.mark.timeout(10)
def test_empty_batch_round_trips():
    assert protocol.decode(protocol.encode(Msg.HEARTBEAT, [])).items == []


def _envelope(tag=protocol.TAG, kind=Msg.HEARTBEAT.value, header=None) -> list:
    if header is None:
        header = pickle.dumps([(1.0,)], 5)
    return [tag + bytes([kind]) + header]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("frames", [[], [b""], [b"ZR\x01"], [b"ZR\x01\x00\x05"]])
def test_decode_refuses_truncated_message(frames):
    with pytest.raises(ProtocolError, match="empty|truncated"):
        protocol.decode(frames)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tag", [b"XX\x01\x00", b"RZ\x01\x00", b"\x00\x00\x00\x00"])
def test_decode_refuses_bad_tag(tag):
    with pytest.raises(ProtocolError, match="tag"):
        protocol.decode(_envelope(tag=tag))


@pytest.mark.timeout(10)
def test_decode_refuses_other_major_naming_both_versions():
    other = protocol.PROTOCOL_MAJOR + 1
    with pytest.raises(ProtocolError) as info:
        protocol.decode(_envelope(tag=b"ZR" + bytes([other, 3])))
    text = str(info.value)
    assert "version" in text
    assert f"{other}.3" in text
    assert f"{protocol.PROTOCOL_MAJOR}.{protocol.PROTOCOL_MINOR}" in text


@pytest.mark.timeout(10)
def test_decode_accepts_other_minor():
    frames = _envelope(tag=b"ZR" + bytes([protocol.PROTOCOL_MAJOR,
                                          protocol.PROTOCOL_MINOR + 5]))
    assert protocol.decode(frames).items == [(1.0,)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", [0, 255, max(Msg) + 1])
def test_decode_refuses_unknown_type(kind):
    with pytest.raises(ProtocolError, match="unknown message type"):
        protocol.decode(_envelope(kind=kind))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("header", [b"\x00", b"not a pickle", b"\x80\x05\x95garbage",
                                    pickle.dumps([1, 2, 3], 5)[:-3]])
def test_decode_refuses_garbage_header(header):
    with pytest.raises(ProtocolError, match="header"):
        protocol.decode(_envelope(header=header))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", [(1.0,), {"a": 1}, None, "text", 3])
def test_decode_refuses_header_that_is_not_a_list(value):
    with pytest.raises(ProtocolError, match="not a list"):
        protocol.decode(_envelope(header=pickle.dumps(value, 5)))


@pytest.mark.timeout(10)
def test_decode_accepts_zmq_frame_like_objects():
    frames = [memoryview(f) for f in _envelope()]
    assert protocol.decode(frames).type is Msg.HEARTBEAT
