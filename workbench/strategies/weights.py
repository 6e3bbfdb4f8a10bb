"""Weight strategies: a universe's target weights per bar, on a rebalance schedule.

Where a signal strategy looks at one symbol's bars, a weight strategy looks across the universe: its
function gets the closes of every symbol on their union timeline (a closed market's close carried
forward) and the parameters, and returns a frame of the same shape of target weights (fractions of
equity; NaN: no target). Only the rebalance bars of its schedule (`every`: the first bar of each day, ISO
week or month, or every bar) keep their targets. The engine trades them by SEMANTICS.md "Target weights
and rebalancing" (`workbench.backtest.rebalance.backtest_weights`).

Built-ins: `xs_momentum` (the `top` symbols by trailing return, equal weights), `xs_reversal` (the `top`
symbols by lowest return over a short lookback, equal weights: recent losers revert) and `low_vol` (the
`top` symbols by lowest trailing volatility, weights inverse to it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.strategies.base import ParamSpace, ParamValue, choice_param, int_param

SCHEDULES = ("daily", "weekly", "monthly", "every")
WeightFn = Callable[[pd.DataFrame, dict[str, Any]], pd.DataFrame]


def rebalance_bars(index: pd.DatetimeIndex, every: str) -> np.ndarray:
    """Positions in `index` of the rebalance bars of a calendar schedule: the first bar of each UTC day,
    ISO week or month (``every``: each bar)."""
    if every not in SCHEDULES:
        raise ConfigError(f"unknown rebalance schedule {every!r}; choose one of {', '.join(SCHEDULES)}")
    if every == "every" or not len(index):
        return np.arange(len(index))
    utc = index.tz_convert("UTC") if index.tz is not None else index
    if every == "daily":
        key = utc.normalize().asi8
    elif every == "weekly":
        iso = utc.isocalendar()
        key = (iso["year"].to_numpy() * 100 + iso["week"].to_numpy()).astype(np.int64)
    else:
        key = (utc.year * 100 + utc.month).to_numpy()
    first = np.ones(len(index), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return np.flatnonzero(first)


def union_closes(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every symbol's close on the union of their bars, a closed market's close carried forward."""
    if not frames:
        raise DataError("a weight strategy needs at least one symbol's bars")
    return pd.DataFrame({s: f["close"] for s, f in frames.items()}).sort_index().ffill()


@dataclass(frozen=True)
class WeightStrategy:
    """A named weight strategy: its parameter space (with an `every` schedule), its function from the
    union closes to target weights, and how many bars it needs before its first target."""

    name: str
    space: ParamSpace
    fn: WeightFn
    warmup: Callable[[Mapping[str, Any]], int] = lambda p: 1
    description: str = ""

    def params(self, values: Mapping[str, Any] | None = None) -> dict[str, ParamValue]:
        """Validated parameters: defaults filled in, types coerced, ranges and constraints checked."""
        return self.space.validate(values, self.name)

    def targets(self, frames: Mapping[str, pd.DataFrame],
                params: Mapping[str, Any] | None = None) -> dict[str, pd.Series]:
        """Each symbol's targets on its own bars (NaN where none), the way `simulate_weights` takes them:
        the function's weights at the schedule's rebalance bars of the union timeline; a symbol with no
        bar at a rebalance bar takes its target at its first own bar after it."""
        p = self.params(params)
        closes = union_closes(frames)
        need = self.warmup(p)
        if len(closes) <= need:
            raise DataError(f"{self.name} needs more than {need} bars for {p}, and the bars span "
                            f"{len(closes)}: load more history or shorten its windows")
        w = self.fn(closes, p)
        if not isinstance(w, pd.DataFrame) or w.shape != closes.shape:
            raise ConfigError(f"weight strategy {self.name!r} must return a frame shaped like the closes "
                              f"{closes.shape}, got {getattr(w, 'shape', type(w).__name__)}")
        keep = np.full(len(closes), False)
        keep[rebalance_bars(pd.DatetimeIndex(closes.index), str(p.get("every", "every")))] = True
        keep[:need] = False
        values = np.where(keep[:, None], w.to_numpy(dtype=float), np.nan)
        return own_targets(frames, pd.DatetimeIndex(closes.index), values)


def own_targets(frames: Mapping[str, pd.DataFrame], index: pd.DatetimeIndex,
                values: np.ndarray) -> dict[str, pd.Series]:
    """Targets set on the union timeline `index` (`values` (n, symbols), NaN: none) as each symbol's
    targets on its own bars, the way `simulate_weights` takes them: a symbol with no bar at a target's
    row takes it at its first own bar after it."""
    out = {}
    for j, (s, f) in enumerate(frames.items()):
        own = np.full(len(f), np.nan)
        rows = index.get_indexer(f.index)
        for b in np.flatnonzero(~np.isnan(values[:, j])):
            k = int(np.searchsorted(rows, b))
            if k < len(rows):
                own[k] = values[b, j]
        out[s] = pd.Series(own, index=f.index, name=s)
    return out


def _top(scores: pd.DataFrame, k: int, largest: bool) -> pd.DataFrame:
    """1 for the `k` best scores of each row (ties by column order), 0 for the others (a symbol without
    a score included), NaN on rows where no symbol has a score yet."""
    ranks = scores.rank(axis=1, ascending=not largest, method="first")
    picked = (ranks <= k).astype(float)
    picked.loc[~scores.notna().any(axis=1)] = np.nan
    return picked


def _ranked_by_return(closes: pd.DataFrame, p: dict[str, Any], largest: bool) -> pd.DataFrame:
    """Equal weights on the `top` symbols by trailing return over `lookback` bars (highest or lowest)."""
    past = closes / closes.shift(int(p["lookback"])) - 1.0
    picked = _top(past, int(p["top"]), largest=largest)
    count = picked.sum(axis=1).replace(0.0, np.nan)
    return picked.div(count, axis=0).where(picked.notna())


def _xs_momentum(closes: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    return _ranked_by_return(closes, p, largest=True)


def _xs_reversal(closes: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    return _ranked_by_return(closes, p, largest=False)


def _low_vol(closes: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    vol = closes.pct_change().rolling(int(p["lookback"])).std()
    picked = _top(vol, int(p["top"]), largest=False)
    inverse = (1.0 / vol).where(picked > 0, 0.0)
    return inverse.div(inverse.sum(axis=1).replace(0.0, np.nan), axis=0).where(picked.notna())


_EVERY = choice_param("every", "monthly", ["daily", "weekly", "monthly"], doc="rebalance schedule")

WEIGHT_STRATEGIES = [
    WeightStrategy("xs_momentum", ParamSpace.of(
        int_param("lookback", 126, 5, 504, step=21, doc="trailing bars of the return ranked"),
        int_param("top", 2, 1, 50, doc="symbols held, equally weighted"), _EVERY),
        _xs_momentum, warmup=lambda p: int(p["lookback"]),
        description="Cross-sectional momentum: the top symbols by trailing return, equal weights."),
    WeightStrategy("xs_reversal", ParamSpace.of(
        int_param("lookback", 5, 1, 126, doc="trailing bars of the return ranked (short: reversal)"),
        int_param("top", 2, 1, 50, doc="symbols held (the lowest returns), equally weighted"),
        choice_param("every", "weekly", ["daily", "weekly", "monthly"], doc="rebalance schedule")),
        _xs_reversal, warmup=lambda p: int(p["lookback"]),
        description="Cross-sectional reversal: the top symbols by lowest short-term return (losers "
                    "revert), equal weights."),
    WeightStrategy("low_vol", ParamSpace.of(
        int_param("lookback", 63, 5, 504, step=21, doc="trailing bars of the volatility"),
        int_param("top", 2, 1, 50, doc="symbols held"), _EVERY),
        _low_vol, warmup=lambda p: int(p["lookback"]),
        description="Low volatility: the calmest symbols, weighted inversely to their volatility."),
]


def get_weight_strategy(name: str) -> WeightStrategy:
    """A built-in weight strategy by name."""
    for s in WEIGHT_STRATEGIES:
        if s.name == name:
            return s
    names = [s.name for s in WEIGHT_STRATEGIES]
    from workbench.strategies.registry import list_strategies

    if name in list_strategies():
        raise ConfigError(f"{name!r} is a signal strategy, not a weight strategy: backtest it with "
                          f"backtest() (`workbench backtest --strategy {name}`); weight strategies: "
                          f"{', '.join(names)}")
    raise ConfigError(f"no weight strategy {name!r}{did_you_mean(name, names)}; "
                      f"built-ins: {', '.join(names)}")
