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

import enum
import pickle
from dataclasses import dataclass

from zray.exceptions import ProtocolError

PROTOCOL_MAJOR = 2
PROTOCOL_MINOR = 0
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
        "driver→head, node→head", ("sent_at",),
        "Liveness; a peer that misses enough of them is declared dead."),
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
    Msg.SHUTDOWN: MessageSpec(
        "driver→head, head→node, node→worker, node→head", ("reason",),
        "Stop: the receiver exits cleanly, stopping what it started (from a node: it "
        "is stopping, and the head marks it dead at once)."),
}


@dataclass
class Message:
    type: Msg
    items: list
    buffers: list


_PREFIXES = {t: TAG + bytes((t,)) for t in Msg}
_TYPES = {t.value: t for t in Msg}
ENVELOPE_PREFIX_BYTES = 5


def encode(msg_type: Msg, items: list, buffers=()) -> list:
    """Frames for one message (without the ROUTER identity)."""
    frames = [_PREFIXES[msg_type] + pickle.dumps(items, 5)]
    if buffers:
        frames.extend(buffers)
    return frames


def decode(frames: list) -> Message:
    """Parse frames (without identity); raise ProtocolError on anything wrong."""
    if not frames:
        raise ProtocolError("empty message: no frames")
    envelope = frames[0]
    if not isinstance(envelope, bytes):
        envelope = bytes(envelope)
    if len(envelope) <= ENVELOPE_PREFIX_BYTES:
        raise ProtocolError(f"truncated message: envelope of {len(envelope)} bytes")
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
    return Message(msg_type, items, list(frames[1:]))


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
