"""Which bar timestamps a market is expected to have: 24/7 for crypto, exchange sessions for equities.

Gap detection, incremental syncs and the "is this bucket complete" rule of resampling all ask the same
question, so it is answered here once, with `exchange_calendars` for exchange holidays and early closes.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, did_you_mean

ALWAYS_OPEN = "24/7"
_DAY_US = 86400 * 1_000_000


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """exchange_calendars 4.13 reads `.values` of tz-aware data, which pandas 3.1 deprecates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*\.values returning an ndarray.*")
        yield


@functools.lru_cache(maxsize=8)
def _exchange(code: str):
    import exchange_calendars as xc

    try:
        with _quiet():
            return xc.get_calendar(code, start="2000-01-01")
    except xc.errors.InvalidCalendarName:
        names = xc.get_calendar_names(include_aliases=False)
        raise ConfigError(
            f"unknown market calendar {code!r}{did_you_mean(code, names)}: use {ALWAYS_OPEN!r} "
            "for crypto or an exchange code such as 'XNYS'"
        ) from None


@dataclass(frozen=True)
class Calendar:
    """A market's trading schedule: `24/7` or an exchange code understood by exchange_calendars."""

    code: str = ALWAYS_OPEN

    @property
    def always_open(self) -> bool:
        return self.code == ALWAYS_OPEN

    def expected(self, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe) -> np.ndarray:
        """Expected bar open times in [start, end] as sorted int64 microseconds since the epoch."""
        step = timeframe.micros
        lo, hi = _us(start), _us(end)
        if self.always_open:
            first = -((-(lo - timeframe.origin_micros)) // step) * step + timeframe.origin_micros
            return np.arange(first, hi + 1, step, dtype=np.int64)
        if timeframe.seconds >= 86400:
            days = self._session_days(lo, hi + _DAY_US)
            buckets = (days - timeframe.origin_micros) // step * step + timeframe.origin_micros
        else:
            minutes = self._session_minutes(lo - step, hi + step)
            buckets = (minutes - timeframe.origin_micros) // step * step + timeframe.origin_micros
        buckets = sorted_unique(buckets)  # floors of sorted times are sorted: no re-sort
        return buckets[(buckets >= lo) & (buckets <= hi)]

    def next_expected(self, ts: pd.Timestamp, timeframe: Timeframe) -> pd.Timestamp | None:
        """The first expected bar open time strictly after `ts` (None if the calendar ends)."""
        after = timeframe.floor(ts) + timeframe.delta
        if self.always_open:
            return after
        horizon = after + pd.Timedelta(days=10) + timeframe.delta
        got = self.expected(after, horizon, timeframe)
        got = got[got > _us(ts)]
        return pd.Timestamp(int(got[0]), unit="us", tz="UTC") if len(got) else None

    def is_open_at(self, ts_us: np.ndarray, timeframe: Timeframe) -> np.ndarray:
        """Mask of timestamps that fall on an expected bar of this calendar."""
        if self.always_open or len(ts_us) == 0:
            return np.ones(len(ts_us), dtype=bool)
        exp = self.expected(_ts(int(ts_us.min())), _ts(int(ts_us.max())), timeframe)
        pos = np.searchsorted(exp, ts_us)
        pos = np.minimum(pos, len(exp) - 1)
        return exp[pos] == ts_us if len(exp) else np.zeros(len(ts_us), dtype=bool)

    def _session_minutes(self, lo_us: int, hi_us: int) -> np.ndarray:
        cal = _exchange(self.code)
        with _quiet():
            lo = max(_ts(lo_us), cal.first_minute)
            hi = min(_ts(hi_us), cal.last_minute)
        if lo > hi:
            return np.empty(0, dtype=np.int64)
        return _year_minutes_between(self.code, lo, hi)

    def _session_days(self, lo_us: int, hi_us: int) -> np.ndarray:
        cal = _exchange(self.code)
        lo = max(_ts(lo_us).tz_localize(None).normalize(), cal.first_session)
        hi = min(_ts(hi_us).tz_localize(None).normalize(), cal.last_session)
        if lo > hi:
            return np.empty(0, dtype=np.int64)
        with _quiet():
            sessions = cal.sessions_in_range(lo, hi)
        return sessions.as_unit("us").asi8.astype(np.int64)


def _year_minutes_between(code: str, lo: pd.Timestamp, hi: pd.Timestamp) -> np.ndarray:
    years = range(lo.year, hi.year + 1)
    parts = [_year_minutes(code, y) for y in years]
    allm = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return allm[(allm >= _us(lo)) & (allm <= _us(hi))]


@functools.lru_cache(maxsize=64)
def _year_minutes(code: str, year: int) -> np.ndarray:
    cal = _exchange(code)
    with _quiet():
        lo = max(pd.Timestamp(f"{year}-01-01", tz="UTC"), cal.first_minute)
        hi = min(pd.Timestamp(f"{year}-12-31 23:59", tz="UTC"), cal.last_minute)
        if lo > hi:
            return np.empty(0, dtype=np.int64)
        out = cal.minutes_in_range(lo, hi).as_unit("us").asi8.astype(np.int64)
    out.flags.writeable = False
    return out


def absent(expected: np.ndarray, have: np.ndarray) -> np.ndarray:
    """Mask of the `expected` timestamps missing from `have` (both sorted int64 arrays)."""
    if len(have) == 0:
        return np.ones(len(expected), dtype=bool)
    pos = np.minimum(np.searchsorted(have, expected), len(have) - 1)
    return have[pos] != expected


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Unique values of an int64 array, cheap when it is already sorted (the usual case)."""
    if len(values) and bool((np.diff(values) >= 0).all()):
        return values[np.r_[True, np.diff(values) != 0]]
    return np.unique(values)


def calendar_for_symbol(symbol: str) -> Calendar:
    """Crypto pairs (`BASE/QUOTE`) trade 24/7; anything else is taken to be a NYSE-listed equity."""
    return Calendar(ALWAYS_OPEN) if "/" in symbol else Calendar("XNYS")


def _us(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value // 1000)


def _ts(us: int) -> pd.Timestamp:
    return pd.Timestamp(us, unit="us", tz="UTC")
