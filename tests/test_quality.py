"""Quality checks per issue kind, and the reject / drop / flag policy (alone and through the lake)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bars_factory import candles, minute_bars

from workbench import Lake
from workbench.data.calendar import Calendar
from workbench.data.quality import (
    Action,
    IssueKind,
    QualityPolicy,
    apply_policy,
    check_bars,
)
from workbench.errors import ConfigError, DataError

K = IssueKind
CRYPTO = Calendar()
XNYS = Calendar("XNYS")


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def spiky(spike_at: int = 30, n: int = 60, factor: float = 2.0) -> pd.DataFrame:
    """A calm 24/7 1m series (tiny alternating moves) with one bar whose prices jump by `factor`."""
    idx = np.arange(n)
    close = 100.0 * (1 + 0.001 * np.sin(idx * 1.7))
    close[spike_at] *= factor
    frame = pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC").as_unit("us"),
        "open": close, "high": close, "low": close, "close": close, "volume": 1.0,
    })
    return frame


# One small table per issue kind: (table, timeframe, calendar, expected counts, offending rows).
# Offending rows are 0-based positions in the table (what `drop` must remove).
CASES: dict[IssueKind, tuple[str, str, Calendar, dict[IssueKind, int], list[int]]] = {
    K.MISSING_VALUE: ("""
        00:00  10  11  9   10   100
        00:01  10  nan 9   10   100
        00:02  10  11  9   10   nan
        00:03  10  11  9   10   100
    """, "1m", CRYPTO, {K.MISSING_VALUE: 2}, [1, 2]),
    K.NON_POSITIVE_PRICE: ("""
        00:00  10  11  9   10   100
        00:01  0   11  0   10   100
        00:02  10  11  -1  10   100
        00:03  10  11  9   10   100
    """, "1m", CRYPTO, {K.NON_POSITIVE_PRICE: 2}, [1, 2]),
    K.NEGATIVE_VOLUME: ("""
        00:00  10  11  9   10   100
        00:01  10  11  9   10   -5
        00:02  10  11  9   10   0
    """, "1m", CRYPTO, {K.NEGATIVE_VOLUME: 1}, [1]),
    K.OHLC_INCONSISTENT: ("""
        # high below close; low above open; high below low
        00:00  10  11  9   10   100
        00:01  10  11  9   12   100
        00:02  10  11  10.5 11  100
        00:03  10  10  10  10   100
        00:04  10  9   11  10   100
    """, "1m", CRYPTO, {K.OHLC_INCONSISTENT: 3}, [1, 2, 4]),
    K.DUPLICATE_TS: ("""
        00:00  10  11  9   10   100
        00:01  10  11  9   10   100
        00:01  20  21  19  20   200
        00:02  10  11  9   10   100
    """, "1m", CRYPTO, {K.DUPLICATE_TS: 1}, [1]),
    K.UNSORTED_TS: ("""
        00:00  10  11  9   10   100
        00:02  10  11  9   10   100
        00:01  10  11  9   10   100
        00:03  10  11  9   10   100
    """, "1m", CRYPTO, {K.UNSORTED_TS: 1}, [2]),
    K.MISALIGNED_TS: ("""
        00:00  10  11  9   10   100
        00:05  10  11  9   10   100
        00:07  10  11  9   10   100
        00:10  10  11  9   10   100
    """, "5m", CRYPTO, {K.MISALIGNED_TS: 1}, [2]),
    K.OFF_CALENDAR: ("""
        # NYSE closes early (17:00 UTC) on 2024-07-03 and is shut on 07-04
        2024-07-03T16:58  10  11  9  10  100
        2024-07-03T16:59  10  11  9  10  100
        2024-07-03T17:00  10  11  9  10  100
        2024-07-04T15:00  10  11  9  10  100
    """, "1m", XNYS, {K.OFF_CALENDAR: 2}, [2, 3]),
    K.GAP: ("""
        00:00  10  11  9   10   100
        00:01  10  11  9   10   100
        00:05  10  11  9   10   100
        00:06  10  11  9   10   100
        00:08  10  11  9   10   100
    """, "1m", CRYPTO, {K.GAP: 4}, []),
}


DROPPABLE = [k for k in CASES if k is not K.GAP]


@pytest.mark.parametrize("kind", list(CASES), ids=str)
def test_check_reports_exactly_the_issue(kind: IssueKind) -> None:
    table, tf, cal, counts, _ = CASES[kind]
    bars = candles(table)
    report = check_bars(bars, tf, cal, label="t")
    assert {i.kind: i.count for i in report.issues} == counts
    assert report.rows == len(bars)
    assert not report.ok
    for kind_, n in counts.items():
        assert report.count(kind_) == n
    frame = report.to_frame()
    assert list(frame["issue"]) == [str(k) for k in counts]
    assert list(frame["count"]) == list(counts.values())
    assert str(report).startswith("t: ")


def test_clean_bars_have_no_issues() -> None:
    bars = minute_bars("2024-01-01", 500, seed=4)
    report = check_bars(bars, "1m", CRYPTO)
    assert report.ok
    assert report.issues == []
    assert "no issues" in str(report)
    kept, rep = apply_policy(bars, "1m", CRYPTO)
    pd.testing.assert_frame_equal(kept, bars)
    assert rep.dropped == 0


def test_session_bars_have_no_gap_overnight_or_over_a_holiday() -> None:
    # last minute before the July 4th holiday, then the next session's first minute
    bars = candles("""
        2024-07-03T16:58  10  11  9  10  100
        2024-07-03T16:59  10  11  9  10  100
        2024-07-05T13:30  10  11  9  10  100
        2024-07-05T13:31  10  11  9  10  100
    """)
    assert check_bars(bars, "1m", XNYS).ok
    # the same bars on a 24/7 calendar miss a day and a half of minutes
    missing = (utc("2024-07-05 13:30") - utc("2024-07-03 17:00")) // pd.Timedelta("1min")
    assert check_bars(bars, "1m", CRYPTO).count(K.GAP) == missing == 2670


def test_spike_flags_the_spike_bar() -> None:
    bars = spiky(spike_at=30)
    report = check_bars(bars, "1m", CRYPTO)
    assert [i.kind for i in report.issues] == [K.SPIKE]
    assert report.count(K.SPIKE) >= 1
    assert report.issues[0].examples[0] == str(utc("2024-01-01 00:30"))
    # a higher threshold lets it pass; a jump on the last bar is one spike
    assert check_bars(bars, "1m", CRYPTO, policy=QualityPolicy(spike_z=1e6)).ok
    shifted = spiky(spike_at=59)
    assert check_bars(shifted, "1m", CRYPTO).count(K.SPIKE) == 1


def test_spike_needs_enough_history() -> None:
    assert check_bars(spiky(spike_at=10, n=20), "1m", CRYPTO).ok


def test_one_bar_spike_is_one_issue_and_drop_removes_only_it() -> None:
    bars = spiky(spike_at=30)
    assert check_bars(bars, "1m", CRYPTO).count(K.SPIKE) == 1
    kept, report = apply_policy(bars, "1m", CRYPTO, policy=QualityPolicy.parse("spike=drop"))
    assert report.dropped == 1
    assert list(kept["ts"]) == list(bars["ts"].drop(index=30))


# ---------------------------------------------------------------------- policy actions

@pytest.mark.parametrize("kind", list(CASES), ids=str)
def test_reject_raises_data_error(kind: IssueKind) -> None:
    table, tf, cal, _, _ = CASES[kind]
    bars = candles(table)
    policy = QualityPolicy(actions={kind: Action.REJECT})
    with pytest.raises(DataError) as info:
        apply_policy(bars, tf, cal, label="src:SYM:1m", policy=policy)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("src:SYM:1m: ")
    assert str(kind) in msg


@pytest.mark.parametrize("kind", [
    *DROPPABLE,
    K.GAP,
], ids=str)
def test_reject_message_suggests_a_policy_that_works(kind: IssueKind) -> None:
    table, tf, cal, _, _ = CASES[kind]
    bars = candles(table)
    with pytest.raises(DataError) as info:
        apply_policy(bars, tf, cal, policy=QualityPolicy(actions={kind: Action.REJECT}))
    suggested = re.search(r"--policy (\S+?)\)?$", str(info.value))
    assert suggested is not None, str(info.value)
    _, report = apply_policy(bars, tf, cal, policy=QualityPolicy.parse(suggested.group(1)))
    assert report.count(kind) > 0


@pytest.mark.parametrize("kind", DROPPABLE, ids=str)
def test_drop_removes_exactly_the_offending_rows(kind: IssueKind) -> None:
    table, tf, cal, counts, offending = CASES[kind]
    bars = candles(table)
    policy = QualityPolicy(actions={kind: Action.DROP})
    kept, report = apply_policy(bars, tf, cal, policy=policy)
    expected = bars.drop(index=offending).sort_values("ts", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)
    assert report.dropped == len(offending)
    assert report.count(kind) == counts[kind]
    assert {i.action for i in report.issues if i.kind == kind} == {Action.DROP}


@pytest.mark.parametrize("kind", list(CASES), ids=str)
def test_flag_keeps_the_rows_and_reports(kind: IssueKind) -> None:
    table, tf, cal, counts, _ = CASES[kind]
    bars = candles(table)
    policy = QualityPolicy(actions={kind: Action.FLAG})
    kept, report = apply_policy(bars, tf, cal, policy=policy)
    assert report.count(kind) == counts[kind]
    assert {i.action for i in report.issues} == {Action.FLAG}
    expected = bars.sort_values("ts", kind="stable")
    if kind is K.DUPLICATE_TS:
        # the lake keeps one row per timestamp even when duplicates are only flagged
        expected = expected.drop(index=1)
        assert report.dropped == 1
    else:
        assert report.dropped == 0
    pd.testing.assert_frame_equal(kept, expected.reset_index(drop=True))
    assert kept["ts"].is_monotonic_increasing


def test_default_policy_actions() -> None:
    p = QualityPolicy()
    assert p.action(K.MISSING_VALUE) is Action.REJECT
    assert p.action(K.OHLC_INCONSISTENT) is Action.REJECT
    assert p.action(K.MISALIGNED_TS) is Action.REJECT
    assert p.action(K.DUPLICATE_TS) is Action.DROP
    assert p.action(K.UNSORTED_TS) is Action.FLAG
    assert p.action(K.GAP) is Action.FLAG
    # unsorted and gappy bars pass the default policy, sorted
    table, tf, cal, _, _ = CASES[K.UNSORTED_TS]
    kept, report = apply_policy(candles(table), tf, cal)
    assert kept["ts"].is_monotonic_increasing
    assert report.count(K.UNSORTED_TS) == 1


def test_duplicates_keep_the_last_row() -> None:
    bars = candles("""
        00:00  10  11  9   10   1
        00:01  20  21  19  20   2
        00:00  30  31  29  30   3
        00:02  40  41  39  40   4
        00:00  50  51  49  50   5
        00:01  60  61  59  60   6
    """)
    kept, report = apply_policy(bars, "1m", CRYPTO)
    assert report.count(K.DUPLICATE_TS) == 3
    assert report.dropped == 3
    assert list(kept["ts"]) == [utc("2024-01-01 00:00"), utc("2024-01-01 00:01"),
                                utc("2024-01-01 00:02")]
    assert list(kept["volume"]) == [5.0, 6.0, 4.0]
    assert list(kept["close"]) == [50.0, 60.0, 40.0]


def test_duplicates_keep_the_last_row_through_the_lake(lake: Lake) -> None:
    bars = candles("""
        00:00  10  11  9   10   1
        00:01  20  21  19  20   2
        00:01  30  31  29  30   3
    """)
    result = lake.write_bars("t", "BTC/USDT", "1m", bars)
    assert result.rows_in == 3
    assert result.rows_added == 2
    assert result.report.count(K.DUPLICATE_TS) == 1
    got = lake.read_bars("t", "BTC/USDT", "1m")
    assert list(got["close"]) == [10.0, 30.0]


# ---------------------------------------------------------------------- through the lake
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("kind", [K.MISSING_VALUE, K.NON_POSITIVE_PRICE, K.NEGATIVE_VOLUME,
                                  K.OHLC_INCONSISTENT, K.MISALIGNED_TS], ids=str)
def test_rejected_write_leaves_the_lake_unchanged(lake: Lake, kind: IssueKind) -> None:
    table, tf, _, _, _ = CASES[kind]
    # an existing series whose file would be touched by the batch
    good = candles("""
        00:00  1  2  0.5  1  1
        00:05  1  2  0.5  1  1
        00:10  1  2  0.5  1  1
    """)
    lake.write_bars("t", "BTC/USDT", tf, good)
    before = _snapshot(lake.root)
    fingerprint = lake.fingerprint("t", "BTC/USDT", tf)
    with pytest.raises(DataError):
        lake.write_bars("t", "BTC/USDT", tf, candles(table))
    assert _snapshot(lake.root) == before
    assert lake.fingerprint("t", "BTC/USDT", tf) == fingerprint
    # nothing for a new series either
    with pytest.raises(DataError):
        lake.write_bars("t", "ETH/USDT", tf, candles(table))
    assert [k.symbol for k in lake.series()] == ["BTC/USDT"]


def test_gap_reject_refuses_a_gappy_batch(lake: Lake) -> None:
    table = CASES[K.GAP][0]
    with pytest.raises(DataError, match="missing bars"):
        lake.write_bars("t", "BTC/USDT", "1m", candles(table),
                        policy=QualityPolicy.parse("gap=reject"))
    assert lake.series() == []


def test_drop_policy_through_the_lake(lake: Lake) -> None:
    table, tf, _, _, offending = CASES[K.OHLC_INCONSISTENT]
    bars = candles(table)
    result = lake.write_bars("t", "BTC/USDT", tf, bars,
                             policy=QualityPolicy.parse("ohlc_inconsistent=drop"))
    assert result.rows_in == 5
    assert result.rows_added == 5 - len(offending)
    assert result.report.dropped == len(offending)
    got = lake.read_bars("t", "BTC/USDT", tf)
    assert list(got["ts"]) == list(bars["ts"].drop(index=offending))


def test_off_calendar_equity_bar_is_flagged_by_default(lake: Lake) -> None:
    table, tf, _, _, _ = CASES[K.OFF_CALENDAR]
    # the lake picks the NYSE calendar for a plain ticker
    result = lake.write_bars("t", "AAPL", tf, candles(table))
    assert result.report.count(K.OFF_CALENDAR) == 2
    assert result.rows_added == 4
    result = lake.write_bars("t", "MSFT", tf, candles(table),
                             policy=QualityPolicy.parse("off_calendar=drop"))
    assert result.rows_added == 2
    assert list(lake.read_bars("t", "MSFT", tf)["ts"]) == [utc("2024-07-03 16:58"),
                                                            utc("2024-07-03 16:59")]
    # the same bars for a crypto pair are all on its 24/7 calendar
    assert lake.write_bars("t", "BTC/USDT", tf, candles(table)).report.count(K.OFF_CALENDAR) == 0


# ---------------------------------------------------------------------- QualityPolicy.parse
def test_policy_parse_good_specs() -> None:
    assert QualityPolicy.parse(None) == QualityPolicy()
    assert QualityPolicy.parse("") == QualityPolicy()
    p = QualityPolicy.parse(" gap=reject , spike=drop,,duplicate_ts=flag ")
    assert p.action(K.GAP) is Action.REJECT
    assert p.action(K.SPIKE) is Action.DROP
    assert p.action(K.DUPLICATE_TS) is Action.FLAG
    assert p.action(K.MISSING_VALUE) is Action.REJECT  # default kept
    assert p.action(K.UNSORTED_TS) is Action.FLAG
    assert QualityPolicy.parse("spike=flag", spike_z=8).spike_z == 8.0
    # later entries win
    assert QualityPolicy.parse("spike=drop,spike=reject").action(K.SPIKE) is Action.REJECT
    every = QualityPolicy.parse(",".join(f"{k}=flag" for k in IssueKind))
    assert set(every.actions.values()) == {Action.FLAG}


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("spkie=drop", {}, "did you mean 'spike'"),
        ("spkie=drop", {}, "did you mean"),
        ("gap", {}, "kind=action"),
        ("nonsense=drop", {}, "kind=action"),
        ("spike=delete", {}, "use reject, drop or flag"),
        ("spike=", {}, "use reject, drop or flag"),
        ("=drop", {}, "kind=action"),
        ("gap=drop", {}, "cannot be dropped"),
        ("spike=flag", {"spike_z": 0}, "spike_z must be positive"),
        ("spike=flag", {"spike_z": -3}, "spike_z must be positive"),
    ],
)
def test_policy_parse_bad_specs(spec: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        QualityPolicy.parse(spec, **kwargs)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_report_merge_adds_counts() -> None:
    table = CASES[K.GAP][0]
    a = check_bars(candles(table), "1m", CRYPTO, label="s")
    b = check_bars(candles(table, day="2024-01-02"), "1m", CRYPTO, label="s")
    m = a.merge(b)
    assert m.rows == a.rows + b.rows
    assert m.count(K.GAP) == 8
