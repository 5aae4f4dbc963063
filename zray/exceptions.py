"""Ray's exception hierarchy, by Ray's names, all picklable.

A task's exception reaches the caller as a ``RayTaskError`` that is also an
instance of the user's exception class (see ``RayTaskError.as_instanceof_cause``),
so ``except ValueError`` works around ``zray.get`` exactly as in Ray.
"""

from __future__ import annotations


class RayError(Exception):
    """Base of every error zray raises for a remote failure."""


class RaySystemError(RayError):
    """zray itself failed (a bug or a broken installation)."""


class RayTaskError(RayError):
    """A task or actor method raised; carries the remote traceback text."""

    def __init__(self, function_name="<unknown>", traceback_str="", cause=None,
                 pid=None, ip=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        super().__init__(function_name, traceback_str, cause, pid, ip)

    def __str__(self):
        where = f" (pid={self.pid}, ip={self.ip})" if self.pid else ""
        return (f"{type(self).__name__}: {self.function_name}(){where}\n"
                f"{self.traceback_str}".rstrip())

    def __reduce__(self):
        return (_rebuild_task_error,
                (self.function_name, self.traceback_str, self.cause, self.pid, self.ip))

    def as_instanceof_cause(self) -> "RayTaskError":
        """Return an equivalent error that is also an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or isinstance(self.cause, RayTaskError) \
                or not _can_subclass(cause_cls):
            return self
        derived = _derived_class(cause_cls)
        err = derived.__new__(derived)
        RayTaskError.__init__(err, self.function_name, self.traceback_str,
                              self.cause, self.pid, self.ip)
        return err


_derived_classes: dict = {}


def _can_subclass(cls) -> bool:
    try:
        type("_probe", (RayTaskError, cls), {})
        return True
    except TypeError:
        return False


def _derived_class(cause_cls):
    derived = _derived_classes.get(cause_cls)
    if derived is None:
        name = f"RayTaskError({cause_cls.__name__})"

        def __getattr__(self, attr):
            cause = self.__dict__.get("cause")
            if cause is None:
                raise AttributeError(attr)
            return getattr(cause, attr)

        derived = type(name, (RayTaskError, cause_cls), {
            "__init__": RayTaskError.__init__,
            "__getattr__": __getattr__,
            "__str__": RayTaskError.__str__,
            "__reduce__": RayTaskError.__reduce__,
        })
        derived.__module__ = cause_cls.__module__
        _derived_classes[cause_cls] = derived
    return derived


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip):
    return RayTaskError(function_name, traceback_str, cause, pid, ip).as_instanceof_cause()


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or ``wait`` ran past its timeout."""


class _MessageError(RayError):
    """An error built from keyword-ish fields; pickles by those fields."""

    def __str__(self):
        return self.message

    def __reduce__(self):
        return (type(self), self._fields())


class TaskCancelledError(_MessageError):
    """The task was cancelled with ``zray.cancel``."""

    def __init__(self, task_id=None, message=None):
        self.task_id = task_id
        self.message = message or f"Task {task_id} was cancelled."
        super().__init__(self.message)

    def _fields(self):
        return (self.task_id, self.message)


class WorkerCrashedError(RayError):
    """The worker running the task died, and retries were exhausted."""


class NodeDiedError(RayError):
    """The node running the task died, and retries were exhausted."""


class TaskTimeoutError(RayError, TimeoutError):
    """The task ran past its ``timeout_s`` and its worker was stopped."""


class TaskUnschedulableError(RayError):
    """The task can never be scheduled (e.g. its node affinity target is gone)."""


class RayActorError(_MessageError):
    """The actor is dead or unreachable."""

    def __init__(self, message="The actor died unexpectedly.", actor_id=None):
        self.actor_id = actor_id
        self.message = message
        super().__init__(message)

    def _fields(self):
        return (self.message, self.actor_id)


class ActorDiedError(RayActorError):
    """The actor died and will not be restarted."""


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (e.g. restarting)."""


class PendingCallsLimitExceeded(RayError):
    """The caller has ``max_pending_calls`` calls to this actor still unanswered."""


class ActorUnschedulableError(RayError):
    """The actor can never be scheduled."""


class ObjectLostError(_MessageError):
    """Every copy of the object is gone and it cannot be rebuilt."""

    def __init__(self, object_ref_hex="", message=None):
        self.object_ref_hex = object_ref_hex
        self.message = message or (f"Object {object_ref_hex} is lost: every copy of it "
                                   "was on nodes that died.")
        super().__init__(self.message)

    def _fields(self):
        return (self.object_ref_hex, self.message)


class ObjectReconstructionFailedError(ObjectLostError):
    """A lost object could not be rebuilt from its lineage."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from another node timed out."""


class ObjectStoreFullError(RayError):
    """The object store is full and nothing can be spilled."""


class OutOfMemoryError(RayError):
    """A worker was killed because the node ran out of memory."""


class RuntimeEnvSetupError(RayError):
    """The task's runtime_env could not be applied."""


class ProtocolError(RayError):
    """A peer sent a message zray cannot decode (wrong version, bad frames)."""
