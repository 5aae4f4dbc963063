"""Trainables: the class API (``tune.Trainable``), ``with_parameters`` and
``with_resources``, and what resources a trial asks for."""

from __future__ import annotations

import copy
import inspect
import os
import pickle

import zray

#: File a dict returned by ``save_checkpoint`` is kept in.
DICT_CHECKPOINT = "_dict_checkpoint.pkl"


class Trainable:
    """Ray Tune's class API: ``setup(config)``, ``step() -> dict``,
    ``save_checkpoint(checkpoint_dir) -> dict | None``,
    ``load_checkpoint(checkpoint)``, ``cleanup()``, ``reset_config(new_config)``."""

    def __init__(self, config: dict | None = None, *, trial_id: str = "default",
                 trial_name: str = "default", logdir: str | None = None,
                 resources: dict | None = None, **_ignored):
        self.config = config if config is not None else {}
        self._trial_id, self._trial_name = trial_id, trial_name
        self._logdir = logdir or os.getcwd()
        self._resources = resources or {}
        self._iteration = 0
        self.setup(copy.deepcopy(self.config))

    # what subclasses define
    def setup(self, config: dict) -> None:
        pass

    def step(self) -> dict:
        raise NotImplementedError("a tune.Trainable subclass defines step() -> dict")

    def save_checkpoint(self, checkpoint_dir: str):
        return None

    def load_checkpoint(self, checkpoint) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def reset_config(self, new_config: dict) -> bool:
        return False

    @classmethod
    def default_resource_request(cls, config: dict):
        return None

    # what they read
    @property
    def iteration(self) -> int:
        return self._iteration

    @property
    def training_iteration(self) -> int:
        return self._iteration

    @property
    def trial_id(self) -> str:
        return self._trial_id

    @property
    def trial_name(self) -> str:
        return self._trial_name

    @property
    def logdir(self) -> str:
        return self._logdir

    @property
    def trial_resources(self) -> dict:
        return dict(self._resources)

    # used by the runner (and usable by hand)
    def train(self) -> dict:
        result = self.step()
        if not isinstance(result, dict):
            raise TypeError(f"{type(self).__name__}.step() must return a dict, got "
                            f"{type(result).__name__}")
        self._iteration += 1
        return result

    def save(self, checkpoint_dir: str) -> str:
        os.makedirs(checkpoint_dir, exist_ok=True)
        returned = self.save_checkpoint(checkpoint_dir)
        if isinstance(returned, dict):
            with open(os.path.join(checkpoint_dir, DICT_CHECKPOINT), "wb") as f:
                pickle.dump(returned, f)
        elif returned is not None and returned != checkpoint_dir:
            raise TypeError(f"{type(self).__name__}.save_checkpoint must return a dict or "
                            f"None, got {type(returned).__name__}")
        return checkpoint_dir

    def restore(self, checkpoint_dir: str, iteration: int = 0) -> None:
        stored = os.path.join(checkpoint_dir, DICT_CHECKPOINT)
        if os.path.exists(stored):
            with open(stored, "rb") as f:
                self.load_checkpoint(pickle.load(f))
        else:
            self.load_checkpoint(checkpoint_dir)
        self._iteration = iteration

    def stop(self) -> None:
        self.cleanup()


def is_class_trainable(trainable) -> bool:
    return inspect.isclass(trainable) and issubclass(trainable, Trainable)


def trainable_name(trainable) -> str:
    inner = getattr(trainable, "_tune_inner", trainable)
    return getattr(inner, "__name__", type(inner).__name__)


class _Parameters:
    """Values given to ``with_parameters``: in the object store when a cluster
    is up (fetched once per runner), else carried along."""

    def __init__(self, values: dict):
        self.refs = {k: zray.put(v) for k, v in values.items()} if zray.is_initialized() \
            else None
        self.values = None if self.refs is not None else values

    def resolve(self) -> dict:
        if self.values is None:
            self.values = dict(zip(self.refs, zray.get(list(self.refs.values()))))
        return self.values

    def __getstate__(self):
        return {"refs": self.refs, "values": self.values if self.refs is None else None}


class _FunctionWithParameters:
    def __init__(self, function, parameters: _Parameters):
        self._tune_inner = function
        self.parameters = parameters
        self.__name__ = getattr(function, "__name__", "trainable")

    def __call__(self, config):
        return self._tune_inner(config, **self.parameters.resolve())


def with_parameters(trainable, **kwargs):
    """Pass large constant objects to a trainable: ``trainable(config, **kwargs)``
    (a function) or ``setup(config, **kwargs)`` (a Trainable class)."""
    parameters = _Parameters(kwargs)
    if is_class_trainable(trainable):
        class _WithParameters(trainable):
            def setup(self, config):
                return trainable.setup(self, config, **parameters.resolve())
        _WithParameters.__name__ = trainable.__name__
        _WithParameters._tune_inner = trainable
        return _WithParameters
    if not callable(trainable):
        raise TypeError(f"with_parameters needs a function or a tune.Trainable class, got "
                        f"{type(trainable).__name__}")
    wrapped = _FunctionWithParameters(trainable, parameters)
    if hasattr(trainable, "_tune_resources"):
        wrapped._tune_resources = trainable._tune_resources
    return wrapped


class _FunctionWithResources:
    def __init__(self, function, resources):
        self._tune_inner = function
        self._tune_resources = resources
        self.__name__ = getattr(function, "__name__", "trainable")

    def __call__(self, config):
        return self._tune_inner(config)


def with_resources(trainable, resources):
    """Give each trial of ``trainable`` these resources: a dict ({"cpu": 2,
    "gpu": 1, "custom": 1}), a ScalingConfig, a PlacementGroupFactory, or a
    function config -> one of those."""
    if is_class_trainable(trainable):
        return type(trainable.__name__, (trainable,), {"_tune_resources": resources,
                                                       "_tune_inner": trainable})
    return _FunctionWithResources(trainable, resources)


class PlacementGroupFactory:
    """Resources as bundles (``[{"CPU": 1}, {"CPU": 2}]``); a trial takes their sum."""

    def __init__(self, bundles: list, strategy: str = "PACK"):
        self.bundles, self.strategy = [dict(b) for b in bundles], strategy

    @property
    def required_resources(self) -> dict:
        total: dict = {}
        for bundle in self.bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0) + amount
        return total


def normalize_resources(resources) -> dict:
    """{"CPU": n, "GPU": m, custom: k} from what with_resources accepts."""
    if resources is None:
        return {"CPU": 1}
    if isinstance(resources, PlacementGroupFactory):
        return resources.required_resources
    if hasattr(resources, "worker_resources") and hasattr(resources, "num_workers"):
        worker = resources.worker_resources()
        total = {"CPU": worker["num_cpus"] * resources.num_workers,
                 "GPU": worker["num_gpus"] * resources.num_workers}
        for name, amount in (worker["resources"] or {}).items():
            total[name] = amount * resources.num_workers
        return total
    if not isinstance(resources, dict):
        raise TypeError(f"trial resources must be a dict, ScalingConfig or "
                        f"PlacementGroupFactory, got {type(resources).__name__}")
    out = {}
    for name, amount in resources.items():
        key = {"cpu": "CPU", "gpu": "GPU"}.get(name, name)
        if amount:
            out[key] = out.get(key, 0) + amount
    return out


def resources_function(trainable):
    """config -> resources dict for this trainable, or None for the default."""
    requested = getattr(trainable, "_tune_resources", None)
    if requested is None and is_class_trainable(trainable):
        if trainable.default_resource_request is not Trainable.default_resource_request:
            return lambda config: normalize_resources(
                trainable.default_resource_request(config))
        return None
    if requested is None:
        return None
    if callable(requested) and not isinstance(requested, PlacementGroupFactory) \
            and not hasattr(requested, "num_workers"):
        return lambda config: normalize_resources(requested(config))
    fixed = normalize_resources(requested)
    return lambda config: fixed


def first_bundle_function(trainable):
    """config -> what the trial's runner actor itself holds, for class trainables
    whose ``default_resource_request`` gives bundles (RLlib's algorithms: the
    first bundle is the trainable's, the others its env runner actors'); else None."""
    if getattr(trainable, "_tune_resources", None) is not None or \
            not is_class_trainable(trainable) or \
            trainable.default_resource_request is Trainable.default_resource_request:
        return None

    def first_bundle(config) -> dict:
        request = trainable.default_resource_request(config)
        if isinstance(request, PlacementGroupFactory) and request.bundles:
            return normalize_resources(dict(request.bundles[0]))
        return normalize_resources(request)
    return first_bundle


def actor_options(resources: dict) -> dict:
    """Options for a runner actor holding ``resources``."""
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": resources.get("CPU", 0), "num_gpus": resources.get("GPU", 0),
            "resources": custom or None}
