"""Walk-forward splits of a bar index: test folds tiling the end of the data, each after a purge and a train.

Out-of-sample evaluation needs train windows that never see their test bars; this module computes the bar
positions once so optimisers, reports and run records all agree on them.

Semantics (positions are 0-based into the bar index; every range is end-exclusive):

- Test windows are contiguous and non-overlapping, and the LAST one ends at the last bar of the data. Fold k's
  test window immediately follows fold k-1's, so with test length L and n folds the tests cover the final n·L
  bars and fold 0's test starts at n_bars - n·L.
- Fold k: test = [t_k, t_k + L); the train window ends `purge` bars (the gap is also called an embargo) before
  the test starts. Rolling: train = [t_k - purge - train, t_k - purge), every window the same length.
  Anchored (expanding): train = [0, t_k - purge), every train window starts at bar 0.
- test=None derives L so that the folds fill the data: L = floor((n_bars - purge) / (n_folds + train_ratio))
  and train = floor(train_ratio·L); with `train` given, L = floor((n_bars - train - purge) / n_folds).
  Anchored mode uses the same L, so train_ratio (or train) is the minimum length of fold 0's train window.
  Ratios are read as the decimals they print as (0.1 is exactly a tenth), so floors do not suffer float error.
- train=None with `test` given: rolling train = train_ratio x test (bars, or a duration when test is one).
  Anchored mode without `train` then has no train length at all: each fold trains on every bar before its
  purge. A given `train` in anchored mode is the minimum length of fold 0's train window.
- When both are given, the bars before fold 0's train window are unused (`unused_bars` in frame() attrs and
  in describe(index)); anchored mode never leaves bars unused.
- Lengths are bar counts (int) or durations ("90m", "12h", "30d", "2w"). Durations are measured in time,
  not bars: test boundaries are laid back from the last bar's timestamp in steps of the duration,
  b_j = last - j·test, and a bar belongs to the test window (b_{j+1}, b_j] that holds its timestamp
  (`index.searchsorted(..., side="right")`). Purge and train durations are measured back from the first test
  bar's time t: purge = [t - purge, t), train = [t - purge - train, t - purge) (side="left"). On a calendar
  with gaps (nights, weekends) windows are therefore equal in time, not in bars, and a purge that falls on a
  weekend holds no bars. Folds store the resulting positions.
- test=None with a duration train or purge: L is the largest bar count for which fold 0 still fits.
- Nothing is shortened silently: windows that need data before the first bar, or folds with fewer than
  min_train_bars / min_test_bars bars, raise a DataError; bad settings raise a ConfigError.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.errors import ConfigError, DataError

__all__ = ["Fold", "WalkForward"]

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FORMS = "a whole number of bars (e.g. 500) or a count and a unit m/h/d/w (e.g. '90m', '12h', '30d', '2w')"
_COLORS = {"train": "#1f77b4", "purge": "#7f7f7f", "test": "#ff7f0e"}

Length = int | pd.Timedelta


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold as end-exclusive positions into the bar index."""

    fold: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def train(self) -> slice:
        """Positions of the train bars, for `bars.iloc[fold.train()]`."""
        return slice(self.train_start, self.train_end)

    def test(self) -> slice:
        """Positions of the test bars, for `bars.iloc[fold.test()]`."""
        return slice(self.test_start, self.test_end)

    @property
    def n_train(self) -> int:
        return self.train_end - self.train_start

    @property
    def n_purge(self) -> int:
        return self.test_start - self.train_end

    @property
    def n_test(self) -> int:
        return self.test_end - self.test_start


def _length(name: str, value: object, *, allow_zero: bool = False) -> Length:
    """A setting as a bar count or a duration; a one-line ConfigError naming the accepted forms otherwise."""
    low = 0 if allow_zero else 1
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < low:
            unit = "bar" if low == 1 else "bars"
            raise ConfigError(f"{name} must be at least {low} {unit}, got {value}; use {_FORMS}")
        return int(value)
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            count = int(m.group(1))
            if count < low:
                raise ConfigError(f"{name} must be a positive duration, got {value!r}; use {_FORMS}")
            try:
                span: dict[str, Any] = {_UNITS[m.group(2)]: count}  # Timedelta(days=30) and the like
                return pd.Timedelta(**span)
            except (OverflowError, ValueError):
                raise ConfigError(f"{name}={value!r} is too long to be a duration; use {_FORMS}") from None
    raise ConfigError(f"{name}={value!r} is neither a bar count nor a duration; use {_FORMS}")


def _count(name: str, value: object, low: int) -> int:
    """An int setting >= low (bools refused), or a one-line ConfigError."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _as_index(index: object) -> pd.DatetimeIndex:
    """The bar index (a DataFrame or Series gives its index), checked to be sorted, unique and without NaT."""
    if isinstance(index, pd.DataFrame | pd.Series):
        index = index.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(
            f"walk-forward needs bars indexed by a DatetimeIndex, got {type(index).__name__}; "
            "set the timestamps as the index (e.g. bars.set_index('ts'))"
        )
    if len(index) == 0:
        raise DataError("walk-forward got an empty index; load some bars first")
    if index.hasnans:
        n_nat = int(np.count_nonzero(index.isna()))
        raise DataError(f"the index has {n_nat:,} NaT timestamps; drop those bars first")
    if not index.is_monotonic_increasing:
        raise DataError("the index is not sorted by time; sort the bars first (bars.sort_index())")
    if not index.is_unique:
        dup = index[index.duplicated()]
        raise DataError(
            f"the index has {len(dup):,} duplicate timestamps (first {dup[0]}); "
            "drop them first (bars[~bars.index.duplicated()])"
        )
    return index


def _minus(ts: pd.Timestamp, delta: pd.Timedelta, times: float = 1) -> pd.Timestamp | None:
    """ts - times x delta, or None when that falls outside what pandas can represent."""
    try:
        return ts - delta * times
    except (OverflowError, ValueError):
        return None


def _show(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Timestamps plotly.js can draw: tz-aware ones as naive UTC (it ignores offsets)."""
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


@dataclass(frozen=True, kw_only=True)
class WalkForward:
    """Walk-forward (rolling or anchored) out-of-sample folds; the module docstring has the exact rules."""

    n_folds: int = 8
    train: int | str | None = None
    test: int | str | None = None
    purge: int | str = 0
    anchored: bool = False
    train_ratio: float = 4.0
    min_train_bars: int = 2
    min_test_bars: int = 2

    def __post_init__(self) -> None:
        # validate eagerly (a bad setting fails where it is written) and normalise numpy ints to int
        object.__setattr__(self, "n_folds", _count("n_folds", self.n_folds, 1))
        object.__setattr__(self, "min_train_bars", _count("min_train_bars", self.min_train_bars, 1))
        object.__setattr__(self, "min_test_bars", _count("min_test_bars", self.min_test_bars, 1))
        for name in ("train", "test", "purge"):
            value = getattr(self, name)
            if value is None and name != "purge":
                continue
            parsed = _length(name, value, allow_zero=name == "purge")
            object.__setattr__(self, name, parsed if isinstance(parsed, int) else str(value).strip())
        if not isinstance(self.anchored, bool | np.bool_):
            raise ConfigError(f"anchored must be True or False, got {self.anchored!r}")
        object.__setattr__(self, "anchored", bool(self.anchored))
        ratio = self.train_ratio
        if (
            not isinstance(ratio, numbers.Real)
            or isinstance(ratio, bool)
            or not math.isfinite(ratio)
            or ratio <= 0
        ):
            raise ConfigError(f"train_ratio must be a positive number (train length / test), got {ratio!r}")
        object.__setattr__(self, "train_ratio", float(ratio))

    # ------------------------------------------------------------------ public

    def split(self, index: pd.DatetimeIndex | pd.DataFrame | pd.Series) -> list[Fold]:
        """The folds for these bars, oldest first; DataError when they do not fit or a fold is too short."""
        idx = _as_index(index)
        train = None if self.train is None else _length("train", self.train)
        test = None if self.test is None else _length("test", self.test)
        purge = _length("purge", self.purge, allow_zero=True)
        if test is None:
            folds = self._derived(idx, train, purge)
        else:
            shown = self._ratio_train_label(test) if self.train is None else self.train
            if train is None and not self.anchored:
                try:
                    train = self._floor_ratio(test) if isinstance(test, int) else test * self.train_ratio
                except (OverflowError, ValueError):
                    raise self._misfit(idx, shown, self.purge, self.test) from None
            placed = self._place(idx, self._test_bounds(idx, test), train, purge)
            if placed is None:
                raise self._misfit(
                    idx,
                    None if train is None else shown,
                    self.purge,
                    self.test,
                    time_needed=self._time_needed(train, purge, test),
                )
            folds = placed
        self._check_sizes(folds)
        return folds

    def frame(self, index: pd.DatetimeIndex | pd.DataFrame | pd.Series) -> pd.DataFrame:
        """One row per fold: first/last bar times (ends INCLUDED) and bar counts; attrs hold unused_bars."""
        idx = _as_index(index)
        folds = self.split(idx)
        out = pd.DataFrame(
            {
                "fold": [f.fold for f in folds],
                "train_start": idx[[f.train_start for f in folds]],
                "train_end": idx[[f.train_end - 1 for f in folds]],
                "test_start": idx[[f.test_start for f in folds]],
                "test_end": idx[[f.test_end - 1 for f in folds]],
                "train_bars": [f.n_train for f in folds],
                "purge_bars": [f.n_purge for f in folds],
                "test_bars": [f.n_test for f in folds],
            }
        )
        out.attrs["unused_bars"] = folds[0].train_start
        out.attrs["anchored"] = self.anchored
        return out

    def figure(self, index: pd.DatetimeIndex | pd.DataFrame | pd.Series) -> go.Figure:
        """A Gantt-style chart: per fold a train (blue), purge (grey) and test (orange) bar over time."""
        idx = _as_index(index)
        folds = self.split(idx)
        times = _naive_utc(idx)
        gaps = times[1:] - times[:-1]
        step = gaps.min() if len(gaps) else pd.Timedelta(0)  # the bar length (sorted unique: gaps > 0)
        # bar starts, then the end of the last bar
        edges = pd.DatetimeIndex(times.append(pd.DatetimeIndex([times[-1] + step])))
        rows = [f"fold {f.fold}" for f in folds]
        fig = go.Figure()
        for name, lo, hi in (
            ("train", [f.train_start for f in folds], [f.train_end for f in folds]),
            ("purge", [f.train_end for f in folds], [f.test_start for f in folds]),
            ("test", [f.test_start for f in folds], [f.test_end for f in folds]),
        ):
            start, stop = edges[lo], edges[hi]
            spans = list(zip(lo, hi, strict=True))
            first = [times[a].strftime("%Y-%m-%d %H:%M") if b > a else "-" for a, b in spans]
            last = [times[b - 1].strftime("%Y-%m-%d %H:%M") if b > a else "-" for a, b in spans]
            fig.add_trace(
                go.Bar(
                    name=name,
                    y=rows,
                    base=list(start),
                    x=((stop - start) / pd.Timedelta(milliseconds=1)).tolist(),
                    orientation="h",
                    marker_color=_COLORS[name],
                    customdata=np.column_stack([first, last, np.subtract(hi, lo)]),
                    hovertemplate=(
                        f"%{{y}} {name}: %{{customdata[2]}} bars<br>%{{customdata[0]}} to %{{customdata[1]}}"
                        "<extra></extra>"
                    ),
                )
            )
        mode = "anchored" if self.anchored else "rolling"
        fig.update_layout(
            template="plotly_white",
            title={"text": f"Walk-forward folds ({mode})"},
            barmode="overlay",
            height=max(260, 120 + 32 * len(folds)),
            xaxis={"type": "date", "title": {"text": "time (UTC)" if idx.tz is not None else "time"}},
            yaxis={"type": "category", "autorange": "reversed", "title": {"text": "fold"}},
            legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0.0},
            margin={"l": 60, "r": 30, "t": 80, "b": 40},
        )
        return fig

    def describe(self, index: pd.DatetimeIndex | pd.DataFrame | pd.Series | None = None) -> dict[str, Any]:
        """JSON-able settings for run records; with an index also the data span, unused bars and folds."""
        out: dict[str, Any] = {"splitter": "walk_forward"}
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        if index is not None:
            idx = _as_index(index)
            folds = self.split(idx)
            out.update(
                bars=len(idx),
                first=idx[0].isoformat(),
                last=idx[-1].isoformat(),
                unused_bars=folds[0].train_start,
                folds=[asdict(f) for f in folds],
            )
        return out

    @classmethod
    def from_describe(cls, record: dict[str, Any]) -> WalkForward:
        """Rebuild the splitter from `describe()` output (extra keys such as folds are ignored)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

    # ------------------------------------------------------------------ layout

    def _floor_ratio(self, bars: int) -> int:
        """floor(train_ratio x bars), with the ratio read as the decimal it prints as."""
        return math.floor(Fraction(repr(self.train_ratio)) * bars)

    def _ratio_train_label(self, test: Length) -> str | int:
        if isinstance(test, pd.Timedelta):
            return f"{self.train_ratio:g} x {self.test}"
        return self._floor_ratio(test)

    def _test_bounds(self, idx: pd.DatetimeIndex, test: Length) -> list[int] | None:
        """The n_folds + 1 test boundaries (the last is len(idx)); None when fold 0 starts before the data."""
        n, k = len(idx), self.n_folds
        if isinstance(test, int):
            bounds = [n - (k - j) * test for j in range(k + 1)]
            return bounds if bounds[0] >= 0 else None
        times = [_minus(idx[-1], test, k - j) for j in range(k + 1)]
        if times[0] is None or times[0] < idx[0]:
            return None
        return [int(p) for p in idx.searchsorted(pd.DatetimeIndex(times), side="right")]

    def _place(
        self, idx: pd.DatetimeIndex, bounds: list[int] | None, train: Length | None, purge: Length
    ) -> list[Fold] | None:
        """Folds for these test boundaries, or None when a purge or train window would start before the data.

        `train` is the rolling train length, or in anchored mode the minimum length of fold 0's train
        (None: no minimum beyond min_train_bars).
        """
        if bounds is None:
            return None
        first = idx[0]
        folds = []
        for k in range(self.n_folds):
            test_start, test_end = bounds[k], bounds[k + 1]
            if isinstance(purge, pd.Timedelta):
                edge = _minus(idx[test_start], purge)
                if edge is None or edge < first:
                    return None
                train_end = int(idx.searchsorted(edge, side="left"))
            else:
                train_end = test_start - purge
                if train_end < 0:
                    return None
                edge = idx[train_end]  # train_end <= test_start < len(idx)
            if train is None:
                train_start = 0
            elif isinstance(train, pd.Timedelta):
                lo = _minus(edge, train)
                if lo is None or lo < first:
                    return None
                train_start = int(idx.searchsorted(lo, side="left"))
            else:
                train_start = train_end - train
                if train_start < 0:
                    return None
            folds.append(Fold(k, 0 if self.anchored else train_start, train_end, test_start, test_end))
        return folds

    def _derived(self, idx: pd.DatetimeIndex, train: Length | None, purge: Length) -> list[Fold]:
        """Folds when `test` is None: the test length (in bars) that makes the folds fill the data."""
        n, k = len(idx), self.n_folds
        shown_train = self.train if train is not None else f"{self.train_ratio:g} x test"

        def attempt(length: int) -> list[Fold] | None:
            rolling_train = train if train is not None else self._floor_ratio(length)
            return self._place(idx, self._test_bounds(idx, length), rolling_train, purge)

        if isinstance(train, int) and isinstance(purge, int):
            length = (n - train - purge) // k
            if length < 1:
                raise self._misfit(idx, shown_train, self.purge, 1)
            folds = attempt(length)
        elif train is None and isinstance(purge, int):
            ratio = Fraction(repr(self.train_ratio))
            length = math.floor((n - purge) / (k + ratio))
            if length < 1:
                raise self._misfit(idx, shown_train, self.purge, 1, need=purge + k + math.ceil(ratio))
            folds = attempt(length)
        else:
            # a duration train or purge: the longest test (in bars) for which fold 0 still fits
            folds = attempt(1) if n >= k else None
            if folds is None:
                raise self._misfit(idx, shown_train, self.purge, 1)
            lo, hi = 1, n // k
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if attempt(mid) is None:
                    hi = mid - 1
                else:
                    lo = mid
            folds = attempt(lo)
        assert folds is not None  # the formulas above always leave room for fold 0
        return folds

    # ------------------------------------------------------------------ errors

    def _misfit(
        self,
        idx: pd.DatetimeIndex,
        train: object,
        purge: object,
        test: object,
        need: int | None = None,
        time_needed: pd.Timedelta | None = None,
    ) -> DataError:
        """The one-line 'does not fit' error: what the folds need against what the data has."""
        n, k = len(idx), self.n_folds
        parts = [] if train is None else [f"train {_show(train)}"]
        parts += [f"purge {_show(purge)}", f"{k} folds x {_show(test)} test"]
        detail = " + ".join(parts)
        fix = "use fewer or shorter folds" if self.test is not None else "use fewer folds or a shorter train"
        train_bars = train or 0
        if need is None and isinstance(train_bars, int) and isinstance(purge, int) and isinstance(test, int):
            need = train_bars + purge + k * test
        if need is not None:
            return DataError(f"walk-forward needs {need:,} bars ({detail}) but the data has {n:,}; {fix}")
        have = f"the {n:,} bars span {idx[-1] - idx[0]} ({idx[0]:%Y-%m-%d %H:%M} to {idx[-1]:%Y-%m-%d %H:%M})"
        if time_needed is not None:
            return DataError(f"walk-forward needs {time_needed} of data ({detail}) but {have}; {fix}")
        return DataError(f"walk-forward needs more data ({detail}) than {have}; {fix}")

    def _time_needed(self, train: Length | None, purge: Length, test: Length) -> pd.Timedelta | None:
        """train + purge + n_folds x test as a duration, when every part is one (a zero purge counts)."""
        parts = [p for p in (train, purge) if p is not None and not (isinstance(p, int) and p == 0)]
        durations = [p for p in parts if isinstance(p, pd.Timedelta)]
        if len(durations) < len(parts) or not isinstance(test, pd.Timedelta):
            return None
        try:
            return sum(durations, pd.Timedelta(0)) + test * self.n_folds
        except (OverflowError, ValueError):
            return None

    def _check_sizes(self, folds: list[Fold]) -> None:
        """Every fold must leave the strategy min_test_bars to trade and min_train_bars to learn from."""
        if self.train is not None:
            train_fix = "use a longer train"
        elif self.anchored:
            train_fix = "use fewer or shorter test folds"
        else:
            train_fix = "use a larger train_ratio or set train"
        test_fix = "use fewer folds or more data" if self.test is None else "use fewer folds or a longer test"
        for f in folds:
            if f.n_test < self.min_test_bars:
                raise DataError(
                    f"fold {f.fold} has {f.n_test:,} test bars; the strategy needs at least "
                    f"{self.min_test_bars:,}; {test_fix}"
                )
            if f.n_train < self.min_train_bars:
                raise DataError(
                    f"fold {f.fold} has {f.n_train:,} train bars; the strategy needs at least "
                    f"{self.min_train_bars:,}; {train_fix}"
                )
