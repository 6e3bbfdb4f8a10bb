"""Backtests: strategy signals -> the simulation kernel -> a vectorbt Portfolio and a result.

`backtest(strategy, bars, params, costs=...)` is the one call a notebook needs. Fills default to
`next_open` (a signal on bar t's close trades at bar t+1's open); `close` is an explicit opt-in.
The exact rules are in SEMANTICS.md beside this file; tests hold the engine to a plain-Python
reference simulator written from that document.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from functools import cached_property
from typing import Any, cast

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from workbench.backtest import kernels
from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.strategies.base import Signals, Strategy, check_signal_bars, no_signals
from workbench.strategies.registry import get_strategy
from workbench.version import code_version

log = logging.getLogger(__name__)


class Fill(StrEnum):
    """When a signal computed on a bar's close is acted on."""

    NEXT_OPEN = "next_open"
    CLOSE = "close"


class Direction(StrEnum):
    """Which sides of a strategy's signals are traded."""

    LONG = "long"
    SHORT = "short"
    BOTH = "both"


class Action(IntEnum):
    """What a bar's signals do to one symbol (`kernels.signal_action`, the one rule the kernel and the
    paper runner share; SEMANTICS.md "Signals -> orders")."""

    NONE = kernels.A_NONE
    EXIT = kernels.A_EXIT
    LONG = kernels.A_LONG
    SHORT = kernels.A_SHORT
    EXIT_LONG = kernels.A_EXIT_LONG
    EXIT_SHORT = kernels.A_EXIT_SHORT

    @property
    def label(self) -> str:
        """How decisions name it: '', exit, long, short, exit+long, exit+short."""
        return "" if self is Action.NONE else self.name.lower().replace("_", "+")

    @property
    def exits(self) -> bool:
        return self in (Action.EXIT, Action.EXIT_LONG, Action.EXIT_SHORT)

    @property
    def enters(self) -> Direction | None:
        """The side entered, if any."""
        if self in (Action.LONG, Action.EXIT_LONG):
            return Direction.LONG
        if self in (Action.SHORT, Action.EXIT_SHORT):
            return Direction.SHORT
        return None


def drop_sides(direction: Direction, le: Any, lx: Any, se: Any, sx: Any) -> tuple[Any, Any, Any, Any]:
    """The signals `direction` trades (arrays or one bar's flags): long drops the short side, short
    the long one."""
    if direction is Direction.LONG:
        return le, lx, _none_like(se), _none_like(sx)
    if direction is Direction.SHORT:
        return _none_like(le), _none_like(lx), se, sx
    return le, lx, se, sx


def _none_like(a: Any) -> Any:
    """No signal where `a` has them: a shared read-only array for arrays, False for one bar's flag."""
    return no_signals(a.shape) if isinstance(a, np.ndarray) and a.ndim else np.zeros_like(a)


def signal_action(direction: Direction, le: bool, lx: bool, se: bool, sx: bool, position: float) -> Action:
    """One bar's signals and the position before them -> the action (the kernel's rule, from Python)."""
    le, lx, se, sx = drop_sides(direction, bool(le), bool(lx), bool(se), bool(sx))
    return Action(kernels.signal_action(bool(le), bool(lx), bool(se), bool(sx), float(position)))


class SizingKind(StrEnum):
    """How the size of an entry is chosen."""

    FIXED = "fixed"
    RISK = "risk"
    VOLATILITY = "volatility"


def _finite(v: Any) -> bool:
    """A finite int or float (what a cost setting must be before its range is checked)."""
    return isinstance(v, int | float) and math.isfinite(v)


LIMIT_FILLS = ("through", "touch")


@dataclass(frozen=True, kw_only=True)
class Costs:
    """Trading costs: proportional fees and slippage (fixed plus a multiple of recent volatility).

    Slippage on a fill at bar i is ``slippage + slippage_vol * sigma[i-1]``, sigma being the
    rolling std of log returns over `vol_window` bars: wider when the market is moving.
    `margin_rate` is the annual interest charged on negative cash (longs on margin), per bar;
    `borrow_rate` the annual fee for borrowing what is shorted, on the shorts' value, per bar.
    `impact` the square-root market impact coefficient: a fill of q adds
    ``impact * sigma * sqrt(q / adv)`` to its slippage, adv the mean volume of `adv_window` bars.
    `funding` settles perpetual futures' funding payments (bars with a `funding_rate` column);
    `volume_cap` caps each entry fill at that fraction of the bar's volume (0: no cap; a limit's
    remainder keeps resting); `limit_fill` fills a resting limit when the price trades `through` it
    (default) or when it `touch`es it; `spread` names the tick source whose recorded quotes give the
    half-spread every fill that pays slippage pays on top (bars with a `half_spread` column, from
    `marketdata.attach_spread`). SEMANTICS.md states each rule.
    """

    fees: float = 0.001
    slippage: float = 0.0005
    slippage_vol: float = 0.0
    vol_window: int = 20
    margin_rate: float = 0.0
    borrow_rate: float = 0.0
    impact: float = 0.0
    adv_window: int = 20
    funding: bool = False
    volume_cap: float = 0.0
    limit_fill: str = "through"
    spread: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.spread, str):
            raise ConfigError(f"costs: spread={self.spread!r} must name the tick source of the recorded "
                              "quotes, e.g. spread=binance")
        if not isinstance(self.funding, bool):
            raise ConfigError(f"costs: funding={self.funding!r} must be true or false")
        v = self.volume_cap
        if not (_finite(v) and 0 <= v <= 1):
            raise ConfigError(f"costs: volume_cap={v!r} must be a fraction of a bar's volume in (0, 1], e.g. "
                              "0.1 (or 0 for no cap)")
        if self.limit_fill not in LIMIT_FILLS:
            raise ConfigError(f"costs: limit_fill={self.limit_fill!r} is unknown; use through (default: the "
                              "price trades through the limit) or touch")
        for name in ("fees", "slippage"):
            v = getattr(self, name)
            if not (_finite(v) and 0 <= v < 0.5):
                raise ConfigError(f"costs: {name}={v!r} must be a fraction in [0, 0.5), e.g. 0.001 for 0.1 %")
        v = self.slippage_vol
        if not (_finite(v) and 0 <= v <= 10):
            raise ConfigError(f"costs: slippage_vol={v!r} must be a multiple of bar volatility in [0, 10], "
                              "e.g. 0.5")
        if int(self.vol_window) != self.vol_window or self.vol_window < 2:
            raise ConfigError(f"costs: vol_window={self.vol_window!r} must be an integer >= 2")
        v = self.impact
        if not (_finite(v) and 0 <= v <= 10):
            raise ConfigError(f"costs: impact={v!r} must be a square-root impact coefficient in [0, 10], "
                              "e.g. 0.5")
        if int(self.adv_window) != self.adv_window or self.adv_window < 1:
            raise ConfigError(f"costs: adv_window={self.adv_window!r} must be a whole number of bars >= 1")
        for name in ("margin_rate", "borrow_rate"):
            v = getattr(self, name)
            if not (_finite(v) and 0 <= v < 1):
                raise ConfigError(f"costs: {name}={v!r} must be an annual rate in [0, 1), e.g. 0.06 for 6 %")

    @classmethod
    def parse(cls, text: str) -> Costs:
        """Parse ``fees=0.001,slippage=0.0005`` (CLI form)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in cls.__dataclass_fields__:
                raise ConfigError(f"costs: cannot parse {part!r}; use e.g. fees=0.001,slippage=0.0005 "
                                  f"(keys: {', '.join(cls.__dataclass_fields__)})")
            key, value = key.strip(), value.strip()
            if key in ("limit_fill", "spread"):
                values[key] = value
                continue
            if key == "funding":
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ConfigError(f"costs: funding={value!r} must be true or false")
                values[key] = value.lower() in ("true", "1", "yes")
                continue
            try:
                whole = key in ("vol_window", "adv_window")
                values[key] = int(value) if whole else float(value)
            except ValueError:
                raise ConfigError(f"costs: {key}={value!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """Position sizing of entries, as a target fraction of portfolio equity.

    fixed: `fraction` of equity (default 1/number of symbols); risk: lose `risk` of equity if the
    trade's stop is hit; volatility: scale to `target_vol` annualised using ATR(`atr_window`).
    """

    kind: SizingKind = SizingKind.FIXED
    fraction: float | None = None
    risk: float = 0.01
    target_vol: float = 0.2
    atr_window: int = 14

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", SizingKind(self.kind))
        except ValueError:
            raise ConfigError(f"sizing kind {self.kind!r} is unknown; "
                              "use fixed, risk or volatility") from None
        if self.fraction is not None and not (0 < self.fraction <= 10):
            raise ConfigError(f"sizing fraction={self.fraction} must be in (0, 10]")
        if not (0 < self.risk < 1):
            raise ConfigError(f"sizing risk={self.risk} must be a fraction in (0, 1), e.g. 0.01")
        if not (0 < self.target_vol < 10):
            raise ConfigError(f"sizing target_vol={self.target_vol} must be in (0, 10), e.g. 0.2 for 20 %")
        if int(self.atr_window) != self.atr_window or self.atr_window < 1:
            raise ConfigError(f"sizing atr_window={self.atr_window} must be a positive integer")


@dataclass(frozen=True, kw_only=True)
class Lot:
    """What a venue accepts for one symbol: quantities in multiples of `step` (0 = any size, 1 =
    whole shares), and no entry below `min_qty` units or `min_notional` of value.

    Entries round down to the step (so a buy never exceeds the cash); one below a minimum is refused.
    """

    step: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0

    def __post_init__(self) -> None:
        for name in ("step", "min_qty", "min_notional"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"lot: {name}={v!r} must be a number >= 0 (0 = no constraint), "
                                  "e.g. step=1 for whole shares")
            object.__setattr__(self, name, float(v))

    def round(self, qty: float) -> float:
        """`qty` rounded down to the step; 0 when it falls below a minimum (the kernel's rule)."""
        q = math.floor(qty / self.step) * self.step if self.step > 0 else qty
        return q if q > 0 and q >= self.min_qty else 0.0

    def merge(self, other: Lot) -> Lot:
        """The stricter of two rules (coarser step, higher minimums): a backtest's and a venue's."""
        return Lot(step=max(self.step, other.step), min_qty=max(self.min_qty, other.min_qty),
                   min_notional=max(self.min_notional, other.min_notional))


def parse_lots(text: str, symbols: list[str]) -> Lot | dict[str, Lot]:
    """Parse the CLI form: ``step=1`` (one rule for every symbol) or per symbol
    ``SPY:step=1;BTC/USDT:step=0.00001,min_notional=5`` (keys: step, min_qty, min_notional)."""
    example = "step=1 or SPY:step=1;BTC/USDT:step=0.00001,min_notional=5"

    def one(body: str, where: str) -> Lot:
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in body.split(","))):
            key, sep, value = (x.strip() for x in part.partition("="))
            if not sep or key not in Lot.__dataclass_fields__:
                hint = did_you_mean(key, list(Lot.__dataclass_fields__))
                raise ConfigError(f"lots{where}: cannot parse {part!r}{hint}; write {example} "
                                  "(keys: step, min_qty, min_notional)")
            if key in values:
                raise ConfigError(f"lots{where}: {key} is given twice; give it once")
            try:
                values[key] = float(value)
            except ValueError:
                raise ConfigError(f"lots{where}: {key}={value!r} is not a number; e.g. {key}=1") from None
        if not values:
            raise ConfigError(f"lots{where}: nothing given; write {example}")
        return Lot(**values)

    text = text.strip()
    head = text.split("=", 1)[0]
    if ":" not in head:  # no symbol before the first key: one rule for all
        return one(text, "")
    out: dict[str, Lot] = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        head = chunk.split("=", 1)[0]
        sym, sep, _ = head.rpartition(":")
        if not sep or not sym:
            raise ConfigError(f"lots: {chunk!r} names no symbol; write {example}")
        if sym not in symbols:
            raise ConfigError(f"lots: {sym!r} is not among the symbols {symbols}{did_you_mean(sym, symbols)}")
        if sym in out:
            raise ConfigError(f"lots: {sym} is given twice; give each symbol once")
        out[sym] = one(chunk[len(sym) + 1:], f" of {sym}")
    return out


def resolve_lots(lots: Lot | Mapping[str, Lot] | None, symbols: list[str]) -> dict[str, Lot]:
    """One `Lot` per symbol from one rule for all, a {symbol: Lot} map, or None (no constraints)."""
    if lots is None or isinstance(lots, Lot):
        return {s: lots or Lot() for s in symbols}
    unknown = sorted(set(lots) - set(symbols))
    if unknown:
        raise ConfigError(f"lots given for {unknown}, which are not among the symbols {symbols}")
    out = {}
    for s in symbols:
        v = lots.get(s, Lot())
        out[s] = v if isinstance(v, Lot) else Lot(**v)
    return out


def lot_matrix(lots: Mapping[str, Lot], symbols: list[str]) -> np.ndarray:
    """(3, m) step, min_qty, min_notional per symbol, as the kernel reads them."""
    return np.ascontiguousarray(np.array([[lots[s].step for s in symbols], [lots[s].min_qty for s in symbols],
                                          [lots[s].min_notional for s in symbols]], dtype=np.float64))


def check_leverage(sizing: Sizing, costs: Costs, direction: Direction, max_exposure: float) -> None:
    """A setting that would have no effect is an error: a fixed fraction above the exposure cap, and
    a margin rate where cash can never be borrowed."""
    if sizing.kind is SizingKind.FIXED and sizing.fraction is not None and sizing.fraction > max_exposure:
        raise ConfigError(f"sizing fraction={sizing.fraction:g} exceeds max_exposure={max_exposure:g}, which "
                          f"caps every entry: set max_exposure={sizing.fraction:g} to trade on margin "
                          f"(--max-exposure {sizing.fraction:g}) or lower the fraction")
    if costs.margin_rate > 0 and max_exposure <= 1 and direction is Direction.LONG:
        raise ConfigError(f"margin_rate={costs.margin_rate:g} has no effect: long-only entries never borrow "
                          "with max_exposure <= 1; raise max_exposure above 1 or drop the margin rate")
    if costs.borrow_rate > 0 and direction is Direction.LONG:
        raise ConfigError(f"borrow_rate={costs.borrow_rate:g} has no effect: long-only trading never shorts; "
                          "drop the borrow rate or trade both directions")


_EXECUTION_KEYS = ("costs", "fill", "sizing", "direction", "init_cash", "max_exposure", "lots")


@dataclass(frozen=True, kw_only=True)
class Execution:
    """How a strategy's signals become fills: costs, fill convention, sizing, traded sides, starting
    cash, the per-position exposure cap and lot rules. One object travels through `backtest`,
    `sweep`, `walk_forward`, promotion artifacts and the paper runner, and is recorded with every
    result (`to_dict`), so the same settings are never re-typed or re-serialised by hand.

    `lots` is one `Lot` for every symbol or {symbol: Lot}; None means any size.
    """

    costs: Costs = field(default_factory=lambda: Costs())
    fill: Fill = Fill.NEXT_OPEN
    sizing: Sizing = field(default_factory=lambda: Sizing())
    direction: Direction = Direction.BOTH
    init_cash: float = 100_000.0
    max_exposure: float = 1.0
    lots: Lot | Mapping[str, Lot] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "fill", Fill(self.fill))
        except ValueError:
            raise ConfigError(f"fill {self.fill!r} is unknown; use next_open (default) or close") from None
        try:
            set_(self, "direction", Direction(self.direction))
        except ValueError:
            raise ConfigError(f"direction {self.direction!r} is unknown; use long, short or both") from None
        if not isinstance(self.costs, Costs):
            raise ConfigError(f"costs must be a Costs, got {type(self.costs).__name__}: Costs(fees=...)")
        if not isinstance(self.sizing, Sizing):
            raise ConfigError(f"sizing must be a Sizing, got {type(self.sizing).__name__}; e.g. Sizing()")
        if isinstance(self.lots, Mapping):
            set_(self, "lots", {str(k): v if isinstance(v, Lot) else Lot(**v) for k, v in self.lots.items()})
        elif self.lots is not None and not isinstance(self.lots, Lot):
            raise ConfigError(f"lots must be a Lot or {{symbol: Lot}}, got {type(self.lots).__name__}")
        cash = self.init_cash
        if not (isinstance(cash, numbers.Real) and math.isfinite(cash) and cash > 0):
            raise ConfigError(f"init_cash={self.init_cash} must be a positive amount")
        if not (isinstance(self.max_exposure, numbers.Real) and 0 < self.max_exposure <= 10):
            raise ConfigError(f"max_exposure={self.max_exposure} must be a fraction of equity in (0, 10]")
        set_(self, "init_cash", float(self.init_cash))
        set_(self, "max_exposure", float(self.max_exposure))
        check_leverage(self.sizing, self.costs, self.direction, self.max_exposure)

    @classmethod
    def of(cls, execution: Execution | None = None, **loose: Any) -> Execution:
        """`execution`, or one built from loose settings (None: the default); both at once is an error."""
        given = {k: v for k, v in loose.items() if v is not None}
        unknown = sorted(set(loose) - set(_EXECUTION_KEYS))
        if unknown:
            raise ConfigError(f"unknown execution setting(s) {unknown}; use {', '.join(_EXECUTION_KEYS)}")
        if execution is None:
            return cls(**given)
        if not isinstance(execution, Execution):
            raise ConfigError(f"execution must be an Execution, got {type(execution).__name__}")
        if given:
            raise ConfigError(f"give the settings either in execution= or as {', '.join(sorted(given))}=, "
                              "not both (the loose ones would be ignored)")
        return execution

    def lot_map(self, symbols: list[str]) -> dict[str, Lot]:
        """One `Lot` per symbol (`resolve_lots`)."""
        return resolve_lots(self.lots, symbols)

    def to_dict(self, symbols: list[str] | None = None) -> dict[str, Any]:
        """JSON-able settings (what results, run records, artifacts and journals store). With `symbols`
        the lots are written per symbol (only those with a rule); without, one rule for all is `*`."""
        if symbols is not None:
            lots = {s: asdict(v) for s, v in self.lot_map(symbols).items() if v != Lot()}
        elif isinstance(self.lots, Lot):
            lots = {"*": asdict(self.lots)} if self.lots != Lot() else {}
        else:
            lots = {s: asdict(v) for s, v in (self.lots or {}).items() if v != Lot()}
        return {
            "costs": asdict(self.costs),
            "fill": self.fill.value,
            "sizing": {**asdict(self.sizing), "kind": self.sizing.kind.value},
            "direction": self.direction.value,
            "init_cash": self.init_cash,
            "max_exposure": self.max_exposure,
            "lots": lots,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Execution:
        """Inverse of `to_dict`; reads the execution keys of a larger record (a run's settings, an
        artifact, a journal's spec, where the cash is called `capital`)."""
        lots = dict(d.get("lots") or {})
        return cls(
            costs=Costs(**d["costs"]) if "costs" in d else Costs(),
            fill=d.get("fill", Fill.NEXT_OPEN),
            sizing=Sizing(**d["sizing"]) if "sizing" in d else Sizing(),
            direction=d.get("direction", Direction.BOTH),
            init_cash=float(d.get("init_cash", d.get("capital", 100_000.0))),
            max_exposure=float(d.get("max_exposure", 1.0)),
            lots=Lot(**lots["*"]) if "*" in lots else {s: Lot(**v) for s, v in lots.items()} or None,
        )

    def replace(self, **changes: Any) -> Execution:
        """A copy with some settings changed (validated again)."""
        from dataclasses import replace as _replace

        return _replace(self, **changes)


@dataclass
class BacktestResult:
    """Everything a backtest produced and everything needed to reproduce it.

    `equity`, `benchmark`, `orders`, `trades`, `metrics` for analysis; `portfolio` is the full
    vectorbt Portfolio (built on first use) for its own analytics; `inputs` records the data
    fingerprint, strategy, params, costs, fill, sizing and code version.
    """

    strategy: str
    params: dict
    symbols: list[str]
    timeframe: str | None
    index: pd.DatetimeIndex
    bars: dict[str, pd.DataFrame]
    signals: dict[str, pd.DataFrame]
    equity: pd.Series
    benchmark: pd.Series
    orders: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, float]
    inputs: dict[str, Any]
    init_cash: float
    _records: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    # per-bar gross exposure (sum of |position value| / equity) at each close: walk-forward stitches it
    gross_exposure: pd.Series | None = field(repr=False, default=None)
    # cash flows that are not orders, in total: margin interest with borrow fees, and funding paid
    # (negative: received); the equity includes them, the vectorbt Portfolio (orders only) does not
    charges: dict[str, float] = field(default_factory=dict)

    @property
    def execution(self) -> Execution:
        """The execution settings this result was computed with (to re-run it, or run another alike)."""
        return Execution.from_dict(self.inputs)

    @property
    def final_equity(self) -> float:
        """Portfolio value at the last bar's close."""
        return float(self.equity.iloc[-1])

    @cached_property
    def portfolio(self) -> Any:
        """The vectorbt Portfolio for these orders (cash shared by all symbols)."""
        import vectorbt as vbt
        from vectorbt.base.array_wrapper import ArrayWrapper
        from vectorbt.portfolio.enums import log_dt

        # each symbol marked at its last close on the union timeline (held flat before its first bar)
        close = pd.DataFrame({s: self.bars[s]["close"] for s in self.symbols})
        close = close.reindex(self.index).ffill().bfill()
        wrapper = ArrayWrapper(index=self.index, columns=pd.Index(self.symbols), ndim=2,
                               freq=_pandas_freq(self.timeframe), group_by=True)
        return vbt.Portfolio(wrapper, close, self._records, np.empty(0, dtype=log_dt),
                             np.array([self.init_cash]), True)

    def metrics_frame(self, formatted: bool = False) -> pd.DataFrame:
        """The metrics as a two-column table (`formatted`: as text people read, e.g. 12.34%)."""
        from workbench.backtest.metrics import metrics_frame

        return metrics_frame(self.metrics, formatted)

    def figure(self, symbol: str | None = None) -> Any:
        """The chart of a result (plotly). One symbol: price with trades, equity vs buy-and-hold and
        drawdown. Several: the portfolio's equity and drawdown, or with `symbol` that symbol's price
        and trades (the equity is the portfolio's, so it is not drawn under one symbol's name)."""
        from workbench.backtest.plots import backtest_figure, portfolio_figure, price_figure

        head = f"{self.strategy} {_fmt_params(self.params)}"
        if symbol is None and len(self.symbols) > 1:
            return portfolio_figure(self.equity, self.benchmark,
                                    title=f"{head}: portfolio of {', '.join(self.symbols)}")
        sym = symbol or self.symbols[0]
        if sym not in self.bars:
            raise ConfigError(f"symbol {sym!r} is not in this result; it has {self.symbols}")
        trades = self.trades[self.trades["symbol"] == sym]
        if len(self.symbols) > 1:
            return price_figure(self.bars[sym], trades,
                                title=f"{head}: {sym} in a portfolio of {len(self.symbols)}")
        return backtest_figure(self.bars[sym], trades, self.equity, self.benchmark, title=f"{head} on {sym}")


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _pandas_freq(timeframe: str | None) -> pd.Timedelta | None:
    if not timeframe:
        return None
    from workbench.data.timeframe import Timeframe

    return pd.Timedelta(Timeframe.parse(timeframe).delta)


# ---------------------------------------------------------------- inputs

def as_bar_dict(bars: pd.DataFrame | Mapping[str, pd.DataFrame], symbol: str | None = None
                ) -> dict[str, pd.DataFrame]:
    """Normalise bars to {symbol: frame indexed by UTC ts}, each symbol keeping its own bars.

    Symbols of different markets keep different timestamps (BTC/USDT every hour, SPY in NYSE
    sessions); a backtest runs them on the union of their bars (`Timeline`). Accepts one bar frame
    (with a `ts` column or a DatetimeIndex), a dict of them, or a long frame with a `symbol` column
    (as `Lake.read_bars` returns for several symbols).
    """
    if isinstance(bars, pd.DataFrame):
        if "symbol" in bars.columns and bars["symbol"].nunique() > 1:
            frames = {str(s): g.drop(columns="symbol") for s, g in bars.groupby("symbol", sort=False)}
        else:
            name = symbol or bars.attrs.get("symbol") or (
                str(bars["symbol"].iloc[0]) if "symbol" in bars.columns and len(bars) else "asset")
            frames = {name: bars.drop(columns="symbol", errors="ignore")}
    elif isinstance(bars, Mapping):
        frames = dict(bars)
    else:
        raise DataError(f"bars must be a DataFrame or a dict of DataFrames, got {type(bars).__name__}")
    if not frames:
        raise DataError("no bars given; read some with Lake.read_bars(...)")
    out: dict[str, pd.DataFrame] = {}
    for sym, df in frames.items():
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"bars for {sym!r} are a {type(df).__name__}, not a DataFrame")
        if "ts" in df.columns:
            df = df.set_index("ts")
        if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
            raise DataError(f"bars for {sym!r} need a tz-aware `ts` column or DatetimeIndex (UTC)")
        if not df.index.is_monotonic_increasing or df.index.has_duplicates:
            raise DataError(f"bars for {sym!r} are not sorted by unique timestamps; sort and "
                            "deduplicate them first")
        missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
        if missing:
            raise DataError(f"bars for {sym!r} lack column(s) {missing}")
        out[str(sym)] = df
    return out


class Timeline:
    """A portfolio's timeline: the union of its symbols' bars and where each symbol's own bars lie on it.

    Symbols of different calendars (24/7 crypto, exchange sessions) trade on one timeline: a symbol
    without a bar at a union timestamp takes no part in it and is marked at its last close. The rule
    is written out in SEMANTICS.md ("Timeline").
    """

    def __init__(self, frames: Mapping[str, pd.DataFrame], symbols: list[str] | None = None) -> None:
        self.symbols = list(symbols) if symbols is not None else list(frames)
        self.frames = {s: frames[s] for s in self.symbols}
        index = None
        for s in self.symbols:
            index = frames[s].index if index is None else index.union(frames[s].index)
        # bar frames are indexed by time, so their union is a DatetimeIndex
        self.index = cast(pd.DatetimeIndex, index)
        self.n = len(self.index)
        # the union row of each own bar, per symbol
        self.rows = {s: self.index.get_indexer(frames[s].index) for s in self.symbols}
        self.mixed = any(len(r) != self.n for r in self.rows.values())

    def prices(self) -> tuple[np.ndarray, ...]:
        """open, high, low, close (n, m) for the kernel: NaN where a symbol has no bar (it takes no
        part in that bar), except the close, carried forward as the mark of a closed market."""
        if not self.mixed:
            return price_matrices(self.frames, self.symbols)
        out = []
        for name in ("open", "high", "low", "close"):
            full = np.full((self.n, len(self.symbols)), np.nan)
            for j, (s, a) in enumerate(zip(self.symbols, self._own(name), strict=True)):
                full[self.rows[s], j] = a
            if name == "close":
                full = pd.DataFrame(full).ffill().to_numpy()
            out.append(np.ascontiguousarray(full))
        return tuple(out)

    def _own(self, field: str) -> list[np.ndarray]:
        return [self.frames[s][field].to_numpy(dtype=np.float64) for s in self.symbols]

    def place(self, sym: str, a: np.ndarray, lag: int, fill_value: Any) -> np.ndarray:
        """A per-own-bar array of `sym` (signals, stops, sizing: by signal bar) moved to the union rows
        the kernel reads it from: with lag 1 (next_open) own bar k's value sits one row before own bar
        k+1 (so it acts at that bar's open, however many union bars lie between); lag 0 at own bar k.
        A one-row (broadcast) array stays as it is."""
        if not self.mixed or a.shape[0] == 1:
            return a
        rows = self.rows[sym]
        out = np.full(self.n, fill_value, dtype=a.dtype)
        if lag:
            out[rows[1:] - 1] = a[:-1]
        else:
            out[rows] = a
        return out

    def place_signals(self, per_symbol: list[dict[str, np.ndarray]], lag: int) -> list[dict[str, np.ndarray]]:
        """`place` every array of each symbol's `Signals.arrays()` (False / NaN where nothing acts)."""
        if not self.mixed:
            return per_symbol
        return [{key: self.place(s, a, lag, np.nan if a.dtype.kind == "f" else False)
                 for key, a in arrs.items()} for s, arrs in zip(self.symbols, per_symbol, strict=True)]

    def impact(self, costs: Costs) -> np.ndarray:
        """Square-root impact per fill bar (`impact_array`), each symbol's from its own bars."""
        if costs.impact == 0:
            return np.zeros((1, 1))
        if not self.mixed:
            close = price_matrices(self.frames, self.symbols)[3]
            volume = np.column_stack([self.frames[s]["volume"].to_numpy(dtype=np.float64)
                                      for s in self.symbols])
            return impact_array(close, volume, costs)
        out = np.zeros((self.n, len(self.symbols)))
        own = zip(self.symbols, self._own("close"), self._own("volume"), strict=True)
        for j, (s, close, volume) in enumerate(own):
            out[self.rows[s], j] = impact_array(close[:, None], volume[:, None], costs)[:, 0]
        return out

    def funding(self, costs: Costs) -> np.ndarray:
        """Funding rate per bar (SEMANTICS.md "Funding"): each symbol's `funding_rate` on its own bars, 0
        elsewhere; one zero when `costs.funding` is off. A symbol without the column is refused."""
        if not costs.funding:
            return np.zeros((1, 1))

        def missing(syms: list[str]) -> str:
            s = syms[0]
            what = ("a spot symbol: funding applies to perpetual futures (e.g. BTC/USDT:USDT)" if ":" not in s
                    else "but its bars carry no funding history: fill it with `workbench data funding "
                    f"--symbols {s}`")
            return f"funding asked for {s}, {what}; or drop funding from the costs"

        return _compact(self._own_matrix("funding_rate", missing))

    def volume_cap(self, costs: Costs) -> np.ndarray:
        """The most an entry fill may take per bar: `volume_cap` x each symbol's own bar volume (inf when
        there is no cap)."""
        if costs.volume_cap == 0:
            return np.full((1, 1), np.inf)
        volume = self._own_matrix("volume", lambda syms: f"volume_cap needs the bars' volume, and "
                                  f"{', '.join(syms)} has none; drop volume_cap from the costs")
        return np.ascontiguousarray(costs.volume_cap * volume)

    def _own_matrix(self, column: str, missing: Callable[[list[str]], str]) -> np.ndarray:
        """Each symbol's `column` on its own bars as an (n, m) matrix, 0 on the other rows and where
        NaN; the symbols without the column are refused with the line `missing(symbols)`."""
        lacking = [s for s in self.symbols if column not in self.frames[s].columns]
        if lacking:
            raise DataError(missing(lacking))
        out = np.zeros((self.n, len(self.symbols)))
        for j, s in enumerate(self.symbols):
            out[self.rows[s], j] = np.nan_to_num(self.frames[s][column].to_numpy(dtype=np.float64), nan=0.0)
        return out

    def slippage(self, costs: Costs) -> np.ndarray:
        """Slippage per fill bar, each symbol's from the volatility of its own bars, plus the recorded
        half-spread at the fill when `costs.spread` names a quote source (SEMANTICS.md)."""
        base = self._slippage(costs)
        if not costs.spread:
            return base
        spread = self._own_matrix("half_spread", lambda syms: (
            f"spread={costs.spread} asked, but the bars of {syms[0]} carry no recorded half-spread: load "
            "them with load_bars(..., costs=costs) or "
            f"attach_spread(lake, bars, {costs.spread!r}, timeframe)"))
        return np.ascontiguousarray(np.broadcast_to(base, spread.shape) + spread)

    def _slippage(self, costs: Costs) -> np.ndarray:
        if costs.slippage_vol == 0:
            return np.full((1, 1), costs.slippage)
        if not self.mixed:
            return slippage_array(price_matrices(self.frames, self.symbols)[3], costs)
        out = np.zeros((self.n, len(self.symbols)))
        for j, (s, close) in enumerate(zip(self.symbols, self._own("close"), strict=True)):
            out[self.rows[s], j] = slippage_array(close[:, None], costs)[:, 0]
        return out

    def sizing(self, sizing: Sizing, sl: np.ndarray, tsl: np.ndarray, ppy: float, lag: int) -> np.ndarray:
        """Target fractions by signal row (`sizing_array`); volatility sizing from each symbol's own bars,
        annualised with its own market's bars per year (`own_periods_per_year`)."""
        m = len(self.symbols)
        if sizing.kind is not SizingKind.VOLATILITY:
            empty = np.empty((0, m))
            return sizing_array(sizing, m, sl, tsl, empty, empty, empty, ppy)
        first = self.frames[self.symbols[0]]
        timeframe = first.attrs.get("timeframe") or infer_timeframe(self.index)
        ppys = own_periods_per_year(self.symbols, timeframe, ppy)
        cols = []
        own_bars = zip(self.symbols, self._own("high"), self._own("low"), self._own("close"), strict=True)
        for s, h, lo, c in own_bars:
            own = sizing_array(sizing, m, sl, tsl, h[:, None], lo[:, None], c[:, None], ppys[s])[:, 0]
            cols.append(self.place(s, own, lag, np.nan))
        return np.ascontiguousarray(np.column_stack(cols))


def own_periods_per_year(symbols: list[str], timeframe: str | None, ppy: float) -> dict[str, float]:
    """Bars per year that annualise each symbol's own volatility: the portfolio's `ppy`, unless its
    symbols trade on different calendars (a crypto pair with equities), when each takes its own
    market's (SPY's hourly ATR is scaled by NYSE hours, not by the 24/7 union's)."""
    from workbench.backtest.metrics import periods_per_year
    from workbench.data.calendar import calendar_for_symbol

    codes = {s: calendar_for_symbol(s).code for s in symbols}
    if len(set(codes.values())) <= 1 or timeframe is None:
        return {s: float(ppy) for s in symbols}
    return {s: periods_per_year(timeframe, c) for s, c in codes.items()}


def infer_timeframe(index: pd.DatetimeIndex) -> str | None:
    """The bar timeframe from the most common spacing of the index (None if unclear)."""
    if len(index) < 3:
        return None
    step = pd.Series(np.diff(index.asi8)).mode().iloc[0]
    unit_us = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[index.unit]
    minutes = step * unit_us / 60e6
    names = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 240: "4h", 1440: "1d"}
    return names.get(round(minutes)) if abs(minutes - round(minutes)) < 1e-9 else None


def infer_calendar(symbols: list[str], index: pd.DatetimeIndex) -> str:
    """24/7 for crypto pairs (or any data with weekend bars), XNYS for equities."""
    if any("/" in s for s in symbols) or bool((index.day_of_week >= 5).any()):
        return "24/7"
    return "XNYS"


def check_calendar(calendar: str, symbols: list[str], index: pd.DatetimeIndex) -> None:
    """Refuse a given calendar the bars contradict (it would annualise every metric wrongly)."""
    weekend = bool((index.day_of_week >= 5).any())
    crypto = any("/" in s for s in symbols)
    if calendar != "24/7" and (weekend or crypto):
        why = "weekend bars" if weekend else "crypto pairs"
        raise ConfigError(f"calendar {calendar!r} is an exchange's, but the bars trade around the clock "
                          f"({why}); use calendar='24/7' or leave it out")
    long_enough = len(index) > 0 and index[-1] - index[0] >= pd.Timedelta(days=14)
    if calendar == "24/7" and not weekend and not crypto and long_enough:
        raise ConfigError("calendar '24/7' does not fit these bars (no weekend bar in two weeks or more): "
                          "give the exchange's calendar, e.g. calendar='XNYS', or leave it out")


def fingerprint(bars: Mapping[str, pd.DataFrame]) -> str:
    """sha256 over the aligned timestamps and OHLCV of every symbol: the data a result used."""
    h = hashlib.sha256()
    for sym in sorted(bars):
        df = bars[sym]
        h.update(sym.encode())
        h.update(cast(pd.DatetimeIndex, df.index).as_unit("us").asi8.tobytes())  # a bar frame's index
        for col in ("open", "high", "low", "close", "volume", "funding_rate", "half_spread"):
            if col in df.columns:
                h.update(np.ascontiguousarray(df[col].to_numpy(dtype=np.float64)).tobytes())
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------- simulation

def impact_array(close: np.ndarray, volume: np.ndarray, costs: Costs) -> np.ndarray:
    """Per fill bar square-root impact per sqrt(unit) (n, m): ``impact * sigma[i-1] / sqrt(adv[i-1])``,
    adv the mean volume of the `adv_window` bars up to i-1; 0 where either is undefined or adv is 0."""
    if costs.impact == 0:
        return np.zeros((1, 1))
    logret = np.diff(np.log(close), axis=0, prepend=np.nan)
    sigma = pd.DataFrame(logret).rolling(costs.vol_window).std().to_numpy()
    adv = pd.DataFrame(volume).rolling(costs.adv_window).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = costs.impact * sigma / np.sqrt(adv)
    k = np.where(np.isfinite(k), k, 0.0)
    return np.vstack([np.zeros((1, close.shape[1])), k[:-1]])


def slippage_array(close: np.ndarray, costs: Costs) -> np.ndarray:
    """Per fill bar slippage (n, m): fixed part plus `slippage_vol` x the previous bar's volatility."""
    if costs.slippage_vol == 0:
        return np.full((1, 1), costs.slippage)
    logret = np.diff(np.log(close), axis=0, prepend=np.nan)
    sigma = pd.DataFrame(logret).rolling(costs.vol_window).std().to_numpy()
    prev = np.vstack([np.full((1, close.shape[1]), np.nan), sigma[:-1]])
    return costs.slippage + costs.slippage_vol * np.nan_to_num(prev, nan=0.0)


def sizing_array(sizing: Sizing, n_symbols: int, sl: np.ndarray, tsl: np.ndarray, high: np.ndarray,
                 low: np.ndarray, close: np.ndarray, ppy: float) -> np.ndarray:
    """Target fraction of equity per signal bar (NaN refuses the entry), before the exposure cap."""
    if sizing.kind is SizingKind.FIXED:
        return np.full((1, 1), sizing.fraction if sizing.fraction is not None else 1.0 / n_symbols)
    if sizing.kind is SizingKind.RISK:
        dist = np.where(np.isfinite(sl) & (sl > 0), sl, np.where(np.isfinite(tsl) & (tsl > 0), tsl, np.nan))
        return sizing.risk / dist
    from workbench.strategies.indicators import atr

    out = np.empty_like(close)
    for j in range(close.shape[1]):
        vol = atr(high[:, j], low[:, j], close[:, j], sizing.atr_window) / close[:, j] * math.sqrt(ppy)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, j] = np.where(vol > 0, sizing.target_vol / vol, np.nan)
    return out


def flex_columns(columns: list[np.ndarray], n: int) -> np.ndarray:
    """Stack per-symbol arrays into (n, m), or (1, m) when every one is a single broadcast value."""
    if len(columns) == 1:  # one symbol: a view of its array, no copy
        c = columns[0]
        return np.ascontiguousarray(c if c.shape[0] == 1 else np.broadcast_to(c, (n,))).reshape(-1, 1)
    if all(c.shape[0] == 1 for c in columns):
        return np.ascontiguousarray(np.column_stack(columns))
    return np.ascontiguousarray(np.column_stack([np.broadcast_to(c, (n,)) for c in columns]))


def _compact(a: np.ndarray) -> np.ndarray:
    """Store a constant column as one row (the kernel broadcasts it)."""
    if a.shape[0] > 1:
        first, last = a[:1], a[-1:]
        if ((first == last) | (np.isnan(first) & np.isnan(last))).all() and (  # (cheap: most columns vary)
                np.all(a == first) or np.all(np.isnan(a))):
            return np.ascontiguousarray(a[:1])
    return np.ascontiguousarray(a)


def resolve_annualisation(frames: Mapping[str, pd.DataFrame], timeframe: str | None, calendar: str | None,
                          periods_per_year: float | None) -> tuple[str | None, str, float]:
    """Timeframe, calendar and bars per year of a portfolio (given values win over inferred ones).

    The calendar is the union timeline's: one 24/7 symbol makes a mixed portfolio 24/7.
    """
    first = next(iter(frames.values()))
    union = Timeline(frames).index
    timeframe = timeframe or first.attrs.get("timeframe") or infer_timeframe(union)
    if calendar is not None:
        check_calendar(calendar, list(frames), union)
    calendar = calendar or infer_calendar(list(frames), union)
    if periods_per_year is None:
        from workbench.backtest.metrics import periods_per_year as ppy_of

        if timeframe is None:
            raise ConfigError("cannot tell the bars' timeframe; pass timeframe='1h' (or periods_per_year)")
        periods_per_year = ppy_of(timeframe, calendar)
    return timeframe, calendar, periods_per_year


def price_matrices(frames: Mapping[str, pd.DataFrame], symbols: list[str]) -> tuple[np.ndarray, ...]:
    """open, high, low, close as contiguous (n, symbols) float64 arrays for the kernel."""
    return tuple(np.ascontiguousarray(np.column_stack([frames[s][c].to_numpy(dtype=np.float64)
                                                       for s in symbols]))
                 for c in ("open", "high", "low", "close"))


def signal_matrices(per_symbol: list[dict[str, np.ndarray]], n: int, direction: Direction
                    ) -> tuple[np.ndarray, ...]:
    """le, lx, se, sx (n, m) with the sides `direction` drops zeroed, then sl, tp, tsl (flexible)."""
    def col(key: str) -> np.ndarray:
        return flex_columns([a[key] for a in per_symbol], n)

    le, lx, se, sx = drop_sides(direction, col("long_entries"), col("long_exits"), col("short_entries"),
                                col("short_exits"))
    return le, lx, se, sx, col("stop_loss"), col("take_profit"), col("trailing_stop")


def entry_order_matrices(placed: list[dict[str, np.ndarray]], n: int) -> tuple[np.ndarray, ...]:
    """Order type codes, limit and stop prices and times in force (flexible (n or 1, m)) for the kernel."""
    return tuple(_compact(flex_columns([a[key] for a in placed], n))
                 for key in ("order_type", "limit_price", "stop_price", "time_in_force"))


def check_entry_orders(arrs: Mapping[str, np.ndarray], close: np.ndarray, who: str) -> None:
    """SEMANTICS.md "Entry orders", refusals: an entry order that would fill at once, or lacks a price."""
    if not arrs["order_type"].any():  # market entries only (a one-element array when given so)
        return
    le, se = arrs["long_entries"], arrs["short_entries"]
    bars = np.flatnonzero(le | se)  # only the bars that enter are checked (a few in a hundred)
    if not bars.size:
        return
    first = np.full(len(_ENTRY_PROBLEMS), -1, dtype=np.int64)
    kind = np.ascontiguousarray(arrs["order_type"], dtype=np.float64)
    _entry_problems_nb(bars, le, se, kind,
                       np.ascontiguousarray(arrs["limit_price"], dtype=np.float64),
                       np.ascontiguousarray(arrs["stop_price"], dtype=np.float64),
                       np.ascontiguousarray(close, dtype=np.float64), first)
    for code, what in enumerate(_ENTRY_PROBLEMS):
        if first[code] >= 0:
            bar = int(first[code])
            name = kernels.ORDER_TYPES[int(kind[bar if kind.shape[0] > 1 else 0])]
            raise DataError(f"{who}: a {name} entry on bar {bar} {what}")


_AT_ONCE = "(it would fill at once: use a market order)"
# what `_entry_problems_nb` looks for, in the order they are reported
_ENTRY_PROBLEMS = (
    "without its limit_price",
    "without its stop_price",
    f"with a limit on the wrong side of the signal bar's close {_AT_ONCE}",
    f"with a stop on the wrong side of the signal bar's close {_AT_ONCE}",
    "whose limit is on the wrong side of its stop (a buy stop-limit needs limit >= stop)",
)


@numba.njit(cache=True, nogil=True)
def _entry_problems_nb(bars: np.ndarray, le: np.ndarray, se: np.ndarray, kind: np.ndarray, lim: np.ndarray,
                       stp: np.ndarray, close: np.ndarray, first: np.ndarray) -> None:
    """The first of `bars` (ascending) with each of `_ENTRY_PROBLEMS` into `first` (-1: none), over those
    that enter (a bar with both entries enters neither); `kind`, `lim`, `stp` hold one value per bar or
    one for all."""
    for i in bars:
        long = le[i] and not se[i]
        short = se[i] and not le[i]
        if not (long or short):
            continue
        k = kind[i if kind.shape[0] > 1 else 0]
        if k == kernels.MARKET:
            continue
        li = lim[i if lim.shape[0] > 1 else 0]
        st = stp[i if stp.shape[0] > 1 else 0]
        c = close[i]
        has_limit = k == kernels.LIMIT or k == kernels.STOP_LIMIT
        has_stop = k == kernels.STOP or k == kernels.STOP_LIMIT
        bad = (has_limit and np.isnan(li),
               has_stop and np.isnan(st),
               k == kernels.LIMIT and ((long and li >= c) or (short and li <= c)),
               has_stop and ((long and st <= c) or (short and st >= c)),
               k == kernels.STOP_LIMIT and ((long and li < st) or (short and li > st)))
        for q in range(5):
            if bad[q] and first[q] < 0:
                first[q] = i


def sized(frac: np.ndarray, placed: list[dict[str, np.ndarray]], n: int) -> np.ndarray:
    """The sizing rule's fractions times the strategies' `size` (SEMANTICS.md "Sizing"): one
    broadcast row when no strategy sizes its entries."""
    size = flex_columns([a["size"] for a in placed], n)
    if size.shape[0] == 1 and np.all(size == 1.0):
        return frac
    return np.asarray(frac, dtype=np.float64) * np.where(size > 0, size, np.nan)


def check_risk_stops(sizing: Sizing, le: np.ndarray, se: np.ndarray, frac: np.ndarray, who: str) -> None:
    """Risk sizing with no stop on any entry would trade nothing: say so instead."""
    if sizing.kind is SizingKind.RISK and (le | se).any() and not np.isfinite(
            np.broadcast_to(frac, le.shape)[le | se]).any():
        raise ConfigError(f"risk sizing needs a stop: {who} sets no stop_loss or trailing_stop; "
                          "use sizing kind fixed or volatility")


def run_inputs(*, strategy: str, params: Mapping[str, Any] | None, frames: Mapping[str, pd.DataFrame],
               timeframe: str | None, calendar: str, periods_per_year: float, execution: Execution,
               **extra: Any) -> dict[str, Any]:
    """What a backtest or sweep used, recorded with its result so any figure can be reproduced.

    `params` is None for a sweep, whose `extra` holds the grid instead.
    """
    index = Timeline(frames).index
    return {
        "strategy": strategy,
        **({} if params is None else {"params": dict(params)}),
        **extra,
        "symbols": list(frames),
        "timeframe": timeframe,
        "calendar": calendar,
        "periods_per_year": periods_per_year,
        "start": index[0].isoformat(),
        "end": index[-1].isoformat(),
        "bars": len(index),
        "data_fingerprint": fingerprint(frames),
        "sources": sorted({str(df.attrs["source"]) for df in frames.values() if "source" in df.attrs}),
        **execution.to_dict(list(frames)),
        "code_version": code_version(),
    }


def simulate(bars: pd.DataFrame | Mapping[str, pd.DataFrame], signals: Signals | Mapping[str, Signals], *,
             execution: Execution | None = None, costs: Costs | None = None, fill: Fill | str | None = None,
             sizing: Sizing | None = None, direction: Direction | str | None = None,
             init_cash: float | None = None, max_exposure: float | None = None,
             periods_per_year: float | None = None, timeframe: str | None = None, calendar: str | None = None,
             strategy: str = "signals", params: Mapping[str, Any] | None = None,
             lots: Lot | Mapping[str, Lot] | None = None) -> BacktestResult:
    """Backtest precomputed signals (one `Signals` per symbol) on aligned bars.

    This is the engine under `backtest`; call it directly for hand-made or random signals. The
    execution settings come as one `Execution` or as its fields (`costs`, `fill`, `sizing`,
    `direction`, `init_cash`, `max_exposure`, `lots`: one `Lot` for every symbol or {symbol: Lot}).
    """
    ex = Execution.of(execution, costs=costs, fill=fill, sizing=sizing, direction=direction,
                      init_cash=init_cash, max_exposure=max_exposure, lots=lots)
    costs, fill, sizing, direction = ex.costs, ex.fill, ex.sizing, ex.direction
    init_cash, max_exposure = ex.init_cash, ex.max_exposure
    frames = as_bar_dict(bars)
    symbols = list(frames)
    lot_map = ex.lot_map(symbols)
    if isinstance(signals, Signals):
        if len(symbols) != 1:
            raise ConfigError("one Signals object given for several symbols; pass {symbol: Signals}")
        signals = {symbols[0]: signals}
    missing = [s for s in symbols if s not in signals]
    if missing:
        raise ConfigError(f"no signals for symbol(s) {missing}")
    tl = Timeline(frames, symbols)
    index = tl.index
    n, m = len(index), len(symbols)
    if n < 2:
        raise DataError(f"need at least 2 bars to backtest, got {n}")
    for s in symbols:
        check_signal_bars(frames[s], 0, s)
    timeframe, calendar, periods_per_year = resolve_annualisation(frames, timeframe, calendar,
                                                                  periods_per_year)
    lag = int(fill is Fill.NEXT_OPEN)
    open_, high, low, close = tl.prices()
    arrs = {s: signals[s].arrays(len(frames[s]), f"{strategy}[{s}]", compact=True) for s in symbols}
    for s in symbols:
        check_entry_orders(arrs[s], frames[s]["close"].to_numpy(dtype=np.float64), f"{strategy}[{s}]")
    placed = tl.place_signals([arrs[s] for s in symbols], lag)
    le, lx, se, sx, sl, tp, tsl = signal_matrices(placed, n, direction)
    frac = sized(tl.sizing(sizing, sl, tsl, periods_per_year, lag), placed, n)
    check_risk_stops(sizing, le, se, frac, "the strategy")
    slip = tl.slippage(costs)

    orders_buf = np.empty((3 * n * m + 1, kernels.N_ORDER_FIELDS))
    value, gross = np.empty(n), np.empty(n)
    stats = np.empty(kernels.N_STATS)
    otype, olim, ostp, otif = entry_order_matrices(placed, n)
    k = kernels.simulate_nb(open_, high, low, close, le, lx, se, sx, _compact(sl), _compact(tp),
                            _compact(tsl), _compact(np.asarray(frac, dtype=np.float64)), _compact(slip),
                            float(costs.fees), float(init_cash), float(max_exposure),
                            lot_matrix(lot_map, symbols), costs.margin_rate / periods_per_year,
                            fill is Fill.NEXT_OPEN, value, gross, orders_buf, stats, np.empty((1, 1)),
                            otype, olim, ostp, otif, costs.limit_fill == "touch",
                            costs.borrow_rate / periods_per_year, _compact(tl.impact(costs)),
                            tl.funding(costs), tl.volume_cap(costs))
    ob = orders_buf[:k]
    o_idx, o_col = ob[:, kernels.O_IDX].astype(np.int64), ob[:, kernels.O_COL].astype(np.int64)
    o_side, o_reason = ob[:, kernels.O_SIDE].astype(np.int64), ob[:, kernels.O_REASON].astype(np.int64)
    o_size, o_price, o_fees = ob[:, kernels.O_SIZE], ob[:, kernels.O_PRICE], ob[:, kernels.O_FEES]
    order_arrays = (o_idx, o_col, o_side, o_size, o_price, o_fees, o_reason)
    orders = _orders_frame(index, symbols, *order_arrays)
    trades = _trades_frame(index, symbols, *order_arrays, t_sl=sl, t_tp=tp, lag=int(fill is Fill.NEXT_OPEN))
    equity = pd.Series(value, index=index, name="equity")
    benchmark = buy_and_hold(open_, close, index, costs, fill, init_cash, slip)
    from workbench.backtest.metrics import compute_metrics

    metrics = compute_metrics(equity, init_cash, periods_per_year, trades=trades, exposure=gross,
                              traded_value=float(stats[kernels.ST_TRADED_VALUE]), benchmark=benchmark,
                              index=index)
    inputs = run_inputs(strategy=strategy, params=params or {}, frames=frames, timeframe=timeframe,
                        calendar=calendar, periods_per_year=periods_per_year, execution=ex)
    records = np.empty(k, dtype=_order_dt())
    order = np.lexsort((np.arange(k), o_idx, o_col))
    records["id"] = np.arange(k)
    for name, arr in (("col", o_col), ("idx", o_idx), ("size", o_size), ("price", o_price),
                      ("fees", o_fees), ("side", o_side)):
        records[name] = arr[order]
    sig_frames = {s: pd.DataFrame({k: np.broadcast_to(v, (len(frames[s]),)) for k, v in arrs[s].items()},
                                  index=frames[s].index) for s in symbols}
    return BacktestResult(strategy=strategy, params=dict(params or {}), symbols=symbols, timeframe=timeframe,
                          index=index, bars=frames, signals=sig_frames, equity=equity, benchmark=benchmark,
                          orders=orders, trades=trades, metrics=metrics, inputs=inputs,
                          init_cash=float(init_cash), _records=records,
                          gross_exposure=pd.Series(gross, index=index, name="gross_exposure"),
                          charges={"interest": float(stats[kernels.ST_INTEREST]),
                                   "funding": float(stats[kernels.ST_FUNDING])})


# vectorbt's order record layout (vectorbt.portfolio.enums.order_dt), declared here so that a
# backtest does not import vectorbt until its Portfolio is asked for; a test checks they agree
ORDER_DT = np.dtype([("id", np.int64), ("col", np.int64), ("idx", np.int64), ("size", np.float64),
                     ("price", np.float64), ("fees", np.float64), ("side", np.int64)], align=True)


def _order_dt() -> np.dtype:
    return ORDER_DT


def _orders_frame(index: pd.DatetimeIndex, symbols: list[str], idx: np.ndarray, col: npt.NDArray[np.int64],
                  side: np.ndarray, size: np.ndarray, price: np.ndarray, fees: np.ndarray,
                  reason: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "time": index[idx],
        "symbol": pd.Categorical.from_codes(col, categories=pd.Index(symbols)) if len(col) else
        pd.Categorical([], categories=symbols),
        "side": np.where(side == kernels.BUY, "buy", "sell"),
        "size": size,
        "price": price,
        "fees": fees,
        "reason": np.asarray(kernels.REASONS, dtype=object)[reason] if len(reason) else
        np.array([], dtype=object),
    }).astype({"symbol": str})


_TRADE_REASON = {kernels.EXIT: "signal", kernels.STOP_LOSS: "stop_loss",
                 kernels.TAKE_PROFIT: "take_profit", kernels.TRAILING_STOP: "trailing_stop"}


def _trades_frame(index: pd.DatetimeIndex, symbols: list[str], idx: np.ndarray, col: np.ndarray,
                  side: np.ndarray, size: np.ndarray, price: np.ndarray, fees: np.ndarray,
                  reason: np.ndarray, t_sl: np.ndarray, t_tp: np.ndarray, lag: int) -> pd.DataFrame:
    """Round trips: the entry orders of a position (several when a volume cap split its order) paired
    with the next exit of its symbol (exits close all)."""
    rows = []
    open_by_col: dict[int, list[int]] = {}
    for k in range(len(idx)):
        c = int(col[k])
        if reason[k] == kernels.ENTRY:
            open_by_col.setdefault(c, []).append(k)
            continue
        e = open_by_col.pop(c)
        rows.append(_trade_row(index, symbols, e, k, idx, col, side, size, price, fees, reason, t_sl, t_tp,
                               lag))
    for e in open_by_col.values():
        rows.append(_trade_row(index, symbols, e, None, idx, col, side, size, price, fees, reason, t_sl,
                               t_tp, lag))
    cols = ["symbol", "direction", "entry_time", "entry_price", "exit_time", "exit_price", "size", "pnl",
            "return", "entry_fees", "exit_fees", "exit_reason", "status", "stop_loss_price",
            "take_profit_price", "bars_held"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df = pd.DataFrame(rows, columns=cols).sort_values(["entry_time", "symbol"], kind="stable")
    return df.reset_index(drop=True)


def _trade_row(index, symbols, entries, x, idx, col, side, size, price, fees, reason, t_sl, t_tp, lag):
    e = entries[0]
    c = int(col[e])
    long = side[e] == kernels.BUY
    q = float(size[entries].sum())
    ep = float((size[entries] * price[entries]).sum() / q) if len(entries) > 1 else float(price[e])
    e_fees = float(fees[entries].sum())
    s_bar = int(idx[e]) - lag
    sl = t_sl[s_bar if t_sl.shape[0] > 1 else 0, c]
    tp = t_tp[s_bar if t_tp.shape[0] > 1 else 0, c]
    sl_price = ep * (1 - sl) if long else ep * (1 + sl)
    tp_price = ep * (1 + tp) if long else ep * (1 - tp)
    if x is None:
        return [symbols[c], "long" if long else "short", index[idx[e]], ep, pd.NaT, np.nan, q, np.nan,
                np.nan, e_fees, np.nan, "open", "open", sl_price, tp_price, len(index) - 1 - idx[e]]
    xp = float(price[x])
    pnl = q * ((xp - ep) if long else (ep - xp)) - e_fees - float(fees[x])
    return [symbols[c], "long" if long else "short", index[idx[e]], ep, index[idx[x]], xp, q, pnl,
            pnl / (q * ep), e_fees, float(fees[x]), _TRADE_REASON[int(reason[x])], "closed",
            sl_price, tp_price, int(idx[x] - idx[e])]


def buy_and_hold(open_: np.ndarray, close: np.ndarray, index: pd.DatetimeIndex, costs: Costs, fill: Fill,
                 init_cash: float, slip: np.ndarray) -> pd.Series:
    """Equal-weight buy-and-hold, each symbol bought at the first of its own bars a signal could act on
    (its open NaN where it has no bar, as `Timeline.prices` gives), with the same costs."""
    n, m = close.shape
    budget = init_cash / m
    value = np.zeros(n)
    lag = fill is Fill.NEXT_OPEN
    for j in range(m):
        own = np.flatnonzero(~np.isnan(open_[:, j]))
        if len(own) <= lag:
            value += budget  # no bar to buy at: the budget stays cash
            continue
        first = int(own[int(lag)])
        px = open_[first, j] if lag else close[first, j]
        s = slip[first if slip.shape[0] > 1 else 0, j if slip.shape[1] > 1 else 0]
        fill_px = px * (1 + s)
        qty = budget / (1 + costs.fees) / fill_px
        left = budget - qty * fill_px * (1 + costs.fees)
        value[:first] += budget
        value[first:] += left + qty * close[first:, j]
    return pd.Series(value, index=index, name="benchmark")


def backtest(strategy: str | Strategy, bars: pd.DataFrame | Mapping[str, pd.DataFrame],
             params: Mapping[str, Any] | None = None, *, execution: Execution | None = None,
             costs: Costs | None = None, fill: Fill | str | None = None, sizing: Sizing | None = None,
             direction: Direction | str | None = None, init_cash: float | None = None,
             max_exposure: float | None = None, periods_per_year: float | None = None,
             timeframe: str | None = None, calendar: str | None = None,
             lots: Lot | Mapping[str, Lot] | None = None) -> BacktestResult:
    """Run a strategy on bars (one frame or {symbol: frame}) with honest fills and costs.

    >>> result = backtest("sma_cross", bars, {"fast": 10, "slow": 50}, costs=Costs(fees=0.001))
    >>> same = backtest("sma_cross", bars, {"fast": 10, "slow": 50}, execution=result.execution)
    """
    ex = Execution.of(execution, costs=costs, fill=fill, sizing=sizing, direction=direction,
                      init_cash=init_cash, max_exposure=max_exposure, lots=lots)
    strat = get_strategy(strategy)
    p = strat.params(params)
    frames = as_bar_dict(bars)
    signals = {s: strat.signals(df, p) for s, df in frames.items()}
    return simulate(frames, signals, execution=ex, periods_per_year=periods_per_year,
                    timeframe=timeframe, calendar=calendar, strategy=strat.name, params=p)


def load_bars(lake: Any, symbols: str | list[str], timeframe: str, start: Any = None, end: Any = None, *,
              source: str | None = None, costs: Costs | None = None, fill: Fill | str = Fill.NEXT_OPEN
              ) -> dict[str, pd.DataFrame]:
    """Read backtest-ready bars from the lake: {symbol: frame indexed by ts}, tagged with their origin.

    Without `source`, the one source holding the symbols is used (an error names them if several do).
    A perpetual whose funding history the lake holds gets its `funding_rate` column; with `costs`
    naming a `spread` source, every frame gets the recorded `half_spread` at its fill times (`fill`).
    """
    syms = [symbols] if isinstance(symbols, str) else list(symbols)
    if not syms:
        raise ConfigError("no symbols given; pass e.g. --symbols BTC/USDT")
    if source is None:
        held = {c.source for c in lake.coverage() if c.symbol in syms}
        if len(held) > 1:
            raise ConfigError(f"symbols {syms} are held by several sources {sorted(held)}; "
                              "choose one with source=... (--source)")
        source = held.pop() if held else "synthetic"
    out = {}
    for s in syms:
        df = lake.read_bars(source, s, timeframe, start, end)
        if df.empty:
            raise DataError(f"no {timeframe} bars of {s} from {source} in the requested range; "
                            "check `workbench data ls` or widen --start/--end")
        df = df.set_index("ts")
        df.attrs.update(symbol=s, timeframe=timeframe, source=source)
        out[s] = df
    from workbench.backtest.marketdata import attach_funding, attach_spread

    out = attach_funding(lake, out, source, timeframe)
    if costs is not None and costs.spread:
        out = attach_spread(lake, out, costs.spread, timeframe, at_open=Fill(fill) is Fill.NEXT_OPEN)
    return out
