"""Field types for the wire contract: what a message field may hold, and
checks compiled for speed.

``zray.protocol`` declares which field of which message has which type; this
module holds the machinery (``FieldType`` and the builders ``optional``,
``sequence_of``, ``record``, ``keys``) and the basic types (ids, counts,
numbers).  A type's ``check`` is a Python expression over ``{v}``; the protocol
inlines them into one compiled function per message type, so checking an item
costs no call per field.
"""

from __future__ import annotations

import numbers

_SEQ = (tuple, list)
MISSING = object()
# Amounts of a resource: finite, and small enough that float arithmetic on them
# (what the scheduler does) cannot overflow.  1e18 bytes of memory is an exabyte.
_MAX_AMOUNT = 1e18
# Helpers the compiled checks may call; every composite type adds its function.
NAMESPACE: dict = {"MISSING": MISSING}


def compile_check(source: str, name: str):
    exec(compile(source, f"<zray.protocol {name}>", "exec"), NAMESPACE)
    return NAMESPACE[name]


def compile_lazily(source: str, name: str):
    """``compile_check`` on first call: every process imports the protocol, most
    use a few of its composite checks (compiling them all cost each process about
    5 ms at start-up).  The stub puts the compiled function in its place in
    NAMESPACE, where the inlined checks look it up, so later calls go straight
    to it."""
    def first_call(v):
        real = compile_check(source, name)
        for key, value in list(NAMESPACE.items()):
            if value is first_call:
                NAMESPACE[key] = real
        return real(v)
    first_call.__name__ = name
    return first_call


class FieldType:
    """What one field may hold: ``describe`` for errors and docs, ``check`` a
    Python expression over ``{v}`` (inlined into the compiled checkers), ``ok``
    the same as a function, ``explain`` says what is wrong inside a composite
    value (or None)."""

    __slots__ = ("describe", "check", "explain", "fields", "_name", "_ok")
    _count = 0

    def __init__(self, describe: str, check: str, explain=None):
        FieldType._count += 1
        self.describe = describe
        self.check = check
        self.explain = explain
        self.fields = None          # a record's (name, FieldType) fields
        self._name = f"_ok_{FieldType._count}"
        self._ok = None             # compiled on first use: most types never need it

    def ok(self, value) -> bool:
        if self._ok is None:
            self._ok = compile_check(
                f"def {self._name}(v):\n    return bool({self.check.format(v='v')})\n",
                self._name)
        return self._ok(value)

    def why(self, value) -> str | None:
        """None if ``value`` fits, else what is wrong with it."""
        if self.ok(value):
            return None
        inner = self.explain(value) if self.explain is not None else None
        return f"should be {self.describe}, got {kind_of(value)}" + (
            f" ({inner})" if inner else "")

    def __repr__(self):
        return f"FieldType({self.describe})"


def kind_of(value) -> str:
    """A value's type for an error message (never its contents: they may be huge)."""
    if type(value) in (bytes, tuple, list, dict, str):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def function_type(describe: str, function, explain=None) -> FieldType:
    """A type checked by calling ``function`` (composite values)."""
    name = f"_fn_{function.__name__.strip('_')}_{FieldType._count + 1}"
    NAMESPACE[name] = function
    return FieldType(describe, f"{name}({{v}})", explain)


def bytes_of(length: int) -> FieldType:
    return FieldType(f"bytes ({length})", f"(type({{v}}) is bytes and len({{v}}) == {length})")


def optional(field_type: FieldType) -> FieldType:
    return FieldType(f"{field_type.describe} or None",
                     f"({{v}} is None or {field_type.check})", field_type.explain)


def sequence_of(item: FieldType) -> FieldType:
    """A tuple or list whose every element is ``item`` (a record's fields are
    checked inline; an empty tuple, the common case, costs no call)."""
    name = f"_seq_{FieldType._count + 1}"
    if item.fields is not None:        # a record: unpack and check inline
        names = [f"g{i}" for i in range(len(item.fields))]
        body = (f"        if type(x) is not tuple or len(x) != {len(names)}:\n"
                f"            return False\n"
                f"        {', '.join(names)}, = x\n"
                f"        if not ({all_checks(names, item.fields)}):\n"
                f"            return False\n")
    else:
        body = f"        if not ({item.check.format(v='x')}):\n            return False\n"
    function = compile_lazily(
        f"def {name}(v):\n"
        f"    if type(v) is not tuple and type(v) is not list:\n        return False\n"
        f"    for x in v:\n{body}"
        f"    return True\n", name)

    def explain(value):
        if type(value) in _SEQ:
            for i, x in enumerate(value):
                why = item.why(x)
                if why:
                    return f"element {i} {why}"
        return None
    result = function_type(f"a tuple or list of {item.describe}", function, explain)
    result.check = f"((type({{v}}) is tuple and not {{v}}) or {result.check})"
    return result


def all_checks(names: list, fields: tuple) -> str:
    return " and ".join(t.check.format(v=n) for n, (_, t) in zip(names, fields))


def record(describe: str, fields: tuple) -> FieldType:
    """A tuple of exactly these (name, FieldType) fields."""
    names = [f"f{i}" for i in range(len(fields))]
    name = f"_record_{FieldType._count + 1}"
    function = compile_lazily(
        f"def {name}(v):\n"
        f"    if type(v) is not tuple or len(v) != {len(fields)}:\n        return False\n"
        f"    {', '.join(names)}, = v\n"
        f"    return {all_checks(names, fields)}\n", name)
    result = function_type(describe, function, lambda value: _why_record(fields, value))
    result.fields = fields
    return result


def _why_record(fields: tuple, value) -> str | None:
    if type(value) is not tuple:
        return "not a tuple"
    if len(value) != len(fields):
        return f"{len(value)} fields, expected {len(fields)}"
    for (name, field_type), x in zip(fields, value):
        why = field_type.why(x)
        if why:
            return f"its {name} {why}"
    return None


def keys(describe: str, known: dict) -> FieldType:
    """A dict whose listed keys, where present, hold these types (others: anything)."""
    name = f"_keys_{FieldType._count + 1}"
    lines = [f"def {name}(v):", "    if type(v) is not dict:", "        return False"]
    for key, field_type in known.items():
        lines += [f"    x = v.get({key!r}, MISSING)",
                  f"    if x is not MISSING and not ({field_type.check.format(v='x')}):",
                  "        return False"]
    function = compile_lazily("\n".join(lines + ["    return True", ""]), name)

    def explain(value):
        if type(value) is dict:
            for key, field_type in known.items():
                if key in value and field_type.why(value[key]):
                    return f"its key {key!r} {field_type.why(value[key])}"
        return None
    return function_type(describe, function, explain)


def resources_ok(v) -> bool:
    if type(v) is not dict:
        return False
    for name, amount in v.items():
        if type(name) is not str or not (type(amount) is float or type(amount) is int) \
                or not 0 <= amount <= _MAX_AMOUNT:
            return False
    return True


def is_int(v) -> bool:        # the slow path: int's subclasses and numpy's integers
    return isinstance(v, int) or (
        isinstance(v, numbers.Integral) and type(v).__module__ == "numpy")


def is_number(v) -> bool:      # floats' subclasses and numpy's, not Fraction & co
    return isinstance(v, (int, float)) or (
        isinstance(v, numbers.Real) and type(v).__module__ == "numpy")


NAMESPACE.update(is_int=is_int, is_number=is_number)

ANY = FieldType("any value", "True")
BYTES = FieldType("bytes", "type({v}) is bytes")
STR = FieldType("str", "type({v}) is str")
INT = FieldType("int", "(type({v}) is int or is_int({v}))")
# Sizes and offsets reach system calls (ftruncate, pwrite): below 2**63 there.
COUNT = FieldType("int in [0, 2**63)",
                  "((type({v}) is int or is_int({v})) and 0 <= {v} < 9223372036854775808)")
NUMBER = FieldType("number", "(type({v}) is float or type({v}) is int or is_number({v}))")
BOOL = FieldType("bool", "(type({v}) is bool or is_int({v}))")
DICT = FieldType("dict", "type({v}) is dict")
