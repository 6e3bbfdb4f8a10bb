"""Replays: the runner driven over historical bars by a simulated clock, and its parity with the backtest.

`replay` runs the *same* runner, journal and simulated broker as live paper trading, one tick per
bar close, and then backtests the same strategy, parameters, bars and costs. `parity` lines the two
trade lists up; any difference is a bug in one of them (or a strategy that looks ahead). Signals
are computed on every bar from the replay's warm-up start (an anchored window) so that a causal
strategy gives the backtest's signals exactly; ``window="trailing"`` replays the live setting.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.engine import BacktestResult, Timeline, as_bar_dict, load_bars, simulate
from workbench.backtest.rebalance import RebalanceResult, simulate_weights
from workbench.errors import ConfigError, DataError
from workbench.paper.broker import fee_in_asset
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal, TickStatus
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner, StrategySpec
from workbench.paper.sim import SimBroker
from workbench.strategies.weights import WeightStrategy

log = logging.getLogger(__name__)

TRADE_COLUMNS = [
    "symbol",
    "direction",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "size",
    "pnl",
    "return",
    "entry_fees",
    "exit_fees",
    "exit_reason",
    "status",
]
_REASONS = {
    "exit": "signal",
    "sl": "stop_loss",
    "tp": "take_profit",
    "tsl": "trailing_stop",
    "slx": "stop_loss",
    "tpx": "take_profit",
    "tslx": "trailing_stop",
}


class SimClock:
    """A settable clock for replays (the runner and the simulated broker read it)."""

    def __init__(self, now: pd.Timestamp) -> None:
        self.now = pd.Timestamp(now)

    def __call__(self) -> pd.Timestamp:
        return self.now


def journal_trades(journal: Journal, artifact: str) -> pd.DataFrame:
    """Round trips from the journal's fills, in the backtest's trade-table layout.

    Fees are in the quote currency: a fee the venue took out of the asset is valued at its fill's
    price in the fee columns, and the P&L counts it as asset not sold (at the exit price).
    """
    orders = journal.orders_frame(artifact)
    fills = journal.fills_frame(artifact)
    if fills.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TRADE_COLUMNS})
    per = {}
    for cid, g in fills.groupby("client_order_id", sort=False):
        q = g["qty"].map(float)
        price = float((q * g["price"].map(float)).sum() / q.sum())
        in_asset = np.array([fee_in_asset(s, c) for s, c in zip(g["symbol"], g["fee_currency"], strict=True)],
                            dtype=bool)
        fee = g["fee"].map(float).to_numpy()
        per[cid] = {
            "qty": q.sum(),
            "price": price,
            "fee": float(fee[~in_asset].sum() + fee[in_asset].sum() * price),
            "fee_asset": float(fee[in_asset].sum()),
            "bar": pd.Timestamp(g["bar"].iloc[0]),
            "recorded": g["recorded"].min(),
        }
    info = orders.set_index("client_order_id")
    seq = sorted(per, key=lambda c: (per[c]["recorded"], c))
    rows: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for cid in seq:
        o, f = info.loc[cid], per[cid]
        sym, leg = str(o["symbol"]), str(o["leg"])  # client order ids are unique: `o` is one row
        if leg == "entry":
            open_[sym] = {
                "symbol": sym,
                "direction": "long" if o["side"] == "buy" else "short",
                "entry_time": f["bar"],
                "entry_price": f["price"],
                "size": f["qty"],
                "entry_fees": f["fee"],
                "fee_asset": f["fee_asset"],
            }
            continue
        t = open_.pop(sym, None)
        if t is None:
            continue
        long = t["direction"] == "long"
        pnl = t["size"] * ((f["price"] - t["entry_price"]) if long else (t["entry_price"] - f["price"]))
        entry_asset_fee = t.pop("fee_asset")
        if entry_asset_fee or f["fee_asset"]:  # asset given up as fees is not there to sell at the exit
            quote = t["entry_fees"] - entry_asset_fee * t["entry_price"]
            quote += f["fee"] - f["fee_asset"] * f["price"]
            pnl -= quote + (entry_asset_fee + f["fee_asset"]) * f["price"]
        else:
            pnl -= t["entry_fees"] + f["fee"]
        rows.append(
            {
                **t,
                "exit_time": f["bar"],
                "exit_price": f["price"],
                "pnl": pnl,
                "return": pnl / (t["size"] * t["entry_price"]),
                "exit_fees": f["fee"],
                "exit_reason": _REASONS.get(leg, leg),
                "status": "closed",
            }
        )
    for t in open_.values():
        t.pop("fee_asset", None)
        rows.append(
            {
                **t,
                "exit_time": pd.NaT,
                "exit_price": np.nan,
                "pnl": np.nan,
                "return": np.nan,
                "exit_fees": np.nan,
                "exit_reason": "open",
                "status": "open",
            }
        )
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TRADE_COLUMNS})
    df = pd.DataFrame(rows)[TRADE_COLUMNS].sort_values(["entry_time", "symbol"], kind="stable")
    return df.reset_index(drop=True)


ORDER_COLUMNS = ["time", "symbol", "side", "size", "price", "fees"]


def journal_orders(journal: Journal, artifact: str) -> pd.DataFrame:
    """The journal's filled orders in a weight backtest's order layout (time: the fill's bar; size and
    price over the order's fills; fees in the quote currency), in the order they were booked."""
    fills = journal.fills_frame(artifact)
    rows = []
    for cid, g in fills.groupby("client_order_id", sort=False):
        q = g["qty"].map(float)
        price = float((q * g["price"].map(float)).sum() / q.sum())
        fee = sum(float(f) * (price if fee_in_asset(sym, c) else 1.0)
                  for f, sym, c in zip(g["fee"], g["symbol"], g["fee_currency"], strict=True))
        rows.append({"time": pd.Timestamp(g["bar"].iloc[0]), "symbol": str(g["symbol"].iloc[0]),
                     "side": str(g["side"].iloc[0]), "size": float(q.sum()), "price": price, "fees": fee,
                     "client_order_id": cid})
    return pd.DataFrame(rows, columns=[*ORDER_COLUMNS, "client_order_id"])


def compare_orders(replayed: pd.DataFrame, backtested: pd.DataFrame, rtol: float = 1e-9) -> Parity:
    """Match orders on (symbol, time, side) and compare size, price and fees (a weight strategy's
    parity: order for order, as its trades are the sums of its orders)."""
    key = ["symbol", "time", "side"]
    a = {tuple(r[k] for k in key): r for r in replayed.to_dict("records")}
    b = {tuple(r[k] for k in key): r for r in backtested.to_dict("records")}
    diffs, matched = [], 0
    for k in sorted(set(a) | set(b), key=lambda x: (x[1], x[0], x[2])):
        ra, rb = a.get(k), b.get(k)
        if ra is None or rb is None:
            diffs.append({"symbol": k[0], "entry_time": k[1], "field": f"{k[2]} order",
                          "replay": "present" if ra is not None else "missing",
                          "backtest": "present" if rb is not None else "missing"})
            continue
        bad = [(c, float(ra[c]), float(rb[c])) for c in ("size", "price", "fees")
               if not np.isclose(float(ra[c]), float(rb[c]), rtol=rtol, atol=1e-12)]
        for c, x, y in bad:
            diffs.append({"symbol": k[0], "entry_time": k[1], "field": c, "replay": x, "backtest": y})
        matched += not bad
    frame = pd.DataFrame(diffs, columns=["symbol", "entry_time", "field", "replay", "backtest"])
    return Parity(matched, len(replayed), len(backtested), frame, rtol)


@dataclass
class Parity:
    """Trade-by-trade comparison of a replay with its backtest."""

    matched: int
    replay_trades: int
    backtest_trades: int
    differences: pd.DataFrame  # one row per differing field of a trade (or a missing trade)
    rtol: float

    @property
    def ok(self) -> bool:
        """Whether every trade agrees."""
        return self.differences.empty and self.replay_trades == self.backtest_trades

    def summary(self) -> str:
        """One line for humans."""
        if self.ok:
            return (
                f"parity: {self.matched} of {self.backtest_trades} trades equal the backtest's "
                f"(prices and sizes within {self.rtol:g})"
            )
        return (
            f"parity FAILED: {self.matched} of {self.backtest_trades} backtest trades matched, "
            f"{self.replay_trades} replayed, {len(self.differences)} difference(s)"
        )


def compare_trades(replayed: pd.DataFrame, backtested: pd.DataFrame, rtol: float = 1e-9) -> Parity:
    """Match trades on (symbol, entry time) and compare side, exit time, prices, size, reason."""
    a = replayed.set_index(["symbol", "entry_time"]) if len(replayed) else None
    b = backtested.set_index(["symbol", "entry_time"]) if len(backtested) else None
    keys = sorted(
        set(a.index if a is not None else []) | set(b.index if b is not None else []),
        key=lambda k: (k[1], k[0]),
    )
    diffs, matched = [], 0
    for key in keys:
        ra = a.loc[key] if a is not None and key in a.index else None
        rb = b.loc[key] if b is not None and key in b.index else None
        if ra is None or rb is None:
            diffs.append(
                {
                    "symbol": key[0],
                    "entry_time": key[1],
                    "field": "trade",
                    "replay": "present" if ra is not None else "missing",
                    "backtest": "present" if rb is not None else "missing",
                }
            )
            continue
        bad = []
        for col in ("direction", "exit_reason", "status"):
            if str(ra[col]) != str(rb[col]):
                bad.append((col, ra[col], rb[col]))
        ta, tb = ra["exit_time"], rb["exit_time"]
        if not ((pd.isna(ta) and pd.isna(tb)) or ta == tb):
            bad.append(("exit_time", ta, tb))
        for col in ("entry_price", "exit_price", "size", "entry_fees", "exit_fees"):
            x, y = float(ra[col]), float(rb[col])
            if not ((np.isnan(x) and np.isnan(y)) or np.isclose(x, y, rtol=rtol, atol=0.0)):
                bad.append((col, x, y))
        for col, x, y in bad:
            diffs.append({"symbol": key[0], "entry_time": key[1], "field": col, "replay": x, "backtest": y})
        matched += not bad
    frame = pd.DataFrame(diffs, columns=["symbol", "entry_time", "field", "replay", "backtest"])
    return Parity(matched, len(replayed), len(backtested), frame, rtol)


@dataclass
class ReplayResult:
    """A replay's journal-derived trades, its backtest, their parity and where the journal lives."""

    spec: StrategySpec
    start: pd.Timestamp
    end: pd.Timestamp
    trades: pd.DataFrame  # (a weight strategy's: its orders)
    backtest: BacktestResult | RebalanceResult
    parity: Parity
    journal_path: Path
    ticks: int
    latency_ms: pd.Series = field(repr=False, default_factory=lambda: pd.Series(dtype=float))

    def summary(self) -> dict[str, Any]:
        """Key figures."""
        lat = self.latency_ms
        return {
            "artifact": self.spec.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "ticks": self.ticks,
            "trades": len(self.trades),
            "backtest_trades": self.parity.backtest_trades,
            "parity": self.parity.ok,
            "tick_ms_median": float(lat.median()) if len(lat) else None,
            "tick_ms_p99": float(lat.quantile(0.99)) if len(lat) else None,
            "journal": str(self.journal_path),
        }


def replay_frames(lake: Any, spec: StrategySpec, start: Any, end: Any) -> tuple[dict[str, pd.DataFrame], int]:
    """The bars a replay of [start, end) needs: `lookback` bars of warm-up before start, then the period.

    Returns the frames (each symbol's own bars, as the backtest takes them) and the position of the
    first bar at or after start on their union timeline. Every symbol gets at least `lookback` of its
    own bars of warm-up (a symbol of exchange sessions reaches further back than a 24/7 one).
    """
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    if t0.tzinfo is None:
        t0 = t0.tz_localize("UTC")
    if t1.tzinfo is None:
        t1 = t1.tz_localize("UTC")
    if t1 <= t0:
        raise ConfigError(f"replay end {t1} must be after start {t0}")
    frames = as_bar_dict(load_bars(lake, list(spec.symbols), spec.timeframe, None, t1, source=spec.source,
                                   costs=spec.costs, fill=spec.fill))
    index = Timeline(frames).index
    i0 = int(index.searchsorted(t0))
    if i0 >= len(index) - 1:
        raise DataError(
            f"no {spec.timeframe} bars of {list(spec.symbols)} between {t0} and {t1}; "
            "check `workbench data ls` or choose another period"
        )
    cut = index[i0]
    for df in frames.values():
        k = int(df.index.searchsorted(index[i0]))
        if k < spec.lookback:
            log.warning("only %d bars of warm-up of %s before %s (the strategy wants %d)",
                        k, df.attrs.get("symbol", "?"), index[i0], spec.lookback)
        if len(df):
            cut = min(cut, df.index[max(k - spec.lookback, 0)])
    frames = {s: df[df.index >= cut] for s, df in frames.items()}
    return frames, int(Timeline(frames).index.searchsorted(index[i0]))


def replay(
    spec: StrategySpec,
    start: Any,
    end: Any,
    *,
    lake: Any,
    workdir: str | Path | None = None,
    window: str = "anchored",
    risk: RiskLimits | None = None,
    durable: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rtol: float = 1e-9,
) -> ReplayResult:
    """Drive the runner over [start, end) with a simulated clock and the sim broker; compare with a backtest.

    `workdir` keeps the journal and the broker's state (a replay stopped midway resumes from them);
    by default a temporary folder is used.
    """
    if window not in ("anchored", "trailing"):
        raise ConfigError(f"window {window!r} is unknown; use anchored (parity) or trailing (as live)")
    frames, i0 = replay_frames(lake, spec, start, end)
    index = Timeline(frames).index  # the union of the symbols' bars: one tick per union bar
    tf = spec.tf
    spec = replace(
        spec,
        anchor=index[0] if window == "anchored" else None,
        window=spec.window or (spec.lookback if window == "trailing" else None),
    )
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="workbench-replay-"))
    root.mkdir(parents=True, exist_ok=True)
    feed = BarFeed(spec.symbols, spec.timeframe, frames=frames)
    feed.source = spec.source
    n = len(index)
    if spec.fill.value == "next_open":
        times = [index[i] for i in range(i0 + 1, n)]
    else:
        times = [index[s] + tf.delta for s in range(i0, n)]
    clock = SimClock(times[0] if times else index[-1] + tf.delta)
    broker = SimBroker(
        root / "sim_broker.sqlite",
        feed=feed,
        costs=spec.costs,
        fill=spec.fill,
        cash=spec.capital,
        clock=clock,
        durable=durable,
        lots=spec.lots,
    )
    journal = Journal(root / "journal.sqlite", durable=durable)
    replay_risk = risk or RiskLimits(max_bar_move=None, stale_bars=None)
    runner = Runner(
        [spec], broker=broker, journal=journal, feeds={spec.name: feed}, risk=replay_risk, follow_timeout=0.0
    )
    try:
        lat = []
        for k, now in enumerate(times):
            clock.now = now
            res = runner.tick_one(spec, now)
            if res.status == TickStatus.DONE:
                lat.append(res.latency_ms)
            if progress is not None:
                progress(k + 1, len(times))
        clock.now = index[-1] + tf.delta
        broker.advance()
        for row in journal.live_orders(spec.name):  # book the stops the last bars triggered
            got = broker.get_order(row["client_order_id"])
            if got is not None:
                runner._apply(spec, row, got)
        bt = parity_backtest(spec, frames, i0)
        trades, parity = _parity(journal, spec, bt, rtol)
        return ReplayResult(
            spec,
            index[i0],
            index[-1] + tf.delta,
            trades,
            bt,
            parity,
            root / "journal.sqlite",
            len(times),
            pd.Series(lat, dtype=float),
        )
    finally:
        journal.close()
        broker.close()


def _parity(journal: Journal, spec: StrategySpec, bt: BacktestResult | RebalanceResult,
            rtol: float) -> tuple[pd.DataFrame, Parity]:
    """What the journal recorded and its parity with `bt`: round trips for a signal strategy, orders
    for a weight strategy."""
    if isinstance(bt, RebalanceResult):
        orders = journal_orders(journal, spec.name)
        return orders, compare_orders(orders, bt.orders, rtol)
    trades = journal_trades(journal, spec.name)
    return trades, compare_trades(trades, backtest_trades(bt), rtol)


def parity_backtest(spec: StrategySpec, frames: dict[str, pd.DataFrame], i0: int
                    ) -> BacktestResult | RebalanceResult:
    """The backtest a replay must equal: same bars and warm-up, no signal (or target) acted on before
    the start."""
    strat = spec.strategy_obj()
    params = strat.params(spec.params)
    t0 = Timeline(frames).index[i0]
    if isinstance(strat, WeightStrategy):
        targets = {}
        for s, own in strat.targets(frames, params).items():
            t = own.copy()
            t.iloc[:int(frames[s].index.searchsorted(t0))] = np.nan
            targets[s] = t
        return simulate_weights(frames, targets, costs=spec.costs, fill=spec.fill, init_cash=spec.capital,
                                max_exposure=spec.max_exposure, lots=spec.lots)
    signals = {}
    for s, df in frames.items():
        sig = strat.signals(df, params)
        n = len(df)
        arrs = sig.arrays(n, strat.name)
        k0 = int(df.index.searchsorted(t0))  # this symbol's own bars before the start act on nothing
        for key in ("long_entries", "long_exits", "short_entries", "short_exits"):
            arrs[key] = arrs[key].copy()
            arrs[key][:k0] = False
        sides: dict[str, Any] = {
            k: arrs[k] for k in ("long_entries", "long_exits", "short_entries", "short_exits")}
        signals[s] = replace(sig, **sides)
    return simulate(
        frames,
        signals,
        costs=spec.costs,
        fill=spec.fill,
        sizing=spec.sizing,
        direction=spec.direction,
        init_cash=spec.capital,
        max_exposure=spec.max_exposure,
        lots=spec.lots,
        periods_per_year=spec.periods_per_year,
        timeframe=spec.timeframe,
        calendar=spec.calendar,
        strategy=strat.name,
        params=params,
    )


def backtest_trades(bt: BacktestResult) -> pd.DataFrame:
    """A backtest's trades in the journal's trade layout (what parity and drift compare)."""
    t = bt.trades.copy()
    if t.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TRADE_COLUMNS})
    t["symbol"] = t["symbol"].astype(str)
    return t[TRADE_COLUMNS].reset_index(drop=True)


def shadow(journal: Journal, spec: StrategySpec, lake: Any, rtol: float = 1e-6) -> tuple[Parity, pd.Series]:
    """`drift`, with the shadow backtest's equity curve over the traded bars (what the paper equity is
    drawn against)."""
    span = journal.done_ticks_range(spec.name)
    if span is None:
        raise DataError(f"{spec.name} has no finished tick in {journal.path}; run the paper runner first")
    first, last = span
    end = last + spec.tf.delta * (2 if spec.fill.value == "next_open" else 1)
    frames, i0 = replay_frames(lake, spec, first, end)
    bt = parity_backtest(spec, frames, i0)
    parity = _parity(journal, spec, bt, rtol)[1]
    equity = bt.equity.iloc[i0:].rename("shadow backtest")
    return parity, equity


def drift(journal: Journal, spec: StrategySpec, lake: Any, rtol: float = 1e-6) -> Parity:
    """A shadow backtest over the bars the runner traded, compared with its journal (the drift report).

    Differences come from a trailing signal window, fills at the venue's prices instead of the
    model's, missed ticks, risk refusals and halts: each is a reason to look before trusting the
    research numbers for this strategy.
    """
    return shadow(journal, spec, lake, rtol)[0]
