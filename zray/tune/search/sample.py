"""Ray Tune's search-space primitives: ``uniform``, ``loguniform``, ``choice``,
``randint``, ``grid_search``, ``sample_from`` and their quantized forms.

A ``Domain`` knows how to draw a value.  Unseeded draws use numpy's global
random state (so ``np.random.seed`` makes a run repeatable, as in Ray); a
``random_state`` (an int, ``np.random.Generator`` or ``RandomState``) makes
them independent of it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def _rng(random_state):
    """A numpy generator-like object for ``random_state`` (None: numpy's global one)."""
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(int(random_state))
    raise TypeError(f"random_state must be None, an int, a numpy Generator or RandomState; "
                    f"got {type(random_state).__name__}")


def _uniform(rng, low, high):
    return float(rng.uniform(low, high))


def _integers(rng, low, high):
    """An int in [low, high)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


def _quantize(value, q):
    return np.round(np.divide(value, q)) * q


class Domain:
    """A distribution to draw one hyperparameter from."""

    def sample(self, config=None, size: int = 1, random_state=None):
        rng = _rng(random_state)
        values = [self._draw(rng, config) for _ in range(size)]
        return values[0] if size == 1 else values

    def _draw(self, rng, config):
        raise NotImplementedError

    def is_grid(self) -> bool:
        return False

    def is_function(self) -> bool:
        return False

    @property
    def domain_str(self) -> str:
        return repr(self)


class Float(Domain):
    def __init__(self, lower: float, upper: float, log_base: float | None = None,
                 q: float | None = None):
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"the lower bound {lower} must be below the upper bound {upper}")
        if log_base is not None and lower <= 0:
            raise ValueError(f"loguniform needs a positive lower bound, got {lower}")
        self.lower, self.upper, self.log_base, self.q = lower, upper, log_base, q

    def _draw(self, rng, config):
        if self.log_base is not None:
            logs = math.log(self.lower, self.log_base), math.log(self.upper, self.log_base)
            value = float(self.log_base ** _uniform(rng, *logs))
        else:
            value = _uniform(rng, self.lower, self.upper)
        if self.q is not None:
            value = float(np.clip(_quantize(value, self.q), self.lower, self.upper))
        return value

    def __repr__(self):
        kind = "loguniform" if self.log_base else "uniform"
        return f"{kind}({self.lower}, {self.upper}{f', q={self.q}' if self.q else ''})"


class Normal(Float):
    def __init__(self, mean: float = 0.0, sd: float = 1.0, q: float | None = None):
        if sd <= 0:
            raise ValueError(f"randn needs a positive sd, got {sd}")
        self.mean, self.sd, self.q = mean, sd, q
        self.lower = self.upper = self.log_base = None

    def _draw(self, rng, config):
        value = float(rng.normal(self.mean, self.sd))
        return float(_quantize(value, self.q)) if self.q is not None else value

    def __repr__(self):
        return f"randn({self.mean}, {self.sd})"


class Integer(Domain):
    """An int in [lower, upper) (``randint``), or [lower, upper] when quantized
    (``qrandint``: Ray's upper bound is inclusive there)."""

    def __init__(self, lower: int, upper: int, q: int | None = None,
                 log_base: float | None = None, inclusive: bool = False):
        if not lower < upper + (1 if inclusive else 0):
            raise ValueError(f"the lower bound {lower} must be below the upper bound {upper}")
        if log_base is not None and lower <= 0:
            raise ValueError(f"lograndint needs a positive lower bound, got {lower}")
        self.lower, self.upper, self.q, self.log_base = lower, upper, q, log_base
        self.inclusive = inclusive

    def _draw(self, rng, config):
        high = self.upper + (1 if self.inclusive else 0)
        if self.log_base is not None:
            logs = math.log(self.lower, self.log_base), math.log(high, self.log_base)
            value = int(math.floor(self.log_base ** _uniform(rng, *logs)))
            value = min(max(value, self.lower), high - 1)
        else:
            value = _integers(rng, self.lower, high)
        if self.q is not None:
            value = int(np.clip(_quantize(value, self.q), self.lower, self.upper))
        return value

    def __repr__(self):
        return f"randint({self.lower}, {self.upper}{f', q={self.q}' if self.q else ''})"


class Categorical(Domain):
    def __init__(self, categories: Sequence):
        self.categories = list(categories)
        if not self.categories:
            raise ValueError("choice() needs at least one category")

    def _draw(self, rng, config):
        return self.categories[_integers(rng, 0, len(self.categories))]

    def __len__(self):
        return len(self.categories)

    def __repr__(self):
        return f"choice({self.categories})"


class Function(Domain):
    """``sample_from(func)``: ``func(spec)`` computes the value, and may read
    the other resolved values as ``spec.config.<name>``."""

    def __init__(self, func: Callable):
        if not callable(func):
            raise TypeError(f"sample_from needs a callable, got {type(func).__name__}")
        self.func = func

    def is_function(self) -> bool:
        return True

    def _draw(self, rng, config):
        return self.func(Spec(config if config is not None else {}))

    def __repr__(self):
        return f"sample_from({getattr(self.func, '__name__', self.func)})"


class _AttrDict(dict):
    def __getattr__(self, name):
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return _AttrDict(value) if isinstance(value, dict) else value


class Spec:
    """What a ``sample_from`` function receives: ``spec.config`` is the config
    resolved so far (attribute or item access)."""

    def __init__(self, config: dict):
        self.config = _AttrDict(config)

    def __getitem__(self, key):
        return {"config": self.config}[key]


def uniform(lower: float, upper: float) -> Float:
    return Float(lower, upper)


def quniform(lower: float, upper: float, q: float) -> Float:
    return Float(lower, upper, q=q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    return Float(lower, upper, log_base=base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    return Float(lower, upper, log_base=base, q=q)


def randn(mean: float = 0.0, sd: float = 1.0) -> Normal:
    return Normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Normal:
    return Normal(mean, sd, q=q)


def randint(lower: int, upper: int) -> Integer:
    """An int in [lower, upper): upper is excluded."""
    return Integer(lower, upper)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """A multiple of q in [lower, upper]: upper is included (as in Ray)."""
    return Integer(lower, upper, q=q, inclusive=True)


def lograndint(lower: int, upper: int, base: float = 10) -> Integer:
    return Integer(lower, upper, log_base=base)


def qlograndint(lower: int, upper: int, q: int, base: float = 10) -> Integer:
    return Integer(lower, upper, q=q, log_base=base, inclusive=True)


def choice(categories: Sequence) -> Categorical:
    return Categorical(categories)


def sample_from(func: Callable) -> Function:
    return Function(func)


def grid_search(values: Sequence) -> dict:
    """Try every value: each combination of grid values is one trial (times
    ``num_samples``)."""
    values = list(values)
    if not values:
        raise ValueError("grid_search() needs at least one value")
    return {"grid_search": values}
