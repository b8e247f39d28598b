"""Instants and durations the way Elasticsearch reads a ``date`` field: milliseconds (app.core.timeparse).

Elastic's indices map ``@timestamp`` as ``date``, so Elasticsearch keeps milliseconds and drops the
digits after the third fractional one (toward the past), and accepts the text of
``strict_date_optional_time||epoch_millis``: what is accepted, refused and how it is truncated
decides which sequences exist at the maxspan edge and which records are dead letters.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.timeparse import (
    MAX_MS,
    MIN_MS,
    MS_PER_S,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)

# 2024-01-02T03:04:05Z
BASE_MS = calendar.timegm((2024, 1, 2, 3, 4, 5)) * MS_PER_S


# -- ISO-8601 (strict_date_optional_time) -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05",  # no offset means UTC
        "2024-01-02T05:04:05+02:00",
        "2024-01-02T05:04:05+0200",
        "2024-01-02T05:04:05+02",
        "2024-01-01T22:34:05-04:30",
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05-00:00",
    ],
)
def test_iso_offsets_name_the_same_instant(text: str) -> None:
    assert parse_timestamp(text) == BASE_MS


def test_offset_crossing_a_day_and_year_boundary() -> None:
    assert parse_timestamp("2023-12-31T23:00:00-05:00") == calendar.timegm((2024, 1, 1, 4, 0, 0)) * MS_PER_S


@pytest.mark.parametrize(
    ("fraction", "millis"),
    [
        ("", 0),
        (".1", 100),
        (".12", 120),
        (".123", 123),
        (".1239", 123),  # truncated, never rounded
        (".123456", 123),
        (".1234567", 123),
        (".123456789", 123),
        (".000000001", 0),
        (".999999999", 999),
        (",5", 500),  # a comma is a decimal separator too
    ],
    ids=["0", "1", "2", "3", "4-truncated", "6", "7", "9", "9-min", "9-max", "comma"],
)
def test_digits_after_the_third_fractional_one_are_dropped(fraction: str, millis: int) -> None:
    assert parse_timestamp(f"2024-01-02T03:04:05{fraction}Z") == BASE_MS + millis


def test_fraction_with_offset() -> None:
    assert parse_timestamp("2024-01-02T05:04:05.1234567+02:00") == BASE_MS + 123


def test_instants_within_one_millisecond_are_equal() -> None:
    """Elasticsearch orders these by arrival: the engine must not see 100 ns between them."""
    assert parse_timestamp("2024-01-02T03:04:05.1234567Z") == parse_timestamp("2024-01-02T03:04:05.1238Z")


def test_maxspan_edge_in_seven_and_nine_digits_is_exactly_a_minute() -> None:
    """0000000 to 0009999 a minute later is 60,000.9999 ms of raw time but 60,000 ms indexed."""
    first = parse_timestamp("2024-05-14T08:00:00.0000000Z")
    last = parse_timestamp("2024-05-14T08:01:00.0009999Z")
    assert first is not None and last is not None and last - first == 60_000
    assert parse_timestamp("2024-05-14T08:01:00.000999999Z") == last


def test_instants_are_compared_as_instants_not_strings() -> None:
    # lexicographically the "+02:00" string sorts after, but it is 2 hours earlier
    earlier = parse_timestamp("2024-01-02T04:00:00+02:00")
    later = parse_timestamp("2024-01-02T03:00:00Z")
    assert earlier is not None and later is not None and earlier < later


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", (2024, 1, 1, 0, 0, 0)),
        (2024, (2024, 1, 1, 0, 0, 0)),  # a JSON number is parsed from its text: four digits are a year
        ("2024-05", (2024, 5, 1, 0, 0, 0)),
        ("2024-05-06T", (2024, 5, 6, 0, 0, 0)),
        ("2024T10:30Z", (2024, 1, 1, 10, 30, 0)),  # java.time's formatter, Elasticsearch's fallback parser
        ("2024-05-06TZ", (2024, 5, 6, 0, 0, 0)),
        ("2024-05-06T10Z", (2024, 5, 6, 10, 0, 0)),
    ],
)
def test_the_year_alone_and_partial_dates_are_dates(value: object, expected: tuple[int, ...]) -> None:
    assert parse_timestamp(value) == calendar.timegm(expected) * MS_PER_S


@pytest.mark.parametrize(
    ("text", "offset_s"),
    [
        ("2024-01-02T03:04:05+01:00:30", 3630),
        ("2024-01-02T03:04:05+010030", 3630),
        ("2024-01-02T03:04:05+02:60", 3 * 3600),  # Iso8601Parser bounds only the total offset
        ("2024-01-02T03:04:05UTC", 0),
        ("2024-01-02T03:04:05GMT+1", 3600),
        ("2024-01-02T03:04:05UT-05:30", -(5 * 3600 + 1800)),
        ("2024-01-02T03:04:05Europe/Paris", 3600),  # winter
        ("2024-07-02T03:04:05Europe/Paris", 7200),  # summer
        ("2024-03-31T02:30:00Europe/Paris", 3600),  # in the spring gap: the offset before it (java.time)
        ("2024-10-27T02:30:00Europe/Paris", 7200),  # in the autumn overlap: the earlier offset
    ],
)
def test_zone_ids_and_offsets_as_elasticsearch_reads_them(text: str, offset_s: int) -> None:
    local = datetime.fromisoformat(text[:19])
    assert parse_timestamp(text) == (calendar.timegm(local.timetuple()) - offset_s) * MS_PER_S


def test_a_negative_four_digit_number_is_a_year_before_year_one() -> None:
    assert parse_timestamp(-1000) is None and parse_timestamp("-1000") is None


def test_date_only_is_midnight_utc() -> None:
    assert parse_timestamp("2024-01-02") == calendar.timegm((2024, 1, 2, 0, 0, 0)) * MS_PER_S


@pytest.mark.parametrize(("text", "hms"), [("2024-01-02T03:04Z", (3, 4, 0)), ("2024-01-02T03Z", (3, 0, 0))])
def test_seconds_and_minutes_are_optional(text: str, hms: tuple[int, int, int]) -> None:
    assert parse_timestamp(text) == calendar.timegm((2024, 1, 2, *hms)) * MS_PER_S


# -- epoch millis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BASE_MS, BASE_MS),
        (str(BASE_MS), BASE_MS),
        (0, 0),
        ("0", 0),
        (-12345, -12345),
        ("-12345", -12345),
        (-999, -999),
        ("123.", 123),  # a trailing dot is accepted
        ("1.123456", 1),  # up to 6 fractional digits
        (1, 1),
        (f"{BASE_MS}.9", BASE_MS),  # the fraction of a millisecond is dropped toward the past
        ("-1.5", -2),
        (1.5, 1),
        (-1.5, -2),
    ],
)
def test_epoch_millis_as_a_number_or_digits(value: object, expected: int) -> None:
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
        "2024-01-02T03:04:05+18:01",  # beyond 18 hours
        "2024-01-02T03:04:05UTC+02:60",  # java.time's ZoneOffset.of checks each part after a prefix
        "2024-01-02T03:04:05Nowhere/Else",  # not a tz database region
        "2024-01-02Z",  # a zone needs the T
        "2024-13",  # month 13 of a year-month
    ],
)
def test_invalid_calendar_dates_and_offsets(text: str) -> None:
    assert parse_timestamp(text) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        " ",
        "2024-1-2",
        "2024-01-02 03:04:05Z",  # a space is not a T
        "2024-01-02T03:04:05.1234567890Z",  # 10 fractional digits
        "2024-01-02T03:04:05.Z",  # a separator without digits
        "2024-01-02T03:04:05ZZ",
        "2024-01-02T03:04:05 UTC",
        "\uff12\uff10\uff12\uff14-01-02T03:04:05Z",  # fullwidth digits
        "2024-01-02T03:04:05+\uff10\uff12:00",
        "\u0662\u0660\u0662\u0664",  # Arabic-Indic digits as epoch millis
        " 1704164645000",
        "+1704164645000",
        "yesterday",
        "12abc",
        None,
        True,
        False,
        float("nan"),
        float("inf"),
        [1704164645000, 1704164645000],
        {"t": 1},
        "1" * 100,
        "1.1234567",  # 7 fractional digits of a millisecond
        "1" * 20,  # 20 digits
    ],
)
def test_what_elasticsearch_would_not_index_is_none(value: object) -> None:
    assert parse_timestamp(value) is None


def test_year_bounds() -> None:
    assert parse_timestamp("0001-01-01T00:00:00Z") == MIN_MS
    assert parse_timestamp("9999-12-31T23:59:59.999999999Z") == MAX_MS
    assert parse_timestamp(MIN_MS) == MIN_MS and parse_timestamp(MAX_MS) == MAX_MS
    assert parse_timestamp(MIN_MS - 1) is None and parse_timestamp(MAX_MS + 1) is None
    assert parse_timestamp("0000-12-31T23:59:59Z") is None
    assert parse_timestamp("10000-01-01T00:00:00Z") is None
    # inside the bounds by the calendar, outside once the offset is applied
    assert parse_timestamp("0001-01-01T00:00:00+01:00") is None
    assert parse_timestamp("9999-12-31T23:59:59-01:00") is None


@pytest.mark.parametrize("value", [10**300, -(10**300), 1e300, "9" * 40])
def test_absurd_epoch_values_are_rejected(value: object) -> None:
    assert parse_timestamp(value) is None


# -- format_timestamp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (BASE_MS, "2024-01-02T03:04:05.000Z"),
        (BASE_MS + 123, "2024-01-02T03:04:05.123Z"),
        (BASE_MS + 1, "2024-01-02T03:04:05.001Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (MIN_MS, "0001-01-01T00:00:00.000Z"),
        (MAX_MS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_timestamp_is_kibanas_iso_with_three_digits(ms: int, text: str) -> None:
    assert format_timestamp(ms) == text
    assert parse_timestamp(text) == ms


@given(st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_format_then_parse_round_trips(ms: int) -> None:
    assert parse_timestamp(format_timestamp(ms)) == ms


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=0, max_value=999_999_999),
    st.integers(min_value=-18 * 60, max_value=18 * 60),
)
def test_parse_iso_with_any_offset_matches_arithmetic(moment: datetime, nanos: int, offset_minutes: int) -> None:
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{nanos:09d}{sign}{hh:02d}:{mm:02d}"
    )
    wall = calendar.timegm(moment.timetuple()) * MS_PER_S + nanos // 1_000_000
    assert parse_timestamp(text) == wall - offset_minutes * 60 * MS_PER_S


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("4m", 4 * 60_000),
        ("500ms", 500),
        ("1.5s", 1_500),
        ("1h", 3_600_000),
        ("2d", 2 * 86_400_000),
        ("0s", 0),
        (" 90s ", 90_000),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("4.1m", 246_000), ("0.071m", 4_260), ("2.3s", 2_300), ("1.1h", 3_960_000)],
)
def test_parse_duration_decimal_is_exact(text: str, ms: int) -> None:
    """A decimal quantity is exact: ``4.1m`` is 246 s, not 1 ms less (no binary float rounding)."""
    assert parse_duration(text) == ms


@given(
    st.decimals(min_value=0, max_value=10_000, places=0, allow_nan=False, allow_infinity=False),
    st.sampled_from(["ms", "s", "m", "h", "d"]),
)
def test_parse_duration_property(quantity: Decimal, unit: str) -> None:
    size = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    assert parse_duration(f"{quantity}{unit}") == int(quantity) * size


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "",
        "   ",
        "10",  # a unit is required: no silent seconds
        "-1s",
        "5x",
        "1 2s",
        "1 s",
        "1.s",
        ".5s",
        "s",
        "1e3s",
        "100ns",
        "3us",
        "4 minutes",
        "0.5ms",  # not a whole number of milliseconds
        True,
        None,
        5,
    ],
)
def test_parse_duration_invalid_raises_value_error_naming_the_units(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (1, "1ms"),
        (1_000, "1s"),
        (60_000, "1m"),
        (3_600_000, "1h"),
        (86_400_000, "1d"),
        (1_500, "1500ms"),
        (90_000, "90s"),
        (240_000, "4m"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text
    assert parse_duration(text) == ms


@given(st.integers(min_value=0, max_value=2**53))
def test_format_then_parse_duration_round_trips(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms
