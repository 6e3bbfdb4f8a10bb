"""The shared source contract suite: what every `Source` promises the lake, run on each source.

A test class subclasses `SourceContract` and provides a `case` fixture yielding a `SourceCase`: the
source under test, a symbol it serves and a range in which the provider has every bar the
symbol's calendar expects. The promises are those of `workbench/data/sources/base.py` and the bar
frame contract of `workbench/data/bars.py`, the ones `Lake.sync` relies on:

- `name` labels the lake's series; `timeframes` are stored timeframes; `check_timeframe` accepts
  those and refuses any other with a one-line `ConfigError`;
- `canonical_symbol` returns the canonical spelling (idempotent, blanks stripped); an unknown or
  empty symbol is a one-line `ConfigError` that names it and what to use, raised by
  `canonical_symbol` or at the latest by the first `fetch`;
- `fetch(symbol, timeframe, start, end)` yields frames in ascending time order with the bar
  columns (`ts` UTC, float64 values, optional `trades`/`vwap` only), each sorted with unique `ts`,
  every `ts` in the half-open [start, end); where the provider has all its bars they are exactly
  the bar open times `calendar(symbol)` expects in the range;
- a range split anywhere (on a bar open or inside a bar) gives the same bars as one request, so
  a sync that resumes after the last stored bar adds exactly what one big sync would; an empty
  range, or one with no bar open in it, yields no bars.

Like the broker suite (`tests/broker_contract.py`), one set of tests runs on every implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from workbench.data.bars import BAR_COLUMNS, OPTIONAL_COLUMNS
from workbench.data.sources.base import Source
from workbench.data.timeframe import STORED, Timeframe
from workbench.errors import ConfigError

ONE_US = pd.Timedelta(microseconds=1)


@dataclass
class SourceCase:
    """One source and a range of one symbol where the provider has every expected bar."""

    source: Source
    symbol: str  # canonical spelling
    timeframe: str
    start: str  # on a bar open time
    end: str  # on a bar open time, a few dozen bars after start
    unknown_symbol: str  # a well-formed name the provider does not serve
    spelling: str | None = None  # another accepted spelling of `symbol`, if the source takes one

    @property
    def tf(self) -> Timeframe:
        return Timeframe.parse(self.timeframe)

    @property
    def t0(self) -> pd.Timestamp:
        return pd.Timestamp(self.start, tz="UTC")

    @property
    def t1(self) -> pd.Timestamp:
        return pd.Timestamp(self.end, tz="UTC")

    def frames(self, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.DataFrame]:
        return list(self.source.fetch(self.symbol, self.tf, start, end))

    def bars(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """All bars of [start, end) as the lake would store them: concatenated, last copy wins."""
        frames = [f for f in self.frames(start, end) if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(BAR_COLUMNS))
        out = pd.concat(frames, ignore_index=True)
        out = out.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable")
        out["ts"] = pd.DatetimeIndex(out["ts"]).as_unit("us")
        return out.reset_index(drop=True)

    def expected(self, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """Bar open times (int64 us) the symbol's calendar expects in [start, end)."""
        return self.source.calendar(self.symbol).expected(start, end - ONE_US, self.tf)


def _us(frame: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(frame["ts"]).as_unit("us").asi8


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"not one line: {text!r}"
    assert ": " in text, f"names no fix (<problem>: <what to do>): {text!r}"
    return text


class SourceContract:
    """Subclass and provide the `case` fixture."""

    # ------------------------------------------------------------------ name and timeframes
    def test_name_and_timeframes(self, case: SourceCase) -> None:
        src = case.source
        assert isinstance(src.name, str) and src.name.strip() == src.name and src.name
        assert src.timeframes and len(set(src.timeframes)) == len(src.timeframes)
        assert set(src.timeframes) <= set(STORED)
        assert case.timeframe in src.timeframes
        for name in src.timeframes:
            src.check_timeframe(Timeframe.parse(name))

    def test_a_timeframe_it_does_not_serve_is_one_config_error_line(self, case: SourceCase) -> None:
        with pytest.raises(ConfigError) as exc:
            case.source.check_timeframe(Timeframe.parse("2h"))
        text = _one_line(exc)
        assert "2h" in text and case.source.timeframes[0] in text

    # ------------------------------------------------------------------ symbols
    def test_canonical_symbol_is_idempotent_and_strips_blanks(self, case: SourceCase) -> None:
        src = case.source
        assert src.canonical_symbol(case.symbol) == case.symbol
        assert src.canonical_symbol(f"  {case.symbol} ") == case.symbol
        if case.spelling is not None:
            assert src.canonical_symbol(case.spelling) == case.symbol

    def test_an_unknown_symbol_is_one_config_error_line(self, case: SourceCase) -> None:
        with pytest.raises(ConfigError) as exc:
            symbol = case.source.canonical_symbol(case.unknown_symbol)
            list(case.source.fetch(symbol, case.tf, case.t0, case.t1))
        assert case.unknown_symbol in _one_line(exc)

    @pytest.mark.parametrize("blank", ["", "   "])
    def test_an_empty_symbol_is_one_config_error_line(self, case: SourceCase, blank: str) -> None:
        with pytest.raises(ConfigError) as exc:
            case.source.canonical_symbol(blank)
        _one_line(exc)

    def test_the_calendar_is_the_symbols(self, case: SourceCase) -> None:
        cal = case.source.calendar(case.symbol)
        assert len(case.expected(case.t0, case.t1)) > 1, "pick a range where the calendar expects bars"
        assert cal.always_open == ("/" in case.symbol)

    # ------------------------------------------------------------------ bars
    def test_frames_hold_bar_columns_in_the_half_open_range(self, case: SourceCase) -> None:
        frames = case.frames(case.t0, case.t1)
        assert frames, "no frames for a range with data"
        firsts = []
        for f in frames:
            assert set(BAR_COLUMNS) <= set(f.columns) <= {*BAR_COLUMNS, *OPTIONAL_COLUMNS}, list(f.columns)
            assert isinstance(f["ts"].dtype, pd.DatetimeTZDtype) and str(f["ts"].dt.tz) == "UTC"
            for col in f.columns.drop("ts"):
                assert f[col].dtype == np.float64, (col, f[col].dtype)
            us = _us(f)
            assert (np.diff(us) > 0).all(), "a frame's ts must be sorted and unique"
            if len(us):
                assert us[0] >= case.t0.value // 1000 and us[-1] < case.t1.value // 1000
                firsts.append(us[0])
        assert firsts == sorted(firsts), "frames must come in ascending time order"

    def test_bars_are_the_calendars_bars(self, case: SourceCase) -> None:
        got = _us(case.bars(case.t0, case.t1))
        np.testing.assert_array_equal(got, case.expected(case.t0, case.t1))

    def test_a_range_split_anywhere_gives_the_same_bars(self, case: SourceCase) -> None:
        whole = case.bars(case.t0, case.t1)
        opens = case.expected(case.t0, case.t1)
        on_open = pd.Timestamp(int(opens[len(opens) // 3]), unit="us", tz="UTC")
        inside = pd.Timestamp(int(opens[2 * len(opens) // 3]), unit="us", tz="UTC") + case.tf.delta / 2
        parts = [case.bars(case.t0, on_open), case.bars(on_open, inside), case.bars(inside, case.t1)]
        assert all(len(p) for p in parts)
        assert _us(parts[0])[-1] < on_open.value // 1000 <= _us(parts[1])[0]
        joined = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole)
        pd.testing.assert_frame_equal(case.bars(case.t0, case.t1), whole)  # and it is repeatable

    def test_an_empty_range_yields_no_bars(self, case: SourceCase) -> None:
        assert sum(len(f) for f in case.frames(case.t0, case.t0)) == 0
        mid = case.t0 + case.tf.delta / 4  # no bar opens in [t0 + 1/4 bar, t0 + 3/4 bar)
        assert sum(len(f) for f in case.frames(mid, mid + case.tf.delta / 2)) == 0
