"""The Parquet lake: round trips, idempotent merges, resampling, coverage, export/import, errors.

Everything runs against real files in a temporary data root; resampled bars are checked against an
independent pandas computation.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bars_factory import candles, minute_bars, random_bars, session_bars

from workbench import Lake
from workbench.data.calendar import Calendar
from workbench.data.lake import COVERAGE_FILE, DATA_FILE, Layout, SeriesKey
from workbench.data.sources.synthetic import SyntheticSource
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError, LakeCorruptError, WorkbenchError

SRC = "synthetic"
BTC = "BTC/USDT"
ETH = "ETH/USDT"
VALUES = ["open", "high", "low", "close", "volume"]


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def year_file(lake: Lake, symbol: str, year: int, tf: str = "1m", source: str = SRC) -> Path:
    return lake.series_dir(source, symbol, tf) / f"year={year}" / DATA_FILE


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the data root (but the lock files) with its bytes."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame, *, exact: bool = True) -> None:
    want = want.reset_index(drop=True).copy()
    want["ts"] = pd.DatetimeIndex(want["ts"]).as_unit("us")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=exact,
                                  rtol=1e-12, atol=0)


def one_line_error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    assert isinstance(exc.value, WorkbenchError)
    return msg


# ---------------------------------------------------------------------- write / read basics
def test_write_read_roundtrip_dtypes_and_layout(lake: Lake) -> None:
    bars = minute_bars("2024-03-01", 2_000, seed=1)
    result = lake.write_bars(SRC, BTC, "1m", bars)
    assert (result.rows_in, result.rows_added, result.rows_replaced) == (2_000, 2_000, 0)
    assert str(result.key) == f"{SRC}:{BTC}:1m"

    got = lake.read_bars(SRC, BTC, "1m")
    assert str(got["ts"].dtype) == "datetime64[us, UTC]"
    for c in VALUES:
        assert got[c].dtype == np.float64, c
    assert list(got.columns) == ["ts", *VALUES]
    assert_bars_equal(got, bars)

    # the documented on-disk layout, one sorted row per timestamp, ts stored as UTC microseconds
    path = year_file(lake, BTC, 2024)
    assert path.parent.parent.name == "symbol=BTC%2FUSDT"
    assert path.parent.parent.parent.name == "timeframe=1m"
    table = pq.read_table(path)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == 2_000
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) > 0)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert lake.series() == [lake.series()[0]]
    assert (lake.series()[0].source, lake.series()[0].symbol) == (SRC, BTC)


def test_optional_columns_roundtrip_and_resample(lake: Lake) -> None:
    bars = minute_bars("2024-03-01", 120, seed=2)
    bars["trades"] = np.arange(120, dtype=float) + 1
    bars["vwap"] = (bars["high"] + bars["low"]) / 2
    lake.write_bars(SRC, BTC, "1m", bars)
    got = lake.read_bars(SRC, BTC, "1m")
    assert list(got.columns) == ["ts", *VALUES, "trades", "vwap"]
    assert_bars_equal(got, bars)
    hourly = lake.read_bars(SRC, BTC, "1h")
    assert len(hourly) == 2
    first = bars.iloc[:60]
    assert hourly["trades"].iloc[0] == first["trades"].sum()
    expected_vwap = (first["vwap"] * first["volume"]).sum() / first["volume"].sum()
    assert hourly["vwap"].iloc[0] == pytest.approx(expected_vwap, rel=1e-12)


def test_timestamps_in_other_zones_are_stored_as_utc(lake: Lake) -> None:
    bars = minute_bars("2024-03-01 14:30", 30, seed=3)
    local = bars.assign(ts=bars["ts"].dt.tz_convert("America/New_York"))
    lake.write_bars(SRC, BTC, "1m", local)
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m"), bars)


def test_bars_indexed_by_time_are_accepted(lake: Lake) -> None:
    bars = minute_bars("2024-03-01", 30, seed=3)
    lake.write_bars(SRC, BTC, "1m", bars.set_index("ts"))
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m"), bars)


def test_same_write_twice_is_idempotent(lake: Lake) -> None:
    bars = minute_bars("2024-12-31 20:00", 600, seed=4)  # spans two year files
    lake.write_bars(SRC, BTC, "1m", bars)
    files = {y: year_file(lake, BTC, y).read_bytes() for y in (2024, 2025)}
    fp = lake.fingerprint(SRC, BTC, "1m")
    cov = lake.series_coverage(SRC, BTC, "1m")

    again = lake.write_bars(SRC, BTC, "1m", bars)
    assert (again.rows_added, again.rows_replaced) == (0, 600)
    assert {y: year_file(lake, BTC, y).read_bytes() for y in (2024, 2025)} == files
    assert lake.fingerprint(SRC, BTC, "1m") == fp
    cov2 = lake.series_coverage(SRC, BTC, "1m")
    assert (cov2.rows, cov2.first, cov2.last, cov2.gaps) == (cov.rows, cov.first, cov.last,
                                                             cov.gaps)
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m"), bars)


def test_overlapping_write_newer_values_win(lake: Lake) -> None:
    old = minute_bars("2024-05-01", 100, seed=5)
    new = minute_bars("2024-05-01 00:50", 100, seed=6)  # rows 50..149, different values
    lake.write_bars(SRC, BTC, "1m", old)
    result = lake.write_bars(SRC, BTC, "1m", new)
    assert (result.rows_in, result.rows_added, result.rows_replaced) == (100, 50, 50)
    got = lake.read_bars(SRC, BTC, "1m")
    assert len(got) == 150
    assert got["ts"].is_unique and got["ts"].is_monotonic_increasing
    assert_bars_equal(got, pd.concat([old.iloc[:50], new]))


def test_overwrite_in_the_middle_and_fill_a_hole(lake: Lake) -> None:
    base = minute_bars("2024-05-01", 100, seed=7)
    holed = base.drop(index=range(40, 50))
    lake.write_bars(SRC, BTC, "1m", holed)
    # rewrite 20..59 (30 stored rows replaced, 10 missing rows added) with new values
    patch = random_bars(base["ts"].iloc[20:60], seed=8)
    result = lake.write_bars(SRC, BTC, "1m", patch)
    assert (result.rows_added, result.rows_replaced) == (10, 30)
    got = lake.read_bars(SRC, BTC, "1m")
    assert_bars_equal(got, pd.concat([base.iloc[:20], patch, base.iloc[60:]]))
    # an older batch written earlier in time than everything stored
    early = minute_bars("2024-04-30 23:00", 30, seed=9)
    assert lake.write_bars(SRC, BTC, "1m", early).rows_added == 30
    got = lake.read_bars(SRC, BTC, "1m")
    assert got["ts"].is_monotonic_increasing and got["ts"].is_unique
    assert len(got) == 130


def test_writes_spanning_a_year_boundary(lake: Lake) -> None:
    bars = minute_bars("2024-12-31 23:00", 121, seed=10)  # to 2025-01-01 01:00 inclusive
    result = lake.write_bars(SRC, BTC, "1m", bars)
    assert result.rows_added == 121
    t2024 = pq.read_table(year_file(lake, BTC, 2024)).to_pandas()
    t2025 = pq.read_table(year_file(lake, BTC, 2025)).to_pandas()
    assert (len(t2024), len(t2025)) == (60, 61)
    assert t2024["ts"].max() == utc("2024-12-31 23:59")
    assert t2025["ts"].min() == utc("2025-01-01 00:00")

    # an overlapping rewrite across the boundary, changed values, 30 new rows at the end
    patch = minute_bars("2024-12-31 23:30", 121, seed=11)
    result = lake.write_bars(SRC, BTC, "1m", patch)
    assert (result.rows_added, result.rows_replaced) == (30, 91)
    got = lake.read_bars(SRC, BTC, "1m")
    assert_bars_equal(got, pd.concat([bars.iloc[:30], patch]))
    sliced = lake.read_bars(SRC, BTC, "1m", "2024-12-31 23:58", "2025-01-01 00:02")
    assert list(sliced["ts"]) == list(pd.date_range("2024-12-31 23:58", periods=4, freq="1min",
                                                    tz="UTC"))
    cov = lake.series_coverage(SRC, BTC, "1m")
    assert set(cov.files) == {f"year=2024/{DATA_FILE}", f"year=2025/{DATA_FILE}"}
    assert (cov.rows, cov.missing_bars) == (151, 0)


def test_read_bounds_start_inclusive_end_exclusive(lake: Lake) -> None:
    bars = minute_bars("2024-06-01", 300, seed=12)
    lake.write_bars(SRC, BTC, "1m", bars)
    got = lake.read_bars(SRC, BTC, "1m", "2024-06-01 01:00", "2024-06-01 02:00")
    assert_bars_equal(got, bars.iloc[60:120])
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m", start="2024-06-01 04:00"), bars.iloc[240:])
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m", end="2024-06-01 00:10"), bars.iloc[:10])
    # a time with a zone is converted; a time without one is UTC
    ny = pd.Timestamp("2024-05-31 21:00", tz="America/New_York")  # 01:00 UTC
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m", ny, "2024-06-01T01:05Z"), bars.iloc[60:65])
    # end just after a bar includes it; end on a bar excludes it
    assert len(lake.read_bars(SRC, BTC, "1m", "2024-06-01", "2024-06-01 00:00:01")) == 1
    empty = lake.read_bars(SRC, BTC, "1m", "2030-01-01", "2030-02-01")
    assert empty.empty
    assert list(empty.columns) == ["ts", *VALUES]
    assert str(empty["ts"].dtype) == "datetime64[us, UTC]"


def test_multi_symbol_long_and_wide(lake: Lake) -> None:
    btc = minute_bars("2024-06-01 00:00", 10, seed=13)
    eth = minute_bars("2024-06-01 00:05", 10, seed=14)
    lake.write_bars(SRC, BTC, "1m", btc)
    lake.write_bars(SRC, ETH, "1m", eth)

    long = lake.read_bars(SRC, [ETH, BTC, ETH], "1m")
    assert list(long.columns) == ["symbol", "ts", *VALUES]
    assert list(long["symbol"]) == [ETH] * 10 + [BTC] * 10
    assert_bars_equal(long[long["symbol"] == BTC].drop(columns="symbol"), btc)
    assert_bars_equal(long[long["symbol"] == ETH].drop(columns="symbol"), eth)

    wide = lake.read_bars(SRC, [BTC, ETH], "1m", layout="wide")
    assert wide.columns.names == ["field", "symbol"]
    assert list(wide.columns) == [(f, s) for f in VALUES for s in (BTC, ETH)]
    assert len(wide) == 15
    assert list(wide.index) == list(pd.date_range("2024-06-01", periods=15, freq="1min",
                                                  tz="UTC"))
    np.testing.assert_array_equal(wide[("close", BTC)].iloc[:10], btc["close"])
    assert wide[("close", BTC)].iloc[10:].isna().all()
    assert wide[("close", ETH)].iloc[:5].isna().all()
    np.testing.assert_array_equal(wide[("close", ETH)].iloc[5:], eth["close"])
    # wide, resampled and bounded
    w5 = lake.read_bars(SRC, [BTC, ETH], "5m", end="2024-06-01 00:10", layout=Layout.WIDE)
    assert list(w5.index) == [utc("2024-06-01 00:00"), utc("2024-06-01 00:05")]
    assert w5[("volume", BTC)].iloc[0] == pytest.approx(btc["volume"].iloc[:5].sum(), rel=1e-12)
    assert np.isnan(w5[("open", ETH)].iloc[0])


# ---------------------------------------------------------------------- resampling vs pandas
RULES = {
    "5m": ("5min", "epoch"),
    "15m": ("15min", "epoch"),
    "1h": ("1h", "epoch"),
    "4h": ("4h", "epoch"),
    "1d": ("1D", "epoch"),
    "1w": ("7D", pd.Timestamp("1970-01-05")),  # weeks start on Mondays
}


def pandas_resample(bars: pd.DataFrame, tf: str) -> pd.DataFrame:
    """The reference: plain pandas resampling on naive UTC times, empty buckets dropped.

    (pandas ignores `origin` for day-based rules on a tz-aware index, hence naive times.)
    """
    rule, origin = RULES[tf]
    cols = [c for c in bars.columns if c != "ts"]
    naive = bars.assign(ts=bars["ts"].dt.tz_convert(None)).set_index("ts")[cols]
    g = naive.resample(rule, origin=origin, label="left", closed="left")
    how = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    out = g.agg({c: how[c] for c in cols})
    out = out[g.size() > 0]
    out.index = out.index.tz_localize("UTC").as_unit("us")
    return out.rename_axis("ts").reset_index()


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pd.DataFrame]:
    """24/7 1m bars from Thursday 2024-12-19 00:07 to 2025-01-14 10:33 with holes of every size."""
    ts = pd.date_range("2024-12-19 00:07", "2025-01-14 10:33", freq="1min", tz="UTC")
    bars = random_bars(ts, seed=20)
    rng = np.random.default_rng(21)
    keep = rng.random(len(bars)) > 0.03  # scattered missing minutes
    keep[0] = keep[-1] = True
    t = bars["ts"]
    keep &= ~((t >= utc("2024-12-27 02:13")) & (t < utc("2024-12-27 09:41")))  # across 4h edges
    keep &= ~((t >= utc("2025-01-02")) & (t < utc("2025-01-03")))  # a whole day
    keep &= ~((t >= utc("2024-12-31 23:50")) & (t < utc("2025-01-01 00:20")))  # across years
    bars = bars[keep].reset_index(drop=True)
    lake = Lake(tmp_path_factory.mktemp("gappy"))
    # written in shuffled, overlapping batches: the lake must still merge them right
    order = rng.permutation(len(bars))
    for part in np.array_split(order, 7):
        lake.write_bars(SRC, BTC, "1m", bars.iloc[np.sort(part)])
    lake.write_bars(SRC, BTC, "1m", bars.iloc[1000:3000])
    return lake, bars


@pytest.mark.parametrize("tf", list(RULES))
def test_resample_matches_pandas(gappy: tuple[Lake, pd.DataFrame], tf: str) -> None:
    lake, bars = gappy
    ref = pandas_resample(bars, tf)
    got_all = lake.read_bars(SRC, BTC, tf, include_partial=True)
    assert str(got_all["ts"].dtype) == "datetime64[us, UTC]"
    assert_bars_equal(got_all, ref, exact=False)
    np.testing.assert_array_equal(got_all[["open", "high", "low", "close"]],
                                  ref[["open", "high", "low", "close"]])
    # the data starts and ends inside a bucket of every timeframe: both are left out by default
    got = lake.read_bars(SRC, BTC, tf)
    assert_bars_equal(got, ref.iloc[1:-1], exact=False)
    step = Timeframe.parse(tf)
    assert all(step.floor(t) == t for t in got["ts"])
    if tf == "1w":
        assert (got["ts"].dt.day_of_week == 0).all()  # Mondays


@pytest.mark.parametrize("tf", ["5m", "1h", "4h", "1d"])
def test_resample_with_bounds_matches_pandas(gappy: tuple[Lake, pd.DataFrame], tf: str) -> None:
    lake, bars = gappy
    start, end = utc("2024-12-30 00:00"), utc("2025-01-05 00:00")
    ref = pandas_resample(bars, tf)
    ref = ref[(ref["ts"] >= start) & (ref["ts"] < end)]
    assert_bars_equal(lake.read_bars(SRC, BTC, tf, start, end), ref, exact=False)
    # a start inside a bucket leaves that bucket out (its open time is before start)
    got = lake.read_bars(SRC, BTC, tf, start + pd.Timedelta("1min"), end)
    assert_bars_equal(got, ref.iloc[1:], exact=False)


def test_resample_prefers_the_coarsest_stored_timeframe_that_divides(lake: Lake) -> None:
    bars = minute_bars("2024-06-01", 24 * 60, seed=22)
    lake.write_bars(SRC, BTC, "1m", bars)
    five = pandas_resample(bars, "5m")
    # store 5m bars with a marker in volume: a 1h read must come from them, not from 1m
    lake.write_bars(SRC, BTC, "5m", five.assign(volume=1.0))
    hourly = lake.read_bars(SRC, BTC, "1h")
    assert len(hourly) == 24
    assert (hourly["volume"] == 12.0).all()
    np.testing.assert_array_equal(hourly["close"], pandas_resample(bars, "1h")["close"])
    # 7m is not a multiple of 5m: it comes from 1m
    seven = lake.read_bars(SRC, BTC, "7m", include_partial=True)
    assert seven["volume"].sum() == pytest.approx(bars["volume"].sum(), rel=1e-12)


def test_partial_last_bucket_excluded_unless_asked(lake: Lake) -> None:
    bars = minute_bars("2024-06-01 00:00", 90, seed=23)  # 00:00 .. 01:29
    lake.write_bars(SRC, BTC, "1m", bars)
    assert list(lake.read_bars(SRC, BTC, "1h")["ts"]) == [utc("2024-06-01 00:00")]
    with_partial = lake.read_bars(SRC, BTC, "1h", include_partial=True)
    assert list(with_partial["ts"]) == [utc("2024-06-01 00:00"), utc("2024-06-01 01:00")]
    last = with_partial.iloc[1]
    assert last["open"] == bars["open"].iloc[60]
    assert last["close"] == bars["close"].iloc[89]
    assert last["volume"] == pytest.approx(bars["volume"].iloc[60:].sum(), rel=1e-12)
    # the bucket completes: now it is a normal bar
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-06-01 01:30", 30, seed=24))
    assert len(lake.read_bars(SRC, BTC, "1h")) == 2
    # a day with only two hours stored so far is still forming
    assert list(lake.read_bars(SRC, BTC, "1d")["ts"]) == []
    assert len(lake.read_bars(SRC, BTC, "1d", include_partial=True)) == 1


# ---------------------------------------------------------------------- equities (NYSE sessions)
def pandas_sessions(bars: pd.DataFrame) -> pd.DataFrame:
    g = bars.groupby(bars["ts"].dt.floor("1D"))
    out = g.agg(open=("open", "first"), high=("high", "max"), low=("low", "min"),
                close=("close", "last"), volume=("volume", "sum"))
    return out.rename_axis("ts").reset_index()


def test_equity_minutes_to_days_one_bar_per_session(lake: Lake) -> None:
    bars = session_bars("2024-07-01", "2024-07-09 23:59", seed=30)  # Mon..Tue, July 4th shut
    assert bars["ts"].dt.date.nunique() == 6
    lake.write_bars(SRC, "AAPL", "1m", bars)
    days = lake.read_bars(SRC, "AAPL", "1d")
    assert list(days["ts"]) == [utc(d) for d in ("2024-07-01", "2024-07-02", "2024-07-03",
                                                 "2024-07-05", "2024-07-08", "2024-07-09")]
    assert_bars_equal(days, pandas_sessions(bars), exact=False)
    # the early-close session (13:30-17:00 UTC) is a whole day
    assert days["volume"].iloc[2] == pytest.approx(
        bars.loc[bars["ts"].dt.date == pd.Timestamp("2024-07-03").date(), "volume"].sum())
    # hourly bars follow the epoch-aligned UTC grid; the first one holds 13:30-13:59
    hours = lake.read_bars(SRC, "AAPL", "1h")
    ref = pandas_resample(bars, "1h")
    assert_bars_equal(hours, ref, exact=False)
    assert hours["ts"].iloc[0] == utc("2024-07-01 13:00")
    assert lake.series_coverage(SRC, "AAPL", "1m").missing_bars == 0


def test_equity_series_ending_mid_session_leaves_out_the_last_day(lake: Lake) -> None:
    bars = session_bars("2024-07-01", "2024-07-09 23:59", seed=31)
    cut = bars[bars["ts"] < utc("2024-07-09 15:00")]
    lake.write_bars(SRC, "AAPL", "1m", cut)
    days = lake.read_bars(SRC, "AAPL", "1d")
    assert days["ts"].iloc[-1] == utc("2024-07-08")
    assert len(days) == 5
    partial = lake.read_bars(SRC, "AAPL", "1d", include_partial=True)
    assert len(partial) == 6
    assert partial["ts"].iloc[-1] == utc("2024-07-09")
    assert partial["close"].iloc[-1] == cut["close"].iloc[-1]
    # a series that ends at an early close is complete: the next bar is after the holiday
    early = bars[bars["ts"] < utc("2024-07-04")]
    lake.write_bars(SRC, "MSFT", "1m", early)
    assert lake.read_bars(SRC, "MSFT", "1d")["ts"].iloc[-1] == utc("2024-07-03")


def test_equity_series_starting_mid_session_leaves_out_the_first_day(lake: Lake) -> None:
    bars = session_bars("2024-07-01", "2024-07-03 23:59", seed=32)
    late = bars[bars["ts"] >= utc("2024-07-01 15:00")]
    lake.write_bars(SRC, "AAPL", "1m", late)
    assert list(lake.read_bars(SRC, "AAPL", "1d")["ts"]) == [utc("2024-07-02"),
                                                             utc("2024-07-03")]
    assert len(lake.read_bars(SRC, "AAPL", "1d", include_partial=True)) == 3


# ---------------------------------------------------------------------- coverage
def test_coverage_with_known_gaps(lake: Lake) -> None:
    bars = minute_bars("2024-02-01", 60, seed=40)
    holed = bars.drop(index=[*range(10, 15), 30])
    lake.write_bars(SRC, BTC, "1m", holed)
    cov = lake.series_coverage(SRC, BTC, "1m")
    assert cov.rows == 54
    assert cov.first == utc("2024-02-01 00:00")
    assert cov.last == utc("2024-02-01 00:59")
    assert cov.missing_bars == 6
    assert cov.calendar == "24/7"
    assert [tuple(g) for g in cov.gaps] == [
        (str(utc("2024-02-01 00:10")), str(utc("2024-02-01 00:14")), 5),
        (str(utc("2024-02-01 00:30")), str(utc("2024-02-01 00:30")), 1),
    ]
    assert cov.bytes == year_file(lake, BTC, 2024).stat().st_size
    # fill one hole, extend the end: coverage follows
    lake.write_bars(SRC, BTC, "1m", bars.iloc[10:15])
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-02-01 01:02", 3, seed=41))
    cov = lake.series_coverage(SRC, BTC, "1m")
    assert (cov.rows, cov.missing_bars, cov.last) == (62, 3, utc("2024-02-01 01:04"))
    assert [g[2] for g in cov.gaps] == [1, 2]
    # the JSON on disk says the same
    raw = json.loads((lake.series_dir(SRC, BTC, "1m") / COVERAGE_FILE).read_text())
    assert (raw["rows"], raw["missing_bars"]) == (62, 3)


def test_equity_coverage_counts_only_session_minutes(lake: Lake) -> None:
    bars = session_bars("2024-07-02", "2024-07-05 23:59", seed=42)  # 07-03 early, 07-04 shut
    holed = bars[~bars["ts"].between(utc("2024-07-05 15:00"), utc("2024-07-05 15:09"))]
    lake.write_bars(SRC, "AAPL", "1m", holed)
    cov = lake.series_coverage(SRC, "AAPL", "1m")
    assert cov.calendar == "XNYS"
    assert cov.rows == 390 + 210 + 390 - 10
    assert cov.missing_bars == 10
    assert [tuple(g) for g in cov.gaps] == [
        (str(utc("2024-07-05 15:00")), str(utc("2024-07-05 15:09")), 10)]


def test_coverage_listing_and_filters(lake: Lake) -> None:
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-01-01", 10))
    lake.write_bars(SRC, BTC, "1h", minute_bars("2024-01-01", 5, freq="1h"))
    lake.write_bars(SRC, ETH, "1m", minute_bars("2024-01-01", 7))
    lake.write_bars("other", BTC, "1m", minute_bars("2024-01-01", 3))
    assert len(lake.coverage()) == 4
    assert sorted(c.rows for c in lake.coverage(source=SRC)) == [5, 7, 10]
    assert [c.rows for c in lake.coverage(symbol=ETH)] == [7]
    assert sorted(c.rows for c in lake.coverage(timeframe="60m")) == [5]
    assert lake.series_coverage(SRC, "SOL/USDT", "1m") is None
    frame = lake.coverage_frame(source=SRC, timeframe="1m")
    assert list(frame.columns) == ["source", "symbol", "timeframe", "first", "last", "rows",
                                   "missing_bars", "gaps", "mb"]
    assert sorted(frame["rows"]) == [7, 10]


def test_coverage_rebuilt_when_json_deleted_stale_or_garbage(lake: Lake) -> None:
    bars = minute_bars("2024-12-31 23:00", 120, seed=43)
    lake.write_bars(SRC, BTC, "1m", bars)
    cov_path = lake.series_dir(SRC, BTC, "1m") / COVERAGE_FILE
    assert cov_path.exists()

    cov_path.unlink()
    assert lake.series_coverage(SRC, BTC, "1m").rows == 120
    assert cov_path.exists()

    cov_path.write_text("{ not json")
    assert lake.series_coverage(SRC, BTC, "1m").rows == 120
    assert json.loads(cov_path.read_text())["rows"] == 120

    # a year file replaced behind the lake's back (e.g. restored from a backup) with fewer rows
    path = year_file(lake, BTC, 2025)
    table = pq.read_table(path)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[[5, 6, 7]] = False
    pq.write_table(table.filter(pa.array(keep)).slice(0, 50), path)
    cov = lake.series_coverage(SRC, BTC, "1m")
    assert cov.rows == 60 + 50
    assert cov.missing_bars == 3
    assert cov.last == utc("2025-01-01 00:52")
    assert [c.rows for c in lake.coverage()] == [110]

    # a year file deleted
    path.unlink()
    cov = lake.series_coverage(SRC, BTC, "1m")
    assert (cov.rows, cov.last, cov.missing_bars) == (60, utc("2024-12-31 23:59"), 0)
    assert set(cov.files) == {f"year=2024/{DATA_FILE}"}


def test_check_reports_stored_gaps(lake: Lake) -> None:
    bars = minute_bars("2024-02-01", 60, seed=44).drop(index=[3, 4])
    lake.write_bars(SRC, BTC, "1m", bars)
    (report,) = lake.check()
    assert report.label == f"{SRC}:{BTC}:1m"
    assert report.count("gap") == 2
    assert report.rows == 58


# ---------------------------------------------------------------------- fingerprint
def test_fingerprint_stable_and_sensitive(lake: Lake) -> None:
    bars = minute_bars("2024-06-01", 500, seed=50)
    lake.write_bars(SRC, BTC, "1m", bars)
    lake.write_bars(SRC, ETH, "1m", minute_bars("2024-06-01", 500, seed=51))
    fp = lake.fingerprint(SRC, BTC, "1m")
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert lake.fingerprint(SRC, BTC, "1m") == fp
    assert Lake(lake.root).fingerprint(SRC, BTC, "1m") == fp
    assert lake.fingerprint(SRC, [BTC, ETH], "1m") == lake.fingerprint(SRC, [ETH, BTC], "1m")
    assert lake.fingerprint(SRC, [BTC, ETH], "1m") != fp
    assert lake.fingerprint(SRC, BTC, "1m", end="2024-06-01 08:00") != fp
    assert lake.fingerprint(SRC, BTC, "5m") != fp

    changed = bars.iloc[[250]].copy()
    changed["close"] = np.nextafter(changed["close"].to_numpy(), np.inf)  # one ulp
    changed["high"] = np.maximum(changed["high"], changed["close"])
    lake.write_bars(SRC, BTC, "1m", changed)
    fp2 = lake.fingerprint(SRC, BTC, "1m")
    assert fp2 != fp
    assert lake.fingerprint(SRC, BTC, "1m", end="2024-06-01 04:00") == lake.fingerprint(
        SRC, BTC, "1m", end="2024-06-01 04:00")
    # writing the old value back restores the old fingerprint
    lake.write_bars(SRC, BTC, "1m", bars.iloc[[250]])
    assert lake.fingerprint(SRC, BTC, "1m") == fp


# ---------------------------------------------------------------------- export / import
@pytest.mark.parametrize("suffix", [".parquet",
    ".csv"])
def test_export_import_roundtrip_list_of_symbols(lake: Lake, tmp_path: Path, suffix: str) -> None:
    btc = minute_bars("2024-12-31 22:00", 300, seed=60).drop(index=[7, 8, 9])
    eth = minute_bars("2024-12-31 23:00", 200, seed=61)
    lake.write_bars(SRC, BTC, "1m", btc)
    lake.write_bars(SRC, ETH, "1m", eth)
    path = lake.export(tmp_path / f"out/slice{suffix}", SRC, [BTC, ETH], "1m")
    assert path.is_file()
    assert not list(path.parent.glob(".*.tmp"))

    fresh = Lake(tmp_path / "fresh")
    results = fresh.import_file(path, source=SRC, timeframe="1m")
    assert sorted((str(r.key), r.rows_added) for r in results) == [
        (f"{SRC}:{BTC}:1m", 297), (f"{SRC}:{ETH}:1m", 200)]
    for sym, bars in ((BTC, btc), (ETH, eth)):
        assert_bars_equal(fresh.read_bars(SRC, sym, "1m"), bars)
        assert fresh.fingerprint(SRC, sym, "1m") == lake.fingerprint(SRC, sym, "1m")
    assert fresh.fingerprint(SRC, [BTC, ETH], "1m") == lake.fingerprint(SRC, [BTC, ETH], "1m")
    assert fresh.series_coverage(SRC, BTC, "1m").missing_bars == 3
    # importing again changes nothing
    before = snapshot(fresh.root / "lake" / "bars" / f"source={SRC}" / "timeframe=1m")
    again = fresh.import_file(path, source=SRC, timeframe="1m")
    assert sum(r.rows_added for r in again) == 0
    assert {k: v for k, v in snapshot(fresh.root / "lake" / "bars" / f"source={SRC}" /
                                      "timeframe=1m").items() if DATA_FILE in k} == {
        k: v for k, v in before.items() if DATA_FILE in k}


def test_export_a_bounded_resampled_slice(lake: Lake, tmp_path: Path) -> None:
    bars = minute_bars("2024-06-01", 600, seed=62)
    lake.write_bars(SRC, BTC, "1m", bars)
    path = lake.export(tmp_path / "h.csv", SRC, [BTC], "1h", "2024-06-01 02:00",
                       "2024-06-01 05:00")
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["symbol", "ts", *VALUES]
    assert list(frame["ts"]) == ["2024-06-01T02:00:00Z", "2024-06-01T03:00:00Z",
                                 "2024-06-01T04:00:00Z"]
    fresh = Lake(tmp_path / "fresh")
    fresh.import_file(path, source=SRC, timeframe="1h")
    assert fresh.fingerprint(SRC, BTC, "1h") == lake.fingerprint(
        SRC, BTC, "1h", "2024-06-01 02:00", "2024-06-01 05:00")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_import_roundtrip_single_symbol(lake: Lake, tmp_path: Path, suffix: str) -> None:
    bars = minute_bars("2024-06-01", 100, seed=63)
    lake.write_bars(SRC, BTC, "1m", bars)
    path = lake.export(tmp_path / f"one{suffix}", SRC, BTC, "1m")
    fresh = Lake(tmp_path / "fresh")
    fresh.import_file(path, source=SRC, timeframe="1m")
    assert fresh.fingerprint(SRC, BTC, "1m") == lake.fingerprint(SRC, BTC, "1m")


def test_import_without_symbol_column_needs_symbol(lake: Lake, tmp_path: Path) -> None:
    bars = minute_bars("2024-06-01", 50, seed=64)
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), path)
    with pytest.raises(DataError, match="symbol") as info:
        lake.import_file(path, source=SRC, timeframe="1m")
    one_line_error(info)
    assert lake.series() == []
    (result,) = lake.import_file(path, source=SRC, timeframe="1m", symbol=BTC)
    assert result.rows_added == 50
    assert_bars_equal(lake.read_bars(SRC, BTC, "1m"), bars)


def test_export_refusals(lake: Lake, tmp_path: Path) -> None:
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-06-01", 10))
    with pytest.raises(ConfigError, match=r"parquet or \.csv") as info:
        lake.export(tmp_path / "x.xlsx", SRC, [BTC], "1m")
    one_line_error(info)
    with pytest.raises(DataError, match="nothing to export") as info:
        lake.export(tmp_path / "x.csv", SRC, [BTC], "1m", "2030-01-01", "2030-02-01")
    one_line_error(info)
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(ConfigError, match="no such file") as info:
        lake.import_file(tmp_path / "missing.csv", source=SRC, timeframe="1m")
    one_line_error(info)


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def stocked(lake: Lake) -> Lake:
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-12-31 23:00", 120, seed=70))
    lake.write_bars(SRC, ETH, "1m", minute_bars("2024-12-31 23:00", 120, seed=71))
    return lake


@pytest.mark.parametrize(("start", "end"), [
    ("2024-02-01", "2024-01-01"),
    ("2024-01-01", "2024-01-01"),
    ("2024-01-01T05:00Z", "2024-01-01T04:59Z"),
])
def test_start_not_before_end(stocked: Lake, start: str, end: str, tmp_path: Path) -> None:
    for call in (lambda: stocked.read_bars(SRC, BTC, "1m", start, end),
                 lambda: stocked.read_bars(SRC, BTC, "1h", start, end),
                 lambda: stocked.fingerprint(SRC, BTC, "1m", start, end),
                 lambda: stocked.export(tmp_path / "x.csv", SRC, [BTC], "1m", start, end)):
        with pytest.raises(ConfigError, match="is not before end") as info:
            call()
        one_line_error(info)
    assert not (tmp_path / "x.csv").exists()


def test_unreadable_time(stocked: Lake) -> None:
    with pytest.raises(ConfigError, match="cannot read start") as info:
        stocked.read_bars(SRC, BTC, "1m", "the day after tomorrow")
    one_line_error(info)


def test_unknown_source_and_symbol(stocked: Lake) -> None:
    with pytest.raises(DataError, match=r"did you mean 'synthetic'\?") as info:
        stocked.read_bars("synthetc", BTC, "1m")
    one_line_error(info)
    with pytest.raises(DataError, match="no data for source 'binance'") as info:
        stocked.read_bars("binance", BTC, "1m")
    assert "did you mean" not in one_line_error(info)
    with pytest.raises(DataError, match=r"did you mean 'BTC/USDT'\?") as info:
        stocked.read_bars(SRC, "BTC/USTD", "1m")
    one_line_error(info)
    with pytest.raises(DataError, match="no data for symbol 'AAPL'") as info:
        stocked.read_bars(SRC, [BTC, "AAPL"], "1m")
    assert "did you mean" not in one_line_error(info)
    with pytest.raises(DataError, match="the lake is empty"):
        Lake(stocked.root / "elsewhere").read_bars(SRC, BTC, "1m")
    with pytest.raises(ConfigError, match="no symbols"):
        stocked.read_bars(SRC, [], "1m")


def test_unknown_or_underivable_timeframe(stocked: Lake) -> None:
    before = snapshot(stocked.root)
    for call in (lambda: stocked.read_bars(SRC, BTC, "1x"),
                 lambda: stocked.read_bars(SRC, BTC, "0m"),
                 lambda: stocked.write_bars(SRC, BTC, "1 minute",
                                            minute_bars("2025-01-01", 5))):
        with pytest.raises(ConfigError, match="unknown timeframe") as info:
            call()
        one_line_error(info)
    stocked.write_bars(SRC, "SOL/USDT", "5m", minute_bars("2024-06-01", 12, freq="5min"))
    with pytest.raises(DataError, match="none can be resampled") as info:
        stocked.read_bars(SRC, "SOL/USDT", "1m")
    assert "5m" in one_line_error(info)
    with pytest.raises(DataError, match="none can be resampled"):
        stocked.read_bars(SRC, "SOL/USDT", "7m")
    assert {k: v for k, v in snapshot(stocked.root).items() if "SOL" not in k} == before


def test_naive_timestamps_refused(stocked: Lake) -> None:
    before = snapshot(stocked.root)
    bars = minute_bars("2025-01-01 00:30", 20)
    bars["ts"] = bars["ts"].dt.tz_localize(None)
    with pytest.raises(DataError, match="naive timestamps") as info:
        stocked.write_bars(SRC, BTC, "1m", bars)
    one_line_error(info)
    with pytest.raises(DataError, match="naive timestamps"):
        stocked.write_bars(SRC, "SOL/USDT", "1m", bars)
    assert snapshot(stocked.root) == before
    assert len(stocked.series()) == 2


@pytest.mark.parametrize("drop", [["close"], ["volume"], ["ts"], ["open", "high"]])
def test_missing_columns_refused(stocked: Lake, drop: list[str]) -> None:
    before = snapshot(stocked.root)
    bars = minute_bars("2025-01-01 00:30", 20).drop(columns=drop)
    with pytest.raises(DataError, match="lack column") as info:
        stocked.write_bars(SRC, BTC, "1m", bars)
    msg = one_line_error(info)
    assert all(c in msg for c in drop)
    assert snapshot(stocked.root) == before


def test_non_numeric_values_and_bad_names_refused(stocked: Lake) -> None:
    before = snapshot(stocked.root)
    bars = minute_bars("2025-01-01 00:30", 3).astype({"close": object})
    bars.loc[1, "close"] = "n/a"
    with pytest.raises(DataError, match="'close' holds non-numeric") as info:
        stocked.write_bars(SRC, BTC, "1m", bars)
    one_line_error(info)
    good = minute_bars("2025-01-01 00:30", 3)
    for source, symbol in (("", BTC), (".", BTC), (SRC, ".."), (SRC, "BAD\nNAME")):
        with pytest.raises(ConfigError, match="invalid") as info:
            stocked.write_bars(source, symbol, "1m", good)
        one_line_error(info)
    assert snapshot(stocked.root) == before


def _garble(path: Path) -> None:
    path.write_bytes(b"this is not parquet " * 200)


@pytest.mark.parametrize("tf", ["1m", "1h"])
def test_corrupt_file_read_raises_lake_corrupt_error(stocked: Lake, tf: str) -> None:
    bad = year_file(stocked, BTC, 2024)
    _garble(bad)
    with pytest.raises(LakeCorruptError) as info:
        stocked.read_bars(SRC, BTC, tf)
    assert str(bad) in one_line_error(info)


def test_corrupt_file_reads_never_return_data(stocked: Lake) -> None:
    """Whatever the error type, a corrupt file never yields a silently shortened frame."""
    _garble(year_file(stocked, BTC, 2024))
    for tf in ("1m", "1h"):
        with pytest.raises(LakeCorruptError):
            stocked.read_bars(SRC, BTC, tf)
    # other series are unaffected
    assert len(stocked.read_bars(SRC, ETH, "1m")) == 120


def test_one_corrupt_file_is_quarantined_from_listings_and_named_with_its_fix(
        stocked: Lake, caplog: pytest.LogCaptureFixture) -> None:
    bad = year_file(stocked, BTC, 2024)
    _garble(bad)
    with caplog.at_level("WARNING", logger="workbench.data.lake"):
        listed = stocked.coverage_frame()
    assert list(listed["symbol"]) == [ETH]  # the rest of the lake still lists
    assert str(bad) in caplog.text
    assert [r.label for r in stocked.check()] == [f"{SRC}:{ETH}:1m"]
    damaged = stocked.damaged()
    assert list(damaged) == [SeriesKey(SRC, BTC, "1m")]
    msg = str(damaged[SeriesKey(SRC, BTC, "1m")])
    assert "\n" not in msg and str(bad) in msg
    assert f"workbench data sync --source {SRC} --symbols {BTC} --timeframe 1m --start 2024-01-01" in msg


def test_a_resync_moves_the_corrupt_file_aside_and_rebuilds_the_series(lake: Lake) -> None:
    src = SyntheticSource()
    lake.sync(src, [BTC, ETH], "1h", "2024-12-30", "2025-01-02")
    good = lake.read_bars(SRC, BTC, "1h")
    bad = year_file(lake, BTC, 2024, "1h")
    garbage = b"this is not parquet " * 200
    bad.write_bytes(garbage)
    # an incremental sync of the stored range: nothing new to fetch, but the damaged year is
    lake.sync(src, [BTC, ETH], "1h", end="2025-01-02")
    pd.testing.assert_frame_equal(lake.read_bars(SRC, BTC, "1h"), good)
    kept = list(bad.parent.glob(f"{DATA_FILE}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == garbage  # nothing lost
    assert lake.damaged() == {}


def test_corrupt_file_write_to_that_year_is_refused(stocked: Lake) -> None:
    bad = year_file(stocked, BTC, 2024)
    _garble(bad)
    before = snapshot(stocked.root)
    with pytest.raises(LakeCorruptError) as info:
        stocked.write_bars(SRC, BTC, "1m", minute_bars("2024-12-31 23:30", 10, seed=72))
    assert str(bad) in one_line_error(info)
    # a batch spanning the corrupt year and a good one: nothing is written either
    with pytest.raises(LakeCorruptError):
        stocked.write_bars(SRC, BTC, "1m", minute_bars("2024-12-31 23:55", 10, seed=73))
    assert snapshot(stocked.root) == before


def test_corrupt_file_write_to_another_year_is_refused(stocked: Lake) -> None:
    _garble(year_file(stocked, BTC, 2024))
    before = snapshot(stocked.root)
    with pytest.raises(LakeCorruptError):
        stocked.write_bars(SRC, BTC, "1m", minute_bars("2025-01-01 00:30", 60, seed=74))
    assert snapshot(stocked.root) == before


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("ragged.csv", "symbol,ts,open,high,low,close,volume\n"
     "BTC/USDT,2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
     "BTC/USDT,2024-01-01T00:01:00Z,1,2,0.5,1,1,9,9\n", "not a readable export"),
    ("quote.csv", 'symbol,ts,open,high,low,close,volume\n"BTC/USDT,2024-01-01T00:00:00Z,1\n',
     "not a readable export"),
    ("nonnum.csv", "symbol,ts,open,high,low,close,volume\n"
     "BTC/USDT,2024-01-01T00:00:00Z,1,2,0.5,abc,1\n", "non-numeric"),
    ("badts.csv", "symbol,ts,open,high,low,close,volume\n"
     "BTC/USDT,yesterday-ish,1,2,0.5,1,1\n", "unparseable timestamps"),
    ("nocol.csv", "symbol,ts,open,high,low,volume\n"
     "BTC/USDT,2024-01-01T00:00:00Z,1,2,0.5,1\n", "lack column(s) close"),
    ("badrow.csv", "symbol,ts,open,high,low,close,volume\n"
     "BTC/USDT,2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
     "BTC/USDT,2024-01-01T00:01:00Z,1,2,0.5,3,1\n", "high/low do not bound"),
    ("empty.csv", "", "not a readable export"),
    ("binary.parquet", "PAR1 not really", "not a readable export"),
])
def test_malformed_import_refused_and_nothing_written(stocked: Lake, tmp_path: Path, name: str,
                                                       text: str, needle: str,
                                                       request: pytest.FixtureRequest) -> None:
    before = snapshot(stocked.root)
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as info:
        stocked.import_file(path, source=SRC, timeframe="1m")
    assert needle in str(info.value)
    one_line_error(info)
    assert snapshot(stocked.root) == before


def test_malformed_import_is_checked_before_any_symbol_is_written(stocked: Lake,
                                                                  tmp_path: Path) -> None:
    before = snapshot(stocked.root)
    path = tmp_path / "two.csv"
    path.write_text("symbol,ts,open,high,low,close,volume\n"
                    "AAA/USD,2024-01-01T00:00:00Z,1,2,0.5,1,1\n"
                    "ZZZ/USD,2024-01-01T00:00:00Z,1,2,0.5,nan,1\n")
    with pytest.raises(DataError, match=r"ZZZ/USD.*missing \(NaN\)") as info:
        stocked.import_file(path, source=SRC, timeframe="1m")
    one_line_error(info)
    assert snapshot(stocked.root) == before
    assert {k.symbol for k in stocked.series()} == {BTC, ETH}


# ---------------------------------------------------------------------- warnings
def test_read_bars_emits_no_deprecation_warning(lake: Lake) -> None:
    """duckdb's `.df()` calls a keyword deprecated in pandas 3.1; pyproject turns warnings raised
    from workbench code into errors, so the lake must keep them away from its callers."""
    lake.write_bars(SRC, BTC, "1m", candles("""
        00:00  1  2  0.5  1  1
        00:01  1  2  0.5  1  1
    """))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lake.read_bars(SRC, BTC, "1m")
        lake.read_bars(SRC, BTC, "1h", include_partial=True)
    ours = [w for w in caught if issubclass(w.category, DeprecationWarning)
            and "workbench" in w.filename]
    assert ours == [], [str(w.message) for w in ours]


def test_calendar_used_for_coverage_is_the_symbols(lake: Lake) -> None:
    lake.write_bars(SRC, "AAPL", "1d", session_bars("2024-07-01", "2024-07-31", "1d", seed=80))
    cov = lake.series_coverage(SRC, "AAPL", "1d")
    assert (cov.rows, cov.missing_bars, cov.calendar) == (22, 0, Calendar("XNYS").code)
    assert lake.read_bars(SRC, "AAPL", "1w", include_partial=True)["ts"].dt.day_of_week.eq(0).all()
    assert Timeframe.parse("1w").floor(cov.first) == utc("2024-07-01")


def test_resampled_read_never_uses_rows_at_or_after_end(lake: Lake) -> None:
    ts = pd.date_range("2024-05-01", periods=180, freq="1min", tz="UTC")
    close = np.arange(180, dtype=float) + 100.0
    lake.write_bars("t", "BTC/USDT", "1m", pd.DataFrame({
        "ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close,
        "volume": 1.0}))
    # end at 01:30 falls inside the 01:00 bucket: that bucket is partial, so it is left out
    got = lake.read_bars("t", "BTC/USDT", "1h", end="2024-05-01 01:30Z")
    assert got["ts"].astype(str).tolist() == ["2024-05-01 00:00:00+00:00"]
    partial = lake.read_bars("t", "BTC/USDT", "1h", end="2024-05-01 01:30Z", include_partial=True)
    assert partial["close"].tolist() == [159.0, 189.0]  # 01:29's close, nothing later
    assert partial["volume"].tolist() == [60.0, 30.0]


def test_naive_timestamp_strings_are_refused(lake: Lake) -> None:
    frame = pd.DataFrame({"ts": ["2024-01-01 00:00", "2024-01-01 00:01"], "open": 1.0,
                          "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
    with pytest.raises(DataError, match="without a zone"):
        lake.write_bars("t", "BTC/USDT", "1m", frame)
    assert lake.series() == []


def test_resampled_sums_are_identical_across_processes(tmp_path: Path) -> None:
    """Parallel float sums vary in their last bits run to run; the lake's must not (fingerprints)."""
    import subprocess
    import sys

    lake = Lake(tmp_path)
    lake.write_bars(SRC, BTC, "1m", minute_bars("2024-01-01", 365 * 24 * 60, seed=5))  # parallel row groups
    code = ("import hashlib, sys; from workbench import Lake; "
            "b = Lake(sys.argv[1]).read_bars('synthetic', 'BTC/USDT', '1h'); "
            "print(hashlib.sha256(b[['volume']].to_numpy().tobytes()).hexdigest())")
    # four processes at once (none waits for the others to finish)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    digests = {out.strip() for out, _ in outs}
    assert len(digests) == 1


def test_lake_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        lake = Lake(tmp_path / "data")
        start = pd.Timestamp("2025-01-01", tz="UTC")
        lake.write_bars("synthetic", "BTC/USDT", "1h",
                        SyntheticSource(seed=1).bars("BTC/USDT", "1h", start, start + pd.Timedelta(days=2)))
        lake.coverage()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and p.name != ".lock"]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}, files


@pytest.mark.parametrize("value", ["01/06/2025", "06-01-2025", "1.6.25"])
def test_an_ambiguous_day_month_date_is_refused_with_the_iso_form(lake: Lake, value: str) -> None:
    with pytest.raises(ConfigError, match=r"is ambiguous \(day/month or month/day\?\): write it as ISO "
                                          r"year-month-day, e.g. 2025-0[16]-0[16] or 2025-0[16]-0[16]$"):
        lake.read_bars("synthetic", "BTC/USDT", "1h", start=value)
