"""Labels that respect how a trade really ends: fixed horizons, triple barriers, meta-labels, weights.

Every label carries `t1`, the time at which it became known; validation (`workbench.models.validation`)
uses it to purge training rows whose label overlaps the test period, and `uniqueness_weights` uses it
to down-weight labels that share their bars with many others.

Bar frames are indexed by a UTC `DatetimeIndex` named `ts` (bar open time; a `ts` column is accepted
too), sorted and unique, with float columns `open high low close volume`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numba
import numpy as np
import pandas as pd
from pydantic import Field

from workbench.config import ConfigModel
from workbench.errors import ConfigError, DataError

BARRIERS = ("pt", "sl", "vertical")  # the `barrier` column's values; the kernel returns their position
_PT, _SL, _VERTICAL = 0, 1, 2


# ---------------------------------------------------------------- input checks


def _bars(bars: Any, where: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The bar frame indexed by UTC `ts`, or a one-line DataError naming what is wrong with it."""
    if not isinstance(bars, pd.DataFrame):
        raise DataError(f"{where}: bars must be a DataFrame of open/high/low/close, "
                        f"got {type(bars).__name__}")
    if "ts" in bars.columns:
        bars = bars.set_index("ts")
    idx = bars.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise DataError(f"{where}: bars need a DatetimeIndex `ts` (UTC), got a {type(idx).__name__}; "
                        "e.g. bars.set_index('ts')")
    if idx.tz is None or str(idx.tz) not in ("UTC", "Etc/UTC"):
        raise DataError(f"{where}: bars must be indexed in UTC, got tz={idx.tz}; "
                        "e.g. bars.tz_localize('UTC') or bars.tz_convert('UTC')")
    if not idx.is_monotonic_increasing or idx.has_duplicates:
        raise DataError(f"{where}: bars are not sorted by unique timestamps; "
                        "use bars.sort_index() and drop duplicated timestamps first")
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        raise DataError(f"{where}: bars lack column(s) {missing}; pass a bar frame with {'/'.join(columns)}")
    for c in columns:
        values = bars[c].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{where}: bars contain NaN or infinite {c} prices (first at "
                            f"{idx[int(np.argmax(~np.isfinite(values)))]}); drop or fill them first")
        if (values <= 0).any():
            raise DataError(f"{where}: bars contain non-positive {c} prices (first at "
                            f"{idx[int(np.argmax(values <= 0))]}); log returns need prices > 0")
    return bars


def _positive_int(value: Any, where: str, name: str, example: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        what = "a positive number of bars" if minimum == 1 else f"a whole number of bars >= {minimum}"
        raise ConfigError(f"{where}: {name} must be {what}, got {value!r}; e.g. {name}={example}")
    return int(value)


def _non_negative(value: Any, where: str, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigError(f"{where}: {name} must be a finite number >= 0, got {value!r}; "
                          f"e.g. {name}={example}")
    return float(value)


def _multiplier(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not value > 0:
        raise ConfigError(f"{where}: {name} must be a multiple of the target > 0 (math.inf disables the "
                          f"barrier), got {value!r}; e.g. {name}=2.0")
    return float(value)


def _on_bars(series: Any, index: pd.DatetimeIndex, where: str, name: str) -> np.ndarray:
    """A Series keyed by bar timestamps, as float64 values on every bar (NaN where it has none)."""
    if not isinstance(series, pd.Series):
        raise ConfigError(f"{where}: {name} must be a pandas Series indexed by bar timestamps, "
                          f"got {type(series).__name__}")
    if not isinstance(series.index, pd.DatetimeIndex) or series.index.tz is None:
        raise ConfigError(f"{where}: {name} must be indexed by tz-aware bar timestamps; "
                          f"e.g. {name} = pd.Series(values, index=bars.index)")
    if series.index.has_duplicates:
        raise ConfigError(f"{where}: {name} has duplicated timestamps; keep one value per bar")
    unknown = series.index.difference(index)
    if len(unknown):
        raise ConfigError(f"{where}: {name} has {len(unknown)} timestamp(s) that are not bars "
                          f"(first {unknown[0]}); index it by bars.index")
    try:
        values = series.reindex(index).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name} must hold numbers, got dtype {series.dtype}") from None
    return values


# ---------------------------------------------------------------- fixed horizon


def fixed_horizon(bars: pd.DataFrame, horizon: int, *, threshold: float = 0.0) -> pd.DataFrame:
    """Label each bar by its log return over the next `horizon` bars: +1 above `threshold`, -1 below.

    Columns `t1` (the bar t+horizon, when the label is known), `ret` (log close[t+horizon]/close[t])
    and `label`; the last `horizon` bars have no label and are left out.
    """
    where = "fixed_horizon"
    horizon = _positive_int(horizon, where, "horizon", "20")
    threshold = _non_negative(threshold, where, "threshold", "0.001")
    bars = _bars(bars, where, ("close",))
    logc = np.log(bars["close"].to_numpy(dtype=np.float64))
    n = max(len(logc) - horizon, 0)
    ret = logc[horizon:] - logc[:n]
    label = np.where(ret > threshold, 1, np.where(ret < -threshold, -1, 0)).astype(np.int64)
    index = bars.index[:n].rename("ts")
    return pd.DataFrame({"t1": bars.index[horizon:], "ret": ret, "label": label}, index=index)


# ---------------------------------------------------------------- triple barrier


@numba.njit(cache=True, nogil=True)
def _triple_barrier_nb(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                       events: np.ndarray, trgt: np.ndarray, side: np.ndarray, pt: float, sl: float,
                       horizon: int, min_ret: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = events.shape[0]
    end = np.empty(m, dtype=np.int64)
    ret = np.empty(m, dtype=np.float64)
    label = np.empty(m, dtype=np.int64)
    barrier = np.empty(m, dtype=np.int64)
    for k in range(m):
        i = events[k]
        s = side[k]
        c0 = close[i]
        # the profit-taking barrier lies above the entry for a long, below it for a short
        up_mult = pt if s > 0 else sl
        down_mult = sl if s > 0 else pt
        upper = c0 * np.exp(up_mult * trgt[k])
        lower = c0 * np.exp(-down_mult * trgt[k])
        end[k] = i + horizon
        barrier[k] = 2
        for j in range(i + 1, i + horizon + 1):
            hit_up = high[j] >= upper
            hit_down = low[j] <= lower
            if not (hit_up or hit_down):
                continue
            if open_[j] >= upper:  # gapped up through the upper barrier: hit first, filled at the open
                take_up = True
            elif open_[j] <= lower:  # gapped down through the lower barrier
                take_up = False
            elif hit_up and hit_down:  # both inside one bar, order unknown: the stop wins
                take_up = s < 0
            else:
                take_up = hit_up
            price = max(open_[j], upper) if take_up else min(open_[j], lower)
            end[k] = j
            ret[k] = np.log(price / c0) * s
            # upper is the profit-take of a long and the stop of a short
            barrier[k] = 0 if take_up == (s > 0) else 1
            break
        if barrier[k] == 0:
            label[k] = 1
        elif barrier[k] == 1:
            label[k] = -1
        else:
            r = np.log(close[i + horizon] / c0) * s
            ret[k] = r
            label[k] = 0 if abs(r) <= min_ret else (1 if r > 0 else -1)
    return end, ret, label, barrier


def triple_barrier(bars: pd.DataFrame, *, horizon: int, pt: float, sl: float, vol_window: int = 20,
                   side: pd.Series | None = None, min_ret: float = 0.0,
                   trgt: pd.Series | None = None) -> pd.DataFrame:
    """López de Prado's triple-barrier labels: a trade ends at its profit-take, stop-loss or `horizon` bars.

    Event bars are all bars, or those where `side` (a primary model's position, indexed by bar
    timestamps) is +1 or -1. The target sigma_t is the rolling std of 1-bar log returns over the
    `vol_window` bars ending at t (causal; bars without a full window get no label), unless `trgt`
    (indexed by bar timestamps) gives it; events without a positive finite target are left out.
    Profit-take at `pt`·sigma and stop at `sl`·sigma of side-adjusted log return (math.inf disables
    one); the vertical barrier is bar t+horizon, and events whose vertical barrier lies beyond the
    data are left out.

    Bars t+1..t+horizon are walked with their high and low: the first bar that touches a barrier
    ends the label. A bar that opens beyond a barrier hit it first, filled at its open; otherwise,
    when one bar touches both barriers, the stop-loss wins (the conservative reading: the bar does
    not say which came first).

    Columns: `t1` (bar where the label ended), `ret` (side-adjusted log return from close[t] to the
    fill: the barrier level, the open of a bar that gapped through it, or close[t1] at the vertical
    barrier), `label` (+1 profit-take, -1 stop; at the vertical barrier sign(ret) if |ret| >
    `min_ret`, else 0), `barrier` ("pt", "sl", "vertical"), `trgt` (sigma_t), and `side` when given.
    """
    where = "triple_barrier"
    horizon = _positive_int(horizon, where, "horizon", "20")
    pt = _multiplier(pt, where, "pt")
    sl = _multiplier(sl, where, "sl")
    vol_window = _positive_int(vol_window, where, "vol_window", "20", minimum=2)
    min_ret = _non_negative(min_ret, where, "min_ret", "0.001")
    bars = _bars(bars, where, ("open", "high", "low", "close"))
    index = pd.DatetimeIndex(bars.index)
    close = bars["close"].to_numpy(dtype=np.float64)

    if trgt is None:
        sigma = pd.Series(np.log(close)).diff().rolling(vol_window).std().to_numpy()
    else:
        sigma = _on_bars(trgt, index, where, "trgt")
        if (sigma < 0).any():
            raise ConfigError(f"{where}: trgt must be >= 0 (a volatility of log returns), got "
                              f"{np.nanmin(sigma)!r}; e.g. trgt=np.log(bars.close).diff().rolling(20).std()")
    if side is None:
        sides = np.ones(len(index))
    else:
        sides = _on_bars(side, index, where, "side")
        bad = ~np.isnan(sides) & ~np.isin(sides, (-1.0, 0.0, 1.0))
        if bad.any():
            raise ConfigError(f"{where}: side must be +1 (long), -1 (short) or 0 (no trade), got "
                              f"{sides[bad][0]!r} at {index[int(np.argmax(bad))]}; e.g. side=np.sign(signal)")
    ok = np.isfinite(sigma) & (sigma > 0) & ((sides == 1.0) | (sides == -1.0))
    ok[max(len(index) - horizon, 0):] = False  # the vertical barrier lies beyond the data
    events = np.flatnonzero(ok).astype(np.int64)

    end, ret, label, barrier = _triple_barrier_nb(
        bars["open"].to_numpy(dtype=np.float64), bars["high"].to_numpy(dtype=np.float64),
        bars["low"].to_numpy(dtype=np.float64), close, events, sigma[events], sides[events],
        pt, sl, horizon, min_ret)
    out = pd.DataFrame({
        "t1": index[end],
        "ret": ret,
        "label": label,
        "barrier": np.asarray(BARRIERS, dtype=object)[barrier],
        "trgt": sigma[events],
    }, index=index[events].rename("ts"))
    out["barrier"] = out["barrier"].astype("str")
    if side is not None:
        out["side"] = sides[events].astype(np.int64)
    return out


def meta_labels(bars: pd.DataFrame, side: pd.Series, *, horizon: int, pt: float, sl: float,
                vol_window: int = 20, trgt: pd.Series | None = None) -> pd.DataFrame:
    """Meta-labels for a primary model's trades: `label` 1 if taking the `side` trade paid (ret > 0), else 0.

    The triple-barrier labels of the bars where `side` is +1 or -1 (see `triple_barrier`), with
    `label` replaced by whether the side-adjusted return was positive: a secondary model learns
    which of the primary model's signals to act on (and its probability sizes them).
    """
    if side is None:
        raise ConfigError("meta_labels: side is required (the primary model's +1/-1/0 positions); "
                          "e.g. side=np.sign(fast_ma - slow_ma)")
    out = triple_barrier(bars, horizon=horizon, pt=pt, sl=sl, vol_window=vol_window, side=side, trgt=trgt)
    out["label"] = (out["ret"].to_numpy() > 0).astype(np.int64)
    return out


# ---------------------------------------------------------------- sample weights


def uniqueness_weights(index: pd.DatetimeIndex, t1: pd.Series, bars_index: pd.DatetimeIndex) -> pd.Series:
    """Each label's average uniqueness over its bars [t, t1], normalised to sum to the number of labels.

    Concurrency at a bar is the number of labels alive on it; a label's uniqueness is the mean of
    1/concurrency over its bars. Overlapping labels share their information, so fitting with these
    weights stops a run of overlapping labels from counting as many independent observations.
    """
    where = "uniqueness_weights"
    if not isinstance(index, pd.DatetimeIndex) or not isinstance(bars_index, pd.DatetimeIndex):
        raise ConfigError(f"{where}: index and bars_index must be DatetimeIndex objects; "
                          "e.g. uniqueness_weights(labels.index, labels['t1'], bars.index)")
    if not isinstance(t1, pd.Series) or len(t1) != len(index):
        raise ConfigError(f"{where}: t1 must be a Series with one end time per label ({len(index)}), "
                          f"got {len(t1) if isinstance(t1, pd.Series) else type(t1).__name__}; "
                          "e.g. t1=labels['t1']")
    if isinstance(t1.index, pd.DatetimeIndex) and not t1.index.equals(index):
        raise ConfigError(f"{where}: t1 is not indexed like index; pass labels['t1'] with labels.index")
    if not bars_index.is_monotonic_increasing:
        raise ConfigError(f"{where}: bars_index must be sorted; e.g. bars.sort_index().index")
    end = pd.DatetimeIndex(t1.to_numpy())
    if end.isna().any():
        raise ConfigError(f"{where}: t1 has missing end times; drop the unlabelled rows first")
    try:
        late = np.asarray(end < index)
    except TypeError:
        raise ConfigError(f"{where}: index, t1 and bars_index must all be tz-aware (UTC)") from None
    if late.any():
        raise ConfigError(f"{where}: t1 is earlier than its start at {index[int(np.argmax(late))]}; "
                          "a label ends at or after the bar it starts on")
    first = bars_index.searchsorted(index, side="left")
    last = bars_index.searchsorted(end, side="right") - 1
    if (last < first).any():
        at = index[int(np.argmax(last < first))]
        raise ConfigError(f"{where}: the label starting at {at} spans no bar of bars_index; "
                          "pass the bars the labels were made from")
    n = len(index)
    if n == 0:
        return pd.Series(np.empty(0), index=index, name="weight")
    concurrency = np.zeros(len(bars_index) + 1, dtype=np.int64)
    np.add.at(concurrency, first, 1)
    np.add.at(concurrency, last + 1, -1)
    concurrency = np.cumsum(concurrency[:-1])
    inverse = np.zeros(len(bars_index) + 1)
    inverse[1:] = np.cumsum(np.where(concurrency > 0, 1.0 / np.maximum(concurrency, 1), 0.0))
    uniqueness = (inverse[last + 1] - inverse[first]) / (last - first + 1)
    return pd.Series(uniqueness * n / uniqueness.sum(), index=index, name="weight")


# ---------------------------------------------------------------- a label spec's labels
class LabelSpec(ConfigModel):
    """How a bar's label is made (see `workbench.models.labels`)."""

    kind: Literal["fixed_horizon", "triple_barrier", "meta"] = "triple_barrier"
    horizon: int = Field(ge=1)
    threshold: float = Field(default=0.0, ge=0)  # fixed_horizon: |return| above it to count
    pt: float = Field(default=2.0, gt=0)  # triple_barrier: profit-take, in units of volatility
    sl: float = Field(default=2.0, gt=0)  # triple_barrier: stop-loss, in units of volatility
    vol_window: int = Field(default=50, ge=2)
    min_ret: float = Field(default=0.0, ge=0)
    primary: str | None = None  # meta: the strategy whose entries are labelled (did the trade pay?)
    primary_params: dict[str, Any] = Field(default_factory=dict)

    _UNUSED: ClassVar[dict[str, set[str]]] = {
        "fixed_horizon": {"pt", "sl", "vol_window", "min_ret", "primary", "primary_params"},
        "triple_barrier": {"threshold", "primary", "primary_params"},
        "meta": {"threshold", "min_ret"}}

    def model_post_init(self, context: Any) -> None:
        unused = sorted(self.model_fields_set & self._UNUSED[self.kind])
        if unused:
            raise ConfigError(f"label: {', '.join(unused)} has no effect on a {self.kind} label; drop it")
        if self.kind == "meta" and not self.primary:
            raise ConfigError("label: a meta label needs primary: the strategy whose trades it labels, "
                              "e.g. primary: sma_cross")

    def effective(self) -> dict[str, Any]:
        """Every setting this kind of label uses, defaults included (what the lineage records)."""
        return {k: v for k, v in self.model_dump().items() if k not in self._UNUSED[self.kind]}


def labels_of(bars: pd.DataFrame, label: Any) -> pd.DataFrame:
    """The labels a label spec makes of one symbol's bars: a `LabelSpec`, or its `effective()` dict
    (what a model's lineage records)."""
    spec = LabelSpec.model_validate(label) if isinstance(label, dict) else label
    if spec.kind == "fixed_horizon":
        return fixed_horizon(bars, spec.horizon, threshold=spec.threshold)
    if spec.kind == "meta":
        return meta_labels(bars, primary_side(bars, spec), horizon=spec.horizon, pt=spec.pt, sl=spec.sl,
                           vol_window=spec.vol_window)
    return triple_barrier(bars, horizon=spec.horizon, pt=spec.pt, sl=spec.sl, vol_window=spec.vol_window,
                          min_ret=spec.min_ret)


def primary_side(bars: pd.DataFrame, label: Any) -> pd.Series:
    """+1 on the bars where the primary strategy enters long, -1 where it enters short, else 0: the
    trades a meta-label judges (entered at the signal bar's close; the backtest fills at the next
    open, a bar later)."""
    from workbench.strategies import get_strategy

    spec = LabelSpec.model_validate(label) if isinstance(label, dict) else label
    strategy = get_strategy(str(spec.primary))
    arrays = strategy.signals(bars, strategy.params(spec.primary_params)).arrays(len(bars), strategy.name)
    side = arrays["long_entries"].astype(int) - arrays["short_entries"].astype(int)
    return pd.Series(side.astype(float), index=bars.index)
