"""Timeframe parsing/flooring and the market calendars (24/7 and NYSE sessions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.data.calendar import Calendar, calendar_for_symbol
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, WorkbenchError


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def as_ts(us: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True))


TF = Timeframe.parse


# ---------------------------------------------------------------------- Timeframe
@pytest.mark.parametrize(
    ("text", "seconds", "name"),
    [
        ("1m", 60, "1m"),
        ("5m", 300, "5m"),
        ("15m", 900, "15m"),
        ("1h", 3600, "1h"),
        ("4h", 4 * 3600, "4h"),
        ("1d", 86400, "1d"),
        ("1w", 7 * 86400, "1w"),
        ("2w", 14 * 86400, "2w"),
        ("60m", 3600, "1h"),
        ("90m", 5400, "90m"),
        ("24h", 86400, "1d"),
        ("7d", 7 * 86400, "1w"),
        (" 15m ", 900, "15m"),
    ],
)
def test_timeframe_parse_good(text: str, seconds: int, name: str) -> None:
    tf = TF(text)
    assert tf.seconds == seconds
    assert tf.name == name
    assert str(tf) == name
    assert tf.micros == seconds * 1_000_000
    assert tf.delta == pd.Timedelta(seconds=seconds)
    assert TF(tf) is tf
    assert TF(tf.name) == tf


@pytest.mark.parametrize(
    "text", ["", "m", "0m", "0h", "1x", "1M", "1H", "1.5h", "-1m", "1 h", "h1", "1mm", "10d", "8d"]
)
def test_timeframe_parse_bad(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        TF(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert repr(text) in msg
    assert isinstance(info.value, WorkbenchError)


def test_timeframe_orders_by_length() -> None:
    assert sorted([TF("1d"), TF("1m"), TF("4h"), TF("5m")]) == [
        TF("1m"), TF("5m"), TF("4h"), TF("1d")
    ]


@pytest.mark.parametrize(
    ("tf", "ts", "floored"),
    [
        ("1m", "2024-03-05 12:34:56.789", "2024-03-05 12:34"),
        ("5m", "2024-03-05 12:34:56", "2024-03-05 12:30"),
        ("15m", "2024-03-05 12:45:00", "2024-03-05 12:45"),
        ("1h", "2024-03-05 12:59:59.999999", "2024-03-05 12:00"),
        ("4h", "2024-03-05 03:59", "2024-03-05 00:00"),
        ("4h", "2024-03-05 21:00", "2024-03-05 20:00"),
        ("1d", "2024-03-05 23:59", "2024-03-05 00:00"),
        ("1d", "2024-12-31 23:59:59", "2024-12-31 00:00"),
        # weeks start on Monday: 2024-03-04 is a Monday, 2024-03-10 a Sunday
        ("1w", "2024-03-06 10:00", "2024-03-04 00:00"),
        ("1w", "2024-03-10 23:59", "2024-03-04 00:00"),
        ("1w", "2024-03-11 00:00", "2024-03-11 00:00"),
        ("1w", "1970-01-01 00:00", "1969-12-29 00:00"),
        ("2w", "1970-01-19 00:00", "1970-01-19 00:00"),
        ("2w", "1970-01-18 00:00", "1970-01-05 00:00"),
    ],
)
def test_timeframe_floor(tf: str, ts: str, floored: str) -> None:
    assert TF(tf).floor(utc(ts)) == utc(floored)


def test_timeframe_floor_converts_other_zones_to_utc() -> None:
    ny = pd.Timestamp("2024-03-05 09:45", tz="America/New_York")  # 14:45 UTC
    assert TF("1h").floor(ny) == utc("2024-03-05 14:00")
    assert TF("1h").floor(ny).tz is not None


def test_timeframe_floor_matches_pandas_epoch_floor() -> None:
    rng = np.random.default_rng(3)
    stamps = pd.to_datetime(rng.integers(0, 2_000_000_000, 200), unit="s", utc=True)
    for name, rule in [("1m", "1min"), ("5m", "5min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")]:
        tf = TF(name)
        assert [tf.floor(t) for t in stamps] == list(stamps.floor(rule)), name


@pytest.mark.parametrize(
    ("fine", "coarse", "expected"),
    [
        ("1m", "1m", True),
        ("1m", "5m", True),
        ("1m", "7m", True),
        ("5m", "1h", True),
        ("15m", "1h", True),
        ("1h", "4h", True),
        ("4h", "1d", True),
        ("1d", "1w", True),
        ("1h", "1w", True),
        ("5m", "1m", False),
        ("5m", "7m", False),
        ("1h", "90m", False),
        ("1d", "1h", False),
        ("1w", "1d", False),
        ("4h", "1w", True),
        ("90m", "1d", True),
        ("7m", "1h", False),
    ],
)
def test_timeframe_divides(fine: str, coarse: str, expected: bool) -> None:
    assert TF(fine).divides(TF(coarse)) is expected


# ---------------------------------------------------------------------- 24/7 calendar
def test_always_open_expected_is_inclusive_grid() -> None:
    cal = Calendar()
    assert cal.always_open
    got = cal.expected(utc("2024-01-01 00:00"), utc("2024-01-01 03:00"), TF("1h"))
    assert list(as_ts(got)) == list(pd.date_range("2024-01-01", periods=4, freq="1h", tz="UTC"))
    assert got.dtype == np.int64


def test_always_open_expected_rounds_start_up_to_the_grid() -> None:
    cal = Calendar()
    got = cal.expected(utc("2024-01-01 00:07"), utc("2024-01-01 00:29:59"), TF("5m"))
    assert list(as_ts(got)) == [utc(f"2024-01-01 00:{m:02d}") for m in (10, 15, 20, 25)]
    # a range inside one bucket has no bar opening in it
    assert len(cal.expected(utc("2024-01-01 00:01"), utc("2024-01-01 00:04"), TF("5m"))) == 0


def test_always_open_expected_counts_across_year_and_weekend() -> None:
    cal = Calendar()
    got = cal.expected(utc("2024-12-31 00:00"), utc("2025-01-01 23:59"), TF("1m"))
    assert len(got) == 2 * 1440
    assert np.all(np.diff(got) == 60_000_000)
    days = cal.expected(utc("2024-01-01"), utc("2024-12-31"), TF("1d"))
    assert len(days) == 366  # leap year, weekends included
    weeks = cal.expected(utc("2024-01-01"), utc("2024-01-31"), TF("1w"))
    assert list(as_ts(weeks)) == [utc(d) for d in
                                  ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22",
                                   "2024-01-29")]


@pytest.mark.parametrize(
    ("ts", "tf", "nxt"),
    [
        ("2024-01-01 00:00", "1h", "2024-01-01 01:00"),
        ("2024-01-01 23:00", "1h", "2024-01-02 00:00"),
        ("2024-12-31 23:59", "1m", "2025-01-01 00:00"),
        ("2024-01-05 00:00", "1d", "2024-01-06 00:00"),  # Friday -> Saturday: crypto trades
        ("2024-01-01 00:00", "1w", "2024-01-08 00:00"),
    ],
)
def test_always_open_next_expected(ts: str, tf: str, nxt: str) -> None:
    assert Calendar().next_expected(utc(ts), TF(tf)) == utc(nxt)


@pytest.mark.parametrize("code", ["24/7", "XNYS"])
def test_next_expected_from_a_time_between_bars(code: str) -> None:
    cal = Calendar(code)
    # 2024-07-01 is a Monday; NYSE trades 13:30-20:00 UTC in summer
    assert cal.next_expected(utc("2024-07-01 14:30:30"), TF("1m")) == utc("2024-07-01 14:31")
    assert cal.next_expected(utc("2024-07-01 14:30"), TF("1h")) == utc("2024-07-01 15:00")


def test_calendar_for_symbol() -> None:
    assert calendar_for_symbol("BTC/USDT").always_open
    assert calendar_for_symbol("AAPL") == Calendar("XNYS")
    assert not calendar_for_symbol("AAPL").always_open


def test_unknown_calendar_code_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean") as info:
        Calendar("XNYZ").expected(utc("2024-01-02"), utc("2024-01-03"), TF("1m"))
    assert "'XNYZ'" in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- NYSE calendar
XNYS = Calendar("XNYS")


def test_xnys_regular_summer_session_minutes() -> None:
    got = as_ts(XNYS.expected(utc("2024-07-01"), utc("2024-07-01 23:59"), TF("1m")))
    assert len(got) == 390
    assert got[0] == utc("2024-07-01 13:30")  # 09:30 EDT
    assert got[-1] == utc("2024-07-01 19:59")  # last bar of the 16:00 EDT close


def test_xnys_regular_winter_session_minutes() -> None:
    got = as_ts(XNYS.expected(utc("2024-01-02"), utc("2024-01-02 23:59"), TF("1m")))
    assert len(got) == 390
    assert got[0] == utc("2024-01-02 14:30")  # 09:30 EST
    assert got[-1] == utc("2024-01-02 20:59")


def test_xnys_holiday_has_no_bars() -> None:
    for tf in ("1m", "5m", "1h", "1d"):
        got = XNYS.expected(utc("2024-07-04"), utc("2024-07-04 23:59"), TF(tf))
        assert len(got) == 0, tf
    # weekends too
    assert len(XNYS.expected(utc("2024-07-06"), utc("2024-07-07 23:59"), TF("1m"))) == 0


def test_xnys_early_close_before_independence_day() -> None:
    got = as_ts(XNYS.expected(utc("2024-07-03"), utc("2024-07-03 23:59"), TF("1m")))
    assert got[0] == utc("2024-07-03 13:30")
    assert got[-1] == utc("2024-07-03 16:59")  # 13:00 EDT close = 17:00 UTC
    assert len(got) == 210
    hours = as_ts(XNYS.expected(utc("2024-07-03"), utc("2024-07-03 23:59"), TF("1h")))
    assert list(hours) == [utc(f"2024-07-03 {h:02d}:00") for h in range(13, 17)]


def test_xnys_daily_sessions_in_a_month() -> None:
    days = as_ts(XNYS.expected(utc("2024-07-01"), utc("2024-07-31"), TF("1d")))
    # 23 weekdays in July 2024, minus Independence Day
    assert len(days) == 22
    assert utc("2024-07-04") not in days
    assert all(d.weekday() < 5 for d in days)
    assert all(d == d.normalize() for d in days)  # daily bars open at midnight UTC
    # November 2024: 21 weekdays minus Thanksgiving (28th)
    nov = XNYS.expected(utc("2024-11-01"), utc("2024-11-30"), TF("1d"))
    assert len(nov) == 20


def test_xnys_five_minute_bars_of_a_session() -> None:
    got = as_ts(XNYS.expected(utc("2024-07-01"), utc("2024-07-01 23:59"), TF("5m")))
    assert len(got) == 78
    assert got[0] == utc("2024-07-01 13:30")
    assert got[-1] == utc("2024-07-01 19:55")


def test_xnys_next_expected_skips_nights_holidays_and_weekends() -> None:
    m = TF("1m")
    assert XNYS.next_expected(utc("2024-07-01 19:59"), m) == utc("2024-07-02 13:30")
    assert XNYS.next_expected(utc("2024-07-03 16:59"), m) == utc("2024-07-05 13:30")
    assert XNYS.next_expected(utc("2024-07-05 19:59"), m) == utc("2024-07-08 13:30")
    assert XNYS.next_expected(utc("2024-07-01 13:30"), m) == utc("2024-07-01 13:31")
    assert XNYS.next_expected(utc("2024-07-03"), TF("1d")) == utc("2024-07-05")


def test_xnys_is_open_at() -> None:
    stamps = pd.DatetimeIndex([utc("2024-07-01 13:29"), utc("2024-07-01 13:30"),
                               utc("2024-07-03 16:59"), utc("2024-07-03 17:00"),
                               utc("2024-07-04 15:00"), utc("2024-07-06 15:00")])
    mask = XNYS.is_open_at(stamps.as_unit("us").asi8, TF("1m"))
    assert mask.tolist() == [False, True, True, False, False, False]
    assert Calendar().is_open_at(stamps.as_unit("us").asi8, TF("1m")).all()
