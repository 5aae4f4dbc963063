"""The wire contract: every message zray sends, in one place.

A message is a ZeroMQ multipart::

    [identity]      added/removed by ROUTER sockets, never by this module
    [envelope]      b"ZR" + major + minor protocol version (4 bytes), then one
                    byte of message type, then the header: pickle (protocol 5)
                    of a list of items, one tuple each
    [buffers...]    optional raw frames (bulk data), sent with copy=False

Tag, type and header share one frame because pyzmq pays per frame: on the
2-core reference machine a 3-frame send costs 10.7 us and a 1-frame send 1.4 us.

Every message carries a *list* of items, so one message can batch many task
specs, completions or reference changes; a loop drains what is waiting and
sends one message per (destination, type).  ``encode`` and ``decode`` are the
only ways onto and off the wire; ``docs/protocol.md`` documents every type and a
test checks the two agree.

Headers are pickled: only peers that passed the CURVE handshake (or local,
owner-only ipc sockets) ever reach ``decode``.
"""

from __future__ import annotations

import collections
import enum
import pickle
from dataclasses import dataclass, field

from zray.exceptions import ProtocolError
from zray.fieldtypes import (
    ANY, BOOL, BYTES, COUNT, DICT, INT, NAMESPACE, NUMBER, STR, FieldType, bytes_of,
    compile_check, compile_lazily, function_type, keys, kind_of, optional, record,
    resources_ok, sequence_of)

PROTOCOL_MAJOR = 2
PROTOCOL_MINOR = 3
#: The first minor whose nodes take RESERVE_BUNDLES (placement groups): bundles
#: are reserved only on nodes that registered with at least this minor.
BUNDLES_MINOR = 1
TAG = b"ZR" + bytes([PROTOCOL_MAJOR, PROTOCOL_MINOR])


class Msg(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    PROTOCOL_ERROR = 3
    REGISTER_NODE = 4
    HEARTBEAT = 5
    REGISTER_FUNCTIONS = 6
    SUBMIT_TASKS = 7
    EXECUTE_TASKS = 8
    TASKS_FINISHED = 9
    TASKS_FAILED = 10
    WORKER_BLOCKED = 11
    WORKER_UNBLOCKED = 12
    PUT_OBJECTS = 13
    ADD_REFS = 14
    REMOVE_REFS = 15
    SUBSCRIBE_OBJECTS = 16
    OBJECTS_READY = 17
    CANCEL_TASKS = 18
    FREE_OBJECTS = 19
    LOG_LINES = 20
    WARNING = 21
    QUERY = 22
    QUERY_REPLY = 23
    WORKER_DIED = 24
    SHUTDOWN = 25
    TASKS_DONE = 26
    CREATE_ACTOR = 27
    ACTOR_READY = 28
    ACTOR_DIED = 29
    SUBSCRIBE_ACTOR = 30
    ACTOR_INFO = 31
    KILL_ACTOR = 32
    ACTOR_CALLS = 33
    ACTOR_TASKS_FINISHED = 34
    ACTOR_RESULTS = 35
    LEASE_OFFER = 36
    LEASE_RETURN = 37
    NODE_TABLE = 38
    PULL_OBJECT = 39
    OBJECT_PULLED = 40
    CHUNK_REQUEST = 41
    CHUNK = 42
    OBJECT_COPIED = 43
    LEASE_GRANT = 44
    SUBMIT_LEASED = 45
    LEASE_RECALL = 46
    REPORT_NOW = 47
    ITEMS_YIELDED = 48
    CREATE_PLACEMENT_GROUP = 49
    REMOVE_PLACEMENT_GROUP = 50
    RESERVE_BUNDLES = 51
    RELEASE_BUNDLES = 52
    WORKER_KILLED = 53
    RESERVE_SPACE = 54
    SPACE_RESERVED = 55
    OBJECT_WRITTEN = 56
    STORE_STATS = 57
    PLACE_TASKS = 58
    SUBMIT_LOCAL = 59
    TASKS_SPILLED = 60


@dataclass(frozen=True)
class MessageSpec:
    direction: str
    fields: tuple
    doc: str


SPECS: dict[Msg, MessageSpec] = {
    Msg.HELLO: MessageSpec(
        "driver→head, worker→head, worker→node", ("role", "major", "minor", "pid", "info"),
        "First message of a driver or worker: who it is, its protocol version, its node."),
    Msg.WELCOME: MessageSpec(
        "head→driver, head→node", ("info",),
        "Accepts a HELLO or REGISTER_NODE: job id, session, node list."),
    Msg.PROTOCOL_ERROR: MessageSpec(
        "any→peer", ("text",),
        "The peer's message was refused (e.g. incompatible protocol version)."),
    Msg.REGISTER_NODE: MessageSpec(
        "node→head", ("node_id", "major", "minor", "info"),
        "A node manager joins: host, resources, pid, store."),
    Msg.HEARTBEAT: MessageSpec(
        "driver→head, node→head, head→driver/node", ("sent_at",),
        "Liveness; a peer that misses enough of them is declared dead. The head answers "
        "each one, so drivers and nodes notice its death (Config.head_timeout_s)."),
    Msg.REGISTER_FUNCTIONS: MessageSpec(
        "driver/worker→head, head→node", ("function_id", "blob"),
        "A pickled function, sent once per peer and then named by id."),
    Msg.SUBMIT_TASKS: MessageSpec(
        "driver/worker→head", ("spec",),
        "New tasks (zray.task_spec.TaskSpec); their return ids were made by the caller."),
    Msg.EXECUTE_TASKS: MessageSpec(
        "head→node, node→worker, head→leased worker, driver→granted worker", ("spec",),
        "Run these tasks; dependency values are resolved into the spec."),
    Msg.TASKS_FINISHED: MessageSpec(
        "worker→head", ("task_id", "attempt", "status", "results", "run_s"),
        "A task ran for run_s seconds; results are (object_id, kind, data, size, "
        "contained_ids)."),
    Msg.ITEMS_YIELDED: MessageSpec(
        "worker→head, actor worker→head", ("task_id", "attempt", "object_id", "kind",
                                            "data", "size", "contained_ids"),
        "A generator task yielded a value: item object_id (task_id + item index + 2), "
        "stored as a task result is; sent as each value is yielded, before the task's "
        "TASKS_FINISHED or ACTOR_TASKS_FINISHED."),
    Msg.TASKS_FAILED: MessageSpec(
        "node→head", ("task_id", "attempt", "reason", "text"),
        "A task could not finish on this node (worker died, cancelled before start)."),
    Msg.WORKER_BLOCKED: MessageSpec(
        "worker→node→head", ("task_id", "returned_task_ids"),
        "The task waits in get/wait: its CPUs are lent back until it resumes, and the "
        "worker hands back the prefetched tasks it has not started."),
    Msg.WORKER_UNBLOCKED: MessageSpec(
        "worker→node→head", ("task_id",),
        "The task resumed after get/wait and holds its CPUs again."),
    Msg.PUT_OBJECTS: MessageSpec(
        "driver/worker→head", ("object_id", "kind", "data", "size", "node_id",
                               "contained_ids"),
        "Objects made by put: inline data, or a shared-memory segment on node_id."),
    Msg.ADD_REFS: MessageSpec(
        "driver/worker→head", ("object_id",),
        "This process now holds a reference to the object."),
    Msg.REMOVE_REFS: MessageSpec(
        "driver/worker→head", ("object_id",),
        "This process dropped its last reference to the object."),
    Msg.SUBSCRIBE_OBJECTS: MessageSpec(
        "driver/worker→head", ("object_id",),
        "Send OBJECTS_READY for these objects once they exist."),
    Msg.OBJECTS_READY: MessageSpec(
        "head→driver/worker, worker→driver", ("object_id", "kind", "data", "size",
                                               "node_ids"),
        "An object exists: inline value or error, or where its segment lives (a worker "
        "also sends a task's inline results straight to a driver that serves them)."),
    Msg.CANCEL_TASKS: MessageSpec(
        "driver/worker→head, head→node, node→worker, head→worker, "
        "head/caller→actor worker", ("task_id", "force"),
        "Cancel tasks; force kills a running worker."),
    Msg.FREE_OBJECTS: MessageSpec(
        "head→node", ("object_id",),
        "No reference remains: delete the object's segment from the store."),
    Msg.LOG_LINES: MessageSpec(
        "worker→head→driver", ("job_id", "prefix", "stream", "text"),
        "Output a worker printed, routed to its job's driver."),
    Msg.WARNING: MessageSpec(
        "head→driver/worker", ("text",),
        "Something the user should know (e.g. an infeasible resource request)."),
    Msg.QUERY: MessageSpec(
        "driver/worker→head", ("request_id", "name", "args"),
        "A read of cluster state (nodes, resources, tasks), answered by QUERY_REPLY."),
    Msg.QUERY_REPLY: MessageSpec(
        "head→driver/worker", ("request_id", "ok", "value"),
        "The answer to a QUERY, or the error text when ok is False."),
    Msg.WORKER_DIED: MessageSpec(
        "node→head", ("worker_id", "pid", "exit_code", "task_id", "attempt"),
        "A worker process exited; its running task (if any) failed."),
    Msg.WORKER_KILLED: MessageSpec(
        "node→head", ("worker_id", "reason", "text"),
        "The node is killing this worker on purpose (reason REASON_OOM: the host ran "
        "low on memory); its WORKER_DIED follows, and its task or actor fails with text."),
    Msg.TASKS_DONE: MessageSpec(
        "worker→node", ("task_id",),
        "The worker finished this task (its results went to the head): free its resources."),
    Msg.CREATE_ACTOR: MessageSpec(
        "driver/worker→head", ("spec", "request_id"),
        "Create an actor (spec.method is '__init__'); a non-zero request_id asks for a "
        "QUERY_REPLY carrying the actor id, or the error (e.g. a taken name)."),
    Msg.ACTOR_READY: MessageSpec(
        "worker→head", ("actor_id", "address", "pid"),
        "The actor's constructor finished; callers reach it at address."),
    Msg.ACTOR_DIED: MessageSpec(
        "worker→head", ("actor_id", "text", "no_restart"),
        "The actor is ending by itself (constructor raised, exit_actor)."),
    Msg.SUBSCRIBE_ACTOR: MessageSpec(
        "driver/worker→head", ("actor_id",),
        "Send ACTOR_INFO now and whenever the actor's state or address changes."),
    Msg.ACTOR_INFO: MessageSpec(
        "head→driver/worker", ("actor_id", "state", "address", "text"),
        "Where an actor lives and its state (ALIVE, RESTARTING, DEAD with the cause)."),
    Msg.KILL_ACTOR: MessageSpec(
        "driver/worker→head", ("actor_id", "no_restart"),
        "Kill the actor's process; restart it only if no_restart is False."),
    Msg.ACTOR_CALLS: MessageSpec(
        "driver/worker→actor worker", ("spec",),
        "Method calls, sent straight to the actor; results come back as ACTOR_RESULTS."),
    Msg.ACTOR_TASKS_FINISHED: MessageSpec(
        "actor worker→head, caller→head", ("task_id", "attempt", "status", "results"),
        "Method calls that ran: from the actor when results hold refs or live in "
        "shared memory, from a caller forwarding a result whose refs escaped."),
    Msg.ACTOR_RESULTS: MessageSpec(
        "actor worker→caller", ("task_id", "node_id", "results", "status"),
        "A method call finished: its results (as in TASKS_FINISHED), straight to the caller."),
    Msg.LEASE_OFFER: MessageSpec(
        "node→head", ("worker_id",),
        "An idle worker the head may send 1-CPU tasks to directly (one CPU reserved)."),
    Msg.LEASE_RETURN: MessageSpec(
        "head→node, driver→head", ("worker_id",),
        "The head gives a leased worker back to its node (unused for a while); a driver "
        "gives a granted one back to the head (idle, recalled, or a burst began)."),
    Msg.LEASE_GRANT: MessageSpec(
        "head→driver", ("worker_id", "task_id"),
        "The driver may send its plain 1-CPU tasks straight to this leased worker, one "
        "at a time, registering each with SUBMIT_LEASED."),
    Msg.SUBMIT_LEASED: MessageSpec(
        "driver→head", ("spec", "worker_id"),
        "A task the driver sent straight to the worker it was granted: the head records "
        "it as running there (or queues it, if that lease is gone)."),
    Msg.PLACE_TASKS: MessageSpec(
        "worker→node", ("spec",),
        "Plain tasks this worker submitted (zray.resources.local_placeable): the node "
        "runs each that fits its free resources now, and spills the others back "
        "(TASKS_SPILLED); the worker registers every one with SUBMIT_LOCAL."),
    Msg.SUBMIT_LOCAL: MessageSpec(
        "worker→head", ("spec",),
        "A task this worker sent to its own node (PLACE_TASKS): the head records it as "
        "SUBMIT_TASKS would and as running on that node (ASSIGNED), unless the node "
        "spilled it, in which case it is queued like any task. Bookkeeping."),
    Msg.TASKS_SPILLED: MessageSpec(
        "node→head, node→worker", ("task_id", "attempt"),
        "Tasks a worker of this node placed here (PLACE_TASKS) that did not fit: the "
        "head places them (their SUBMIT_LOCAL carries the spec); the worker that "
        "offered them (told of the last one) offers none for a while."),
    Msg.REPORT_NOW: MessageSpec(
        "driver→granted worker", ("task_id",),
        "Send these granted tasks' TASKS_FINISHED to the head at once, not with the "
        "next batch: something now waits on them there."),
    Msg.LEASE_RECALL: MessageSpec(
        "head→driver", ("worker_id",),
        "Stop sending tasks to this granted worker and return it (LEASE_RETURN)."),
    Msg.NODE_TABLE: MessageSpec(
        "head→node", ("node_id", "transfer_endpoint", "alive"),
        "Where every node serves object chunks; sent in full whenever membership changes."),
    Msg.PULL_OBJECT: MessageSpec(
        "driver/worker→node", ("object_id", "size", "node_ids"),
        "Bring a copy of a shared-memory object that lives on other nodes into this "
        "node's store; answered with OBJECT_PULLED."),
    Msg.OBJECT_PULLED: MessageSpec(
        "node→driver/worker", ("object_id", "error"),
        "The pull finished: the segment is in this node's store (error None), or why not."),
    Msg.CHUNK_REQUEST: MessageSpec(
        "node→node", ("object_id", "offset", "length"),
        "Ask a peer for one chunk of a segment (each request is one credit of the window)."),
    Msg.CHUNK: MessageSpec(
        "node→node", ("object_id", "offset", "size", "error"),
        "One chunk of a segment, as a raw buffer frame after the header; size is the whole "
        "segment's; error is set (and no frame sent) when the peer cannot serve it."),
    Msg.OBJECT_COPIED: MessageSpec(
        "node→head", ("object_id", "size"),
        "This node now holds a copy of the object (a pull finished): a new location."),
    Msg.CREATE_PLACEMENT_GROUP: MessageSpec(
        "driver/worker→head", ("pg_id", "bundles", "pg_strategy", "name", "lifetime",
                               "request_id"),
        "Reserve these bundles together (all or nothing) by the strategy; answered by "
        "QUERY_REPLY at once (the group is PENDING until every bundle has a node), or "
        "the error (a taken name, bad bundles)."),
    Msg.REMOVE_PLACEMENT_GROUP: MessageSpec(
        "driver/worker→head", ("pg_id", "request_id"),
        "Free the group's bundles, kill its actors and cancel its tasks; answered by "
        "QUERY_REPLY."),
    Msg.RESERVE_BUNDLES: MessageSpec(
        "head→node", ("pg_id", "bundle_index", "resources"),
        "Set these resources aside as bundle bundle_index of the group: the node takes "
        "them from what it has free and adds the bundle's own resources "
        "(CPU_group_<i>_<pg>, ...), which the group's tasks ask for."),
    Msg.RELEASE_BUNDLES: MessageSpec(
        "head→node", ("pg_id", "bundle_index"),
        "The bundle is gone (its group removed): give its resources back."),
    Msg.RESERVE_SPACE: MessageSpec(
        "driver/worker→node", ("object_id", "size"),
        "Ask for room in the node's store for a segment of size bytes before writing it "
        "(the node spills to make room, or waits up to object_store_full_timeout_s); "
        "answered with SPACE_RESERVED."),
    Msg.SPACE_RESERVED: MessageSpec(
        "node→driver/worker", ("object_id", "size", "error"),
        "Write the segment now (error None; size: the bytes granted, which may include "
        "credit for the writer's next objects), or why the store cannot take it (the "
        "text of an ObjectStoreFullError)."),
    Msg.OBJECT_WRITTEN: MessageSpec(
        "driver/worker→node", ("object_id", "size"),
        "The segment reserved for object_id is complete (size 0: the write failed and "
        "the room is given back); from now on the node may spill it."),
    Msg.STORE_STATS: MessageSpec(
        "node→head", ("used_bytes", "bound_bytes", "spilled_bytes", "spilled_objects"),
        "The node's object store, sent with each heartbeat: bytes in memory (objects, "
        "reservations, spare segments), its bound, and what is spilled to disk now."),
    Msg.SHUTDOWN: MessageSpec(
        "driver→head, head→node, node→worker, node→head", ("reason",),
        "Stop: the receiver exits cleanly, stopping what it started (from a node: it "
        "is stopping, and the head marks it dead at once)."),
}


# --- What each field holds: the types decode checks ------------------------------
#
# A malformed item from a peer (an id that is not bytes, a count that is not an
# int, a tuple of the wrong length) must be refused here, at the edge, and never
# reach a state machine, where it could sit in a table until a periodic sweep
# trips over it.  Each field name in SPECS has a FieldType (zray.fieldtypes);
# the same name means the same thing in every message; FIELD_OVERRIDES lists
# the few exceptions.  decode runs on every item on the hot path, so the checks
# are compiled once per message type into one function with every test
# inlined (_compile_checker): a loop over the items with no call per field.

TASK_ID = bytes_of(16)
OBJECT_ID = bytes_of(18)
NODE_ID = bytes_of(16)
ACTOR_ID = bytes_of(16)
WORKER_ID = bytes_of(8)
FUNCTION_ID = bytes_of(16)
JOB_ID = optional(bytes_of(4))
RESOURCES = function_type("a dict of str -> number in [0, 1e18]", resources_ok)
# Most tasks ask for one CPU and most actor calls for nothing: no call for those.
NAMESPACE["_ONE_CPU"] = {"CPU": 1.0}
RESOURCES.check = (f"((type({{v}}) is dict and (not {{v}} or {{v}} == _ONE_CPU)) "
                   f"or {RESOURCES.check})")
OBJECT_IDS = sequence_of(OBJECT_ID)
NODE_IDS = sequence_of(NODE_ID)
# -1 and -2: a streaming or dynamic generator (zray.task_spec.STREAMING, DYNAMIC)
RETURNS = FieldType("int in [-2, 65534]",
                    "((type({v}) is int or is_int({v})) and -2 <= {v} <= 65534)")
RESULT = record("a result (object_id, kind, data, size, contained_ids)", (
    ("object_id", OBJECT_ID), ("kind", INT), ("data", optional(BYTES)), ("size", COUNT),
    ("contained_ids", OBJECT_IDS)))
ENTRY = record("an object entry (kind, data, size, node_ids)", (
    ("kind", INT), ("data", optional(BYTES)), ("size", COUNT), ("node_ids", NODE_IDS)))
AFFINITY = record('("node_affinity", node_id, soft)', (
    ("name", STR), ("node_id", NODE_ID), ("soft", BOOL)))
IN_GROUP = record('("placement_group", pg_id, bundle_index, capture_child_tasks)', (
    ("name", STR), ("pg_id", bytes_of(16)), ("bundle_index", INT), ("capture", BOOL)))
STRATEGY = FieldType(f"None, a str, {AFFINITY.describe} or {IN_GROUP.describe}",
                     f"({{v}} is None or type({{v}}) is str or {AFFINITY.check} "
                     f"or {IN_GROUP.check})",
                     lambda v: IN_GROUP.explain(v) if type(v) is tuple and len(v) == 4
                     else AFFINITY.explain(v))
ACTOR_OPTIONS = keys("a dict of actor options", {
    "held": RESOURCES, "max_restarts": INT, "max_task_retries": INT,
    "max_concurrency": optional(INT), "max_pending_calls": INT, "name": optional(STR),
    "namespace": optional(STR), "lifetime": optional(STR), "class_name": STR,
    "methods": DICT})

# TaskSpec's fields (zray.task_spec), checked as one compiled function.
SPEC_FIELDS = (
    ("task_id", TASK_ID), ("job_id", JOB_ID), ("name", STR), ("function_id", BYTES),
    ("args_blob", BYTES), ("dep_ids", FieldType(
        "a tuple of bytes (18)", f"(type({{v}}) is tuple and {OBJECT_IDS.check})")),
    ("nested_ids", OBJECT_IDS), ("num_returns", RETURNS), ("resources", RESOURCES),
    ("max_retries", INT), ("retry_exceptions", FieldType(
        "bool or bytes", "(type({v}) is bool or type({v}) is bytes)")),
    ("runtime_env", optional(DICT)), ("max_calls", COUNT), ("strategy", STRATEGY),
    ("timeout_s", optional(NUMBER)), ("attempt", COUNT),
    ("dep_values", optional(sequence_of(ENTRY))), ("function_blob", optional(BYTES)),
    ("gpu_ids", sequence_of(INT)), ("actor_id", optional(ACTOR_ID)),
    ("method", optional(STR)), ("actor_options", optional(ACTOR_OPTIONS)),
    ("seq", INT), ("owner_address", optional(STR)),
)


def _spec_checker():
    from zray.task_spec import TaskSpec, _FIELDS
    assert tuple(name for name, _ in SPEC_FIELDS) == _FIELDS, "SPEC_FIELDS is stale"
    NAMESPACE["_TaskSpec"] = TaskSpec
    body = [f"    f{i} = v.{name}" for i, (name, _) in enumerate(SPEC_FIELDS)]
    checks = " and ".join(t.check.format(v=f"f{i}") for i, (_, t) in enumerate(SPEC_FIELDS))
    function = compile_lazily("def _spec_ok(v):\n    if type(v) is not _TaskSpec:\n"
                              "        return False\n" + "\n".join(body) +
                              f"\n    return {checks}\n", "_spec_ok")

    def explain(value):
        if type(value) is not TaskSpec:
            return None
        for name, field_type in SPEC_FIELDS:
            why = field_type.why(getattr(value, name))
            if why:
                return f"its {name} {why}"
        return None
    return function_type("a zray.task_spec.TaskSpec", function, explain)


SPEC = _spec_checker()

#: The type of each item field, by name (a name means the same in every message).
FIELD_TYPES: dict[str, FieldType] = {
    "role": STR, "major": INT, "minor": INT, "pid": INT, "info": DICT, "text": STR,
    "node_id": NODE_ID, "sent_at": NUMBER, "function_id": FUNCTION_ID, "blob": BYTES,
    "spec": SPEC, "task_id": TASK_ID, "attempt": COUNT, "status": INT,
    "results": sequence_of(RESULT), "run_s": NUMBER, "reason": STR,
    "returned_task_ids": sequence_of(TASK_ID), "object_id": OBJECT_ID, "kind": INT,
    "data": optional(BYTES), "size": COUNT, "contained_ids": OBJECT_IDS,
    "node_ids": NODE_IDS, "force": BOOL, "job_id": JOB_ID, "prefix": STR, "stream": STR,
    "request_id": INT, "name": STR, "args": ANY, "ok": BOOL, "value": ANY,
    "worker_id": WORKER_ID, "exit_code": INT, "actor_id": ACTOR_ID, "address": STR,
    "no_restart": BOOL, "state": STR, "transfer_endpoint": STR, "alive": BOOL,
    "error": optional(STR), "offset": COUNT, "length": COUNT,
    "pg_id": bytes_of(16), "bundles": sequence_of(RESOURCES), "pg_strategy": STR,
    "lifetime": optional(STR), "bundle_index": INT, "resources": RESOURCES,
    "used_bytes": COUNT, "bound_bytes": COUNT, "spilled_bytes": COUNT,
    "spilled_objects": COUNT,
}

#: Where a field differs from FIELD_TYPES in one message.
FIELD_OVERRIDES: dict[tuple, FieldType] = {
    (Msg.PUT_OBJECTS, "node_id"): optional(NODE_ID),
    (Msg.WORKER_DIED, "task_id"): optional(TASK_ID),
    (Msg.ACTOR_INFO, "address"): optional(STR),
    (Msg.ACTOR_INFO, "text"): optional(STR),
    (Msg.HELLO, "info"): keys("a dict (node_id, wait_for_nodes, namespace)", {
        "node_id": optional(NODE_ID), "wait_for_nodes": INT, "namespace": optional(STR)}),
    (Msg.REGISTER_NODE, "info"): keys("a dict (host, resources, endpoints...)", {
        "resources": RESOURCES, "host": STR, "hostname": STR, "pid": INT, "store": STR,
        "worker_endpoint": STR, "transfer_endpoint": STR}),
    (Msg.WELCOME, "info"): keys("a dict (job_id, session_name, nodes...)", {
        "job_id": JOB_ID, "session_name": STR, "heartbeat_interval_s": NUMBER,
        "nodes": sequence_of(DICT)}),
}


def field_types(msg_type: Msg) -> tuple:
    """The FieldType of each field of ``msg_type``'s items, in order."""
    return tuple(FIELD_OVERRIDES.get((msg_type, name)) or FIELD_TYPES[name]
                 for name in SPECS[msg_type].fields)


# --- Typed items -------------------------------------------------------------------

def _as_plain_tuple(self):
    """Items pickle as plain tuples: the wire carries no class names."""
    return (tuple, (tuple(self),))


def _item_class(msg_type: Msg) -> type:
    """A NamedTuple named after the message (TASKS_FINISHED -> TasksFinishedItem),
    with SPECS' field names: ``item.task_id`` as well as ``task_id, ... = item``."""
    name = "".join(part.capitalize() for part in msg_type.name.split("_")) + "Item"
    base = collections.namedtuple(name, SPECS[msg_type].fields)
    return type(name, (base,), {"__slots__": (), "__module__": __name__,
                                "__doc__": f"One {msg_type.name} item: "
                                           f"{SPECS[msg_type].doc}",
                                "__reduce__": _as_plain_tuple})


class _Lazy(dict):
    """A table filled on first lookup: each process builds only the item classes
    and checkers of the message types it meets (building all of them at import
    cost every process ~20 ms of start-up)."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, msg_type):
        value = self[msg_type] = self._build(msg_type)
        return value


#: The item class of each message type.
ITEMS: dict[Msg, type] = _Lazy(_item_class)


def _compile_checker(msg_type: Msg):
    """items -> list of typed items, or None if any item is malformed."""
    types = field_types(msg_type)
    names = [f"f{i}" for i in range(len(types))]
    checks = " and ".join(t.check.format(v=n) for n, t in zip(names, types))
    function_name = f"_check_{msg_type.name}"
    NAMESPACE[f"_cls_{msg_type.name}"] = ITEMS[msg_type]
    return compile_check(
        f"def {function_name}(items, new=tuple.__new__, cls=_cls_{msg_type.name}):\n"
        f"    out = []\n"
        f"    append = out.append\n"
        f"    for item in items:\n"
        f"        if type(item) is not tuple or len(item) != {len(types)}:\n"
        f"            return None\n"
        f"        {', '.join(names)}, = item\n"
        f"        if not ({checks}):\n"
        f"            return None\n"
        f"        append(new(cls, item))\n"
        f"    return out\n", function_name)


_CHECKERS = _Lazy(_compile_checker)


def why_malformed(msg_type: Msg, item) -> str | None:
    """None if ``item`` is a well-formed ``msg_type`` item, else what is wrong."""
    fields = SPECS[msg_type].fields
    if type(item) is not tuple:
        return f"is a {kind_of(item)}, not a tuple"
    if len(item) != len(fields):
        return f"has {len(item)} fields, expected {len(fields)} ({', '.join(fields)})"
    for name, field_type, value in zip(fields, field_types(msg_type), item):
        why = field_type.why(value)
        if why:
            return f"field {name} {why}"
    return None


def _sort_items(msg_type: Msg, items: list) -> tuple:
    """(typed well-formed items, one text per malformed item)."""
    cls, good, rejected = ITEMS[msg_type], [], []
    for i, item in enumerate(items):
        why = why_malformed(msg_type, item)
        if why is None:
            good.append(tuple.__new__(cls, item))
        else:
            rejected.append(f"malformed {msg_type.name} item {i}: {why}")
    return good, rejected


# --- Encoding and decoding ---------------------------------------------------------

@dataclass
class Message:
    type: Msg
    items: list
    buffers: list
    #: why each malformed item was left out (decode with keep_good_items=True)
    rejected: list = field(default_factory=list)


_PREFIXES = {t: TAG + bytes((t,)) for t in Msg}
_TYPES = {t.value: t for t in Msg}
ENVELOPE_PREFIX_BYTES = 5


def encode(msg_type: Msg, items: list, buffers=()) -> list:
    """Frames for one message (without the ROUTER identity)."""
    frames = [_PREFIXES[msg_type] + pickle.dumps(items, 5)]
    if buffers:
        frames.extend(buffers)
    return frames


def encode_within(msg_type: Msg, items: list, max_bytes: int) -> list:
    """Frames of one or more messages carrying ``items`` in order, each envelope
    at most ``max_bytes`` where it can be (a receiver drops a larger frame, and
    the connection with it); a single item over the limit still goes alone."""
    frames = encode(msg_type, items)
    if max_bytes <= 0 or len(frames[0]) <= max_bytes or len(items) < 2:
        return [frames]
    half = len(items) // 2
    return (encode_within(msg_type, items[:half], max_bytes)
            + encode_within(msg_type, items[half:], max_bytes))


def decode(frames: list, keep_good_items: bool = False) -> Message:
    """Parse frames (without identity) into a Message of typed items.

    Raises ProtocolError on a bad envelope or header, and on a malformed item
    (naming the message type, the item and the field).  With
    ``keep_good_items`` a malformed item is left out instead, and why is in
    ``Message.rejected``: the well-formed items of the batch still count.
    """
    if not frames:
        raise ProtocolError("empty message: no frames")
    envelope = frames[0]
    if not isinstance(envelope, bytes):
        envelope = bytes(envelope)
    if len(envelope) <= ENVELOPE_PREFIX_BYTES:
        raise ProtocolError(f"truncated message: envelope of {len(envelope)} bytes")
    if envelope[:4] != TAG:          # (the same version: no call)
        check_tag(envelope[:4])
    msg_type = _TYPES.get(envelope[4])
    if msg_type is None:
        raise ProtocolError(f"unknown message type {envelope[4]}")
    try:
        items = pickle.loads(memoryview(envelope)[ENVELOPE_PREFIX_BYTES:])
    except Exception as exc:  # garbage from a peer must never escape
        raise ProtocolError(f"undecodable {msg_type.name} header: {exc!r}") from None
    if type(items) is not list:
        raise ProtocolError(f"{msg_type.name} header is not a list")
    typed = _CHECKERS[msg_type](items)
    if typed is not None:
        return Message(msg_type, typed, list(frames[1:]))
    typed, rejected = _sort_items(msg_type, items)
    if not keep_good_items:
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        raise ProtocolError(rejected[0] + more)
    return Message(msg_type, typed, list(frames[1:]), rejected)


def check_tag(tag: bytes) -> None:
    if len(tag) != 4 or tag[:2] != b"ZR":
        raise ProtocolError("not a zray message (bad protocol tag)")
    if tag[2] != PROTOCOL_MAJOR:
        raise ProtocolError(
            f"protocol version mismatch: peer speaks {tag[2]}.{tag[3]}, "
            f"this process speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; "
            "run the same zray major version on every host")



# SHUTDOWN's reason from the head to a node it had declared dead: start over as a
# new node (new id, empty store, fresh workers).
REJOIN = "rejoin"

# Values of TASKS_FINISHED's ``status``.
STATUS_OK = 0
STATUS_ERROR = 1             # the task raised; results hold the error
STATUS_RETRIABLE_ERROR = 2   # the task raised and retry_exceptions allows a retry
STATUS_CANCELLED = 3         # the task was interrupted by zray.cancel

# Values of TASKS_FAILED's ``reason``.
REASON_CANCELLED = "cancelled"
REASON_TIMEOUT = "timeout"        # ran past its timeout_s; the node kills the worker
# Values of WORKER_KILLED's ``reason``.
REASON_OOM = "oom"                # the memory monitor killed it (zray.node.memory_monitor)
