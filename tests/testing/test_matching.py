"""`value_matches` and `describe_value`: every rule on values as PyTango decodes them
(real `tango.DevState` members included), and properties over arbitrary values."""

from __future__ import annotations

import copy
import enum
import math
from decimal import Decimal
from typing import Any
from unittest import mock

import numpy as np
import pytest
import tango
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from milonga.testing.matching import DESCRIPTION_LIMIT, describe_value, value_matches

ON, OFF = tango.DevState.ON, tango.DevState.OFF
NAN = float("nan")
LABELS = ("IDLE", "BUSY", "DONE")
STATES = list(tango.DevState.values.values())  # type: ignore[attr-defined]
"""Every DevState, as both PyTango 9 (a boost enum, not iterable) and 10 list them."""


class Mode(enum.IntEnum):
    """A test author's enum for a ``DevEnum`` attribute."""

    IDLE = 0
    BUSY = 1
    DONE = 2


# PyTango builds an IntEnum class like this one for the values of a DevEnum attribute.
DecodedMode = enum.IntEnum("DecodedMode", {"IDLE": 0, "BUSY": 1, "DONE": 2})


class RaisingEq:
    """An object whose comparison raises."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


def matches(expected: object, actual: object, labels: tuple[str, ...] = ()) -> bool:
    return value_matches(expected, actual, labels)


@pytest.mark.parametrize(
    ("expected", "actual", "labels", "result"),
    [
        # DevState: by name, or the member; never by number
        ("ON", ON, (), True),
        ("OFF", ON, (), False),
        ("on", ON, (), False),
        (ON, ON, (), True),
        (ON, OFF, (), False),
        (0, ON, (), False),
        (ON, 0, (), False),
        (ON, "ON", (), False),
        (ON, DecodedMode.IDLE, (), False),
        (Mode.IDLE, ON, (), False),
        # DevEnum: as an int, by the member's name, or by label
        (Mode.DONE, 2, (), True),
        (Mode.DONE, np.int16(2), (), True),
        (Mode.DONE, DecodedMode.DONE, (), True),
        (Mode.DONE, 1, (), False),
        (Mode.DONE, 2.0, (), False),
        (Mode.DONE, "DONE", (), False),
        (2, DecodedMode.DONE, (), True),
        (2, 2, LABELS, True),
        ("DONE", DecodedMode.DONE, (), True),
        ("DONE", 2, LABELS, True),
        ("DONE", np.int32(2), LABELS, True),
        ("BUSY", 2, LABELS, False),
        ("DONE", 2, (), False),
        ("DONE", 7, LABELS, False),
        ("DONE", -1, LABELS, False),
        ("DONE", True, ("x", "DONE"), False),
        # numbers
        (1, 1.0, (), True),
        (1, np.int32(1), (), True),
        (1.0, np.uint8(1), (), True),
        (np.float64(2.5), 2.5, (), True),
        (1, 2, (), False),
        (NAN, NAN, (), True),
        (NAN, np.float32(NAN), (), True),
        (NAN, 1.0, (), False),
        (1.0, NAN, (), False),
        (0.1, np.float32(0.1), (), True),
        (0.1, 0.10000000149011612, (), False),
        (1e300, np.float32(np.inf), (), False),
        (math.inf, np.float32(np.inf), (), True),
        (2**70, 2**70, (), True),
        (2**70, 2**70 + 1, (), False),
        (Decimal("1.5"), 1.5, (), True),
        (1 + 2j, np.complex64(1 + 2j), (), True),
        (1, "1", (), False),
        ("1", 1, (), False),
        # bools match only bools
        (True, True, (), True),
        (True, np.bool_(True), (), True),
        (np.bool_(False), False, (), True),
        (True, False, (), False),
        (True, 1, (), False),
        (1, True, (), False),
        (0, np.bool_(False), (), False),
        (np.bool_(True), 1.0, (), False),
        # strings
        ("abc", "abc", (), True),
        ("abc", np.str_("abc"), (), True),
        ("abc", "abd", (), False),
        ("abc", ["a", "b", "c"], (), False),
        # None
        (None, None, (), True),
        (None, 0, (), False),
        (None, "", (), False),
        (0, None, (), False),
        ("", None, (), False),
    ],
)
def test_scalar_rules(
    expected: object, actual: object, labels: tuple[str, ...], result: bool
) -> None:
    assert matches(expected, actual, labels) is result


@pytest.mark.parametrize(
    ("expected", "actual", "labels", "result"),
    [
        # spectra: lists, tuples and arrays of the same length and matching elements
        ([1, 2, 3], np.array([1.0, 2.0, 3.0]), (), True),
        ((1, 2, 3), np.array([1, 2, 3], dtype=np.int16), (), True),
        (np.array([1, 2, 3]), [1, 2, 3], (), True),
        ([1, 2, 3], np.array([1, 2, 4]), (), False),
        ([1, 2], np.array([1, 2, 3]), (), False),
        ([1, NAN], np.array([1.0, NAN]), (), True),
        ([0.1, 0.2], np.array([0.1, 0.2], dtype=np.float32), (), True),
        ([0.1, 1e300], np.array([0.1, np.inf], dtype=np.float32), (), False),
        ([], np.array([]), (), True),
        ([], np.array([], dtype=bool), (), True),
        ([], np.array([1]), (), False),
        # bool spectra
        ([True, False], np.array([True, False]), (), True),
        ([True, False], np.array([1, 0]), (), False),
        ([1, 0], np.array([True, False]), (), False),
        ([True, 1], [True, 1], (), True),
        ([True, 1], [1, 1], (), False),
        # string spectra
        (["a", "b"], ("a", "b"), (), True),
        (("a", "b"), ["a", "b"], (), True),
        (["a", "b"], np.array(["a", "b"]), (), True),
        (["a", "b"], ["a", "c"], (), False),
        (["a", "b"], ["a"], (), False),
        # images: 2-D arrays against nested lists
        ([[1, 2], [3, 4]], np.array([[1, 2], [3, 4]]), (), True),
        ([[1, 2], [3, 4]], np.array([[1, 2], [3, 5]]), (), False),
        ([1, 2, 3, 4], np.array([[1, 2], [3, 4]]), (), False),
        ([[1, 2]], np.array([1, 2]), (), False),
        ([[1, 2], [3]], np.array([[1, 2], [3, 4]]), (), False),
        ([[NAN, 1.0]], np.array([[NAN, 1.0]], dtype=np.float32), (), True),
        # enum and state spectra, element by element
        (["ON", "OFF"], [ON, OFF], (), True),
        ([ON, OFF], [ON, OFF], (), True),
        ([0, 1], [ON, OFF], (), False),
        ([ON, OFF], np.array([0, 1]), (), False),
        (["DONE", "IDLE"], np.array([2, 0], dtype=np.int16), LABELS, True),
        ([Mode.DONE, Mode.IDLE], np.array([2, 0]), (), True),
        ([Mode.DONE, Mode.IDLE], np.array([2, 1]), (), False),
        # a scalar never matches an array, nor an array a scalar; a 0-d array is a scalar
        (1, np.array([1]), (), False),
        ([1], 1, (), False),
        ("a", ["a"], (), False),
        (["a"], "a", (), False),
        (np.array(1.5), 1.5, (), True),
        (1.5, np.array(1.5), (), True),
        (np.array([1, 2]), np.array([[1, 2]]), (), False),
        ([np.array(1.5), 2], [1.5, np.array(2)], (), True),
    ],
)
def test_array_rules(
    expected: object, actual: object, labels: tuple[str, ...], result: bool
) -> None:
    assert matches(expected, actual, labels) is result


@pytest.mark.parametrize(
    ("expected", "actual", "result"),
    [
        (pytest.approx(1.0), 1.0 + 1e-9, True),
        (pytest.approx(1.0), np.float32(1.0), True),
        (pytest.approx(1.0), 1.1, False),
        (pytest.approx(0.1, rel=1e-6), np.float32(0.1), True),
        (pytest.approx([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), True),
        (pytest.approx([1.0, 2.0]), np.array([1.0, 2.1]), False),
        (pytest.approx(np.array([1.0, 2.0])), np.array([1.0, 2.0 + 1e-9]), True),
        (pytest.approx([1.0, 2.0]), np.array([1.0, 2.0, 3.0]), False),
        ([pytest.approx(1.0), 2], np.array([1.0 + 1e-9, 2.0]), True),
        (mock.ANY, ON, True),
        (mock.ANY, None, True),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
    ],
)
def test_anything_else_matches_by_equality(expected: object, actual: object, result: bool) -> None:
    assert matches(expected, actual) is result


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (RaisingEq(), 1),
        (RaisingEq(), np.array([1, 2])),
        (object(), np.array([1, 2])),  # numpy's elementwise result is no bool
        ([RaisingEq()], [1]),
        ([1, 2], np.array(["a", "b"])),
        ([[1, 2], [3]], [[1, 2], [3, 4]]),
        ([[1, 2], 3], np.array([[1, 2], [3, 4]])),
        (np.array([1, 2]), np.array([[1, 2], [3, 4]])),
        (Decimal("sNaN"), Decimal("sNaN")),
        ([1, 2], {1, 2}),
    ],
)
def test_a_comparison_that_fails_is_no_match(expected: object, actual: object) -> None:
    assert matches(expected, actual) is False


@pytest.mark.parametrize(
    ("value", "labels", "text"),
    [
        (None, (), "-"),
        (ON, (), "ON"),
        (2, LABELS, "DONE (2)"),
        (np.int16(2), LABELS, "DONE (2)"),
        (7, LABELS, "7"),
        (2, (), "2"),
        (Mode.DONE, (), "Mode.DONE (2)"),
        (Mode.DONE, ("a", "b", "c"), "Mode.DONE (2)"),
        (True, LABELS, "True"),
        (np.bool_(False), (), "False"),
        (1.5, (), "1.5"),
        (np.float64(1.5), (), "1.5"),
        (np.float32(0.1), (), "0.1"),
        (np.int32(-3), (), "-3"),
        (NAN, (), "nan"),
        ("ON", (), "'ON'"),
        ("two\nlines", (), "'two\\nlines'"),
        (np.array([1.0, 2.0, 3.0]), (), "[1.0, 2.0, 3.0]"),
        (list(range(1, 101)), (), "[1, 2, 3, ..., 100] (100 values)"),
        (np.arange(1, 101), (), "[1, 2, 3, ..., 100] (100 values)"),
        (("a", "b"), (), "['a', 'b']"),
        ([ON, OFF], (), "[ON, OFF]"),
        (np.array([2, 0]), LABELS, "[DONE (2), IDLE (0)]"),
        (np.arange(6).reshape(2, 3), (), "[[0, 1, 2], [3, 4, 5]] (2x3)"),
        ([[1, 2], [3, 4]], (), "[[1, 2], [3, 4]] (2x2)"),
        ([[1, 2], [3]], (), "[[1, 2], [3]] (2 rows)"),
        (np.array(1.5), (), "1.5"),
        ([], (), "[]"),
        ([np.array(1.5), np.array(2)], (), "[1.5, 2]"),
    ],
)
def test_describe_value(value: object, labels: tuple[str, ...], text: str) -> None:
    assert describe_value(value, labels) == text


def test_a_long_description_is_cut_keeping_the_shape() -> None:
    text = describe_value(np.zeros((100, 300)))
    assert len(text) == DESCRIPTION_LIMIT
    assert text.startswith("[[0.0, 0.0, 0.0, ..., 0.0], [0.0, ")
    assert text.endswith("... (100x300)")


def test_an_object_whose_repr_raises_is_described_by_its_type() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no printing me")

    assert describe_value(Unprintable()) == "<Unprintable>"


# Values as an event can hold them, and values a test author can write.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(STATES),
    st.sampled_from(list(Mode)),
    st.sampled_from([np.int16(3), np.float32(0.5), np.float32(NAN), np.bool_(True), np.uint64(7)]),
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=5, min_side=0),
)
string_arrays = hnp.arrays(dtype=hnp.unicode_string_dtypes(), shape=st.integers(0, 4))
values = st.recursive(
    st.one_of(scalars, arrays, string_arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.lists(children, max_size=5).map(tuple)
    ),
    max_leaves=12,
)


@given(values)
def test_any_value_matches_itself_and_a_copy(value: object) -> None:
    assert value_matches(value, value)
    if not (tango.__version_info__ < (10,) and "DevState" in repr(value)):
        # PyTango 9's boost enums lose their name when deep-copied; events never are
        assert value_matches(value, copy.deepcopy(value), LABELS)


@given(values, values, st.lists(st.text(max_size=5), max_size=4))
def test_matching_never_raises(expected: object, actual: object, labels: list[str]) -> None:
    assert value_matches(expected, actual, labels) in (True, False)


@given(values, st.lists(st.text(), max_size=4))
def test_a_description_is_one_bounded_line(value: object, labels: list[str]) -> None:
    text = describe_value(value, labels)
    assert len(text.splitlines()) == 1
    assert len(text) <= DESCRIPTION_LIMIT


@st.composite
def numbers_and_array(draw: st.DrawFn) -> tuple[list[Any], np.ndarray]:
    """An array of numbers, and a list of the same numbers with maybe one changed, one
    left out or one more."""
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.int16, np.uint8]))
    actual = draw(hnp.arrays(dtype=dtype, shape=st.integers(0, 6)))
    expected = [number.item() for number in actual]
    other = draw(st.one_of(st.integers(-(2**53), 2**53), st.floats()))
    change = draw(st.sampled_from(["none", "replace", "drop", "add"]))
    if change == "replace" and expected:
        expected[draw(st.integers(0, len(expected) - 1))] = other
    elif change == "drop" and expected:
        expected.pop()
    elif change == "add":
        expected.append(other)
    return expected, actual


@given(numbers_and_array())
def test_arrays_of_numbers_compare_as_their_elements_do(pair: tuple[list[Any], np.ndarray]) -> None:
    expected, actual = pair
    elementwise = len(expected) == len(actual) and all(
        value_matches(wanted, got) for wanted, got in zip(expected, actual, strict=False)
    )
    assert value_matches(expected, actual) is elementwise
    assert value_matches(expected, list(actual)) is elementwise
