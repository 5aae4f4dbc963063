"""``@zray.remote`` on functions: RemoteFunction and the path from ``.remote()``
to a TaskSpec handed to the client."""

from __future__ import annotations

import inspect

import cloudpickle

from zray import _placement, _runtime, ids, options as opts
from zray._signature import check_for, shape_of
from zray.object_ref import ObjectRef, stale_ref_error
from zray.serialization import check_code_size, inline_bytes, serialize
from zray.task_spec import STREAMING, ArgRef, TaskSpec, wire_num_returns


class RemoteFunction:
    def __init__(self, function, options: dict, code_id: bytes | None = None):
        self._function = function
        self._code_id = code_id
        self._function_name = getattr(function, "__qualname__", repr(function))
        self._options = opts.validate(dict(options), opts.TASK_OPTIONS,
                                      f"remote function {self._function_name}")
        self._template = None
        self._pickled = None
        self._check = None
        self.__doc__ = function.__doc__
        self.__name__ = getattr(function, "__name__", self._function_name)
        self.__module__ = getattr(function, "__module__", None)
        self.__wrapped__ = function

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def __reduce__(self):
        return (RemoteFunction, (self._function, self._options, self._code_id))

    def remote(self, *args, **kwargs):
        if self._template is None:
            self._template = _Template(self, self._options)
        return self._template.submit(args, kwargs)

    def options(self, **options):
        opts.validate(options, opts.TASK_OPTIONS, f"remote function {self._function_name}",
                      in_options=True)
        return _BoundOptions(self, {**self._options, **options})

    def argument_check(self):
        """Checks a call's arguments against the function's signature."""
        if self._check is None:
            self._check = check_for(shape_of(self._function)) or _unchecked
        return self._check

    def pickled(self, config):
        if self._pickled is None:
            blob = cloudpickle.dumps(self._function, protocol=5)
            check_code_size(blob, f"remote function {self._function_name}", config)
            self._code_id = self._code_id or ids.new_code_id()
            self._pickled = (self._code_id, blob)
        return self._pickled


class _BoundOptions:
    """What ``f.options(...)`` returns: ``.remote()`` with those options."""

    def __init__(self, function: RemoteFunction, options: dict):
        self._function = function
        self._template = _Template(function, options)

    def remote(self, *args, **kwargs):
        return self._template.submit(args, kwargs)

    def options(self, **options):
        function = self._function
        opts.validate(options, opts.TASK_OPTIONS, f"remote function {function._function_name}",
                      in_options=True)
        return _BoundOptions(function, {**self._template.options, **options})


class _Template:
    """Everything about a task that does not change from call to call."""

    def __init__(self, function: RemoteFunction, options: dict):
        resolved = opts.resolve(options, opts.TASK_OPTIONS)
        self.function = function
        self.options = options
        self.name = resolved["name"] or function._function_name
        num_returns = resolved["num_returns"]
        if "num_returns" not in options and inspect.isgeneratorfunction(function._function):
            num_returns = "streaming"        # Ray 2.x: a generator function streams
        self.num_returns = wire_num_returns(num_returns)
        self.resources = opts.resource_request(resolved)
        self.max_retries = resolved["max_retries"]
        retry = resolved["retry_exceptions"]
        self.retry_exceptions = retry if isinstance(retry, bool) else \
            cloudpickle.dumps(tuple(retry))
        self.runtime_env = resolved["runtime_env"]
        self.max_calls = resolved["max_calls"]
        self.strategy, self.resources, self.inherits = _placement.choose(
            resolved, self.resources, f"task {self.name}")
        self.timeout_s = resolved["timeout_s"]
        self.check = function.argument_check()

    def submit(self, args, kwargs):
        self.check(args, kwargs, self.function._function_name)
        runtime = _runtime.runtime()
        client = runtime.client
        runtime_env = self.runtime_env
        if runtime_env:         # (None or {}: nothing to resolve, the common case)
            runtime_env = runtime.resolve_env(runtime_env)
        if runtime.runtime_env is not None:
            runtime_env = opts.merge_runtime_env(runtime.runtime_env, runtime_env)
        function_id, blob = self.function.pickled(client.config)
        client.register_function(function_id, blob)
        args_blob, dep_ids, nested_ids, keep = pack_args(
            args, kwargs, client, f"task {self.name}")
        strategy, resources = self.strategy, self.resources
        if self.inherits and runtime.mode == "worker":
            strategy, resources = _placement.inherited(runtime, resources) or \
                (strategy, resources)
        spec = TaskSpec(ids.new_task_id(), client.job_id, self.name, function_id, args_blob,
                        dep_ids, nested_ids, self.num_returns, resources,
                        self.max_retries, self.retry_exceptions, runtime_env,
                        self.max_calls, strategy, self.timeout_s,
                        owner_address=client.owner_address)
        return_ids = client.submit(spec)
        del keep
        if self.num_returns == 1:
            return ObjectRef(return_ids[0], _client=client, _registered=True)
        refs = [ObjectRef(oid, _client=client, _registered=True) for oid in return_ids]
        return returned(refs, self.num_returns, client)


def returned(refs: list, num_returns: int, client):
    """What ``.remote()`` gives back for these return refs."""
    if num_returns == 1:
        return refs[0]
    if num_returns < 0:
        if num_returns == STREAMING:
            from zray.generators import ObjectRefGenerator
            return ObjectRefGenerator(refs[0], client)
        return refs[0]                 # dynamic: resolves to a DynamicObjectRefGenerator
    return refs if refs else None


def _unchecked(args, kwargs, what: str) -> None:
    """The check of a function whose signature Python cannot read."""


def pack_args(args, kwargs, client, what: str):
    """Pickle arguments with top-level ObjectRefs swapped for ArgRef placeholders.

    Large arguments are put in the object store first, as Ray does, so task specs
    stay small.  Returns (blob, dep_ids, nested_ids, refs to keep alive until the
    task is submitted).
    """
    if not args and not kwargs:
        return b"", (), (), None
    limit = client.config.max_inline_object_bytes
    dep_ids, keep = [], []

    def swap(value, force_put=False):
        if type(value) is ObjectRef:
            if value._client is not client and value._client is not None:
                raise stale_ref_error(value)
            dep_ids.append(value._id)
            return ArgRef(len(dep_ids) - 1)
        if force_put or getattr(value, "nbytes", 0) > limit or \
                (isinstance(value, (bytes, bytearray)) and len(value) > limit):
            ref = put_value(value, client, f"argument of {what}")
            keep.append(ref)
            dep_ids.append(ref._id)
            return ArgRef(len(dep_ids) - 1)
        return value

    new_args = [swap(a) for a in args]
    new_kwargs = {k: swap(v) for k, v in kwargs.items()}
    packed = serialize((new_args, new_kwargs), f"arguments of {what}")
    if packed.size > limit:
        small = limit // 8
        dep_ids.clear()
        new_args = [swap(a, _size(a) > small) for a in args]
        new_kwargs = {k: swap(v, _size(v) > small) for k, v in kwargs.items()}
        packed = serialize((new_args, new_kwargs), f"arguments of {what}")
    client.register_escaping(dep_ids)
    client.register_escaping(packed.contained_ids)
    return inline_bytes(packed), tuple(dep_ids), packed.contained_ids, keep


def _size(value) -> int:
    if type(value) is ObjectRef:
        return 0
    try:
        return serialize(value).size
    except TypeError:
        return 0


def put_value(value, client, what: str = "value") -> ObjectRef:
    if isinstance(value, ObjectRef):
        raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really "
                        "want to do this, you can wrap the ObjectRef in a list and call "
                        "'put' on it.")
    object_id = ids.new_put_id()
    client.put_serialized(object_id, serialize(value, what))
    return ObjectRef(object_id, _client=client, _registered=True)


__all__ = ["RemoteFunction", "pack_args", "put_value", "returned"]
