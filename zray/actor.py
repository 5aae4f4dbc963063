"""``@zray.remote`` on classes: ActorClass, ActorHandle, ActorMethod.

Creating an actor sends CREATE_ACTOR to the head, which places it like a task;
the node gives it a worker of its own.  Method calls are registered with the
head (for references) and sent straight to the actor's worker, whose address the
caller learns from the head (ACTOR_INFO) and keeps up to date across restarts.
"""

from __future__ import annotations

import inspect

import cloudpickle

from zray import _placement, _runtime, ids, options as opts
from zray._signature import check_call, shape_of
from zray.ids import handle_id
from zray.object_ref import ObjectRef
from zray.protocol import Msg
from zray.remote_function import pack_args, returned
from zray.resources import in_bundle
from zray.serialization import check_code_size, record_contained_ref
from zray.task_spec import TaskSpec, wire_num_returns

def method(*args, **kwargs):
    """``@zray.method(num_returns=2)`` on an actor method."""
    unknown = set(kwargs) - {"num_returns", "concurrency_group", "max_task_retries",
                             "retry_exceptions"}
    if args or unknown:
        raise ValueError("@zray.method takes keyword arguments only: num_returns, "
                         "concurrency_group, max_task_retries, retry_exceptions")

    def decorate(function):
        if "num_returns" in kwargs:
            function.__zray_num_returns__ = kwargs["num_returns"]
        return function
    return decorate


def exit_actor():
    """End the current actor from inside one of its methods; it is not restarted.

    The call that made it fails with ActorDiedError; the process runs its
    ``atexit`` handlers and exits."""
    worker = getattr(_runtime.runtime(), "worker", None)
    if worker is None or getattr(worker, "actor", None) is None:
        raise TypeError("exit_actor() may only be called inside an actor method")
    raise ActorExit()


#: Methods every actor has, as in Ray (run by zray.worker.actor_runtime):
#: ``__ray_ready__()`` answers True once the constructor has run;
#: ``__ray_terminate__()`` ends the actor like exit_actor(), after the calls
#: sent before it; ``__ray_call__(fn, *args)`` runs ``fn(instance, *args)``.
BUILTIN_METHODS = frozenset({"__ray_ready__", "__ray_terminate__", "__ray_call__"})



def _actor_placement(runtime, resolved, held, placement, what):
    """(strategy, held, placement) with the actor's placement group applied: in a
    group, an actor without num_cpus asks only for what it holds (0 CPUs), since
    its bundle is reserved already."""
    if resolved["num_cpus"] is None:
        in_group_request = held
    else:
        in_group_request = placement
    strategy, renamed, inherits = _placement.choose(resolved, in_group_request, what)
    if inherits and runtime.mode == "worker":
        inherited = _placement.inherited(runtime, in_group_request)
        if inherited is not None:
            strategy, renamed = inherited
    if type(strategy) is not tuple or strategy[0] != "placement_group":
        return strategy, held, placement
    pg_hex, index = strategy[1].hex(), strategy[2]
    return strategy, in_bundle(held, pg_hex, index), renamed

class ActorClassInheritanceException(TypeError):
    """A class statement named an actor class (not a plain class) as a base."""


class ActorExit(SystemExit):
    """Raised by exit_actor(); the actor worker finishes the call and exits."""


def _method_table(cls) -> dict:
    """name -> {num_returns, is_async, signature} for each method callable remotely;
    the signature is a shape (see zray._signature) without ``self``."""
    table = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if not callable(member):
            continue
        static = isinstance(inspect.getattr_static(cls, name, None), staticmethod)
        generator = inspect.isgeneratorfunction(member) or \
            inspect.isasyncgenfunction(member)
        table[name] = {"num_returns": getattr(member, "__zray_num_returns__",
                                              "streaming" if generator else 1),
                       "is_async": inspect.iscoroutinefunction(member)
                       or inspect.isasyncgenfunction(member),
                       "signature": shape_of(member, drop_first=inspect.isfunction(member)
                                             and not static)}
    return table


class ActorClass:
    def __init__(self, cls, options: dict, code_id: bytes | None = None):
        self._cls = cls
        self._code_id = code_id
        self._class_name = cls.__name__
        self._options = opts.validate(dict(options), opts.ACTOR_OPTIONS,
                                      f"actor class {self._class_name}")
        self._methods = _method_table(cls)
        self._pickled = None
        self._init_shape = False      # the constructor's signature, once known
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self._class_name}()', use '{self._class_name}.remote()'.")

    def __getattr__(self, name):
        """The user's class attributes, static methods and class methods
        (``Counter.LIMIT``, ``Counter.default()``), as in Ray, whose actor
        class derives from the user's class."""
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(cls, name)

    def __mro_entries__(self, bases):
        raise ActorClassInheritanceException(
            f"Attempted to subclass the actor class '{self._class_name}'. Inheriting "
            "from actor classes is not currently supported (as in Ray): inherit from "
            "the plain class instead and make the subclass an actor with @zray.remote.")

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options, self._code_id))

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._create(args, kwargs, self._options)

    def options(self, **options):
        opts.validate(options, opts.ACTOR_OPTIONS, f"actor class {self._class_name}",
                      in_options=True)
        return _BoundActorOptions(self, {**self._options, **options})

    def _pickled_class(self, config):
        if self._pickled is None:
            blob = cloudpickle.dumps(self._cls, protocol=5)
            check_code_size(blob, f"actor class {self._class_name}", config)
            self._code_id = self._code_id or ids.new_code_id()
            self._pickled = (self._code_id, blob)
        return self._pickled

    def _create(self, args, kwargs, options) -> "ActorHandle":
        if self._init_shape is False:
            self._init_shape = shape_of(self._cls)
        check_call(self._init_shape, args, kwargs, f"{self._class_name}.__init__")
        runtime = _runtime.runtime()
        client = runtime.client
        resolved = opts.resolve(options, opts.ACTOR_OPTIONS)
        is_async = any(m["is_async"] for m in self._methods.values())
        if resolved["max_concurrency"] is None:
            resolved["max_concurrency"] = 1000 if is_async else 1
        function_id, blob = self._pickled_class(client.config)
        client.register_function(function_id, blob)
        args_blob, dep_ids, nested_ids, keep = pack_args(
            args, kwargs, client, f"actor {self._class_name}")
        held = opts.resource_request({**resolved, "num_cpus": resolved["num_cpus"] or 0})
        placement = opts.resource_request(
            {**resolved, "num_cpus": 1 if resolved["num_cpus"] is None else resolved["num_cpus"]})
        strategy, held, placement = _actor_placement(runtime, resolved, held, placement,
                                                     f"actor {self._class_name}")
        actor_id = ids.new_task_id()
        name = resolved["name"]
        if resolved["get_if_exists"] and not name:
            raise ValueError("get_if_exists=True needs a name for the actor")
        if resolved["lifetime"] not in (None, "detached", "non_detached"):
            raise ValueError("lifetime must be 'detached', 'non_detached' or None")
        namespace = resolved["namespace"] if resolved["namespace"] is not None \
            else runtime.namespace
        actor_options = {
            "class_name": self._class_name, "methods": self._methods, "held": held,
            "name": name, "namespace": namespace, "lifetime": resolved["lifetime"],
            "get_if_exists": resolved["get_if_exists"],
            "max_restarts": resolved["max_restarts"],
            "max_task_retries": resolved["max_task_retries"],
            "max_concurrency": resolved["max_concurrency"], "is_async": is_async,
            "max_pending_calls": resolved["max_pending_calls"],
        }
        runtime_env = opts.merge_runtime_env(runtime.runtime_env,
                                             runtime.resolve_env(resolved["runtime_env"]))
        spec = TaskSpec(actor_id, client.job_id, f"{self._class_name}.__init__", function_id,
                        args_blob, dep_ids, nested_ids, 0, placement, 0, False, runtime_env, 0,
                        strategy, None,
                        actor_id=actor_id, method="__init__", actor_options=actor_options)
        # the head registers our handle with CREATE_ACTOR: counted, not announced
        client.add_ref(handle_id(actor_id), announce=False)
        if name:
            try:
                meta = client.request(Msg.CREATE_ACTOR, (spec,))
            except Exception as exc:
                client.release_ref(handle_id(actor_id))
                message = str(exc)
                if "already taken" in message:
                    raise ValueError(message) from None
                raise
            if meta["actor_id"] != actor_id:     # get_if_exists found one
                client.release_ref(handle_id(actor_id))
                handle = ActorHandle(meta["actor_id"], meta["methods"], meta["class_name"],
                                     resolved["max_pending_calls"],
                                     meta.get("max_task_retries", 0), _client=client,
                                     _registered=True)
                return handle
        else:
            client.send(Msg.CREATE_ACTOR, (spec, 0))
        del keep
        return ActorHandle(actor_id, self._methods, self._class_name,
                           resolved["max_pending_calls"], resolved["max_task_retries"],
                           _client=client, _registered=True)


class _BoundActorOptions:
    """What ``Cls.options(...)`` returns: ``.remote()`` with those options."""

    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._actor_class._create(args, kwargs, self._options)

    def options(self, **options):
        opts.validate(options, opts.ACTOR_OPTIONS,
                      f"actor class {self._actor_class._class_name}", in_options=True)
        return _BoundActorOptions(self._actor_class, {**self._options, **options})


class ActorMethod:
    def __init__(self, handle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def remote(self, *args, **kwargs):
        handle = self._handle
        entry = handle._methods.get(self._name)
        if entry is not None:
            check_call(entry.get("signature"), args, kwargs,
                       f"{handle._class_name}.{self._name}")
        return handle._call(self._name, args, kwargs, self._num_returns)

    def options(self, **options):
        unknown = set(options) - {"num_returns", "name", "concurrency_group"}
        if unknown:
            raise ValueError(f"Invalid option(s) {sorted(unknown)} for an actor method; "
                             "valid options are: ['concurrency_group', 'name', "
                             "'num_returns']")
        num_returns = options.get("num_returns", self._num_returns)
        return ActorMethod(self._handle, self._name, num_returns)


class ActorHandle:
    __slots__ = ("_actor_id", "_methods", "_class_name", "_max_pending", "_client",
                 "_seq", "_max_task_retries", "__weakref__")

    def __init__(self, actor_id: bytes, methods: dict, class_name: str,
                 max_pending: int = -1, max_task_retries: int = 0, *, _client=None,
                 _registered: bool = False):
        self._actor_id = actor_id
        self._methods = methods
        self._class_name = class_name
        self._max_pending = max_pending
        self._max_task_retries = max_task_retries
        self._seq = 0
        if _client is None:
            active = _runtime.get_runtime()
            _client = active.client if active is not None else None
        self._client = _client
        if _client is not None and not _registered:
            _client.add_ref(handle_id(actor_id))

    def __del__(self):
        client = self._client
        if client is not None:
            try:
                client.release_ref(handle_id(self._actor_id))
            except Exception:
                pass

    def __getattr__(self, name):
        if name.startswith("__"):
            if name in BUILTIN_METHODS:
                return ActorMethod(self, name, 1)
            raise AttributeError(name)
        entry = self._methods.get(name)
        if entry is None:
            raise AttributeError(f"'ActorHandle' object has no attribute '{name}' "
                                 f"(actor class {self._class_name})")
        return ActorMethod(self, name, entry["num_returns"])

    def __reduce__(self):
        record_contained_ref(handle_id(self._actor_id))
        return (_rebuild_handle, (self._actor_id, self._methods, self._class_name,
                                  self._max_pending, self._max_task_retries))

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    @property
    def _ray_actor_id(self):
        return self._actor_id

    def _call(self, method_name, args, kwargs, num_returns):
        client = self._client or _runtime.client()
        args_blob, dep_ids, nested_ids, keep = pack_args(
            args, kwargs, client, f"actor method {self._class_name}.{method_name}")
        self._seq += 1
        num_returns = wire_num_returns(num_returns)
        spec = TaskSpec(ids.new_task_id(), client.job_id, f"{self._class_name}.{method_name}",
                        b"", args_blob, dep_ids, nested_ids, num_returns, {},
                        self._max_task_retries, False,
                        actor_id=self._actor_id, method=method_name, seq=self._seq)
        return_ids = client.submit_actor_call(spec, self._max_pending)
        del keep
        refs = [ObjectRef(oid, _client=client, _registered=True) for oid in return_ids]
        return returned(refs, num_returns, client)


def _rebuild_handle(actor_id, methods, class_name, max_pending, max_task_retries=0):
    return ActorHandle(actor_id, methods, class_name, max_pending, max_task_retries)
