"""Universes by liquidity: which symbols a portfolio may hold at each bar, from what the lake covers.

A `LiquidityUniverse` ranks symbols by trailing mean dollar volume (close x volume over each symbol's
last `window` own bars, up to and including the bar: causal) and keeps the `top` most liquid at each
bar of the union timeline. A symbol is eligible at a bar only when it has a bar there and at least
`min_history` own bars up to it, so symbols enter when their coverage starts (once they have the
history) and leave when it stops: a symbol past its last bar, or before its first, is never a member.
The candidates are whatever the lake holds (`load_universe`), delisted symbols included: no survivors
are chosen with hindsight. Ties rank by the frames' order (the first listed wins).

`apply_universe` makes any targets respect the membership (non-members 0 at rebalance bars, the
members scaled back to the row's gross); `allocate(..., universe=...)` (and `allocation_weights`) fits
its allocator on the members only (`fittable`).

Membership needs a bar at the bar itself: on a timeline of mixed calendars a symbol whose market is
closed at a rebalance bar is not a member there (it cannot trade there either).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.engine import Timeline, load_bars
from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.strategies.weights import own_targets

log = logging.getLogger(__name__)


def _whole(name: str, value: Any, least: int) -> int:
    """`value` as a whole number >= `least`, else one ConfigError line."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ConfigError(f"universe {name}={value!r} must be a whole number >= {least}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class LiquidityUniverse:
    """The `top` symbols by trailing mean dollar volume over `window` own bars, among those with at
    least `min_history` own bars (default: `window`) and a bar at the bar itself."""

    top: int
    window: int = 20
    min_history: int | None = None

    def __post_init__(self) -> None:
        _whole("top", self.top, 1)
        _whole("window", self.window, 1)
        if self.min_history is not None:
            _whole("min_history", self.min_history, 1)

    @property
    def least(self) -> int:
        """Own bars a symbol needs, up to a bar, to be eligible there."""
        return self.min_history if self.min_history is not None else self.window

    def dollar_volume(self, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """Each symbol's trailing mean dollar volume on the union timeline (columns in the frames'
        order); NaN where it is not eligible (no bar there, fewer than `min_history` own bars up to
        it, or no volume in its window)."""
        if not frames:
            raise DataError("a universe needs at least one symbol's bars")
        index = Timeline(frames).index
        scores = {}
        for s, f in frames.items():
            missing = [c for c in ("close", "volume") if c not in f.columns]
            if missing:
                raise DataError(f"bars of {s} lack {', '.join(missing)}: a liquidity universe ranks by "
                                "close x volume")
            dv = f["close"].astype(float) * f["volume"].astype(float)
            mean = dv.rolling(self.window, min_periods=1).mean()  # NaN volumes are skipped
            enough = np.arange(1, len(f) + 1) >= self.least
            scores[s] = mean.where(enough)
        return pd.DataFrame(scores, index=index, columns=list(frames))

    def membership(self, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """True where a symbol is a member at a bar of the union timeline (columns in the frames'
        order): one of the `top` eligible symbols by `dollar_volume` there, ties to the first listed."""
        scores = self.dollar_volume(frames)
        ranks = scores.rank(axis=1, ascending=False, method="first")
        return ranks.le(self.top)  # NaN (not eligible) ranks nowhere


def _utc(t: Any) -> pd.Timestamp | None:
    """A time as a UTC timestamp (naive: taken as UTC), None for None."""
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def load_universe(lake: Any, timeframe: str, symbols: Sequence[str] | None = None, start: Any = None,
                  end: Any = None, *, source: str | None = None) -> dict[str, pd.DataFrame]:
    """Bars of the candidates whose lake coverage overlaps [start, end), each on its own bars
    (`load_bars`): a symbol listed late or delisted early is loaded for what it covers, one outside the
    range is left out. `symbols` None: every symbol the lake holds for `source` at `timeframe`
    (stored at it or at a finer one that divides it). A candidate the lake does not hold at all is an
    error (a misspelling, not a delisting)."""
    if isinstance(symbols, str):
        symbols = [symbols]
    if symbols is not None and not list(symbols):
        raise ConfigError("no candidate symbols given: pass some, or symbols=None for all the lake holds")
    held = lake.coverage(source=source) if source is not None else lake.coverage()
    if source is None:
        sources = sorted({c.source for c in held})
        named = sorted({c.source for c in held if symbols is None or c.symbol in symbols})
        if len(named) > 1 or (not named and len(sources) > 1):
            raise ConfigError(f"the candidates are held by several sources {named or sources}: choose one "
                              "with source=...")
        if not sources:
            raise DataError("the lake holds no bars: run `workbench data demo` or `workbench data sync` "
                            "first")
        source = (named or sources)[0]
    known = sorted({c.symbol for c in held if c.source == source})
    candidates = (list(dict.fromkeys(symbols)) if symbols is not None
                  else [s for s in known if lake.stored_timeframe(source, s, timeframe) is not None])
    t0, t1 = _utc(start), _utc(end)
    kept = []
    for s in candidates:
        stored = lake.stored_timeframe(source, s, timeframe)
        if stored is None:
            raise ConfigError(f"the lake holds no {timeframe} bars of {s!r} from {source}"
                              f"{did_you_mean(s, known)}: sync it, or drop it from the candidates")
        cov = lake.series_coverage(source, s, stored)
        if cov is None or cov.last is None or cov.first is None:
            continue
        if (t0 is not None and cov.last < t0) or (t1 is not None and cov.first >= t1):
            log.info("universe: %s has no bars in the range (%s .. %s), left out", s, cov.first, cov.last)
            continue
        kept.append(s)
    if not kept:
        raise DataError(f"none of the {len(candidates)} candidates has {timeframe} bars in the range: "
                        "widen start/end")
    return load_bars(lake, kept, timeframe, start, end, source=source)


def _apply(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    """`apply_universe` on arrays (n, m): rows with a target zero their non-members and scale their
    members back to the row's gross (a row whose members hold nothing stays in cash)."""
    out = values.copy()
    rows = ~np.isnan(values).all(axis=1)
    gross = np.nansum(np.abs(values), axis=1)
    out[rows] = np.where(member[rows], values[rows], 0.0)
    kept = np.nansum(np.abs(out), axis=1)
    scale = np.divide(gross, kept, out=np.zeros_like(gross), where=kept > 0)
    out[rows & (kept > 0)] *= scale[rows & (kept > 0), None]
    return out


def apply_universe(targets: pd.DataFrame | Mapping[str, pd.Series], membership: pd.DataFrame
                   ) -> pd.DataFrame | dict[str, pd.Series]:
    """Targets that respect a universe: at every rebalance bar (a row with at least one target) a
    non-member's target is 0 and the members' targets are scaled so that the row keeps its gross
    (sum of |weights|); a member without a target keeps none. `targets`: a frame on the union timeline
    (`membership`'s index and columns; NaN: no target) or, as `simulate_weights` takes them, each
    symbol's targets on its own bars (a non-member's 0 then lands on its first own bar at or after
    the rebalance bar). With mixed calendars prefer the union-timeline form: per-symbol targets that
    were moved to a symbol's next own bar are scaled within that bar's row."""
    index = pd.DatetimeIndex(membership.index)
    member = membership.to_numpy(dtype=bool)
    if isinstance(targets, pd.DataFrame):
        if not targets.index.equals(index) or list(targets.columns) != list(membership.columns):
            raise ConfigError("targets must be on the membership's timeline and symbols (same index and "
                              "columns), or given per symbol on its own bars")
        out = _apply(targets.to_numpy(dtype=float), member)
        return pd.DataFrame(out, index=index, columns=targets.columns)
    symbols = list(membership.columns)
    if list(targets) != symbols:
        raise ConfigError(f"targets name {list(targets)}, the universe {symbols}: pass one per symbol, "
                          "in the same order")
    values = np.full(member.shape, np.nan)
    own = {}
    for j, s in enumerate(symbols):
        t = targets[s]
        if not isinstance(t, pd.Series):
            raise ConfigError(f"targets of {s} must be a Series on its own bars, got {type(t).__name__}")
        rows = index.get_indexer(t.index)
        if (rows < 0).any():
            raise ConfigError(f"targets of {s} are set at times outside the universe's timeline: put them "
                              "on the bars the membership was computed from")
        values[rows, j] = t.to_numpy(dtype=float)
        own[s] = pd.DataFrame(index=t.index)
    return own_targets(own, index, _apply(values, member))


def fittable(returns: pd.DataFrame, members: np.ndarray, window: int) -> np.ndarray:
    """Which columns of `returns` (up to a rebalance bar) an allocator may be fitted on there: the
    members (`members`, the membership row at that bar) whose returns fill the trailing `window` (the
    allocator's, or its risk limits' if longer). A member that listed less than `window` bars ago is
    left out until it has them."""
    recent = returns.iloc[-window:]
    return np.asarray(members, dtype=bool) & recent.notna().all().to_numpy()


__all__ = ["LiquidityUniverse", "apply_universe", "fittable", "load_universe"]
