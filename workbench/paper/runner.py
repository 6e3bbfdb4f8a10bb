"""The paper runner's tick: closed bars -> signals -> risk overlay -> orders -> fills -> journal.

One tick per strategy and signal bar. It is idempotent: a tick is keyed on (strategy, signal bar),
every order leg on a deterministic client order id, and every intent is journaled before it is
sent. A runner killed anywhere in a tick redoes the tick on restart: it first settles what the
broker already has (looking up intents by client id), then derives the orders again from the
broker-confirmed state, so nothing is sent twice and no fill is lost.

Orders follow the backtest's rules (SEMANTICS.md): exits of every symbol, then entries sized on
equity at the current price; reversals are an exit then an entry; a symbol stopped out in the
current bar takes no signal order; protective stops are broker orders placed once an entry fills.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.engine import (
    Costs,
    Direction,
    Execution,
    Fill,
    Lot,
    Sizing,
    drop_sides,
    own_periods_per_year,
    signal_action,
    sizing_array,
)
from workbench.backtest.kernels import unconflicted
from workbench.data.calendar import Calendar, calendar_for_symbol
from workbench.data.timeframe import Timeframe
from workbench.errors import BrokerUnavailable, ConfigError, OrderRejected, WorkbenchError
from workbench.paper.broker import Broker, Order, OrderRequest, OrderStatus, OrderType, Side, client_order_id
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal, TickStatus, dec
from workbench.paper.risk import RiskLimits, bar_move, check_entry, loss_halts
from workbench.strategies.base import ORDER_TYPES, Strategy, check_pins
from workbench.strategies.weights import WeightStrategy

log = logging.getLogger(__name__)

CRASH_ENV = "WORKBENCH_PAPER_CRASH"
_crash_counts: dict[str, int] = {}


def crashpoint(name: str) -> None:
    """Fault injection for the durability tests: SIGKILL this process at the n-th pass of `name`.

    Armed only by ``WORKBENCH_PAPER_CRASH=<name>:<n>`` in the environment; a no-op otherwise.
    """
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class StrategySpec:
    """What the runner trades for one promoted artifact (built by `from_artifact`)."""

    name: str
    strategy: str
    params: dict[str, Any]
    symbols: tuple[str, ...]
    timeframe: str
    calendar: str = "24/7"
    periods_per_year: float
    costs: Costs = field(default_factory=Costs)
    fill: Fill = Fill.NEXT_OPEN
    sizing: Sizing = field(default_factory=Sizing)
    direction: Direction = Direction.BOTH
    capital: float = 100_000.0
    max_exposure: float = 1.0
    lookback: int = 200
    source: str | None = None
    window: int | None = None  # trailing window in bars (default: max(lookback, 500))
    anchor: pd.Timestamp | None = None  # signals on every bar from here instead (replays)
    lots: dict[str, Lot] = field(default_factory=dict)  # the backtest's lot rules (the venue's add to them)
    pins: dict[str, Any] = field(default_factory=dict)  # the artifact's pinned models (`check_pins`)

    def __post_init__(self) -> None:
        # the journal books no margin interest and the brokers lend nothing: refuse rather than
        # trade something the backtest did not (SEMANTICS.md "Margin for longs")
        if self.direction is not Direction.SHORT and (self.max_exposure > 1 or self.costs.margin_rate > 0):
            raise ConfigError(f"{self.name}: paper trading longs on margin (max_exposure="
                              f"{self.max_exposure:g}, margin_rate={self.costs.margin_rate:g}) is not "
                              "supported yet; promote a run with max_exposure <= 1 and no margin_rate")
        if self.direction is not Direction.LONG and self.costs.borrow_rate > 0:
            raise ConfigError(f"{self.name}: paper trading shorts with a borrow_rate "
                              f"({self.costs.borrow_rate:g}) is not supported yet: the journal books no "
                              "borrow fees; promote a run without borrow_rate")
        if self.costs.impact > 0:
            raise ConfigError(f"{self.name}: paper trading with market impact (impact="
                              f"{self.costs.impact:g}) is not supported yet: the simulated broker fills at "
                              "the bar's price with its slippage only; promote a run without impact")

    @classmethod
    def from_artifact(
        cls,
        artifact: Any,
        *,
        capital: float | None = None,
        window: int | None = None,
        anchor: pd.Timestamp | None = None,
    ) -> StrategySpec:
        """The spec of a promotion artifact (its name and version are the journal's key)."""
        ex = artifact.execution
        if capital is not None:
            ex = ex.replace(init_cash=capital)
        return cls.of(
            ex,
            name=f"{artifact.name}@v{artifact.version}",
            strategy=artifact.strategy,
            params=dict(artifact.params),
            symbols=tuple(artifact.symbols),
            timeframe=artifact.timeframe,
            calendar=artifact.calendar,
            periods_per_year=float(artifact.periods_per_year),
            lookback=int(artifact.lookback),
            source=(artifact.data or {}).get("source"),
            window=window,
            anchor=anchor,
            pins=dict(getattr(artifact, "pins", {}) or {}),
        )

    @classmethod
    def of(cls, execution: Execution, **fields: Any) -> StrategySpec:
        """A spec trading with `execution`'s settings (its cash is the strategy's capital)."""
        symbols = list(fields["symbols"])
        return cls(costs=execution.costs, fill=execution.fill, sizing=execution.sizing,
                   direction=execution.direction, capital=execution.init_cash,
                   max_exposure=execution.max_exposure,
                   lots={s: v for s, v in execution.lot_map(symbols).items() if v != Lot()}, **fields)

    @property
    def execution(self) -> Execution:
        """The execution settings this strategy trades with (the backtest's)."""
        return Execution(costs=self.costs, fill=self.fill, sizing=self.sizing, direction=self.direction,
                         init_cash=self.capital, max_exposure=self.max_exposure, lots=dict(self.lots))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (stored in the journal)."""
        ex = self.execution.to_dict(list(self.symbols))
        ex["capital"] = ex.pop("init_cash")
        return {
            "name": self.name,
            "strategy": self.strategy,
            "params": dict(self.params),
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "calendar": self.calendar,
            "periods_per_year": self.periods_per_year,
            **ex,
            "lookback": self.lookback,
            "source": self.source,
            "window": self.window,
            "anchor": None if self.anchor is None else self.anchor.isoformat(),
            "pins": dict(self.pins),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StrategySpec:
        """Inverse of `to_dict`."""
        rest = {k: v for k, v in d.items()
                if k not in ("costs", "fill", "sizing", "direction", "capital", "max_exposure", "lots")}
        return cls.of(
            Execution.from_dict(d),
            **{
                **rest,
                "symbols": tuple(d["symbols"]),
                "anchor": None if d.get("anchor") is None else pd.Timestamp(d["anchor"]),
            },
        )

    @property
    def tf(self) -> Timeframe:
        """The bars' timeframe."""
        return Timeframe.parse(self.timeframe)

    def strategy_obj(self) -> Strategy | WeightStrategy:
        """The registered strategy (the same code the backtest ran), refused if the models it loads
        are not the ones its artifact pinned."""
        from workbench.backtest.weight_strategies import resolve_strategy

        strat = resolve_strategy(self.strategy)
        if isinstance(strat, WeightStrategy):
            return strat
        check_pins(strat, self.pins, self.name)
        return strat


def specs_in(journal: Journal) -> list[StrategySpec]:
    """The strategies a journal's runner traded, as it recorded them (for status, monitors, drift)."""
    return [StrategySpec.from_dict(d) for d in journal.specs()]


@dataclass
class TickResult:
    """What one tick of one strategy did."""

    artifact: str
    bar: pd.Timestamp | None
    status: TickStatus
    orders: list[str] = field(default_factory=list)
    fills: int = 0
    latency_ms: float = 0.0
    signal_ms: float = 0.0
    message: str = ""


_UNSENT = (OrderStatus.INTENT, OrderStatus.UNKNOWN)  # journaled, the broker's answer not known
_PROTECT = (("sl", OrderType.STOP), ("tp", OrderType.LIMIT), ("tsl", OrderType.TRAILING_STOP))
_LEVEL = {"sl": "stop_loss", "tp": "take_profit", "tsl": "trailing_stop"}


def resting_legs(levels: Mapping[str, float], native_oco: bool) -> list[str]:
    """Which protective legs rest at the broker; the others the runner watches at each tick.

    A venue with native one-cancels-other holds them all (the simulated broker); on others (Alpaca,
    exchange spot) every resting sell locks the position, so only one rests: the stop, else the
    trailing stop, else the target.
    """
    present = [leg for leg, _t in _PROTECT if _LEVEL[leg] in levels]
    if native_oco:
        return present
    for leg in ("sl", "tsl", "tp"):
        if leg in present:
            return [leg]
    return []


class Runner:
    """Trades strategy specs through one broker, journaling everything (see the module docstring)."""

    def __init__(
        self,
        specs: list[StrategySpec],
        *,
        broker: Broker,
        journal: Journal,
        feeds: Mapping[str, BarFeed],
        risk: RiskLimits | None = None,
        follow_timeout: float = 30.0,
        poll: float = 0.25,
        metrics: Any = None,
        on_fill: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy names must be unique in one runner, got {names}")
        self.specs = list(specs)
        self.broker, self.journal, self.feeds = broker, journal, dict(feeds)
        self.risk = risk or RiskLimits()
        self.follow_timeout, self.poll = follow_timeout, poll
        self.metrics = metrics
        self.on_fill = on_fill
        self._bar: dict[str, pd.Timestamp] = {}  # the bar each strategy's current tick handles
        for s in specs:
            feed = self.feeds.get(s.name)
            if s.costs.spread and feed is not None and any(
                    "half_spread" not in feed.cols(x) for x in s.symbols):
                raise ConfigError(f"{s.name}: spread={s.costs.spread} needs the bars to carry the recorded "
                                  "half-spread; paper replays do (workbench paper replay), live paper "
                                  "trading does not yet: promote a run without spread to trade it live")
            if s.costs.volume_cap and not getattr(broker, "volume_caps", False):
                raise ConfigError(f"{s.name}: the {broker.name} broker fills whole orders, not "
                                  f"volume_cap={s.costs.volume_cap:g} of a bar's volume (the sim broker "
                                  "does); promote a run without volume_cap to trade it here")
        self._strategies = {s.name: s.strategy_obj() for s in specs}
        self._params = {s.name: self._strategies[s.name].params(s.params) for s in specs}
        for s in specs:  # what status and drift reports need to know about each strategy
            journal.set_meta(f"spec:{s.name}", json.dumps(s.to_dict()))
        journal.set_meta("risk", json.dumps(asdict(self.risk)))  # the limits in force, for the dashboard

    # ------------------------------------------------------------------ public
    def tick(self, now: pd.Timestamp) -> list[TickResult]:
        """Run every strategy whose bar has closed by `now`; errors are journaled, not raised."""
        out = []
        for spec in self.specs:
            try:
                out.append(self.tick_one(spec, now))
            except WorkbenchError as exc:
                self.journal.error(spec.name, str(exc))
                log.error("%s: tick failed: %s", spec.name, exc)
                out.append(TickResult(spec.name, None, TickStatus.ERROR, message=str(exc)))
        return out

    def tick_one(self, spec: StrategySpec, now: pd.Timestamp) -> TickResult:
        """One strategy's tick at clock time `now` (see the module docstring)."""
        t0 = time.perf_counter()
        now = pd.Timestamp(now)
        feed = self.feeds[spec.name]
        frames = feed.window(now, bars=self._window_bars(spec), anchor=spec.anchor, symbols=spec.symbols)
        lasts = [df.index[-1] for df in frames.values() if len(df)]
        if not lasts:
            return TickResult(spec.name, None, TickStatus.SKIPPED, message="no closed bar yet")
        bar = max(lasts)  # the union timeline's last closed bar (SEMANTICS.md, "Timeline")
        status = self.journal.tick_status(spec.name, bar)
        if status == TickStatus.DONE:
            stale = self._stale(spec, bar, now)
            if stale:
                self.journal.decide(spec.name, bar, None, "data", "stale", stale)
                if self.metrics is not None:
                    self.metrics.staleness(spec.name, (now - (bar + spec.tf.delta)).total_seconds())
                return TickResult(spec.name, bar, TickStatus.STALE, message=stale)
            return TickResult(spec.name, bar, TickStatus.SKIPPED, message="bar already handled")
        self._missed(spec, bar)
        self.journal.start_tick(spec.name, bar, now)
        crashpoint("tick_started")
        result = TickResult(spec.name, bar, TickStatus.DONE)
        try:
            self._tick(spec, now, bar, frames, result)
        except BrokerUnavailable as exc:
            result.status, result.message = TickStatus.ERROR, str(exc)
            self.journal.error(spec.name, str(exc))
            log.error("%s: %s", spec.name, exc)
        result.latency_ms = (time.perf_counter() - t0) * 1000
        crashpoint("before_tick_done")
        self.journal.finish_tick(spec.name, bar, result.status, result.latency_ms, result.message or None)
        if self.metrics is not None:
            self.metrics.tick(spec.name, result, now, bar + spec.tf.delta)
        return result

    # ------------------------------------------------------------------ the tick
    def _window_bars(self, spec: StrategySpec) -> int | None:
        if spec.anchor is not None:
            return None
        return spec.window or max(spec.lookback, 500)

    def _acts(self, spec: StrategySpec, sym: str, df: pd.DataFrame, bar: pd.Timestamp, now: pd.Timestamp,
              first: pd.Timestamp | None) -> bool:
        """Whether `sym`'s last closed bar gives a signal order in this tick (SEMANTICS.md, "Timeline").

        With `close` fills a symbol acts on the tick of its own new bar. With `next_open` its last bar's
        signals act when its market has a bar opening now (its next own bar, however many union bars
        lie between): known from the bars themselves in a replay; live, every symbol acts on its new
        bar when all share one calendar, and by the symbol's calendar when they do not. A signal bar
        older than the strategy's first tick is not traded (it closed before the runner started).
        """
        if not len(df):
            return False
        last = df.index[-1]
        if first is not None and last < first:
            return False
        if spec.fill is Fill.CLOSE:
            return bool(last == bar)
        known = self.feeds[spec.name].trades_at(sym, now)
        if known is not None:
            return known
        calendars = {calendar_for_symbol(s).code for s in spec.symbols}
        if len(calendars) == 1:
            return bool(last == bar)
        tf = spec.tf
        return calendar_for_symbol(sym).next_expected(last, tf) == tf.floor(now)

    def _fill_label(self, spec: StrategySpec, bar: pd.Timestamp) -> pd.Timestamp:
        """The bar a signal order of signal bar `bar` fills in (the backtest's label)."""
        return bar + spec.tf.delta if spec.fill is Fill.NEXT_OPEN else bar

    def _missed(self, spec: StrategySpec, bar: pd.Timestamp) -> None:
        """Journal the bars that closed while nothing ticked (their signals are not traded late)."""
        prev = self.journal.last_handled_bar(spec.name)
        if prev is None:
            return
        tf = spec.tf
        if bar - prev <= tf.delta:
            return
        gap = len(Calendar(spec.calendar).expected(prev + tf.delta, bar - tf.delta, tf))
        if gap:
            self.journal.decide(
                spec.name,
                bar,
                None,
                "data",
                "missed",
                f"{gap} bar(s) closed since the last tick at {prev.isoformat()} without a tick; "
                "their signals were not acted on (the runner was stopped or too slow)",
                bars=gap,
            )

    def _stale(self, spec: StrategySpec, bar: pd.Timestamp, now: pd.Timestamp) -> str | None:
        if self.risk.stale_bars is None:
            return None
        tf = spec.tf
        latest = now - tf.delta  # the newest bar that could have closed
        if latest <= bar:
            return None
        cal = Calendar(spec.calendar)
        missing = len(cal.expected(bar + tf.delta, latest, tf))
        if missing >= self.risk.stale_bars:
            return (
                f"no new bar for {missing} expected bar(s) after {bar.isoformat()} "
                f"(limit {self.risk.stale_bars}); check the data sync"
            )
        return None

    def _tick(
        self,
        spec: StrategySpec,
        now: pd.Timestamp,
        bar: pd.Timestamp,
        frames: dict[str, pd.DataFrame],
        result: TickResult,
    ) -> None:
        j = self.journal
        self._settle(spec, bar, frames)
        self._reconcile(spec, bar)
        strategy = self._strategies[spec.name]
        if isinstance(strategy, WeightStrategy):
            self._rebalance(spec, strategy, now, bar, frames, result)
            crashpoint("before_snapshot")
            self._snapshot(spec, bar)
            return
        self._fund(spec, bar, now)
        self._watched_exits(spec, bar, frames, result)
        label = self._fill_label(spec, bar)
        # signals of the strategy on the window, exactly as the backtest computes them
        t_sig = time.perf_counter()
        strat, params = strategy, self._params[spec.name]
        first = self.journal.first_tick(spec.name)
        ppys = own_periods_per_year(list(spec.symbols), spec.timeframe, spec.periods_per_year)
        rows: dict[str, dict[str, float]] = {}
        frac_last: dict[str, float] = {}
        for sym in spec.symbols:  # each symbol's signals and sizing from its own bars
            df = frames[sym]
            if not self._acts(spec, sym, df, bar, now, first):
                continue
            n = len(df)
            arrs = strat.signals(df, params).arrays(n, f"{strat.name}[{sym}]")
            rows[sym] = {k: v[-1] for k, v in arrs.items()}
            high, low, close = (df[c].to_numpy()[:, None] for c in ("high", "low", "close"))
            frac = sizing_array(spec.sizing, len(spec.symbols), arrs["stop_loss"][:, None],
                                arrs["trailing_stop"][:, None], high, low, close, ppys[sym])
            size = float(arrs["size"][-1])  # the strategy's share of the rule's size (SEMANTICS.md "Sizing")
            frac_last[sym] = float(np.broadcast_to(frac, (n, 1))[-1, 0]) * (size if size > 0 else np.nan)
        result.signal_ms = (time.perf_counter() - t_sig) * 1000
        ledger = j.ledger(spec.name, spec.capital)
        pos = {s: float(ledger.positions.get(s, Decimal(0))) for s in spec.symbols}
        for s, q in pos.items():  # dust a fee in the asset left (under the venue's lot): nothing to exit
            if q and self.broker.normalize_qty(s, abs(q)) <= 0:
                log.debug("%s: %s position %g is below the venue's lot: treated as flat", spec.name, s, q)
                pos[s] = 0.0
        stopped = self._stopped(spec, label)
        # the backtest's signal -> action rule (one implementation: kernels.signal_action)
        actions: dict[str, str] = {}
        for sym in rows:
            r = rows[sym]
            act = signal_action(spec.direction, bool(r["long_entries"]), bool(r["long_exits"]),
                                bool(r["short_entries"]), bool(r["short_exits"]), pos[sym]).label
            enters = act in ("long", "short", "exit+long", "exit+short")
            if enters and r["order_type"] != 0 and not getattr(self.broker, "resting_entries", False):
                kind = ORDER_TYPES[int(r["order_type"])]
                raise ConfigError(f"{spec.name}: {sym} enters with a {kind} order; the {self.broker.name} "
                                  "broker takes no resting entries yet (the sim broker does): trade it with "
                                  "market entries, or paper-trade it through the sim broker")
            if sym not in stopped:
                self._cancel_resting(spec, bar, sym, r, enters)
            if act and sym in stopped:
                j.decide(
                    spec.name,
                    bar,
                    sym,
                    "signal",
                    "skipped",
                    "stopped out in this bar; the backtest "
                    "takes no further order on a stopped symbol in the same bar",
                    wanted=act,
                )
                act = ""
            if act:
                actions[sym] = act
        # exits first, every symbol
        for sym, act in actions.items():
            if act.startswith("exit"):
                j.decide(
                    spec.name,
                    bar,
                    sym,
                    "signal",
                    act,
                    "strategy exit signal" if act == "exit" else "reversal: exit then enter",
                    position=pos[sym],
                )
                self._exit(spec, bar, label, sym, pos[sym], result)
        # then entries, in symbol order, each sized on the equity after what came before
        halted = self._entry_halts(spec, bar, now, frames)
        for sym in spec.symbols:
            act = actions.get(sym, "")
            if not act or act == "exit":
                continue
            long = act.endswith("long")
            why = halted.get(sym) or halted.get("*")
            if why:
                j.decide(spec.name, bar, sym, "risk", "refused", why, entry="long" if long else "short")
                continue
            self._entry(spec, bar, label, sym, long, frac_last[sym], rows[sym], result)
        crashpoint("before_snapshot")
        self._snapshot(spec, bar)

    def _rebalance(self, spec: StrategySpec, strat: WeightStrategy, now: pd.Timestamp, bar: pd.Timestamp,
                   frames: dict[str, pd.DataFrame], result: TickResult) -> None:
        """A weight strategy's tick, by SEMANTICS.md "Target weights and rebalancing": the targets of each
        symbol's last bar act when that symbol trades now (as a signal does); the target quantities are
        sized on the equity at this fill step's prices and rounded toward zero to the lot; every sell is
        sent before any buy, and each buy is capped by the cash the sells left."""
        from workbench.backtest.rebalance import toward_zero

        j = self.journal
        t_sig = time.perf_counter()
        targets = strat.targets(frames, self._params[spec.name])
        first = j.first_tick(spec.name)
        acting: dict[str, float] = {}
        for sym in spec.symbols:
            df = frames[sym]
            if not len(df) or not len(targets[sym]):
                continue
            t = float(targets[sym].iloc[-1])
            if math.isfinite(t) and self._acts(spec, sym, df, bar, now, first):
                acting[sym] = t
        result.signal_ms = (time.perf_counter() - t_sig) * 1000
        if not acting:
            return
        ledger = j.ledger(spec.name, spec.capital)
        pos = {s: float(ledger.positions.get(s, Decimal(0))) for s in spec.symbols}
        px = {s: self.broker.price(s) for s in spec.symbols if pos[s] or s in acting}
        equity = float(ledger.cash) + sum(pos[s] * px[s] for s in spec.symbols if pos[s])
        if equity <= 0:
            j.decide(spec.name, bar, None, "sizing", "refused", f"equity {equity:,.2f} is not positive")
            return
        j.decide(spec.name, bar, None, "signal", "rebalance", "the strategy's target weights",
                 targets=acting, equity=equity)
        lots = {s: spec.lots.get(s, Lot()).merge(self.broker.lot(s)) for s in acting}
        deltas: dict[str, float] = {}
        for sym, target in acting.items():
            lot = lots[sym]
            want = toward_zero(target * equity / px[sym], lot.step)
            d = want - pos[sym]
            if abs(d) * px[sym] <= 1e-12 * equity:  # the same position: the decimal ledger's sums differ
                continue  # from the backtest's floats in the last digits (dust of 1e-15 left by a sale)
            if abs(d) < lot.min_qty or abs(d) * px[sym] < lot.min_notional:
                j.decide(spec.name, bar, sym, "sizing", "skipped",
                         f"the trade of {d:.10g} toward the target {target:g} is below the lot rules "
                         f"{asdict(lot)}: the position is kept", target=target)
                continue
            deltas[sym] = d
        for sym, d in deltas.items():  # every sell first, in column order
            if d < 0:
                req = OrderRequest(client_order_id=client_order_id(spec.name, sym, bar, "rebal"),
                                   symbol=sym, side=Side.SELL, qty=-d)
                self._send(spec, bar, "rebal", req, {"target": acting[sym]}, result)
        halted = self._entry_halts(spec, bar, now, frames)
        fees = spec.costs.fees
        floor = -max(0.0, spec.max_exposure - 1.0) * equity
        for sym, d in deltas.items():  # then the buys, each capped by the cash left
            if d <= 0:
                continue
            why = halted.get(sym) or halted.get("*")
            if why:
                j.decide(spec.name, bar, sym, "risk", "refused", why, target=acting[sym])
                continue
            cash = float(j.ledger(spec.name, spec.capital).cash)
            est = self._fill_estimate(spec, sym, Side.BUY)
            q = d
            if q * est * (1.0 + fees) > cash - floor:
                q = toward_zero(max(cash - floor, 0.0) / (1.0 + fees) / est, lots[sym].step)
            # (cash the backtest's floats spent to 0 may be left as 1e-13 in the decimal ledger: no buy)
            q = self.broker.normalize_qty(sym, q) if q * est > 1e-12 * equity else 0.0
            if q <= 0:
                j.decide(spec.name, bar, sym, "sizing", "refused", "no cash left for the buy toward the "
                         f"target {acting[sym]:g}", target=acting[sym])
                continue
            req = OrderRequest(client_order_id=client_order_id(spec.name, sym, bar, "rebal"), symbol=sym,
                               side=Side.BUY, qty=q)
            self._send(spec, bar, "rebal", req, {"target": acting[sym]}, result)

    # ------------------------------------------------------------------ settle and reconcile
    def _settle(self, spec: StrategySpec, bar: pd.Timestamp, frames: Mapping[str, pd.DataFrame]) -> None:
        """Bring every unfinished journaled order up to date with the broker (intents looked up by id),
        cancel the resting entries whose time in force has passed, protect what filled."""
        j = self.journal
        self._bar[spec.name] = bar
        for row in j.live_orders(spec.name):
            order = self.broker.get_order(row["client_order_id"])
            if order is None:
                if row["status"] in _UNSENT and row["bar"] != bar.isoformat():
                    j.mark_rejected(
                        row["client_order_id"],
                        "never reached the broker (the runner stopped "
                        "before sending it) and its bar has passed",
                    )
                    j.decide(
                        spec.name,
                        pd.Timestamp(row["bar"]),
                        row["symbol"],
                        "order",
                        "abandoned",
                        "intent never reached the broker",
                        client_order_id=row["client_order_id"],
                    )
                continue
            self._apply(spec, row, order)
        self._expire_resting(spec, bar, frames)
        self._protect_open_positions(spec, bar)

    def _expire_resting(self, spec: StrategySpec, bar: pd.Timestamp,
                        frames: Mapping[str, pd.DataFrame]) -> None:
        """On a venue that does not count bars (`Broker.expires_entries`), cancel each resting entry once
        the symbol's bars since it was placed reach its time in force (SEMANTICS.md "Entry orders": it
        rests from the first bar that opens after it is placed, so it is cancelled before the next)."""
        if getattr(self.broker, "expires_entries", False):
            return
        for r in self.journal.live_orders(spec.name):
            if r["leg"] != "entry" or r["type"] == OrderType.MARKET.value or r["status"] in _UNSENT:
                continue
            tif = json.loads(r["note"] or "{}").get("time_in_force")
            df = frames.get(r["symbol"])
            if tif is None or df is None:
                continue
            rested = int(((df.index > pd.Timestamp(r["bar"])) & (df.index <= bar)).sum())
            if rested < int(tif):
                continue
            got = self.broker.cancel(r["client_order_id"])
            if got is not None:
                self._apply(spec, r, got)
            left = "" if got is None or not got.filled_qty else f" (its {got.filled_qty:g} filled stay)"
            self.journal.decide(spec.name, bar, r["symbol"], "order", "expired",
                                f"time in force of {int(tif)} bar(s) passed: the resting entry is cancelled "
                                f"at the venue{left}", client_order_id=r["client_order_id"])

    def _apply(self, spec: StrategySpec, row: Mapping[str, Any], order: Order) -> int:
        extra = order.extra or {}
        if "bar" in extra:
            label = pd.Timestamp(extra["bar"])
        elif row["leg"] == "entry" and row["type"] != OrderType.MARKET.value:
            label = self._resting_label(spec, row, order)
        elif row["leg"] in ("entry", "exit"):
            label = self._fill_label(spec, pd.Timestamp(row["bar"]))
        else:
            label = spec.tf.floor(pd.Timestamp(order.updated_at or pd.Timestamp.now(tz="UTC")))
        fills = self.journal.apply(order, fill_bar=label, reason=extra.get("reason"))
        for f in fills:
            if self.on_fill is not None:
                self.on_fill(f)
            if self.metrics is not None:
                self.metrics.fill(spec.name, f)
        return len(fills)

    def _resting_label(self, spec: StrategySpec, row: Mapping[str, Any], order: Order) -> pd.Timestamp:
        """The bar a resting entry filled in on a venue that does not say: the bar its fill time falls in,
        no later than the bar this tick handles (the fills came before it) and no earlier than the first
        bar that opened after it was placed."""
        first = pd.Timestamp(row["bar"]) + spec.tf.delta
        seen = self._bar.get(spec.name, first)
        at = spec.tf.floor(order.updated_at) if order.updated_at is not None else seen
        return max(first, min(at, seen))

    def _fund(self, spec: StrategySpec, bar: pd.Timestamp, now: pd.Timestamp) -> None:
        """Book the funding settled since the last tick on the perpetuals held (SEMANTICS.md "Funding").

        Each settlement at a bar's open is paid on the position held into that bar (the fills of earlier
        bars), valued at its open; with `next_open` the bar opening now settles before this tick's
        orders, as in the backtest, with `close` at the next tick. A bar is booked once.
        """
        if not spec.costs.funding:
            return
        feed = self.feeds[spec.name]
        upto = spec.tf.floor(now) if spec.fill is Fill.NEXT_OPEN else bar
        for sym in spec.symbols:
            key = f"funded:{spec.name}:{sym}"
            seen = self.journal.meta(key)
            if seen is not None:
                for t, rate in feed.funding(sym, pd.Timestamp(seen), upto):
                    qty = self.journal.position_before(spec.name, sym, t)
                    if qty == 0:
                        continue
                    k = feed.bar_index(sym, t.value)
                    price = float(feed.column(sym, "open")[k]) if k is not None else self.broker.price(sym)
                    paid = self.journal.book_funding(spec.name, sym, t, rate, qty, price)
                    self.journal.decide(spec.name, bar, sym, "funding", "paid" if paid > 0 else "received",
                                        f"funding {rate:+.4%} settled at {t.isoformat()} on {qty} {sym} at "
                                        f"{price:g}", amount=float(paid), rate=rate, qty=float(qty))
            if seen is None or pd.Timestamp(seen) < upto:
                self.journal.set_meta(key, upto.isoformat())

    def _reconcile(self, spec: StrategySpec, bar: pd.Timestamp) -> None:
        """Compare the journal's positions (all strategies on this broker) with the broker's.

        What the account held before the journal's first tick (a pre-funded testnet balance, a
        manual position) is recorded once as the baseline and left alone.
        """
        held = self.broker.positions()
        baseline_text = self.journal.meta("baseline_positions")
        if baseline_text is None:
            symbols = sorted({s for other in self.specs for s in other.symbols})
            base = {s: held[s].qty for s in symbols if s in held}
            self.journal.set_meta("baseline_positions", json.dumps(base))
            if base:
                self.journal.decide(
                    spec.name,
                    bar,
                    None,
                    "reconcile",
                    "baseline",
                    "positions the account held before the first tick are not the runner's; "
                    "they are left alone",
                    **base,
                )
        else:
            base = json.loads(baseline_text)
        mine: dict[str, Decimal] = {}
        for other in self.specs:
            for s, q in self.journal.ledger(other.name, other.capital).positions.items():
                mine[s] = mine.get(s, Decimal(0)) + q
        for sym in spec.symbols:
            want = float(mine.get(sym, Decimal(0))) + float(base.get(sym, 0.0))
            have = held[sym].qty if sym in held else 0.0
            if abs(want - have) > 1e-9 * max(abs(want), abs(have), 1e-12) and abs(want - have) > 1e-12:
                reason = (
                    f"journal holds {want:g} {sym} but the broker reports {have:g}; new entries are "
                    "halted until the difference is explained (workbench paper resume)"
                )
                if not any(h["scope"] == f"{spec.name}:{sym}" for h in self.journal.active_halts()):
                    self.journal.halt(f"{spec.name}:{sym}", reason, source="reconcile")
                    self.journal.decide(
                        spec.name, bar, sym, "reconcile", "mismatch", reason, journal=want, broker=have
                    )

    def _stopped(self, spec: StrategySpec, label: pd.Timestamp) -> set[str]:
        return self.journal.stopped_symbols(spec.name, label)

    # ------------------------------------------------------------------ orders
    def _send(
        self,
        spec: StrategySpec,
        bar: pd.Timestamp,
        leg: str,
        req: OrderRequest,
        note: dict[str, Any] | None,
        result: TickResult,
    ) -> Order | None:
        """Journal the intent, send it (unless the broker already has it), follow it, book its fills."""
        j = self.journal
        fresh = j.record_intent(spec.name, bar, leg, req, note)
        row = j.order(req.client_order_id)
        assert row is not None
        if not fresh and row["status"] not in _UNSENT:
            return self.broker.get_order(req.client_order_id)  # handled by an earlier run of this tick
        crashpoint("after_intent")
        if not fresh:
            known = self.broker.get_order(req.client_order_id)
            if known is not None:
                result.fills += self._apply(spec, row, known)
                return known
        try:
            order = self.broker.submit(req)
        except OrderRejected as exc:
            j.mark_rejected(req.client_order_id, str(exc))
            j.decide(
                spec.name, bar, req.symbol, "order", "rejected", str(exc), client_order_id=req.client_order_id
            )
            if self.metrics is not None:
                self.metrics.rejected(spec.name)
            if leg in ("exit", "slx", "tpx", "tslx"):  # a position that stays open: someone must know
                what = f"exit {req.client_order_id} ({req.side.value} {req.qty:g})"
                self._alert(spec, bar, req.symbol, f"{what} refused: {exc}; it is re-sent only once its "
                            "size or the venue's holding changes")
            return None
        except BrokerUnavailable as exc:
            j.mark_unknown(req.client_order_id, str(exc))
            raise
        crashpoint("after_submit")
        result.orders.append(req.client_order_id)
        if self.metrics is not None:
            self.metrics.order(spec.name)
        result.fills += self._apply(spec, row, order)
        if req.type is OrderType.MARKET:
            order = self._follow(spec, row, order, result)
        crashpoint("after_fill")
        return order

    def _follow(self, spec: StrategySpec, row: Mapping[str, Any], order: Order, result: TickResult) -> Order:
        deadline = time.monotonic() + self.follow_timeout
        while not order.status.done and time.monotonic() < deadline:
            time.sleep(self.poll)
            got = self.broker.get_order(order.client_order_id)
            if got is not None:
                order = got
                result.fills += self._apply(spec, row, order)
        return order

    def _cancel_resting(self, spec: StrategySpec, bar: pd.Timestamp, sym: str, row: Mapping[str, float],
                        enters: bool) -> None:
        """A resting entry is replaced by a new entry and cancelled by an exit signal of its side
        (SEMANTICS.md "Entry orders"), before this bar's orders; its waiting legs go with it."""
        resting = [r for r in self.journal.live_orders(spec.name)
                   if r["symbol"] == sym and r["leg"] == "entry" and r["type"] != OrderType.MARKET.value]
        if not resting:
            return
        le, lx, se, sx = drop_sides(spec.direction, bool(row["long_entries"]), bool(row["long_exits"]),
                                    bool(row["short_entries"]), bool(row["short_exits"]))
        _, x_long, _, x_short = unconflicted(bool(le), bool(lx), bool(se), bool(sx))
        for r in resting:
            if enters or (x_long if r["side"] == Side.BUY.value else x_short):
                got = self.broker.cancel(r["client_order_id"])
                if got is not None:
                    self._apply(spec, r, got)
                self._cancel_protection(spec, sym)
                self.journal.decide(spec.name, bar, sym, "order", "cancelled",
                                    "a new entry replaces the resting one" if enters else
                                    "an exit signal of its side cancels the resting entry",
                                    client_order_id=r["client_order_id"])

    def _cancel_entry_rest(self, spec: StrategySpec, bar: pd.Timestamp, sym: str) -> None:
        """A stop or target that closes a position cancels what its resting entry has not filled yet
        (SEMANTICS.md "Volume cap"), so the rest cannot reopen it unprotected."""
        for r in self.journal.live_orders(spec.name):
            if r["symbol"] != sym or r["leg"] != "entry" or r["type"] == OrderType.MARKET.value \
                    or r["status"] in _UNSENT:
                continue
            got = self.broker.cancel(r["client_order_id"])
            if got is not None:
                self._apply(spec, r, got)
            self.journal.decide(spec.name, bar, sym, "order", "cancelled",
                                "the position's stop or target closes it: the entry's unfilled rest goes "
                                "with it", client_order_id=r["client_order_id"])

    def _cancel_protection(self, spec: StrategySpec, sym: str) -> None:
        """Cancel the resting protective orders of a symbol before it is exited at market."""
        for row in self.journal.live_orders(spec.name):
            if row["symbol"] == sym and row["leg"] in ("sl", "tp", "tsl"):
                got = self.broker.cancel(row["client_order_id"])
                if got is not None:
                    self._apply(spec, row, got)

    def _exit(
        self,
        spec: StrategySpec,
        bar: pd.Timestamp,
        label: pd.Timestamp,
        sym: str,
        p: float,
        result: TickResult,
    ) -> None:
        self._cancel_protection(spec, sym)
        crashpoint("after_cancel")
        self._close(spec, bar, sym, p, "exit", result)

    def _close(
        self, spec: StrategySpec, bar: pd.Timestamp, sym: str, p: float, leg: str, result: TickResult
    ) -> Order | None:
        """Exit a position at market, sized from what the venue holds for this strategy.

        The journal's position is capped at the venue's holding (less the baseline and the other
        strategies' positions), so an exit never asks for more than the account can deliver. An
        exit the venue refused is not sent again under the next bar's id unless something that can
        make it succeed changed (its quantity, the venue's holding or the orders resting on the
        symbol, which lock quantity); until then each bar journals why it waits.
        """
        j = self.journal
        held = self._held(spec, sym)
        can = max(held if p > 0 else -held, 0.0)
        qty = abs(p)
        if can < qty * (1 - 1e-9):  # (a difference within float noise keeps the journal's quantity)
            qty = self.broker.normalize_qty(sym, can) if can > 0 else 0.0
            j.decide(
                spec.name, bar, sym, "reconcile", "exit_resized",
                f"the journal holds {p:g} {sym} but the venue holds {held:g} for this strategy; the exit "
                f"{'sells' if p > 0 else 'buys'} {qty:g}, what the venue can fill",
                journal=p, venue=held, qty=qty,
            )
        if qty <= 0:
            self._alert(spec, bar, sym, f"cannot exit {p:g} {sym}: the venue holds none of it for this "
                        "strategy; reconcile the account (workbench paper status) and resume")
            return None
        resting = sorted(o.client_order_id for o in self.broker.open_orders(sym))
        state = {"held": repr(held), "resting": resting}
        last = self._refused_exit(spec, sym)
        if last is not None and dec(last["qty"]) == dec(qty) and last["state"] == state:
            j.decide(
                spec.name, bar, sym, "order", "exit_waiting",
                f"exit of {qty:g} {sym} not re-sent: the venue refused the same exit "
                f"({last['client_order_id']}: {last['reject_reason']}) and neither the quantity nor the "
                "venue's holding and resting orders have changed since",
                refused=last["client_order_id"],
            )
            return None
        req = OrderRequest(
            client_order_id=client_order_id(spec.name, sym, bar, leg),
            symbol=sym,
            side=Side.SELL if p > 0 else Side.BUY,
            qty=qty,
        )
        return self._send(spec, bar, leg, req, state, result)

    def _held(self, spec: StrategySpec, sym: str) -> float:
        """The venue's position in `sym` that is this strategy's: less the baseline and the others'."""
        held = self.broker.positions()
        have = held[sym].qty if sym in held else 0.0
        base = json.loads(self.journal.meta("baseline_positions") or "{}")
        others = sum(
            (self.journal.ledger(o.name, o.capital).positions.get(sym, Decimal(0)) for o in self.specs
             if o.name != spec.name),
            Decimal(0),
        )
        return float(dec(have) - dec(base.get(sym, 0.0)) - others)

    def _refused_exit(self, spec: StrategySpec, sym: str) -> dict[str, Any] | None:
        """The latest refused exit of `sym` since its last fill (with the venue state it was sent in)."""
        return self.journal.refused_exit(spec.name, sym)

    def _alert(self, spec: StrategySpec, bar: pd.Timestamp, sym: str, message: str) -> None:
        """A problem someone must look at: journaled as an error (paper status shows it) and logged."""
        self.journal.error(spec.name, f"{sym}: {message}")
        log.error("%s: %s: %s", spec.name, sym, message)

    def _entry(
        self,
        spec: StrategySpec,
        bar: pd.Timestamp,
        label: pd.Timestamp,
        sym: str,
        long: bool,
        f: float,
        row: Mapping[str, float],
        result: TickResult,
    ) -> None:
        j = self.journal
        if math.isnan(f):
            j.decide(
                spec.name,
                bar,
                sym,
                "sizing",
                "refused",
                "sizing gives no size for this bar (no stop for risk sizing, or volatility undefined)",
            )
            return
        f = min(f, spec.max_exposure)
        if f <= 0:
            return
        ledger = j.ledger(spec.name, spec.capital)
        cash = float(ledger.cash)
        prices = {s: self.broker.price(s) for s in spec.symbols if ledger.positions.get(s)}
        equity = cash + sum(float(q) * prices[s] for s, q in ledger.positions.items() if s in prices)
        if equity <= 0:
            j.decide(spec.name, bar, sym, "sizing", "refused", f"equity {equity:,.2f} is not positive")
            return
        gross = sum(abs(float(q) * prices[s]) for s, q in ledger.positions.items() if s in prices) / equity
        sl, tsl = float(row["stop_loss"]), float(row["trailing_stop"])
        dist = sl if math.isfinite(sl) and sl > 0 else tsl if math.isfinite(tsl) and tsl > 0 else math.nan
        check = check_entry(self.risk, fraction=f, stop_distance=dist, gross=gross)
        if check.reason:
            j.decide(
                spec.name,
                bar,
                sym,
                "risk",
                "refused" if check.fraction <= 0 else "reduced",
                check.reason,
                wanted=f,
                allowed=check.fraction,
            )
        f = check.fraction
        if f <= 0:
            return
        side = Side.BUY if long else Side.SELL
        kind = int(row["order_type"])
        # a resting entry is sized at its limit (else its stop) price, no slippage (SEMANTICS.md)
        if kind == 0:
            est = self._fill_estimate(spec, sym, side)
        else:
            has_limit = ORDER_TYPES[kind] in ("limit", "stop_limit")
            est = float(row["limit_price"] if has_limit else row["stop_price"])
        # SEMANTICS.md "Sizing of an entry": the fee reserved, longs borrow down to the margin floor
        fees = spec.costs.fees
        q = f * equity / (est * (1.0 + fees))
        floor = -max(0.0, spec.max_exposure - 1.0) * equity
        if long and q * est * (1.0 + fees) > cash - floor:
            if cash <= floor:
                why = "no cash (or margin) left for a long entry"
                j.decide(spec.name, bar, sym, "sizing", "refused", why)
                return
            q = (cash - floor) / (1.0 + fees) / est
        lot = spec.lots.get(sym, Lot()).merge(self.broker.lot(sym))
        wanted, q = q, lot.round(q)
        if q > 0:
            q = self.broker.normalize_qty(sym, q)
        if q <= 0 or q * est < lot.min_notional:
            j.decide(spec.name, bar, sym, "sizing", "refused",
                     f"quantity {wanted:.10g} is below the lot rules {asdict(lot)} (or the venue's lot size)")
            return
        j.decide(
            spec.name,
            bar,
            sym,
            "signal",
            "long" if long else "short",
            "strategy entry signal",
            fraction=f,
            equity=equity,
            qty=q,
        )
        cid = client_order_id(spec.name, sym, bar, "entry")
        note = {k: row[k] for k in ("stop_loss", "take_profit", "trailing_stop") if math.isfinite(row[k])}
        if kind != 0:
            note["time_in_force"] = int(row["time_in_force"])
            otype = OrderType(ORDER_TYPES[kind])
            lim, stp = float(row["limit_price"]), float(row["stop_price"])
            req = OrderRequest(client_order_id=cid, symbol=sym, side=side, qty=q, type=otype,
                               limit_price=lim if math.isfinite(lim) else None,
                               stop_price=stp if math.isfinite(stp) else None,
                               expire_bars=int(row["time_in_force"]))
            order = self._send(spec, bar, "entry", req, note, result)
            if order is not None and getattr(self.broker, "dormant_legs", False):
                self._send_legs(spec, bar, sym, long, q, cid, note, result)
            elif order is not None and order.status.done and order.filled_qty > 0:  # filled at once
                self._protect(spec, cid, result)
            return
        order = self._send(
            spec, bar, "entry", OrderRequest(client_order_id=cid, symbol=sym, side=side, qty=q), note, result
        )
        if order is not None and order.status.done and order.filled_qty > 0:  # (a volume cap may cut it)
            self._protect(spec, cid, result)

    def _fill_estimate(self, spec: StrategySpec, sym: str, side: Side) -> float:
        estimate = getattr(self.broker, "fill_price", None)
        if estimate is not None:
            return float(estimate(sym, side))
        p = self.broker.price(sym)
        return p * (1.0 + spec.costs.slippage) if side is Side.BUY else p * (1.0 - spec.costs.slippage)

    def _protect(self, spec: StrategySpec, entry_cid: str, result: TickResult) -> None:
        """Place the stop, target and trailing stop of a filled entry (each once)."""
        j = self.journal
        row = j.order(entry_cid)
        if row is None or not row["note"]:
            return
        if not OrderStatus(row["status"]).done or not dec(row["filled_qty"]):  # (a cut entry is done too)
            return
        crashpoint("before_protect")
        self._send_legs(spec, pd.Timestamp(row["bar"]), row["symbol"], row["side"] == "buy",
                        float(dec(row["filled_qty"])), entry_cid, json.loads(row["note"]), result,
                        fill=float(dec(row["avg_fill_price"])))

    def _send_legs(self, spec: StrategySpec, bar: pd.Timestamp, sym: str, long: bool, qty: float,
                   entry_cid: str, levels: Mapping[str, float], result: TickResult, *,
                   fill: float | None = None) -> None:
        """Send the protective legs of an entry that rest at the venue (`resting_legs`): at levels from
        its `fill` price, or, for a resting entry not filled yet, as offsets the venue applies to the
        fill when it comes (the legs wait until then)."""
        placed = resting_legs(levels, getattr(self.broker, "native_oco", False))
        for leg, otype in _PROTECT:
            if leg not in placed:
                continue
            x = float(levels[_LEVEL[leg]])
            kw: dict[str, Any] = {}
            if otype is OrderType.TRAILING_STOP:
                kw.update(trail_percent=x, ref_price=fill)
            elif fill is None:
                kw["offset"] = x
            elif otype is OrderType.STOP:
                kw["stop_price"] = fill * (1.0 - x) if long else fill * (1.0 + x)
            else:
                kw["limit_price"] = fill * (1.0 + x) if long else fill * (1.0 - x)
            req = OrderRequest(client_order_id=client_order_id(spec.name, sym, bar, leg), symbol=sym,
                               side=Side.SELL if long else Side.BUY, qty=qty, type=otype, oco_group=entry_cid,
                               **kw)
            self._send(spec, bar, leg, req, None, result)

    def _protect_open_positions(self, spec: StrategySpec, bar: pd.Timestamp) -> None:
        """After a restart: a filled entry whose protective orders were never placed gets them now."""
        ledger = self.journal.ledger(spec.name, spec.capital)
        for sym in ledger.positions:
            entry = self.journal.last_filled_entry(spec.name, sym)
            if entry is None:
                continue
            have = len(self.journal.group_legs(entry["client_order_id"]))
            note = entry["note"]
            native = getattr(self.broker, "native_oco", False)
            if note and have < len(resting_legs(json.loads(note), native)):
                self._protect(spec, entry["client_order_id"], TickResult(spec.name, bar, TickStatus.DONE))

    def _watched_exits(
        self, spec: StrategySpec, bar: pd.Timestamp, frames: dict[str, pd.DataFrame], result: TickResult
    ) -> set[str]:
        """Protective levels with no order resting at the venue: exit at market once a bar crosses them.

        That is the target and trailing stop on venues that hold one protective order per position,
        and any leg the venue refused (Alpaca takes no plain stop orders for crypto). Checked on the
        closed bars since the entry; returns the symbols exited.
        """
        done: set[str] = set()
        ledger = self.journal.ledger(spec.name, spec.capital)
        for sym, q in ledger.positions.items():
            if sym not in frames:
                continue
            entry = self.journal.last_filled_entry(spec.name, sym)
            if entry is None or not entry["note"]:
                continue
            levels = json.loads(entry["note"])
            placed = set(self.journal.group_legs(entry["client_order_id"], working=True))
            watched = [leg for leg, _t in _PROTECT if _LEVEL[leg] in levels and leg not in placed]
            if not watched:
                continue
            e, long = float(dec(entry["avg_fill_price"])), q > 0
            df = frames[sym]
            if entry["type"] == OrderType.MARKET.value:  # filled at the first bar after its signal's
                since = df[df.index > pd.Timestamp(entry["bar"])]
            else:  # a resting entry: from the bar it filled in, where only its stop is met (SEMANTICS.md)
                since = df[df.index >= (self.journal.first_fill_bar(entry["client_order_id"]) or bar)]
                if len(since) == 1:
                    watched = [leg for leg in watched if leg == "sl"]
            if since.empty:
                continue
            hi, lo, last = float(since["high"].max()), float(since["low"].min()), since.iloc[-1]
            why = None
            if "sl" in watched:
                x = float(levels["stop_loss"])
                if (long and float(last["low"]) <= e * (1 - x)) or (
                    not long and float(last["high"]) >= e * (1 + x)
                ):
                    why = "stop_loss"
            if why is None and "tp" in watched:
                x = float(levels["take_profit"])
                if (long and float(last["high"]) >= e * (1 + x)) or (
                    not long and float(last["low"]) <= e * (1 - x)
                ):
                    why = "take_profit"
            if why is None and "tsl" in watched:
                x = float(levels["trailing_stop"])
                if (long and float(last["low"]) <= max(hi, e) * (1 - x)) or (
                    not long and float(last["high"]) >= min(lo, e) * (1 + x)
                ):
                    why = "trailing_stop"
            if why is None:
                continue
            self.journal.decide(
                spec.name,
                bar,
                sym,
                "exit",
                why,
                f"{why} level crossed on bar {bar.isoformat()} "
                "(watched by the runner: no order for it rests at the venue)",
                position=float(q),
            )
            leg = {"stop_loss": "sl", "take_profit": "tp", "trailing_stop": "tsl"}[why]
            self._cancel_entry_rest(spec, bar, sym)
            self._cancel_protection(spec, sym)
            self._close(spec, bar, sym, float(q), leg + "x", result)
            done.add(sym)
        return done

    # ------------------------------------------------------------------ risk
    def _entry_halts(
        self, spec: StrategySpec, bar: pd.Timestamp, now: pd.Timestamp, frames: dict[str, pd.DataFrame]
    ) -> dict[str, str]:
        """Reasons entries are refused this tick: '*' for the whole strategy, or per symbol."""
        j = self.journal
        out: dict[str, str] = {}
        for h in j.active_halts():
            scope = h["scope"]
            if scope in ("all", spec.name):
                out["*"] = f"halted ({h['source']}): {h['reason']}"
            elif scope.startswith(spec.name + ":"):
                out[scope.split(":", 1)[1]] = f"halted ({h['source']}): {h['reason']}"
        for sym in spec.symbols:
            if not len(frames[sym]) or frames[sym].index[-1] != bar:
                continue  # no new bar of this symbol (its market is closed): nothing moved
            c = frames[sym]["close"].to_numpy()
            if len(c) >= 2:
                why = bar_move(self.risk, float(c[-2]), float(c[-1]))
                if why and sym not in out:
                    reason = f"circuit breaker on {sym}: {why}; resume with `workbench paper resume`"
                    j.halt(f"{spec.name}:{sym}", reason, source="breaker")
                    j.decide(spec.name, bar, sym, "risk", "breaker", reason)
                    out[sym] = reason
        if "*" not in out and (self.risk.max_drawdown is not None or self.risk.daily_loss_limit is not None):
            marks = j.equity_marks(spec.name, bar.normalize())
            if marks is not None:
                equity, peak, first = marks
                dd = loss_halts(
                    replace(self.risk, daily_loss_limit=None),
                    equity=equity,
                    peak=max(peak, spec.capital),
                    day_start=None,
                )
                if dd:  # the kill switch: halted until someone resumes
                    j.halt(spec.name, dd, source="kill_switch")
                    j.decide(spec.name, bar, None, "risk", "kill_switch", dd)
                    out["*"] = f"halted (kill_switch): {dd}"
                else:  # the day's loss limit: no new entries until the next UTC day
                    day = loss_halts(
                        replace(self.risk, max_drawdown=None),
                        equity=equity,
                        peak=0.0,
                        day_start=first,
                    )
                    if day:
                        out["*"] = f"{day}: no new entries until the next UTC day"
        return out

    def _snapshot(self, spec: StrategySpec, bar: pd.Timestamp) -> None:
        ledger = self.journal.ledger(spec.name, spec.capital)
        prices = {s: self.broker.price(s) for s in ledger.positions}
        equity = ledger.equity(prices)
        self.journal.snapshot(spec.name, bar, ledger.cash, equity, ledger.positions)
        if self.metrics is not None:
            self.metrics.equity(spec.name, float(equity), float(equity) - spec.capital)
