"""Look-ahead bias check: a strategy's signals up to bar t must not change when the future does.

For several cut points t the signals are recomputed on (a) the bars truncated after t and (b) the
bars whose rows after t are replaced by a random but valid continuation, and every signal field
(and every per-bar array in `extras`) at bars <= t is compared with the full-data run (NaN equals
NaN). Any difference means the strategy read bars after t. Used by the tests of every built-in and
by the promotion gates; a clean report is necessary, not sufficient (a peek that only matters away
from the cut points can slip through, so more `cuts` check more).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from workbench.errors import DataError
from workbench.strategies import indicators as ind
from workbench.strategies.base import Strategy

VARIANTS = ("truncated", "randomized")


@dataclass(frozen=True)
class Violation:
    """One signal field that changed at or before a cut when the bars after it changed."""

    field: str
    variant: str
    cut: pd.Timestamp
    first: pd.Timestamp
    count: int

    def __str__(self) -> str:
        return (f"{self.field} differs from the full-data run at {self.first} ({self.count} bar(s) <= "
                f"{self.cut}) when the bars after {self.cut} are {self.variant}")


@dataclass(frozen=True)
class LookaheadReport:
    """The outcome of `check_lookahead`: the cut points tried and every violation found."""

    strategy: str
    params: dict[str, Any]
    cuts: tuple[pd.Timestamp, ...]
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        """Whether no signal at or before any cut depended on later bars."""
        return not self.violations

    @property
    def leaking(self) -> list[str]:
        """The fields (signals, or features' columns) that read the future."""
        return sorted({v.field for v in self.violations})

    def summary(self) -> str:
        """One line when clean; otherwise one line per violation."""
        head = f"{self.strategy}: look-ahead check over {len(self.cuts)} cut(s)"
        if self.ok:
            return f"{head}: ok"
        lines = [f"{head}: {len(self.violations)} violation(s)", *(f"  {v}" for v in self.violations)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check_lookahead(strategy: Strategy | str, bars: pd.DataFrame, params: Mapping[str, Any] | None = None,
                    cuts: int = 5, seed: int = 0, rtol: float = 1e-9) -> LookaheadReport:
    """Recompute signals on truncated and randomly continued bars at `cuts` points and compare."""
    if isinstance(strategy, str):
        from workbench.strategies.registry import get_strategy

        strategy = get_strategy(strategy)
    p = strategy.params(params)
    full = _run(strategy, bars, p)
    points = _cut_points(strategy, p, len(bars), cuts)
    rng = np.random.default_rng(seed)
    violations: list[Violation] = []
    for t in points:
        for variant in VARIANTS:
            other = bars.iloc[: t + 1] if variant == "truncated" else random_continuation(bars, int(t), rng)
            part = _run(strategy, other, p)
            violations.extend(compare_runs(full, part, int(t), bars.index, variant, rtol))
    return LookaheadReport(strategy.name, dict(p), tuple(bars.index[points]), tuple(violations))


def _cut_points(strategy: Any, p: Mapping[str, Any], n: int, cuts: int) -> np.ndarray:
    """`cuts` bar positions spread over the `n` bars after the warm-up (the truncated bars must still
    pass the warm-up check)."""
    lo, hi = int(strategy.warmup(p)) + 1, n - 2
    if lo > hi:
        raise DataError(f"look-ahead check of {strategy.name} needs at least {lo + 2} bars, got {n}; "
                        "pass a longer range")
    return np.unique(np.linspace(lo, hi, max(int(cuts), 1)).round().astype(int))


def _run(strategy: Strategy, bars: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    n = len(bars)
    # every run from scratch, even inside a caller's indicator_cache(): the short-lived frames built
    # here must never meet (or leave) entries keyed on recycled array addresses
    token = ind._CACHE.set(None)
    try:
        sig = strategy.signals(bars, p)
    finally:
        ind._CACHE.reset(token)
    out = sig.arrays(n, strategy.name)
    for key, value in sig.extras.items():
        arr = value.to_numpy() if isinstance(value, pd.Series) else value
        if isinstance(arr, np.ndarray) and arr.shape == (n,) and arr.dtype.kind in "biuf":
            out[f"extras.{key}"] = arr
    return out


def compare_runs(full: dict[str, np.ndarray], part: dict[str, np.ndarray], t: int, index: pd.Index,
             variant: str, rtol: float) -> list[Violation]:
    found = []
    for key, a in full.items():
        if key not in part:
            continue
        x, y = a[: t + 1], part[key][: t + 1]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = x.astype(float), y.astype(float)
            same = (np.isnan(x) & np.isnan(y)) | np.isclose(x, y, rtol=rtol, atol=0.0)
        else:
            same = x == y
        if not same.all():
            bad = np.flatnonzero(~same)
            found.append(Violation(key, variant, index[t], index[bad[0]], int(bad.size)))
    return found


def random_continuation(bars: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """The bars with every row after t replaced by a random walk from close[t] (valid OHLC)."""
    out = bars.copy()
    for col in ("open", "high", "low", "close", "volume"):
        if col in out.columns:
            out[col] = out[col].astype(float)  # integer volume columns take float draws below
    m = len(bars) - t - 1
    close_past = bars["close"].to_numpy(dtype=float)[: t + 1]
    sigma = float(np.nanstd(np.diff(np.log(close_past)))) if t > 1 else 0.0
    sigma = sigma if np.isfinite(sigma) and sigma > 0 else 0.01
    drift = rng.choice([-1.0, 1.0]) * sigma / 2  # a trend the real future did not have
    close = close_past[-1] * np.exp(np.cumsum(rng.normal(drift, 2 * sigma, m)))
    open_ = np.concatenate(([close_past[-1]], close[:-1])) * np.exp(rng.normal(0.0, sigma / 4, m))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, sigma, m)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, sigma, m)))
    for col, values in (("open", open_), ("high", high), ("low", low), ("close", close)):
        out.iloc[t + 1:, cast(int, out.columns.get_loc(col))] = values  # bar columns are unique
    if "volume" in out.columns:
        past = bars["volume"].to_numpy(dtype=float)[: t + 1]
        level = float(np.nanmedian(past)) if np.isfinite(past).any() else 1.0
        out.iloc[t + 1:, cast(int, out.columns.get_loc("volume"))] = level * rng.uniform(0.2, 3.0, m)
    return out


def check_weight_lookahead(strategy: Any, frames: Mapping[str, pd.DataFrame],
                           params: Mapping[str, Any] | None = None, cuts: int = 5, seed: int = 0,
                           rtol: float = 1e-9) -> LookaheadReport:
    """The look-ahead check of a weight strategy (`workbench.strategies.weights.WeightStrategy`): its
    targets at bars <= t, recomputed on the universe's bars truncated after t and randomly continued
    after t, must equal the full-data run's (one field per symbol, ``weights.<symbol>``)."""
    p = strategy.params(params)
    index = pd.DatetimeIndex(sorted(set().union(*(f.index for f in frames.values()))))
    n = len(index)

    def run(fs: Mapping[str, pd.DataFrame]) -> dict[str, np.ndarray]:
        targets = strategy.targets(fs, p)
        return {f"weights.{s}": t.reindex(index).to_numpy(dtype=float) for s, t in targets.items()}

    full = run(frames)
    points = _cut_points(strategy, p, n, cuts)
    rng = np.random.default_rng(seed)
    violations: list[Violation] = []
    for t in points:
        cut = index[t]
        for variant in VARIANTS:
            other = {}
            for s, f in frames.items():
                k = int(f.index.searchsorted(cut, side="right")) - 1  # the symbol's last own bar <= cut
                if variant == "truncated":
                    other[s] = f.iloc[: k + 1]
                else:
                    other[s] = random_continuation(f, k, rng) if 1 < k < len(f) - 1 else f
            # a symbol with no bar up to the cut is absent from the truncated universe
            other = {s: f for s, f in other.items() if len(f)}
            part = run(other)
            violations.extend(compare_runs({k: v for k, v in full.items() if k in part}, part, int(t), index,
                                           variant, rtol))
    return LookaheadReport(strategy.name, dict(p), tuple(index[points]), tuple(violations))
