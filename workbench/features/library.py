"""The named features: causal, parameterised functions of a bar frame (one value per bar).

Each feature reads only bars up to its own (`check_feature_lookahead` holds every built-in to it)
and is scaled to be comparable across symbols and price levels (returns, ratios, z-scores rather
than raw prices). Values before a feature has its window are NaN. Users add their own with
`register_feature`; a feature set names them with their parameters (`workbench.features.spec`).

`FEATURES` holds the features of any bar frame; `TICK_FEATURES` those that read the collector's
ticks aggregated per bar (`workbench.features.ticks`): they need the ``tick_...`` columns that
`tick_columns` makes joined to the bars (training joins them from the lake), and say which tick
tables they read (`Feature.ticks`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.data.ticks import TickKind
from workbench.errors import ConfigError, DataError
from workbench.features import kernels as k
from workbench.features import ticks as tk
from workbench.strategies import indicators as ind

Columns = Mapping[str, np.ndarray]
Compute = Callable[..., np.ndarray]
Out = np.ndarray | None  # a feature's `out=`: the matrix row it may write its values into


@dataclass(frozen=True)
class Feature:
    """A named feature: `compute(cols, index, **params)` -> float64 array, one value per bar."""

    name: str
    compute: Compute
    params: dict[str, int | float] = field(default_factory=dict)  # every parameter with its default
    needs: tuple[str, ...] = ("close",)
    warmup: Callable[[Mapping[str, int | float]], int] = lambda p: 0  # bars before the first value
    doc: str = ""
    ticks: tuple[TickKind, ...] = ()  # the collector's tables its columns are aggregated from
    # takes `out=`: writes its values there (a row of the matrix), finite or NaN (no infinity: the
    # matrix does not pass over them again), and returns it
    writes_out: bool = False

    def resolve(self, given: Mapping[str, int | float]) -> dict[str, int | float]:
        """The parameters with defaults filled in; an unknown or mistyped one is refused."""
        out = dict(self.params)
        for key, value in given.items():
            if key not in self.params:
                known = ", ".join(self.params) or "none"
                raise ConfigError(f"feature {self.name} has no parameter {key!r} (it takes: {known})")
            default = self.params[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"feature {self.name}: {key} must be a number, got {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise ConfigError(f"feature {self.name}: {key} is a number of bars, got {value!r}; "
                                  "give a whole number")
            out[key] = int(value) if isinstance(default, int) else float(value)
            if isinstance(default, int) and out[key] < 1:
                raise ConfigError(f"feature {self.name}: {key} must be at least 1 bar, got {value!r}")
        return out


FEATURES: dict[str, Feature] = {}
TICK_FEATURES: dict[str, Feature] = {}


def register_feature(name: str, *, needs: tuple[str, ...] = ("close",),
                     warmup: Callable[[Mapping[str, int | float]], int] | None = None,
                     ticks: tuple[TickKind, ...] = ()) -> Callable[[Compute], Compute]:
    """Register `fn(cols, index, **params)` as feature `name`; its keyword defaults are its
    parameters (numbers only). A feature of ticks names the tables its ``tick_...`` columns come
    from and goes to `TICK_FEATURES`."""

    def deco(fn: Compute) -> Compute:
        sig = inspect.signature(fn)
        params: dict[str, int | float] = {}
        for p in list(sig.parameters.values())[2:]:
            if p.name == "out":  # the matrix's row to write into (see Feature.writes_out)
                continue
            if not isinstance(p.default, int | float) or isinstance(p.default, bool):
                raise ConfigError(f"feature {name}: parameter {p.name} needs a numeric default")
            params[p.name] = p.default
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        registry = TICK_FEATURES if ticks else FEATURES
        registry[name] = Feature(name, fn, params, needs, warmup or _largest_window, doc, ticks,
                                 "out" in sig.parameters)
        return fn

    return deco


def get_feature(name: str) -> Feature:
    """The registered feature `name`, or a one-line error naming the closest ones."""
    found = FEATURES.get(name) or TICK_FEATURES.get(name)
    if found is not None:
        return found
    if name.startswith(TALIB_PREFIX):
        found = talib_feature(name)
        if found is not None:
            FEATURES[name] = found
            return found
    import difflib

    known = sorted({*FEATURES, *TICK_FEATURES})
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"unknown feature {name!r}: {hint}known: {', '.join(known)}, or any TA-Lib "
                      f"function as {TALIB_PREFIX}<name> (e.g. {TALIB_PREFIX}macd)") from None


# ---------------------------------------------------------------------- the TA-Lib bridge
TALIB_PREFIX = "ta_"
_TALIB_INPUTS = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume",
                 "real": "close", "real0": "close", "real1": "close", "price": "close"}


def talib_feature(name: str) -> Feature | None:
    """TA-Lib's function `name` (``ta_<function>``, e.g. ``ta_macd``) as a feature, or None if TA-Lib
    has no such function. Its parameters are TA-Lib's with their defaults, plus `output` (which of
    several outputs, 0 = the first) and `raw`: outputs on the price scale (TA-Lib flags them, e.g.
    moving averages, bands) are returned as a ratio to the close minus 1, so they compare across
    symbols and price levels; ``raw=1`` keeps TA-Lib's value."""
    import talib.abstract

    fn_name = name[len(TALIB_PREFIX):].upper()
    if fn_name not in talib.get_functions():
        return None
    info = talib.abstract.Function(fn_name).info
    needs: list[str] = []
    for value in info["input_names"].values():
        for col in [value] if isinstance(value, str) else value:
            needs.append(_TALIB_INPUTS.get(col, col))
    params: dict[str, int | float] = {k: v for k, v in info["parameters"].items()
                                      if isinstance(v, int | float) and not isinstance(v, bool)}
    outputs = list(info["output_names"])
    price_scale: bool = "Output scale same as input" in (info.get("function_flags") or [])

    def compute(cols: Columns, index: pd.DatetimeIndex, **p: int | float) -> np.ndarray:
        which, raw = int(p.pop("output")), int(p.pop("raw"))
        if not 0 <= which < len(outputs):
            raise ConfigError(f"feature {name}: output must be 0..{len(outputs) - 1} ({', '.join(outputs)}), "
                              f"got {which}")
        fn = talib.abstract.Function(fn_name)
        inputs = {c: np.ascontiguousarray(cols[c], dtype=np.float64) for c in dict.fromkeys(needs)}
        got = fn(inputs, **p)
        values = np.asarray(got[which] if isinstance(got, list) else got, dtype=np.float64)
        if price_scale and not raw:
            values = values / cols["close"] - 1.0
        return values

    return Feature(name, compute, {**params, "output": 0, "raw": 0}, tuple(dict.fromkeys(needs)),
                   lambda p: _largest_window({k: v for k, v in p.items() if k not in ("output", "raw")}) * 3,
                   f"TA-Lib {fn_name}: {info.get('display_name', '')}")


def _largest_window(p: Mapping[str, int | float]) -> int:
    return max((int(v) for v in p.values() if isinstance(v, int)), default=0)


class BarColumns(dict[str, np.ndarray]):
    """The bar columns a feature reads, plus intermediates computed once per matrix and shared by
    every feature that needs them: ``log_close``, ``ret1`` (one-bar log return), ``log_hl_sq``
    (squared log high/low range) and ``log_co_sq``; ``ts_ns`` is the bars' open time (UTC ns)."""

    def __missing__(self, key: str) -> np.ndarray:
        if key == "log_close":
            value = np.log(self["close"])
        elif key == "ret1":
            lc = self["log_close"]
            value = np.empty_like(lc)
            value[0] = np.nan
            np.subtract(lc[1:], lc[:-1], out=value[1:])
        elif key == "log_hl_sq":
            value = np.log(self["high"] / self["low"]) ** 2
        elif key == "log_co_sq":
            value = np.log(self["close"] / self["open"]) ** 2
        else:
            raise KeyError(key)
        self[key] = value
        return value


def _logret(cols: Columns) -> np.ndarray:
    return cols["ret1"] if isinstance(cols, BarColumns) else np.diff(np.log(cols["close"]), prepend=np.nan)


# ---------------------------------------------------------------------- returns and volatility
@register_feature("ret")
def ret(cols: Columns, index: pd.DatetimeIndex, n: int = 1) -> np.ndarray:
    """Log return over the last n bars."""
    c = cols["log_close"] if isinstance(cols, BarColumns) else np.log(cols["close"])
    out = np.full(c.shape[0], np.nan)
    out[n:] = c[n:] - c[:-n]
    return out


@register_feature("vol", warmup=lambda p: int(p["n"]))
def vol(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Close-to-close volatility: the standard deviation of the last n one-bar log returns."""
    return k.rolling_std(_logret(cols), n, out)


def _hl_sq(cols: Columns) -> np.ndarray:
    return cols["log_hl_sq"] if isinstance(cols, BarColumns) else np.log(cols["high"] / cols["low"]) ** 2


@register_feature("parkinson", needs=("high", "low"))
def parkinson(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Parkinson's range volatility over n bars: sqrt(mean(ln(H/L)^2) / (4 ln 2))."""
    v = k.rolling_mean(_hl_sq(cols), n, out)
    v /= 4.0 * np.log(2.0)
    return np.sqrt(v, out=v)


@register_feature("garman_klass", needs=("open", "high", "low", "close"))
def garman_klass(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Garman-Klass volatility over n bars, from open, high, low and close."""
    co = cols["log_co_sq"] if isinstance(cols, BarColumns) else np.log(cols["close"] / cols["open"]) ** 2
    var = k.rolling_mean(0.5 * _hl_sq(cols) - (2.0 * np.log(2.0) - 1.0) * co, n, out)
    np.maximum(var, 0.0, out=var)
    return np.sqrt(var, out=var)


@register_feature("vol_ratio", warmup=lambda p: int(p["slow"]))
def vol_ratio(cols: Columns, index: pd.DatetimeIndex, fast: int = 10, slow: int = 50,
              out: Out = None) -> np.ndarray:
    """Short over long close-to-close volatility, minus 1: a volatility regime change."""
    r = _logret(cols)
    return _gap(k.rolling_std(r, fast), k.rolling_std(r, slow), out)


# ---------------------------------------------------------------------- trend and momentum
@register_feature("sma_gap")
def sma_gap(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Close over its n-bar simple moving average, minus 1."""
    return _gap(cols["close"], ind.sma(cols["close"], n), out)


def _gap(a: np.ndarray, b: np.ndarray, out: Out) -> np.ndarray:
    """a / b - 1 (NaN where not finite), into `out` when given."""
    return k.gap(a, b, out)


@register_feature("ema_gap")
def ema_gap(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Close over its n-bar exponential moving average, minus 1."""
    return _gap(cols["close"], ind.ema(cols["close"], n), out)


@register_feature("rsi")
def rsi(cols: Columns, index: pd.DatetimeIndex, n: int = 14, out: Out = None) -> np.ndarray:
    """Wilder's RSI over n bars, rescaled from [0, 100] to [-1, 1]."""
    v = np.subtract(ind.rsi(cols["close"], n), 50.0, out=out)
    v /= 50.0
    return v


@register_feature("macd", warmup=lambda p: int(p["slow"]) + int(p["signal"]))
def macd(cols: Columns, index: pd.DatetimeIndex, fast: int = 12, slow: int = 26, signal: int = 9,
         out: Out = None) -> np.ndarray:
    """MACD histogram (MACD line minus its signal line) over the close: scale-free."""
    c = cols["close"]
    line, sig = ind.macd(c, fast, slow, signal)
    return k.ratio(line - sig, c, out)


@register_feature("adx", needs=("high", "low", "close"), warmup=lambda p: 2 * int(p["n"]))
def adx(cols: Columns, index: pd.DatetimeIndex, n: int = 14) -> np.ndarray:
    """Average directional index over n bars, in [0, 1]: trend strength, either direction."""
    return ind.adx(cols["high"], cols["low"], cols["close"], n) / 100.0


@register_feature("bb_pos")
def bb_pos(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Where the close sits in its n-bar Bollinger band: (close - mean) / (2 std)."""
    v = k.rolling_zscore(cols["close"], n, out)
    v /= 2.0
    return v


@register_feature("breakout", needs=("high", "low", "close"))
def breakout(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Where the close sits in the range of the last n bars, in [-1, 1] (1: at the high)."""
    return k.range_position(cols["high"], cols["low"], cols["close"], n, out)


# ---------------------------------------------------------------------- range and volume
@register_feature("atr", needs=("high", "low", "close"))
def atr(cols: Columns, index: pd.DatetimeIndex, n: int = 14, out: Out = None) -> np.ndarray:
    """Average true range over n bars, over the close."""
    return k.ratio(ind.atr(cols["high"], cols["low"], cols["close"], n), cols["close"], out)


@register_feature("range", needs=("high", "low", "close"))
def bar_range(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """Mean of (high - low) / close over n bars."""
    return k.rolling_mean((cols["high"] - cols["low"]) / cols["close"], n, out)


@register_feature("volume_z", needs=("volume",))
def volume_z(cols: Columns, index: pd.DatetimeIndex, n: int = 50, out: Out = None) -> np.ndarray:
    """Rolling z-score of log(1 + volume) over n bars: unusual activity."""
    return k.rolling_zscore(np.log1p(cols["volume"]), n, out)


@register_feature("dollar_volume", needs=("close", "volume"))
def dollar_volume(cols: Columns, index: pd.DatetimeIndex, n: int = 20, out: Out = None) -> np.ndarray:
    """log(1 + mean close x volume) over n bars: liquidity."""
    v = k.rolling_mean(cols["close"] * cols["volume"], n, out)
    return np.log1p(v, out=v)


@register_feature("volume_trend", needs=("volume",), warmup=lambda p: int(p["slow"]))
def volume_trend(cols: Columns, index: pd.DatetimeIndex, fast: int = 5, slow: int = 50,
                 out: Out = None) -> np.ndarray:
    """Log of short over long mean volume: volume building up or drying out."""
    v = cols["volume"]
    return k.log_ratio(k.rolling_mean(v, fast), k.rolling_mean(v, slow), 1e-12, out)


# ---------------------------------------------------------------------- calendar
# a circle's value at each of the day's 1440 minutes and the week's 7 days: a bar's is looked up
_DAY = 2.0 * np.pi * np.arange(1440) / 1440.0
_WEEK = 2.0 * np.pi * np.arange(7) / 7.0
_MINUTE_NS, _DAY_NS = 60_000_000_000, 86_400_000_000_000
_DAY_SIN, _DAY_COS, _WEEK_SIN, _WEEK_COS = np.sin(_DAY), np.cos(_DAY), np.sin(_WEEK), np.cos(_WEEK)


def _circle(cols: Columns, index: pd.DatetimeIndex, table: np.ndarray, weekly: bool,
            out: np.ndarray | None = None) -> np.ndarray:
    ts = cols["ts_ns"] if isinstance(cols, BarColumns) else index.as_unit("ns").asi8
    if weekly:
        return k.calendar_lookup(ts, _DAY_NS, 7, 3, table, out)  # 1970-01-01 was a Thursday
    return k.calendar_lookup(ts, _MINUTE_NS, 1440, 0, table, out)


@register_feature("hour_sin", needs=())
def hour_sin(cols: Columns, index: pd.DatetimeIndex, out: Out = None) -> np.ndarray:
    """Time of day of the bar's open (UTC) on the unit circle, sine part."""
    return _circle(cols, index, _DAY_SIN, False, out)


@register_feature("hour_cos", needs=())
def hour_cos(cols: Columns, index: pd.DatetimeIndex, out: Out = None) -> np.ndarray:
    """Time of day of the bar's open (UTC) on the unit circle, cosine part."""
    return _circle(cols, index, _DAY_COS, False, out)


@register_feature("dow_sin", needs=())
def dow_sin(cols: Columns, index: pd.DatetimeIndex) -> np.ndarray:
    """Day of the week of the bar's open (UTC, Monday 0) on the unit circle, sine part."""
    return _circle(cols, index, _WEEK_SIN, True)


@register_feature("dow_cos", needs=())
def dow_cos(cols: Columns, index: pd.DatetimeIndex) -> np.ndarray:
    """Day of the week of the bar's open (UTC, Monday 0) on the unit circle, cosine part."""
    return _circle(cols, index, _WEEK_COS, True)


# ---------------------------------------------------------------------- the collector's ticks
@register_feature("spread", needs=(tk.SPREAD,), ticks=(TickKind.QUOTES,))
def spread(cols: Columns, index: pd.DatetimeIndex) -> np.ndarray:
    """Mean relative quoted spread (ask - bid) / mid over the bar, weighted by how long each quote stood."""
    return cols[tk.SPREAD]


@register_feature("ofi", needs=(tk.OFI,), ticks=(TickKind.QUOTES,))
def ofi(cols: Columns, index: pd.DatetimeIndex) -> np.ndarray:
    """Order-flow imbalance (Cont, Kukanov & Stoikov) of the bar's best bid/ask updates, in units of
    the bar's mean top-of-book depth."""
    return cols[tk.OFI]


@register_feature("trade_imbalance", needs=(tk.TRADE_IMBALANCE, "volume"), ticks=(TickKind.TRADES,))
def trade_imbalance(cols: Columns, index: pd.DatetimeIndex) -> np.ndarray:
    """(buy - sell) / (buy + sell) volume of the bar's trades by the taker's side: 0 when the bar
    traded nothing, NaN when it traded but the lake holds none of its trades."""
    x = cols[tk.TRADE_IMBALANCE]
    return np.where(np.isnan(x) & (cols["volume"] == 0), 0.0, x)


@register_feature("book_pressure", needs=tk.depth_columns(1), warmup=lambda p: 0, ticks=(TickKind.BOOK,))
def book_pressure(cols: Columns, index: pd.DatetimeIndex, levels: int = 5) -> np.ndarray:
    """Bid size / (bid + ask size) over the top `levels` levels of the book at the bar's close,
    minus 0.5: in [-0.5, 0.5], positive when the bids are deeper."""
    bid, ask = tk.depth_columns(levels)
    if bid not in cols or ask not in cols:
        have = tk.book_levels(cols)
        raise DataError(f"feature book_pressure({levels}) needs {levels} book levels, but the recorded "
                        f"snapshots hold {have}: use book_pressure({have}) or collect a deeper book "
                        "(book_depth in collect.yaml)")
    b, a = cols[bid], cols[ask]
    return b / (b + a) - 0.5


__all__ = ["FEATURES", "TICK_FEATURES", "BarColumns", "Feature", "get_feature", "register_feature"]
