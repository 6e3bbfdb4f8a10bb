"""Paper-tick benchmark: decision latency of one tick, bars in the lake -> orders at the sim broker.

For 1, 10 and 100 symbols of one-minute bars, each tick first writes every symbol's newest bar
into a real lake (not timed: that is the data arriving), then times the runner's work: reading the
new bars from the lake, computing signals on the trailing window with the strategy's code, sizing,
the risk overlay, orders to the simulated broker, fills, and the journal (SQLite, fsynced). Prints
median and p99 latency, signal time per symbol, and a baseline measured in the same run: the
naive tick that re-reads each symbol's whole trailing window from the lake instead of the feed's
incremental read. Usage: python bench/paper_tick.py [--ticks 60] [--sizes 1,10,100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = 300  # trailing bars the signals are computed on
WARM = 400  # bars stored before the first tick


def _bars(n_symbols: int, n_bars: int) -> dict[str, pd.DataFrame]:
    """Seeded random-walk one-minute bars for n symbols."""
    idx = pd.date_range("2025-06-01", periods=n_bars, freq="1min", tz="UTC")
    out = {}
    for k in range(n_symbols):
        rng = np.random.default_rng(k)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 2e-3, n_bars)))
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 1e-3, n_bars)) * close
        out[f"S{k:03d}/USDT"] = pd.DataFrame(
            {
                "ts": idx,
                "open": open_,
                "high": np.maximum(open_, close) + spread,
                "low": np.minimum(open_, close) - spread,
                "close": close,
                "volume": rng.uniform(1, 10, n_bars),
            }
        )
    return out


def run(n_symbols: int, ticks: int) -> dict[str, float]:
    from workbench.backtest.engine import Costs, Fill, Sizing
    from workbench.data.lake import Lake
    from workbench.paper.feed import BarFeed
    from workbench.paper.journal import Journal
    from workbench.paper.replay import SimClock
    from workbench.paper.risk import RiskLimits
    from workbench.paper.runner import Runner, StrategySpec
    from workbench.paper.sim import SimBroker

    root = Path(tempfile.mkdtemp(prefix="paper-bench-"))
    try:
        bars = _bars(n_symbols, WARM + ticks + 1)
        lake = Lake(root / "data")
        for sym, df in bars.items():
            lake.write_bars("bench", sym, "1m", df.iloc[:WARM])
        symbols = tuple(bars)
        spec = StrategySpec(
            name="bench",
            strategy="sma_cross",
            params={"fast": 5, "slow": 20, "short": True},
            symbols=symbols,
            timeframe="1m",
            periods_per_year=525_600.0,
            costs=Costs(fees=0.001, slippage=0.0005),
            fill=Fill.NEXT_OPEN,
            sizing=Sizing(fraction=0.9 / n_symbols),
            capital=1_000_000.0,
            lookback=70,
            source="bench",
            window=WINDOW,
        )
        t_first = bars[symbols[0]]["ts"].iloc[WARM]
        feed = BarFeed(
            symbols, "1m", lake=lake, source="bench", start=t_first - pd.Timedelta(minutes=WINDOW + 5)
        )
        clock = SimClock(t_first)
        broker = SimBroker(root / "sim.sqlite", feed=feed, costs=spec.costs, cash=spec.capital, clock=clock)
        journal = Journal(root / "journal.sqlite")
        runner = Runner(
            [spec],
            broker=broker,
            journal=journal,
            feeds={"bench": feed},
            risk=RiskLimits(max_bar_move=None),
            follow_timeout=0.0,
        )
        lat, naive, sig, reads, orders = [], [], [], [], 0
        for k in range(ticks):
            i = WARM + k
            for sym, df in bars.items():  # the new bar arrives in the lake (not timed)
                lake.write_bars("bench", sym, "1m", df.iloc[i : i + 1])
            now = bars[symbols[0]]["ts"].iloc[i] + pd.Timedelta(minutes=1)
            clock.now = now
            t0 = time.perf_counter()
            feed.refresh()
            t1 = time.perf_counter()
            res = runner.tick_one(spec, now)
            lat.append((time.perf_counter() - t0) * 1000)
            reads.append((t1 - t0) * 1000)
            sig.append(res.signal_ms)
            orders += len(res.orders)
            if k % 5 == 0:  # the baseline: re-read every symbol's trailing window from the lake
                t0 = time.perf_counter()
                for sym in symbols:
                    lake.read_bars("bench", sym, "1m", now - pd.Timedelta(minutes=WINDOW), now)
                naive.append((time.perf_counter() - t0) * 1000)
        journal.close()
        broker.close()
        a = np.asarray(lat[1:])  # the first tick compiles and warms caches
        return {
            "symbols": n_symbols,
            "ticks": len(a),
            "median_ms": float(np.median(a)),
            "p99_ms": float(np.percentile(a, 99)),
            "signal_ms_per_symbol": float(np.median(sig[1:])) / n_symbols,
            "orders": orders,
            "naive_read_ms": float(np.median(naive)),
            "read_ms": float(np.median(reads[1:])),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--sizes", default="1,10,100")
    args = ap.parse_args()
    print("paper tick: bars in the lake -> orders at the sim broker (1m bars, sma_cross, fsynced journal)")
    print(
        f"{'symbols':>8} {'ticks':>6} {'median ms':>10} {'p99 ms':>8} {'read ms':>8} {'signal ms/sym':>14} "
        f"{'orders':>7} {'naive read ms':>14} {'naive/feed read':>16}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.ticks)
        print(
            f"{r['symbols']:>8} {r['ticks']:>6} {r['median_ms']:>10.1f} {r['p99_ms']:>8.1f} "
            f"{r['read_ms']:>8.1f} "
            f"{r['signal_ms_per_symbol']:>14.3f} {r['orders']:>7} {r['naive_read_ms']:>14.1f} "
            f"{r['naive_read_ms'] / r['read_ms']:>15.1f}x",
            flush=True,
        )
    print(
        "targets: p99 < 500 ms at 100 symbols; signals < 10 ms per symbol. naive read = re-reading each "
        "symbol's trailing window from the lake (the baseline the incremental feed replaces)"
    )


if __name__ == "__main__":
    main()
