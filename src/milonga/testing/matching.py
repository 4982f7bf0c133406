"""Whether an event's value is the value a test expects, and short text for values.

Pure code, no Tango: the values are those PyTango decodes into ``EventData.attr_value.value``
(Python or numpy scalars, numpy arrays for spectrum and image attributes, lists or tuples of
str for string spectra, ``DevState`` members, ints or `enum.IntEnum` members for ``DevEnum``
attributes). A ``DevState`` is told by its type's name, never by importing Tango.

`value_matches(expected, actual, labels)` compares naturally, by the first rule below that
applies to ``expected``:

- ``None`` matches only ``None``.
- A bool (or ``numpy.bool_``) matches only a bool of the same truth: ``True`` does not match
  ``1``, nor ``1`` ``True``, since a test that expects a flag is not satisfied by a count.
- A ``DevState`` matches a ``DevState`` of the same name.
- Another enum member (an `enum.IntEnum` member, say) matches a ``DevEnum`` value (an int or
  an enum member, not a ``DevState``) equal to it as an int.
- A str matches an equal str, a ``DevState`` or enum member of that name, or a ``DevEnum``
  value whose label (``labels[value]``) it is. Names and labels compare exactly, case
  included.
- A number (int, float, complex, numpy scalar) matches a number of equal value: ``1``,
  ``1.0`` and ``numpy.int32(1)`` match each other, NaN matches NaN, and an int matches a
  ``DevEnum`` value equal to it. An int never matches a ``DevState``: write its name
  (``"ON"``) or the member (``DevState.ON``). When the actual value is a numpy float of less
  than double precision (``DevFloat`` spectra arrive as float32 arrays), the expected number is
  first rounded to that precision, so ``0.1`` matches ``numpy.float32(0.1)``.
- A list, tuple or numpy array matches a list, tuple or numpy array of the same shape whose
  elements match one by one by these rules, labels included: a 2-D image matches nested
  lists, a string spectrum a list of str. Arrays of numbers compare as numpy compares them
  (ints beyond 2**53 next to floats lose their last digits). A scalar never matches an array,
  nor an array a scalar; a 0-d numpy array counts as its scalar.
- Anything else matches when ``expected == actual`` is true, so ``pytest.approx(...)`` (of a
  number or of an array) and ``unittest.mock.ANY`` work.

Matching never raises: a comparison that raises, or that gives something other than a bool
(numpy's elementwise result, for example), is no match.

`describe_value(value, labels)` tells a value in at most `DESCRIPTION_LIMIT` characters on one
line: numbers as Python writes them (numpy scalars as plain numbers), a ``DevState`` by its
name, a ``DevEnum`` int with labels as ``LABEL (2)``, an enum member as ``Name.MEMBER (2)``,
strings quoted, sequences as ``[1.0, 2.0, 3.0]``, shortened past `SHOWN_ELEMENTS` elements
to ``[1, 2, 3, ..., 100] (100 values)``, 2-D arrays with their shape (``(2x3)``), and ``None``
as ``-``.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeGuard

import numpy as np

DESCRIPTION_LIMIT = 80
"""`describe_value` gives at most this many characters."""
SHOWN_ELEMENTS = 8
"""A sequence of more elements is described by its first few and its last one."""
_HEAD_ELEMENTS = 3
"""How many of the first elements a shortened sequence shows."""
_ELLIPSIS = "..."
_Sequence: TypeAlias = list[Any] | tuple[Any, ...] | np.ndarray
"""The values `value_matches` takes for arrays."""
_NUMERIC_KINDS = frozenset("iufc")
"""numpy dtype kinds of numbers (signed, unsigned, float, complex); bool is ``b``."""


def value_matches(expected: object, actual: object, labels: Sequence[str] = ()) -> bool:
    """Whether the event value ``actual`` is what a test means by ``expected``, by the rules
    of this module's docstring; ``labels`` are the enum labels of a ``DevEnum`` attribute
    (empty when unknown or not an enum). Never raises."""
    expected, actual = _scalar_of_0d(expected), _scalar_of_0d(actual)
    for applies, matches in _RULES:
        if applies(expected):
            return matches(expected, actual, labels)
    return _equals(expected, actual)


def describe_value(value: object, labels: Sequence[str] = ()) -> str:
    """``value`` told for a failure message, on one line of at most `DESCRIPTION_LIMIT`
    characters, by the rules of this module's docstring; ``labels`` name the values of a
    ``DevEnum`` attribute. Never raises."""
    value = _scalar_of_0d(value)
    if _is_sequence(value):
        body, suffix = _describe_sequence(value, labels), _shape_suffix(value)
    else:
        body, suffix = _describe_scalar(value, labels), ""
    return _one_line(body, suffix)


def _one_line(body: str, suffix: str) -> str:
    """``body`` then ``suffix`` on one line, ``body`` cut so that both fit in
    `DESCRIPTION_LIMIT` characters."""
    body = " ".join(body.splitlines())
    tail = f" {suffix}" if suffix else ""
    room = DESCRIPTION_LIMIT - len(tail)
    if len(body) > room:
        body = body[: room - len(_ELLIPSIS)] + _ELLIPSIS
    return body + tail


def _scalar_of_0d(value: object) -> object:
    """The scalar held by a 0-d numpy array; any other value as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def _is_bool(value: object) -> bool:
    """Whether ``value`` is a Python or numpy bool."""
    return isinstance(value, (bool, np.bool_))


def _name_of(value: object) -> str | None:
    """The ``name`` of an enum member (Python or boost-python enum); None for others."""
    name = getattr(value, "name", None) if isinstance(value, int) else None
    return name if isinstance(name, str) else None


def _is_state(value: object) -> bool:
    """Whether ``value`` is a ``tango.DevState`` member, told without importing Tango."""
    return _name_of(value) is not None and type(value).__name__ == "DevState"


def _is_enum_member(value: object) -> bool:
    """Whether ``value`` is a member of an int enum other than ``DevState``."""
    return not isinstance(value, bool) and _name_of(value) is not None and not _is_state(value)


def _is_number(value: object) -> bool:
    """Whether ``value`` is a number, bools excluded (enum members included)."""
    return isinstance(value, numbers.Number) and not _is_bool(value)


def _is_enum_value(value: object) -> TypeGuard[numbers.Integral]:
    """Whether ``value`` can be the value of a ``DevEnum`` attribute: an integer or an enum
    member, neither a bool nor a ``DevState``."""
    return isinstance(value, numbers.Integral) and not _is_bool(value) and not _is_state(value)


def _is_sequence(value: object) -> TypeGuard[_Sequence]:
    """Whether ``value`` is a list, a tuple or a numpy array (of at least one dimension)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, (list, tuple))


def _label_of(value: object, labels: Sequence[str]) -> str | None:
    """The label naming the ``DevEnum`` value ``value``; None if it has none."""
    if not _is_enum_value(value):
        return None
    index = int(value)
    return labels[index] if 0 <= index < len(labels) else None


def _matches_name(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected str: that str, or an enum value named or labelled so."""
    if isinstance(actual, str):
        return expected == actual
    return expected in (_name_of(actual), _label_of(actual, labels))


def _equals(expected: object, actual: object) -> bool:
    """``expected == actual`` when that gives a bool; False when it raises or gives
    anything else."""
    return _holds(lambda: expected == actual)


def _numbers_equal(expected: object, actual: object) -> bool:
    """Whether two numbers are equal, NaN equal to NaN: Python's ``==`` compares them,
    but for an ``actual`` numpy float narrower than double, which numpy compares with
    ``expected`` rounded to its precision (`_numeric_arrays_equal`)."""
    if isinstance(actual, np.floating) and actual.dtype.itemsize < 8:
        pair = _numeric_arrays(expected, actual)
        if pair is not None:
            return _numeric_arrays_equal(*pair)
    return _equals(expected, actual) or (_is_nan(expected) and _is_nan(actual))


def _is_nan(value: object) -> bool:
    """Whether ``value`` is a NaN (the one value that differs from itself)."""
    return _holds(lambda: operator.ne(value, value))


def _holds(comparison: Callable[[], object]) -> bool:
    """Whether ``comparison()`` gives True (Python's or numpy's); False when it raises or
    gives anything else, such as numpy's elementwise array."""
    try:
        result = comparison()
    except Exception:
        return False
    return _is_bool(result) and bool(result)


def _numeric_arrays(expected: object, actual: object) -> tuple[np.ndarray, np.ndarray] | None:
    """Both values as numpy arrays of numbers, or of bools; None when either is not held
    so (strings, enum members, objects, ragged nesting, numbers mixed with bools)."""
    wanted, got = _plain_array(expected), _plain_array(actual)
    if wanted is None or got is None:
        return None
    kinds = {wanted.dtype.kind == "b", got.dtype.kind == "b"}
    return (wanted, got) if len(kinds) == 1 else None


def _plain_array(value: object) -> np.ndarray | None:
    """``value`` as a numpy array of numbers or bools; None when it is not one, or holds an
    enum member or bools mixed with numbers (numpy would turn either into a plain number)."""
    if not isinstance(value, np.ndarray) and not _holds_plain_scalars(value):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, say
        return None
    return array if array.dtype.kind in _NUMERIC_KINDS | {"b"} else None


def _holds_plain_scalars(value: object) -> bool:
    """Whether every scalar in ``value`` (a scalar, or lists and tuples nesting them) is a
    number that is no enum member, or every one is a bool. Judged on one scalar of each
    type, so that a large image written as nested lists is checked quickly."""
    try:
        scalars = np.asarray(value, dtype=object).ravel()
    except (ValueError, TypeError):
        return False
    samples = {type(scalar): scalar for scalar in scalars}.values()
    if all(_is_bool(sample) for sample in samples):
        return True
    return all(_is_number(sample) and _name_of(sample) is None for sample in samples)


def _numeric_arrays_equal(expected: np.ndarray, actual: np.ndarray) -> bool:
    """Whether two arrays of numbers (or of bools) have one shape and equal elements, NaN
    equal to NaN; ``expected`` is first rounded to ``actual``'s precision when ``actual``
    holds floats narrower than double, and an element that overflows so matches nothing."""
    if expected.shape != actual.shape:
        return False
    if actual.dtype.kind == "f" and actual.dtype.itemsize < 8 and expected.dtype.kind in "iuf":
        with np.errstate(over="ignore", invalid="ignore"):
            rounded = expected.astype(actual.dtype)
        finite = np.array_equal(np.isfinite(rounded), np.isfinite(expected))
        return finite and bool(np.array_equal(rounded, actual, equal_nan=True))
    equal_nan = expected.dtype.kind in "fc" and actual.dtype.kind in "fc"
    return bool(np.array_equal(expected, actual, equal_nan=equal_nan))


def _sequences_match(expected: _Sequence, actual: _Sequence, labels: Sequence[str]) -> bool:
    """Whether two lists, tuples or arrays have one shape and matching elements: numbers and
    bools all at once through numpy, anything else element by element."""
    pair = _numeric_arrays(expected, actual)
    if pair is not None:
        return _numeric_arrays_equal(*pair)
    expected_items, actual_items = list(expected), list(actual)
    return len(expected_items) == len(actual_items) and all(
        value_matches(wanted, got, labels)
        for wanted, got in zip(expected_items, actual_items, strict=True)
    )


def _none_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected None: only None."""
    return actual is None


def _bool_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected bool: a bool of the same truth."""
    return _is_bool(actual) and bool(expected) == bool(actual)


def _state_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected ``DevState``: a ``DevState`` of the same name."""
    return _is_state(actual) and _name_of(expected) == _name_of(actual)


def _enum_member_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected enum member: a ``DevEnum`` value equal as an int."""
    return _is_enum_value(expected) and _is_enum_value(actual) and int(expected) == int(actual)


def _number_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected number: a number, not a ``DevState``, of equal value."""
    return _is_number(actual) and not _is_state(actual) and _numbers_equal(expected, actual)


def _sequence_matches(expected: object, actual: object, labels: Sequence[str]) -> bool:
    """The rule for an expected list, tuple or array: one of the same shape whose elements
    match."""
    return (
        _is_sequence(expected)
        and _is_sequence(actual)
        and _sequences_match(expected, actual, labels)
    )


_RULES: tuple[
    tuple[Callable[[object], bool], Callable[[object, object, Sequence[str]], bool]], ...
] = (
    (lambda expected: expected is None, _none_matches),
    (_is_bool, _bool_matches),
    (_is_state, _state_matches),
    (_is_enum_member, _enum_member_matches),
    (lambda expected: isinstance(expected, str), _matches_name),
    (_is_number, _number_matches),
    (_is_sequence, _sequence_matches),
)
"""`value_matches`'s rules, in order: what ``expected`` each applies to, and how it matches
``actual``; an ``expected`` none applies to matches by ``==``."""


def _describe_scalar(value: object, labels: Sequence[str]) -> str:
    """A value that is no sequence, told as `describe_value` says."""
    if value is None:
        return "-"
    if _is_state(value):
        return str(_name_of(value))
    if _is_enum_value(value):
        name, label = _name_of(value), _label_of(value, labels)
        if name is not None:
            return f"{type(value).__name__}.{name} ({int(value)})"
        if label is not None:
            return f"{label} ({int(value)})"
    if isinstance(value, np.generic):
        return str(value)  # numpy's own shortest text, without the np.float32(...) wrapper
    return _safe_repr(value)


def _safe_repr(value: object) -> str:
    """``repr(value)``; the type's name in angle brackets if that raises."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _describe_sequence(value: _Sequence, labels: Sequence[str]) -> str:
    """A list, tuple or array as ``[a, b, c]``, its elements told as `describe_value` says,
    shortened to the first few and the last past `SHOWN_ELEMENTS` elements."""
    length = len(value)
    items: list[object]
    if length > SHOWN_ELEMENTS:
        items = [*value[:_HEAD_ELEMENTS], _ELLIPSIS, value[-1]]
    else:
        items = list(value)
    texts = [
        _ELLIPSIS
        if item is _ELLIPSIS
        else _describe_sequence(item, labels)
        if _is_sequence(item)
        else _describe_scalar(_scalar_of_0d(item), labels)
        for item in items
    ]
    return f"[{', '.join(texts)}]"


def _shape_suffix(value: _Sequence) -> str:
    """``(RxC)`` for a 2-D (or deeper) array or nested sequence, ``(N values)`` for a
    shortened flat one, else nothing."""
    if isinstance(value, np.ndarray) and value.ndim > 1:
        return "(" + "x".join(str(size) for size in value.shape) + ")"
    rows = [row for row in value if _is_sequence(row)] if isinstance(value, (list, tuple)) else []
    if rows and len(rows) == len(value):
        widths = {len(row) for row in rows}
        return f"({len(rows)}x{widths.pop()})" if len(widths) == 1 else f"({len(rows)} rows)"
    length = len(value)
    return f"({length} values)" if length > SHOWN_ELEMENTS else ""
