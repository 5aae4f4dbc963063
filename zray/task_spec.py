"""The description of one task, as it travels driver → head → node → worker.

The submitter fills in what to run; the head adds ``attempt`` and the resolved
``dep_values`` when it dispatches; the node adds ``function_blob`` for a worker
that has not seen the function yet, and ``gpu_ids``.
"""

from __future__ import annotations

#: ``num_returns`` of a generator task whose items stream to the caller as they
#: are yielded (``num_returns="streaming"``, Ray's default for generator functions).
STREAMING = -1
#: ``num_returns="dynamic"``: one return, a DynamicObjectRefGenerator of the items.
DYNAMIC = -2


def wire_num_returns(value) -> int:
    """``num_returns`` as a TaskSpec carries it: an int, STREAMING or DYNAMIC."""
    if value == "streaming":
        return STREAMING
    if value == "dynamic":
        return DYNAMIC
    return value

_FIELDS = (
    "task_id", "job_id", "name", "function_id", "args_blob", "dep_ids",
    "nested_ids", "num_returns", "resources", "max_retries", "retry_exceptions",
    "runtime_env", "max_calls", "strategy", "timeout_s", "attempt", "dep_values",
    "function_blob", "gpu_ids", "actor_id", "method", "actor_options", "seq",
    "owner_address",
)


class TaskSpec:
    __slots__ = _FIELDS

    def __init__(self, task_id, job_id, name, function_id, args_blob, dep_ids=(),
                 nested_ids=(), num_returns=1, resources=None, max_retries=3,
                 retry_exceptions=False, runtime_env=None, max_calls=0, strategy=None,
                 timeout_s=None, attempt=0, dep_values=None, function_blob=None,
                 gpu_ids=(), actor_id=None, method=None, actor_options=None, seq=0,
                 owner_address=None):
        self.task_id = task_id
        self.job_id = job_id
        self.name = name
        self.function_id = function_id
        self.args_blob = args_blob
        self.dep_ids = dep_ids
        self.nested_ids = nested_ids
        self.num_returns = num_returns
        self.resources = resources if resources is not None else {"CPU": 1.0}
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.runtime_env = runtime_env
        self.max_calls = max_calls
        self.strategy = strategy
        self.timeout_s = timeout_s
        self.attempt = attempt
        self.dep_values = dep_values
        self.function_blob = function_blob
        self.gpu_ids = gpu_ids
        self.actor_id = actor_id            # set for actor creation and method calls
        self.method = method                # "__init__" for a creation, else the method
        self.actor_options = actor_options  # creation only: restarts, name, concurrency...
        self.seq = seq                      # per-caller sequence number of a method call
        self.owner_address = owner_address  # where the worker may send inline results

    def __reduce__(self):       # (_values inlined: one call less per spec pickled)
        return (TaskSpec, (
            self.task_id, self.job_id, self.name, self.function_id, self.args_blob,
            self.dep_ids, self.nested_ids, self.num_returns, self.resources,
            self.max_retries, self.retry_exceptions, self.runtime_env, self.max_calls,
            self.strategy, self.timeout_s, self.attempt, self.dep_values,
            self.function_blob, self.gpu_ids, self.actor_id, self.method,
            self.actor_options, self.seq, self.owner_address))

    def _values(self) -> tuple:
        return (self.task_id, self.job_id, self.name, self.function_id, self.args_blob,
                self.dep_ids, self.nested_ids, self.num_returns, self.resources,
                self.max_retries, self.retry_exceptions, self.runtime_env, self.max_calls,
                self.strategy, self.timeout_s, self.attempt, self.dep_values,
                self.function_blob, self.gpu_ids, self.actor_id, self.method,
                self.actor_options, self.seq, self.owner_address)

    def copy(self) -> "TaskSpec":
        return TaskSpec(*self._values())

    def return_ids(self) -> list:
        """The ids the caller holds; a generator task has one, its completion (the
        item count, or for DYNAMIC the generator of items), and items besides."""
        count = self.num_returns
        if count == 1 or count < 0:
            return [self.task_id + b"\x00\x01"]
        return [self.task_id + i.to_bytes(2, "big") for i in range(1, count + 1)]

    @property
    def is_generator(self) -> bool:
        return self.num_returns < 0

    @property
    def is_actor_creation(self) -> bool:
        return self.method == "__init__"

    @property
    def is_actor_call(self) -> bool:
        return self.actor_id is not None and self.method != "__init__"

    def __repr__(self):
        return f"TaskSpec({self.name}, {self.task_id.hex()}, attempt={self.attempt})"


class ArgRef:
    """Stands for the i-th top-level ObjectRef argument inside ``args_blob``; the
    worker swaps in the object's value before calling the function."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (ArgRef, (self.index,))
