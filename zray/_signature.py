"""Arguments checked against the callee's signature at ``.remote()`` time.

As in Ray, calling a remote function, an actor constructor or an actor method
with arguments its signature cannot take raises TypeError in the caller at
once (``inspect.Signature.bind``), not later inside a worker.  A signature
travels as a *shape* (a tuple of (name, kind, has_default) per parameter),
which pickles without the user's modules (the head passes actor method
tables along) and is turned into one ``ArgumentCheck`` per process.
"""

from __future__ import annotations

import inspect

_EMPTY = inspect.Parameter.empty
_KIND = type(inspect.Parameter.POSITIONAL_ONLY)
_NO_LIMIT = float("inf")


class _Default:
    """Stands for a parameter's default value, which the check never needs."""

    def __repr__(self):
        return "..."


_DEFAULT = _Default()


def shape_of(function, drop_first: bool = False) -> tuple | None:
    """``function``'s parameters as (name, kind, has_default) tuples, without
    the first (``self``) when ``drop_first``; None when it has no signature
    that Python can read (some builtins), so that calls go unchecked."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    if drop_first:
        if not parameters or parameters[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return None          # e.g. def method(*args): self is inside args
        parameters = parameters[1:]
    return tuple((p.name, int(p.kind), p.default is not _EMPTY) for p in parameters)


class ArgumentCheck:
    """Checks one signature's calls; calls with positional arguments only are
    decided by counting them, and only others pay for ``Signature.bind``."""

    __slots__ = ("signature", "least", "most")

    def __init__(self, shape: tuple):
        params = [inspect.Parameter(name, _KIND(kind),
                                    default=_DEFAULT if has_default else _EMPTY)
                  for name, kind, has_default in shape]
        self.signature = inspect.Signature(params)
        positional = [p for p in params if p.kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        required_keyword = any(p.kind is inspect.Parameter.KEYWORD_ONLY and
                               p.default is _EMPTY for p in params)
        self.least = _NO_LIMIT if required_keyword else \
            sum(p.default is _EMPTY for p in positional)
        self.most = _NO_LIMIT if any(p.kind is inspect.Parameter.VAR_POSITIONAL
                                     for p in params) else len(positional)

    def __call__(self, args, kwargs, what: str) -> None:
        if not kwargs and self.least <= len(args) <= self.most:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{exc} (calling {what}{self.signature})") from None


_checks: dict = {}


def check_for(shape: tuple | None) -> ArgumentCheck | None:
    """The check for ``shape`` (one per process and shape), or None for no shape."""
    if shape is None:
        return None
    check = _checks.get(shape)
    if check is None:
        check = _checks[shape] = ArgumentCheck(shape)
    return check


def check_call(shape: tuple | None, args, kwargs, what: str) -> None:
    """Raise TypeError unless a callee of ``shape`` could take these arguments."""
    if shape is not None:
        check_for(shape)(args, kwargs, what)
