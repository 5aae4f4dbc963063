"""Ray's exception hierarchy, by Ray's names, all picklable.

A task's exception reaches the caller as a ``RayTaskError`` that is also an
instance of the user's exception class (see ``RayTaskError.as_instanceof_cause``),
so ``except ValueError`` works around ``zray.get`` exactly as in Ray.
"""

from __future__ import annotations

import builtins
import logging
import pickle

log = logging.getLogger("zray")


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
        return (_rebuild_task_error, (self.function_name, self.traceback_str,
                                      _pickle_cause(self.cause), self.pid, self.ip))

    def as_instanceof_cause(self) -> "RayTaskError":
        """Return an equivalent error that is also an instance of the cause's class.

        As in Ray, a cause whose class cannot be combined with RayTaskError
        (``MemoryError``, classes with their own ``__new__`` or layout) gives
        back this plain RayTaskError: its ``cause`` and its message still carry
        the cause's type, message and remote traceback."""
        cause = self.cause
        if cause is None or isinstance(cause, RayError):
            return self
        try:
            err = _dual_instance(type(cause), cause)
        except TypeError as exc:
            if type(cause) not in _plain_only:
                _plain_only.add(type(cause))
                log.warning("Exception type %s cannot be combined with RayTaskError (%s): "
                            "it is raised as a plain RayTaskError; its .cause is the "
                            "original exception.", type(cause).__name__, exc)
            return self
        RayTaskError.__init__(err, self.function_name, self.traceback_str,
                              cause, self.pid, self.ip)
        return err


_derived_classes: dict = {}
_plain_only: set = set()
_GROUP = getattr(builtins, "BaseExceptionGroup", ())     # Python >= 3.11


def _dual_instance(cause_cls, cause):
    """An empty instance of the class deriving from RayTaskError and ``cause_cls``
    (TypeError when Python refuses to make or instantiate one)."""
    derived = _derived_class(cause_cls)
    if _GROUP and isinstance(cause, _GROUP):
        return _GROUP.__new__(derived, cause.message, cause.exceptions)
    return derived.__new__(derived)


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


def _pickle_cause(cause):
    """The cause as (its own pickle or None, type name, message): the caller can
    still raise a RayTaskError with the traceback when the cause cannot be
    pickled here or unpickled there."""
    if cause is None:
        return None
    import cloudpickle     # here: the head never pickles causes
    type_name = f"{type(cause).__module__}.{type(cause).__qualname__}"
    try:
        message = str(cause)
    except Exception:
        message = "<str() failed>"
    try:
        return cloudpickle.dumps(cause, protocol=5), type_name, message
    except Exception as exc:
        return None, type_name, f"{message} (the cause could not be pickled: {exc!r})"


def _unpickle_cause(state):
    """The cause back from ``_pickle_cause``, or a RayError naming its type and
    message when it cannot be rebuilt here (as Ray replaces an unserializable cause)."""
    if state is None or isinstance(state, BaseException):
        return state
    blob, type_name, message = state
    if blob is not None:
        try:
            return pickle.loads(blob)
        except Exception as exc:
            message = f"{message} (the cause could not be unpickled here: {exc!r})"
    return RayError(f"{type_name}: {message}")


def _rebuild_task_error(function_name, traceback_str, cause_state, pid, ip):
    return RayTaskError(function_name, traceback_str, _unpickle_cause(cause_state),
                        pid, ip).as_instanceof_cause()


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
