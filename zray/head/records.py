"""The head's records and the states they move through.

Every record kind with a lifecycle (task, object, node, actor, lease) has a
``str`` enum and an allowed-transitions table; ``move`` is the only way to
change its state, and an illegal move raises ``IllegalTransition``.  The other
head modules import from here and this module imports none of them.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from zray.serialization import KIND_INLINE


class IllegalTransition(RuntimeError):
    pass


def _check(table, what, old, new):
    if new not in table[old]:
        raise IllegalTransition(f"{what}: {old.value} -> {new.value}")


# --- tasks -----------------------------------------------------------------------------

class TaskState(str, enum.Enum):
    WAITING = "WAITING_FOR_DEPENDENCIES"
    PENDING = "PENDING_NODE_ASSIGNMENT"
    ASSIGNED = "ASSIGNED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TASK_TRANSITIONS = {
    TaskState.WAITING: {TaskState.PENDING, TaskState.FAILED, TaskState.CANCELLED,
                        TaskState.ASSIGNED},   # an actor call: its caller sent it itself
    TaskState.PENDING: {TaskState.ASSIGNED, TaskState.FAILED, TaskState.CANCELLED,
                        TaskState.WAITING},    # an argument was lost: wait for its rebuild
    TaskState.ASSIGNED: {TaskState.FINISHED, TaskState.FAILED, TaskState.PENDING,
                         TaskState.CANCELLED},
    TaskState.FINISHED: {TaskState.PENDING, TaskState.WAITING},   # lineage re-execution
    TaskState.FAILED: set(),
    TaskState.CANCELLED: set(),
}
TERMINAL = (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED)


class Task:
    __slots__ = ("spec", "state", "owner", "node_id", "waiting_on", "live_returns",
                 "pinned", "cancel_requested", "blocked", "lease", "items", "created",
                 "scheduled")

    def __init__(self, spec, owner):
        self.spec = spec
        self.state = TaskState.WAITING
        self.owner = owner
        self.node_id = None
        self.waiting_on = 0
        self.live_returns = spec.num_returns if spec.num_returns >= 0 else 1
        self.pinned = False
        self.cancel_requested = False
        self.blocked = False
        self.lease = None            # the leased worker running it, if any
        self.items = 0               # a generator task: items 0..items-1 were stored
        self.created = 0.0           # when the head got it (its monotonic clock)
        self.scheduled = None        # when sent to its node, until its event row is made

    def move(self, new_state: TaskState) -> None:
        if new_state not in TASK_TRANSITIONS[self.state]:
            raise IllegalTransition(f"task {self.spec.name} {self.spec.task_id.hex()}: "
                                    f"{self.state.value} -> {new_state.value}")
        self.state = new_state


# --- objects ---------------------------------------------------------------------------

class ObjectState(str, enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    LOST = "LOST"


OBJECT_TRANSITIONS = {
    ObjectState.PENDING: {ObjectState.READY},   # a value or an error was stored
    # stored again (a re-run, a retry's replay, an error); its only copy went with
    # its node (PENDING: rebuilt from lineage; LOST: after its error was stored)
    ObjectState.READY: {ObjectState.READY, ObjectState.PENDING, ObjectState.LOST},
    ObjectState.LOST: {ObjectState.READY},      # a late copy or put of the same id
}


#: What an object record holds until it needs its own set or list: most objects
#: never get a subscriber or a dependent, and an inline one never a location;
#: sharing these saves ~500 bytes per record (see ``add_location`` and co.).
NONE_YET = frozenset()


class ObjectRecord:
    """One object the head knows of.  Who holds references to it: most objects
    have one holder (their owner), kept in two slots (``holder``, ``holds``);
    the others, if any, in ``more_holders`` (a dict made when first needed),
    which saves the ~220 bytes of a dict per record.  ``holder`` is None only
    when nobody holds it."""

    __slots__ = ("object_id", "state", "kind", "data", "size", "locations",
                 "holder", "holds", "more_holders", "pins", "subscribers",
                 "contained_ids", "dependents", "lost")

    def __init__(self, object_id, state=ObjectState.PENDING):
        self.object_id = object_id
        self.state = state
        self.kind = KIND_INLINE
        self.data = None
        self.size = 0
        self.locations = NONE_YET       # node ids holding a copy
        self.holder = None              # a client key holding references, or None
        self.holds = 0                  # how many the holder holds
        self.more_holders = NONE_YET    # other client key -> count
        self.pins = 0
        self.subscribers = NONE_YET     # client keys waiting for it
        self.contained_ids = ()
        self.dependents = ()            # ids of tasks waiting for it
        self.lost = False     # its copies are gone; rebuilt from lineage when needed

    def move(self, new_state: ObjectState) -> None:
        _check(OBJECT_TRANSITIONS, f"object {self.object_id.hex()}", self.state, new_state)
        self.state = new_state

    def add_location(self, node_id) -> None:
        if self.locations is NONE_YET:
            self.locations = set()
        self.locations.add(node_id)

    def discard_location(self, node_id) -> None:
        if node_id in self.locations:
            self.locations.discard(node_id)

    # --- holders ----------------------------------------------------------------------

    def hold(self, key) -> None:
        """``key`` (a client) holds one more reference."""
        if self.holder == key:
            self.holds += 1
        elif self.holder is None:
            self.holder, self.holds = key, 1
        else:
            if self.more_holders is NONE_YET:
                self.more_holders = {}
            self.more_holders[key] = self.more_holders.get(key, 0) + 1

    def unhold(self, key) -> None:
        """``key`` dropped one reference (nothing if it held none)."""
        if self.holder == key:
            self.holds -= 1
            if self.holds <= 0:
                self.drop_holder(key)
        elif key in self.more_holders:
            count = self.more_holders[key] - 1
            if count > 0:
                self.more_holders[key] = count
            else:
                del self.more_holders[key]

    def drop_holder(self, key) -> None:
        """``key`` holds no reference any more (it is gone)."""
        if self.holder == key:
            more = self.more_holders
            if more:
                self.holder = next(iter(more))
                self.holds = more.pop(self.holder)
            else:
                self.holder, self.holds = None, 0
        elif key in self.more_holders:
            del self.more_holders[key]

    def held_by(self, key) -> bool:
        return self.holder == key or key in self.more_holders

    @property
    def holders(self) -> dict:
        """Client key -> references held (a new dict: for queries and checks)."""
        out = {} if self.holder is None else {self.holder: self.holds}
        out.update(self.more_holders)
        return out

    def add_subscriber(self, key) -> None:
        if self.subscribers is NONE_YET:
            self.subscribers = set()
        self.subscribers.add(key)

    def add_dependent(self, task_id) -> None:
        if not self.dependents:
            self.dependents = []
        self.dependents.append(task_id)

    def ready_item(self) -> tuple:
        return (self.object_id, self.kind, self.data, self.size, tuple(self.locations))


# --- nodes and clients -----------------------------------------------------------------

class NodeState(str, enum.Enum):
    ALIVE = "ALIVE"
    DEAD = "DEAD"


NODE_TRANSITIONS = {
    NodeState.ALIVE: {NodeState.DEAD},
    NodeState.DEAD: set(),      # one heard again must register as a new node
}


class Node:
    __slots__ = ("node_id", "identity", "info", "total", "available", "state",
                 "last_seen", "known_functions", "death_reason",
                 "death_time", "registered_at", "lease", "protocol_minor")

    def __init__(self, node_id, identity, info, now):
        self.node_id = node_id
        self.identity = identity
        self.info = info
        self.total = dict(info.get("resources", {}))
        self.available = dict(self.total)
        self.state = NodeState.ALIVE
        self.last_seen = now
        self.known_functions = set()
        self.death_reason = None
        self.death_time = None
        self.registered_at = now
        self.lease = None    # Lease: an idle worker the node lent us, see zray.head.leases
        self.protocol_minor = 0     # what it announced in REGISTER_NODE

    def move(self, new_state: NodeState) -> None:
        _check(NODE_TRANSITIONS, f"node {self.node_id.hex()}", self.state, new_state)
        self.state = new_state


class Client:
    """A driver or worker connected to the head (key: its socket identity)."""

    __slots__ = ("key", "kind", "job_id", "holding", "last_seen", "info", "node_id")

    def __init__(self, key, kind, job_id, now, info=None, node_id=None):
        self.key = key
        self.kind = kind
        self.job_id = job_id
        self.holding = {}
        self.last_seen = now
        self.info = info or {}
        self.node_id = node_id


# --- leases ----------------------------------------------------------------------------

class LeaseState(str, enum.Enum):
    HEAD = "HEAD"              # the head's own to dispatch to
    GRANTED = "GRANTED"        # lent on to a driver (``granted_to``)
    RECALLED = "RECALLED"      # LEASE_RECALL sent; waiting for the LEASE_RETURN


LEASE_TRANSITIONS = {
    LeaseState.HEAD: {LeaseState.GRANTED},
    LeaseState.GRANTED: {LeaseState.RECALLED, LeaseState.HEAD},
    LeaseState.RECALLED: {LeaseState.HEAD},
}


class Lease:
    """A worker its node lent us: the next 1-CPU task can go straight to it.

    The head may grant it on to a driver (``granted_to``), which then sends its
    plain tasks to the worker itself, one at a time, and registers each with
    SUBMIT_LEASED; ``tasks`` holds those the head has heard of and not seen
    finish.  While granted, the head neither uses the lease nor returns it; it
    recalls it from the driver when nodes need all their workers.
    """

    __slots__ = ("worker_id", "task_id", "last_used", "known_functions", "granted_to",
                 "tasks", "state")

    def __init__(self, worker_id, now):
        self.worker_id = worker_id
        self.task_id = None
        self.last_used = now
        self.known_functions = set()
        self.granted_to = None      # the driver (client key) holding it, if any
        self.tasks = set()          # ids of its granted tasks the head knows are running
        self.state = LeaseState.HEAD

    @property
    def recalled(self) -> bool:
        return self.state is LeaseState.RECALLED

    def grant(self, driver_key) -> None:
        _check(LEASE_TRANSITIONS, f"lease {self.worker_id.hex()}", self.state,
               LeaseState.GRANTED)
        self.state = LeaseState.GRANTED
        self.granted_to = driver_key

    def recall(self) -> None:
        _check(LEASE_TRANSITIONS, f"lease {self.worker_id.hex()}", self.state,
               LeaseState.RECALLED)
        self.state = LeaseState.RECALLED

    def take_back(self) -> None:
        """Back to the head's own use (returned, recalled, or its driver gone)."""
        if self.state is not LeaseState.HEAD:
            _check(LEASE_TRANSITIONS, f"lease {self.worker_id.hex()}", self.state,
                   LeaseState.HEAD)
        self.state = LeaseState.HEAD
        self.granted_to = None


# --- actors ----------------------------------------------------------------------------

class ActorState(str, enum.Enum):
    PENDING = "PENDING_CREATION"
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"
    DEAD = "DEAD"


ACTOR_TRANSITIONS = {
    ActorState.PENDING: {ActorState.ALIVE, ActorState.RESTARTING, ActorState.DEAD},
    ActorState.ALIVE: {ActorState.ALIVE,      # a repeated ACTOR_READY
                       ActorState.RESTARTING, ActorState.DEAD},
    ActorState.RESTARTING: {ActorState.ALIVE, ActorState.RESTARTING, ActorState.DEAD},
    ActorState.DEAD: set(),
}


class Actor:
    __slots__ = ("actor_id", "spec", "state", "address", "worker_key", "node_id", "pid",
                 "restarts", "name", "namespace", "detached", "job_id", "death_text",
                 "subscribers", "calls", "no_restart", "class_name", "pending_cancels",
                 "exit_when_idle")

    def __init__(self, spec, namespace, job_id):
        options = spec.actor_options
        self.actor_id = spec.actor_id
        self.spec = spec
        self.state = ActorState.PENDING
        self.address = None
        self.worker_key = None
        self.node_id = None
        self.pid = None
        self.restarts = 0
        self.name = options.get("name")
        self.namespace = namespace
        self.detached = options.get("lifetime") == "detached"
        self.job_id = job_id
        self.death_text = None
        self.subscribers = set()
        self.calls = set()
        self.no_restart = False
        self.class_name = options.get("class_name", "Actor")
        self.pending_cancels = set()
        self.exit_when_idle = False

    def move(self, new_state: ActorState) -> None:
        _check(ACTOR_TRANSITIONS, f"actor {self.actor_id.hex()}", self.state, new_state)
        self.state = new_state

    def info_item(self) -> tuple:
        return (self.actor_id, self.state.value, self.address, self.death_text)

    def meta(self) -> dict:
        """What a handle needs: the reply to CREATE_ACTOR and get_actor."""
        options = self.spec.actor_options
        return {"actor_id": self.actor_id, "methods": options["methods"],
                "class_name": self.class_name,
                "max_task_retries": options.get("max_task_retries", 0)}

    def describe(self) -> dict:
        return {"actor_id": self.actor_id.hex(), "class_name": self.class_name,
                "state": self.state.value, "name": self.name, "namespace": self.namespace,
                "pid": self.pid, "node_id": self.node_id.hex() if self.node_id else None,
                "restarts": self.restarts, "detached": self.detached,
                "death_cause": self.death_text}



# --- placement groups ------------------------------------------------------------------

class PlacementGroupState(str, enum.Enum):
    PENDING = "PENDING"              # waiting for room for all of its bundles
    CREATED = "CREATED"              # every bundle is reserved on a node
    RESCHEDULING = "RESCHEDULING"    # a node holding bundles died: re-placing them
    REMOVED = "REMOVED"


PLACEMENT_GROUP_TRANSITIONS = {
    PlacementGroupState.PENDING: {PlacementGroupState.CREATED, PlacementGroupState.REMOVED},
    PlacementGroupState.CREATED: {PlacementGroupState.RESCHEDULING,
                                  PlacementGroupState.REMOVED},
    PlacementGroupState.RESCHEDULING: {PlacementGroupState.CREATED,
                                       PlacementGroupState.REMOVED},
    PlacementGroupState.REMOVED: set(),
}


class PlacementGroup:
    """Bundles of resources reserved together (see zray.head.placement)."""

    __slots__ = ("pg_id", "bundles", "strategy", "name", "namespace", "job_id",
                 "detached", "state", "nodes", "created_at", "placed_at", "attempts")

    def __init__(self, pg_id, bundles, strategy, name, namespace, job_id, detached, now):
        self.pg_id = pg_id
        self.bundles = bundles
        self.strategy = strategy
        self.name = name
        self.namespace = namespace
        self.job_id = job_id
        self.detached = detached
        self.state = PlacementGroupState.PENDING
        self.nodes = [None] * len(bundles)     # node id holding each bundle, or None
        self.created_at = now
        self.placed_at = None
        self.attempts = 0

    def move(self, new_state: PlacementGroupState) -> None:
        _check(PLACEMENT_GROUP_TRANSITIONS, f"placement group {self.pg_id.hex()}",
               self.state, new_state)
        self.state = new_state

    @property
    def waiting(self) -> bool:
        return self.state in (PlacementGroupState.PENDING, PlacementGroupState.RESCHEDULING)

    def describe(self) -> dict:
        """A row of placement_group_table, with Ray's keys."""
        latency_ms = None if self.placed_at is None else \
            (self.placed_at - self.created_at) * 1000.0
        return {
            "placement_group_id": self.pg_id.hex(), "name": self.name,
            "bundles": {i: dict(b) for i, b in enumerate(self.bundles)},
            "bundles_to_node_id": {i: n.hex() for i, n in enumerate(self.nodes)
                                   if n is not None},
            "strategy": self.strategy, "state": self.state.value,
            "stats": {"end_to_end_creation_latency_ms": latency_ms,
                      "scheduling_latency_ms": latency_ms,
                      "scheduling_attempt": self.attempts,
                      "highest_retry_delay_ms": 0.0,
                      "scheduling_state": "FINISHED" if self.placed_at is not None and
                      not self.waiting else "NO_RESOURCES" if self.attempts else "QUEUED"},
        }


# --- reports that overtook the message they depend on ----------------------------------

class EarlyActorResult(NamedTuple):
    """ACTOR_TASKS_FINISHED before the caller's registration of the call."""
    since: float
    status: int
    results: tuple
    node_id: bytes | None


class EarlyItem(NamedTuple):
    """An ITEMS_YIELDED item of an actor call not registered yet."""
    since: float
    item: tuple
    node_id: bytes | None


class EarlyGranted(NamedTuple):
    """TASKS_FINISHED of a granted task before its SUBMIT_LEASED."""
    worker_key: bytes
    item: tuple
    since: float
    node_id: bytes


class EarlyBlocked(NamedTuple):
    """WORKER_BLOCKED/UNBLOCKED of a granted task before its SUBMIT_LEASED."""
    blocked: bool
    since: float


__all__ = ["IllegalTransition", "TaskState", "TASK_TRANSITIONS", "TERMINAL", "Task",
           "ObjectState", "OBJECT_TRANSITIONS", "ObjectRecord", "NONE_YET", "NodeState",
           "NODE_TRANSITIONS", "Node", "Client", "LeaseState", "LEASE_TRANSITIONS", "Lease",
           "ActorState", "ACTOR_TRANSITIONS", "Actor", "PlacementGroupState",
           "PLACEMENT_GROUP_TRANSITIONS", "PlacementGroup", "EarlyActorResult", "EarlyItem",
           "EarlyGranted", "EarlyBlocked"]
