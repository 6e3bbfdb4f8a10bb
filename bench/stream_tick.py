"""Streamed-bar decision latency: the paper runner deciding at each bar close on collected trades.

A SIMULATED venue (in this process, no network) streams trades of N symbols through the collector
into the lake's tick tables; ten minutes of earlier trades are recorded first (the strategy's
window). A paper session with ``data: {stream: true}`` then ticks at every 1-second bar close: it
waits until each symbol's trades have passed the close, builds the new bars from the recorded
trades, runs the strategy, sizes, sends orders to the sim broker and journals. Printed: the
latency from bar close to the end of the tick (p50, p99, max), and in the same run the baseline of
building the same bars with one read per symbol (`read_bars` in a loop) instead of the runner's
one read for all symbols.

Usage: python bench/stream_tick.py [--symbols 100] [--ticks 30] [--rate 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--rate", type=float, default=5.0, help="trades per second per symbol")
    args = ap.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from collect_helpers import Running
    from paper_helpers import spec_for, write_artifact

    from workbench.data.collector import Collector, CollectSettings
    from workbench.data.feeds.simulated import SimulatedFeed
    from workbench.data.lake import Lake
    from workbench.data.ticks import TickKind, TickWriter
    from workbench.paper.service import PaperSession, load_config

    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    lake = Lake(root / "data")
    symbols = [f"S{k:03d}/USDT" for k in range(args.symbols)]
    rng = np.random.default_rng(1)
    now = pd.Timestamp.now(tz="UTC").floor("1s").value
    history = 600 * 10**9
    step = int(1e9 / args.rate)
    with TickWriter(lake.ticks, "simulated") as w:
        for s in symbols:
            n = history // step
            prices = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
            w.extend(TickKind.TRADES, [(now - history + k * step, now - history + k * step, s, k - 10**9,
                                        float(prices[k]), 0.1, "buy") for k in range(n)])
    collector = Collector(lake, SimulatedFeed(seed=2, rate=args.rate), CollectSettings(
        source="simulated", symbols=symbols, streams=["trades"]))
    run = Running(collector)
    try:
        spec = replace(spec_for("sma_cross", {"fast": 5, "slow": 20}, symbols=tuple(symbols)),
                       timeframe="1s", source="simulated", periods_per_year=365 * 86400.0)
        art = write_artifact(root / "s.json", spec, name="bench")
        cfg = root / "paper.yaml"
        cfg.write_text(f"name: bench\nbroker: {{kind: sim}}\nstrategies: [{{artifact: {art}}}]\n"
                       "schedule: {delay: 0}\ndata: {stream: true}\n")
        import os

        os.environ["WORKBENCH_DATA_DIR"] = str(root / "data")
        time.sleep(2.0)
        session = PaperSession(load_config(cfg), lake=lake)
        lat, naive = [], []
        try:
            for _ in range(args.ticks):
                close = pd.Timestamp.now(tz="UTC").ceil("1s")
                time.sleep(max(0.0, (close - pd.Timestamp.now(tz="UTC")).total_seconds()))
                session.tick()
                lat.append((pd.Timestamp.now(tz="UTC") - close).total_seconds() * 1000)
        finally:
            session.close()
        batched = []
        for _ in range(3):  # after the ticks: the baseline's work must not delay them
            since = pd.Timestamp.now(tz="UTC").floor("1s") - pd.Timedelta(seconds=5)
            t = time.perf_counter()
            lake.read_recent("simulated", symbols, "1s", since)
            batched.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            for s in symbols:  # the baseline: one read per symbol
                lake.read_bars("simulated", s, "1s", since)
            naive.append((time.perf_counter() - t) * 1000)
        print(f"{args.symbols} symbols, {args.rate:g} trades/s each, 1 s bars, {args.ticks} ticks")
        print(f"runner, bar close -> decision made : p50 {np.percentile(lat, 50):.0f} ms, "
              f"p99 {np.percentile(lat, 99):.0f} ms, max {max(lat):.0f} ms")
        print(f"new bars of all symbols, one read  : {np.median(batched):.0f} ms; baseline, one read per "
              f"symbol: {np.median(naive):.0f} ms (x{np.median(naive) / max(np.median(batched), 1e-9):.1f})")
    finally:
        run.stop()


if __name__ == "__main__":
    main()
