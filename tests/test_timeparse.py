"""Instants and durations at nanosecond precision (app.timeparse)."""

from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.timeparse import (
    NS_PER_MS,
    NS_PER_S,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)

# 2024-01-02T03:04:05Z
BASE_S = calendar.timegm((2024, 1, 2, 3, 4, 5))
BASE_NS = BASE_S * NS_PER_S
MIN_NS = calendar.timegm((1, 1, 1, 0, 0, 0)) * NS_PER_S
MAX_NS = calendar.timegm((9999, 12, 31, 23, 59, 59)) * NS_PER_S + NS_PER_S - 1


# -- ISO-8601 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05",  # no offset means UTC
        "2024-01-02T05:04:05+02:00",
        "2024-01-02T05:04:05+0200",
        "2024-01-01T22:34:05-04:30",
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05-00:00",
    ],
)
def test_iso_offsets_name_the_same_instant(text):
    assert parse_timestamp(text) == BASE_NS


def test_offset_crossing_a_day_and_year_boundary():
    assert parse_timestamp("2023-12-31T23:00:00-05:00") == calendar.timegm((2024, 1, 1, 4, 0, 0)) * NS_PER_S


@pytest.mark.parametrize(
    ("fraction", "nanos"),
    [
        ("", 0),
        (".1", 100_000_000),
        (".123", 123_000_000),
        (".123456", 123_456_000),
        (".1234567", 123_456_700),
        (".123456789", 123_456_789),
        (".000000001", 1),
        (".999999999", 999_999_999),
    ],
    ids=["0", "1", "3", "6", "7", "9", "9-min", "9-max"],
)
def test_fractional_digits_keep_nanoseconds(fraction, nanos):
    assert parse_timestamp(f"2024-01-02T03:04:05{fraction}Z") == BASE_NS + nanos


def test_fraction_with_offset():
    assert parse_timestamp("2024-01-02T05:04:05.1234567+02:00") == BASE_NS + 123_456_700


def test_seven_digit_instants_100ns_apart_stay_ordered():
    first = parse_timestamp("2024-01-02T03:04:05.1234567Z")
    second = parse_timestamp("2024-01-02T03:04:05.1234568Z")
    assert first is not None and second is not None
    assert second - first == 100
    assert first < second


def test_instants_are_compared_as_instants_not_strings():
    # lexicographically the "+02:00" string sorts after, but it is 2 hours earlier
    earlier = parse_timestamp("2024-01-02T04:00:00+02:00")
    later = parse_timestamp("2024-01-02T03:00:00Z")
    assert earlier < later


def test_date_only_is_midnight_utc():
    assert parse_timestamp("2024-01-02") == calendar.timegm((2024, 1, 2, 0, 0, 0)) * NS_PER_S


def test_time_without_seconds():
    assert parse_timestamp("2024-01-02T03:04Z") == calendar.timegm((2024, 1, 2, 3, 4, 0)) * NS_PER_S


# -- epoch millis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1704164645000, BASE_NS),
        ("1704164645000", BASE_NS),
        (0, 0),
        ("0", 0),
        (-1000, -NS_PER_S),
        ("-1000", -NS_PER_S),
        (1, NS_PER_MS),
        ("1704164645000.5", BASE_NS + 500_000),
        ("-1.5", -1_500_000),
    ],
)
def test_epoch_millis(value, expected):
    assert parse_timestamp(value) == expected


# -- invalid --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",  # not a leap year
        "2024-02-30T00:00:00Z",
        "2024-04-31",
        "2024-13-01",
        "2024-00-10",
        "2024-01-00",
        "2024-01-02T24:00:00Z",
        "2024-01-02T23:60:00Z",
        "2024-01-02T23:59:60Z",
        "2024-01-02T03:04:05+19:00",
        "2024-01-02T03:04:05+02:60",
    ],
)
def test_invalid_calendar_dates_and_offsets(text):
    assert parse_timestamp(text) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        " ",
        "2024-1-2",
        "2024-01-02T03:04:05.1234567890Z",  # 10 fractional digits
        "2024-01-02T03:04:05ZZ",
        "2024-01-02T03:04:05 UTC",
        "yesterday",
        "12abc",
        None,
        True,
        False,
        float("nan"),
        float("inf"),
        [1704164645000],
        {"t": 1},
        "1" * 100,
    ],
)
def test_garbage_is_none(value):
    assert parse_timestamp(value) is None


def test_year_bounds():
    assert parse_timestamp("0001-01-01T00:00:00Z") == MIN_NS
    assert parse_timestamp("9999-12-31T23:59:59.999999999Z") == MAX_NS
    assert parse_timestamp("0000-12-31T23:59:59Z") is None
    assert parse_timestamp("10000-01-01T00:00:00Z") is None
    # inside the bounds by the calendar, outside once the offset is applied
    assert parse_timestamp("0001-01-01T00:00:00+01:00") is None
    assert parse_timestamp("9999-12-31T23:59:59-01:00") is None


@pytest.mark.parametrize("value", [10**300, -(10**300), 1e300, "9" * 40])
def test_absurd_epoch_values_are_rejected(value):
    assert parse_timestamp(value) is None


# -- format_timestamp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (BASE_NS, "2024-01-02T03:04:05.000Z"),
        (BASE_NS + 123_000_000, "2024-01-02T03:04:05.123Z"),
        (BASE_NS + 123_456_000, "2024-01-02T03:04:05.123456Z"),
        (BASE_NS + 123_456_700, "2024-01-02T03:04:05.123456700Z"),
        (BASE_NS + 1, "2024-01-02T03:04:05.000000001Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (MIN_NS, "0001-01-01T00:00:00.000Z"),
        (MAX_NS, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_timestamp(ns, text):
    assert format_timestamp(ns) == text
    assert parse_timestamp(text) == ns


@given(st.integers(min_value=MIN_NS, max_value=MAX_NS))
def test_format_then_parse_round_trips(ns):
    assert parse_timestamp(format_timestamp(ns)) == ns


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=0, max_value=999_999_999),
    st.integers(min_value=-18 * 60, max_value=18 * 60),
)
def test_parse_iso_with_any_offset_matches_arithmetic(moment, nanos, offset_minutes):
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{nanos:09d}{sign}{hh:02d}:{mm:02d}"
    )
    wall = calendar.timegm(moment.timetuple()) * NS_PER_S + nanos
    assert parse_timestamp(text) == wall - offset_minutes * 60 * NS_PER_S


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("4m", 4 * 60 * NS_PER_S),
        ("500ms", 500 * NS_PER_MS),
        ("1.5s", 1_500_000_000),
        ("10", 10 * NS_PER_S),  # bare number: seconds
        ("1h", 3600 * NS_PER_S),
        ("2d", 2 * 86400 * NS_PER_S),
        ("100ns", 100),
        ("3us", 3000),
        ("0s", 0),
        (" 1 m ", 60 * NS_PER_S),
        (5, 5 * NS_PER_S),
        (0.5, 500 * NS_PER_MS),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("4.1m", 246_000_000_000),
        ("0.071m", 4_260_000_000),
        ("2.3s", 2_300_000_000),
        ("1.1h", 3_960_000_000_000),
    ],
)
def test_parse_duration_decimal_is_exact(text, ns):
    """A decimal quantity is exact: ``4.1m`` is 246 s, not 1 ns less (no binary float rounding)."""
    assert parse_duration(text) == ns


@given(
    st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["ms", "s", "m", "h", "d"]),
)
def test_parse_duration_decimal_property(quantity, unit):
    size = {"ms": NS_PER_MS, "s": NS_PER_S, "m": 60 * NS_PER_S, "h": 3600 * NS_PER_S, "d": 86400 * NS_PER_S}[unit]
    assert parse_duration(f"{quantity}{unit}") == int(Decimal(quantity) * size)


@pytest.mark.parametrize(
    "text", ["abc", "", "   ", "-1s", "5x", "1 2s", "1.s", ".5s", "s", "1e3s", "4 minutes", True, None]
)
def test_parse_duration_invalid_raises_value_error(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_negative_number_raises(value):
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0ns"),
        (1, "1ns"),
        (1000, "1us"),
        (NS_PER_MS, "1ms"),
        (NS_PER_S, "1s"),
        (60 * NS_PER_S, "1m"),
        (3600 * NS_PER_S, "1h"),
        (86400 * NS_PER_S, "1d"),
        (1_500_000_000, "1500ms"),
        (90 * NS_PER_S, "90s"),
        (240 * NS_PER_S, "4m"),
        (1_000_001, "1000001ns"),
    ],
)
def test_format_duration(ns, text):
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


@given(st.integers(min_value=0, max_value=2**53))
def test_format_then_parse_duration_round_trips(ns):
    assert parse_duration(format_duration(ns)) == ns
