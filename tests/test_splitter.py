"""Walk-forward splitter: hand-computed folds, durations on 24/7 and gappy calendars, invariants, errors."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.errors import ConfigError, DataError
from workbench.optimize.splitter import Fold, WalkForward


def hourly(n: int, start: str = "2024-01-01", tz: str | None = "UTC") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h", tz=tz)


def weekdays_hourly(weeks: int = 6, holidays: tuple[str, ...] = ()) -> pd.DatetimeIndex:
    """Hourly bars Monday to Friday only (2024-01-01 is a Monday), optionally without some whole days."""
    idx = hourly(24 * 7 * weeks)
    idx = idx[idx.day_of_week < 5]
    for day in holidays:
        idx = idx[idx.normalize() != pd.Timestamp(day, tz="UTC")]
    return idx


def spans(folds: list[Fold]) -> list[tuple[int, int, int, int]]:
    return [(f.train_start, f.train_end, f.test_start, f.test_end) for f in folds]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- hand-computed bar folds


def test_rolling_ratio_folds_by_hand() -> None:
    # L = floor(100 / (4 + 2)) = 16, train = 32; tests cover the last 64 bars from 36
    folds = WalkForward(n_folds=4, train_ratio=2).split(hourly(100))
    assert folds == [
        Fold(0, 4, 36, 36, 52),
        Fold(1, 20, 52, 52, 68),
        Fold(2, 36, 68, 68, 84),
        Fold(3, 52, 84, 84, 100),
    ]
    assert [(f.n_train, f.n_purge, f.n_test) for f in folds] == [(32, 0, 16)] * 4
    assert folds[0].train() == slice(4, 36) and folds[0].test() == slice(36, 52)


def test_anchored_ratio_folds_by_hand() -> None:
    folds = WalkForward(n_folds=4, train_ratio=2, anchored=True).split(hourly(100))
    assert spans(folds) == [(0, 36, 36, 52), (0, 52, 52, 68), (0, 68, 68, 84), (0, 84, 84, 100)]


def test_purge_folds_by_hand() -> None:
    # L = floor((100 - 4) / 6) = 16, train 32: fold 0's train starts exactly at bar 0
    folds = WalkForward(n_folds=4, train_ratio=2, purge=4).split(hourly(100))
    assert spans(folds) == [(0, 32, 36, 52), (16, 48, 52, 68), (32, 64, 68, 84), (48, 80, 84, 100)]
    anchored = WalkForward(n_folds=4, train_ratio=2, purge=4, anchored=True).split(hourly(100))
    assert spans(anchored) == [(0, 32, 36, 52), (0, 48, 52, 68), (0, 64, 68, 84), (0, 80, 84, 100)]


def test_train_and_test_given_leave_unused_bars() -> None:
    wf = WalkForward(n_folds=3, train=20, test=10, purge=2)
    assert spans(wf.split(hourly(100))) == [(48, 68, 70, 80), (58, 78, 80, 90), (68, 88, 90, 100)]
    assert wf.frame(hourly(100)).attrs["unused_bars"] == 48
    assert wf.describe(hourly(100))["unused_bars"] == 48
    # anchored: the given train is only fold 0's minimum, every bar before the purge is used
    anchored = WalkForward(n_folds=3, train=20, test=10, purge=2, anchored=True)
    assert spans(anchored.split(hourly(100))) == [(0, 68, 70, 80), (0, 78, 80, 90), (0, 88, 90, 100)]
    assert anchored.describe(hourly(100))["unused_bars"] == 0


def test_train_given_test_derived() -> None:
    # L = floor((100 - 30 - 2) / 4) = 17
    folds = WalkForward(n_folds=4, train=30, purge=2).split(hourly(100))
    assert spans(folds) == [(0, 30, 32, 49), (17, 47, 49, 66), (34, 64, 66, 83), (51, 81, 83, 100)]


def test_test_given_train_from_ratio() -> None:
    folds = WalkForward(n_folds=2, test=10, train_ratio=4).split(hourly(100))
    assert spans(folds) == [(40, 80, 80, 90), (50, 90, 90, 100)]
    anchored = WalkForward(n_folds=2, test=10, anchored=True).split(hourly(100))
    assert spans(anchored) == [(0, 80, 80, 90), (0, 90, 90, 100)]


def test_ratios_are_read_as_decimals() -> None:
    # 81 / (8 + 0.1) is exactly 10 in decimal but 9.999... in binary floating point
    folds = WalkForward(n_folds=8, train_ratio=0.1, min_train_bars=1).split(hourly(81))
    assert [f.n_test for f in folds] == [10] * 8
    assert spans(folds)[0] == (0, 1, 1, 11)
    # floor(4.35 x 100) = 435 (the float product is 434.99999999999994)
    assert WalkForward(n_folds=1, test=100, train_ratio=4.35).split(hourly(600))[0].n_train == 435


def test_single_fold_and_minimums() -> None:
    folds = WalkForward(n_folds=1, train=1, test=1, min_train_bars=1, min_test_bars=1).split(hourly(2))
    assert spans(folds) == [(0, 1, 1, 2)]


def test_accepts_frames_series_naive_index_and_numpy_ints() -> None:
    idx = hourly(100, tz=None)
    bars = pd.DataFrame({"close": np.arange(100.0)}, index=idx)
    wf = WalkForward(n_folds=np.int64(4), train_ratio=2, purge=np.int32(4), anchored=np.bool_(False))
    assert wf.split(bars) == wf.split(bars["close"]) == wf.split(idx)
    assert json.loads(json.dumps(wf.describe(idx))) == wf.describe(idx)
    fold = wf.split(bars)[1]
    assert bars.iloc[fold.test()].index[0] == idx[52]


# ----------------------------------------------------------------------------- durations


def test_durations_on_24_7_hourly_match_bar_counts() -> None:
    idx = hourly(24 * 30)
    by_time = WalkForward(n_folds=3, test="5d", train="10d", purge="12h").split(idx)
    by_bars = WalkForward(n_folds=3, test=120, train=240, purge=12).split(idx)
    assert by_time == by_bars
    assert spans(by_time)[0] == (108, 348, 360, 480)
    # a duration test with train from the ratio: train = 2 x 5d
    assert WalkForward(n_folds=3, test="5d", train_ratio=2).split(idx) == WalkForward(
        n_folds=3, test=120, train=240
    ).split(idx)


def test_minute_and_week_units() -> None:
    idx = pd.date_range("2024-01-01", periods=1000, freq="min", tz="UTC")
    assert WalkForward(n_folds=2, test="90m", train="3h", purge="15m").split(idx) == WalkForward(
        n_folds=2, test=90, train=180, purge=15
    ).split(idx)
    idx = hourly(24 * 7 * 10)
    folds = WalkForward(n_folds=2, test="2w", train="4w").split(idx)
    assert [(f.n_train, f.n_test) for f in folds] == [(24 * 28, 24 * 14)] * 2


def test_duration_windows_are_equal_in_time_on_a_gappy_calendar() -> None:
    # weekdays only, and Wednesday 2024-01-31 missing: the 1w test windows are Monday..Friday each,
    # so their bar counts differ (120, 96, 120) while their times line up
    idx = weekdays_hourly(6, holidays=("2024-01-31",))
    folds = WalkForward(n_folds=3, test="1w", train="2w").split(idx)
    assert spans(folds) == [(120, 360, 360, 480), (240, 480, 480, 576), (360, 576, 576, 696)]
    frame = WalkForward(n_folds=3, test="1w", train="2w").frame(idx)
    assert list(frame["test_bars"]) == [120, 96, 120]
    assert list(frame["train_bars"]) == [240, 240, 216]
    assert (frame["test_start"].dt.day_of_week == 0).all() and (frame["test_start"].dt.hour == 0).all()
    assert (frame["test_end"].dt.day_of_week == 4).all() and (frame["test_end"].dt.hour == 23).all()
    assert (frame["test_start"].diff().dropna() == pd.Timedelta("7D")).all()
    # in bars the same test length would not follow the weeks
    by_bars = WalkForward(n_folds=3, test=120, train=240).split(idx)
    assert [f.test_start for f in by_bars] != [f.test_start for f in folds]


def test_duration_purge_over_a_weekend() -> None:
    idx = weekdays_hourly(6)
    # tests start on Mondays: a 2d purge covers Saturday and Sunday, which hold no bars
    assert {f.n_purge for f in WalkForward(n_folds=3, test="1w", train="2w", purge="2d").split(idx)} == {0}
    # 3d reaches back into Friday: 24 bars, and the 2w train is measured back from Friday 00:00
    folds = WalkForward(n_folds=3, test="1w", train="2w", purge="3d").split(idx)
    assert [f.n_purge for f in folds] == [24, 24, 24]
    assert spans(folds)[0] == (96, 336, 360, 480)
    assert idx[96] == pd.Timestamp("2024-01-05", tz="UTC")


def test_daily_test_windows_can_land_on_a_weekend() -> None:
    idx = weekdays_hourly(6)
    assert [f.n_test for f in WalkForward(n_folds=5, test="1d", train="1w").split(idx)] == [24] * 5
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=6, test="1d", train="1w").split(idx)
    assert one_line(exc) == (
        "fold 0 has 0 test bars; the strategy needs at least 2; use fewer folds or a longer test"
    )


def test_anchored_durations() -> None:
    idx = weekdays_hourly(6, holidays=("2024-01-31",))
    folds = WalkForward(n_folds=3, test="1w", purge="3d", anchored=True).split(idx)
    assert all(f.train_start == 0 for f in folds)
    assert [f.train_end for f in folds] == [336, 456, 552]


def test_derived_test_with_duration_train_is_the_longest_that_fits() -> None:
    idx = hourly(24 * 30)
    folds = WalkForward(n_folds=3, train="10d", purge="12h").split(idx)
    assert spans(folds) == [(0, 240, 252, 408), (156, 396, 408, 564), (312, 552, 564, 720)]
    with pytest.raises(DataError):
        WalkForward(n_folds=3, test=157, train="10d", purge="12h").split(idx)
    # a duration purge with the ratio train: fold 0's train still starts inside the data
    folds = WalkForward(n_folds=4, purge="6h", train_ratio=2).split(idx)
    assert folds[0].train_start >= 0 and len({f.n_train for f in folds}) == 1
    assert folds[-1].test_end == len(idx)


# ----------------------------------------------------------------------------- properties


def reference(
    n: int, k: int, train: int | None, test: int | None, purge: int, anchored: bool, ratio: float
) -> list[tuple[int, int, int, int]] | None:
    """The folds straight from the spec's formulas (bars only), or None when they cannot be built."""
    r = Fraction(repr(ratio))
    if test is None:
        length = (n - train - purge) // k if train is not None else math.floor((n - purge) / (k + r))
        need = train if train is not None else math.floor(r * length)
    else:
        length = test
        need = train if train is not None else (None if anchored else math.floor(r * length))
    if length < 1:
        return None
    out = []
    for j in range(k):
        test_start = n - (k - j) * length
        train_end = test_start - purge
        if test_start < 0 or train_end < 0 or train_end - (need or 0) < 0:
            return None
        out.append((0 if anchored else train_end - need, train_end, test_start, test_start + length))
    if any(b - a < 1 or d - c < 1 for a, b, c, d in out):
        return None
    return out


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 1500),
    k=st.integers(1, 10),
    ratio=st.floats(0.05, 8.0, allow_nan=False),
    purge=st.integers(0, 40),
    anchored=st.booleans(),
    train=st.none() | st.integers(1, 400),
    test=st.none() | st.integers(1, 200),
)
def test_bar_folds_never_leak(
    n: int, k: int, ratio: float, purge: int, anchored: bool, train: int | None, test: int | None
) -> None:
    wf = WalkForward(
        n_folds=k, train=train, test=test, purge=purge, anchored=anchored, train_ratio=ratio,
        min_train_bars=1, min_test_bars=1,
    )
    expected = reference(n, k, train, test, purge, anchored, ratio)
    idx = hourly(n)
    if expected is None:
        with pytest.raises(DataError) as exc:
            wf.split(idx)
        one_line(exc)
        return
    folds = wf.split(idx)
    assert spans(folds) == expected
    assert [f.fold for f in folds] == list(range(k))
    assert folds[-1].test_end == n
    for prev, cur in itertools.pairwise(folds):
        assert cur.test_start == prev.test_end
    for f in folds:
        assert f.train_end + purge == f.test_start
        assert 0 <= f.train_start < f.train_end <= f.test_start < f.test_end
        if anchored:
            assert f.train_start == 0
    if not anchored:
        assert len({f.n_train for f in folds}) == 1
    assert len({f.n_test for f in folds}) == 1


@settings(max_examples=120, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 6), min_size=20, max_size=400),
    k=st.integers(1, 5),
    test_h=st.integers(1, 48),
    train_h=st.none() | st.integers(1, 200),
    purge_h=st.integers(0, 12),
    anchored=st.booleans(),
)
def test_duration_folds_respect_time_boundaries(
    gaps: list[int], k: int, test_h: int, train_h: int | None, purge_h: int, anchored: bool
) -> None:
    idx = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.cumsum(gaps), unit="h")
    idx = pd.DatetimeIndex(idx)
    wf = WalkForward(
        n_folds=k, test=f"{test_h}h", train=None if train_h is None else f"{train_h}h", purge=f"{purge_h}h",
        anchored=anchored, train_ratio=1.5, min_train_bars=1, min_test_bars=1,
    )
    try:
        folds = wf.split(idx)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    test_d, purge_d = pd.Timedelta(hours=test_h), pd.Timedelta(hours=purge_h)
    train_d = pd.Timedelta(hours=train_h) if train_h is not None else 1.5 * test_d
    last = idx[-1]
    assert folds[-1].test_end == len(idx)
    for j, f in enumerate(folds):
        if j:
            assert f.test_start == folds[j - 1].test_end
        assert 0 <= f.train_start < f.train_end <= f.test_start < f.test_end
        hi = last - (k - 1 - j) * test_d
        assert (idx[f.test()] > hi - test_d).all() and (idx[f.test()] <= hi).all()
        assert idx[f.test_start - 1] <= hi - test_d  # the previous bar belongs to the earlier window
        t = idx[f.test_start]
        assert (idx[f.train_end : f.test_start] >= t - purge_d).all()
        assert idx[f.train_end - 1] < t - purge_d
        if anchored:
            assert f.train_start == 0
        else:
            assert (idx[f.train()] >= t - purge_d - train_d).all()
            assert f.train_start == 0 or idx[f.train_start - 1] < t - purge_d - train_d


# ----------------------------------------------------------------------------- frame, figure, describe


def test_frame_contents() -> None:
    idx = hourly(100)
    frame = WalkForward(n_folds=4, train_ratio=2, purge=4).frame(idx)
    assert list(frame.columns) == [
        "fold", "train_start", "train_end", "test_start", "test_end", "train_bars", "purge_bars", "test_bars",
    ]
    assert list(frame["fold"]) == [0, 1, 2, 3]
    first = frame.iloc[0]
    assert first["train_start"] == idx[0] and first["train_end"] == idx[31]  # end = last bar included
    assert first["test_start"] == idx[36] and first["test_end"] == idx[51]
    assert frame.iloc[-1]["test_end"] == idx[-1]
    assert list(frame["train_bars"]) == [32] * 4
    assert list(frame["purge_bars"]) == [4] * 4
    assert list(frame["test_bars"]) == [16] * 4
    assert frame["train_start"].dt.tz is not None
    assert frame.attrs == {"unused_bars": 0, "anchored": False}
    assert WalkForward(n_folds=4, train_ratio=2).frame(idx).attrs["unused_bars"] == 4


@pytest.mark.parametrize("anchored", [False, True])
def test_figure_traces(anchored: bool) -> None:
    idx = hourly(100)
    fig = WalkForward(n_folds=4, train_ratio=2, purge=4, anchored=anchored).figure(idx)
    assert [t.name for t in fig.data] == ["train", "purge", "test"]
    assert [t.marker.color for t in fig.data] == ["#1f77b4", "#7f7f7f", "#ff7f0e"]
    for trace in fig.data:
        assert trace.type == "bar" and trace.orientation == "h"
        assert list(trace.y) == ["fold 0", "fold 1", "fold 2", "fold 3"]
    assert fig.layout.title.text == f"Walk-forward folds ({'anchored' if anchored else 'rolling'})"
    assert fig.layout.xaxis.type == "date"
    train, purge, test = fig.data
    assert pd.Timestamp(test.base[0]) == idx[36].tz_localize(None)
    assert test.x[0] == pd.Timedelta(hours=16) / pd.Timedelta(milliseconds=1)
    assert purge.x[0] == pd.Timedelta(hours=4) / pd.Timedelta(milliseconds=1)
    assert pd.Timestamp(train.base[1]) == (idx[0] if anchored else idx[16]).tz_localize(None)


def test_describe_round_trips_through_json() -> None:
    wf = WalkForward(n_folds=3, test="5d", train="10d", purge="12h", anchored=True, min_train_bars=24)
    record = wf.describe()
    assert record == {
        "splitter": "walk_forward", "n_folds": 3, "train": "10d", "test": "5d", "purge": "12h",
        "anchored": True, "train_ratio": 4.0, "min_train_bars": 24, "min_test_bars": 2,
    }
    assert json.loads(json.dumps(record)) == record
    assert WalkForward.from_describe(json.loads(json.dumps(record))) == wf
    idx = hourly(24 * 30)
    full = json.loads(json.dumps(wf.describe(idx)))
    assert WalkForward.from_describe(full) == wf
    assert full["bars"] == 720 and full["unused_bars"] == 0
    assert full["first"] == "2024-01-01T00:00:00+00:00"
    assert [Fold(**f) for f in full["folds"]] == wf.split(idx)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("settings_", "name"),
    [
        ({"n_folds": 0}, "n_folds"),
        ({"n_folds": -2}, "n_folds"),
        ({"n_folds": True}, "n_folds"),
        ({"n_folds": 2.0}, "n_folds"),
        ({"train": 0}, "train"),
        ({"train": -5}, "train"),
        ({"train": 1.5}, "train"),
        ({"train": True}, "train"),
        ({"train": "30x"}, "train"),
        ({"train": "1M"}, "train"),
        ({"train": "0d"}, "train"),
        ({"train": "30 days"}, "train"),
        ({"test": 0}, "test"),
        ({"test": "d30"}, "test"),
        ({"test": "-1h"}, "test"),
        ({"purge": -1}, "purge"),
        ({"purge": "soon"}, "purge"),
        ({"purge": None}, "purge"),
        ({"anchored": "yes"}, "anchored"),
        ({"anchored": 1}, "anchored"),
        ({"train_ratio": 0}, "train_ratio"),
        ({"train_ratio": -1.0}, "train_ratio"),
        ({"train_ratio": float("nan")}, "train_ratio"),
        ({"train_ratio": float("inf")}, "train_ratio"),
        ({"train_ratio": "4"}, "train_ratio"),
        ({"train_ratio": True}, "train_ratio"),
        ({"min_train_bars": 0}, "min_train_bars"),
        ({"min_test_bars": 0}, "min_test_bars"),
        ({"min_test_bars": 1.5}, "min_test_bars"),
    ],
)
def test_bad_settings(settings_: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        WalkForward(**settings_)  # type: ignore[arg-type]
    assert one_line(exc).startswith(name)


def test_unparseable_duration_names_the_accepted_forms() -> None:
    with pytest.raises(ConfigError) as exc:
        WalkForward(test="30x")
    assert one_line(exc) == (
        "test='30x' is neither a bar count nor a duration; use a whole number of bars (e.g. 500) or a count "
        "and a unit m/h/d/w (e.g. '90m', '12h', '30d', '2w')"
    )


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        (pd.RangeIndex(100), "DatetimeIndex, got RangeIndex"),
        ([1, 2, 3], "DatetimeIndex, got list"),
        (hourly(0), "empty index"),
        (hourly(100)[::-1], "not sorted"),
        (hourly(50).append(hourly(50)).sort_values(), "50 duplicate timestamps"),
        (pd.DatetimeIndex([pd.Timestamp("2024-01-01"), pd.NaT]), "1 NaT"),
    ],
)
def test_bad_index(index: object, needle: str) -> None:
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=2).split(index)  # type: ignore[arg-type]
    assert needle in one_line(exc)


def test_not_enough_bars() -> None:
    idx = pd.date_range("2024-01-01", periods=525_600, freq="min", tz="UTC")
    with pytest.raises(DataError) as exc:
        WalkForward(train=500_000, test=100_000).split(idx)
    assert one_line(exc) == (
        "walk-forward needs 1,300,000 bars (train 500,000 + purge 0 + 8 folds x 100,000 test) but the data "
        "has 525,600; use fewer or shorter folds"
    )
    with pytest.raises(DataError) as exc:
        WalkForward(train="300d", test="30d").split(idx)
    assert one_line(exc) == (
        "walk-forward needs 540 days 00:00:00 of data (train 300d + purge 0 + 8 folds x 30d test) but the "
        "525,600 bars span 364 days 23:59:00 (2024-01-01 00:00 to 2024-12-30 23:59); "
        "use fewer or shorter folds"
    )
    with pytest.raises(DataError) as exc:
        WalkForward(test=100_000, anchored=True, purge=10).split(idx)
    assert one_line(exc).startswith("walk-forward needs 800,010 bars (purge 10 + 8 folds x 100,000 test)")


def test_not_enough_bars_for_derived_folds() -> None:
    with pytest.raises(DataError) as exc:
        WalkForward().split(hourly(10))
    assert one_line(exc) == (
        "walk-forward needs 12 bars (train 4 x test + purge 0 + 8 folds x 1 test) but the data has 10; "
        "use fewer folds or a shorter train"
    )
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=2, train=9).split(hourly(10))
    assert one_line(exc).startswith("walk-forward needs 11 bars (train 9 + purge 0 + 2 folds x 1 test)")
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=2, train="30d").split(hourly(100))
    assert "train 30d + purge 0 + 2 folds x 1 test" in one_line(exc)
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=2, test="1d", train="99999999999w").split(hourly(100))
    one_line(exc)


def test_too_short_folds() -> None:
    idx = hourly(1000)
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=8, test=40, train=200, min_test_bars=120).split(idx)
    assert one_line(exc) == (
        "fold 0 has 40 test bars; the strategy needs at least 120; use fewer folds or a longer test"
    )
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=2, test=100, train=10, min_train_bars=50).split(idx)
    assert one_line(exc) == (
        "fold 0 has 10 train bars; the strategy needs at least 50; use a longer train"
    )
    with pytest.raises(DataError) as exc:
        WalkForward(n_folds=8, min_test_bars=200).split(idx)
    assert one_line(exc) == (
        "fold 0 has 83 test bars; the strategy needs at least 200; use fewer folds or more data"
    )
