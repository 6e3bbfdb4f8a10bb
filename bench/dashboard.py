"""Dashboard benchmark: the Live page's reads on a long journal (100 symbols, one million fills).

Builds a journal with 10 strategies x 10 symbols, one million fills (half a million orders, one
decision per fill, a snapshot per strategy per bar), then measures, server-side:
(a) the first load of the Live page's state (`LiveView.load`; target < 2 s);
(b) each update after a tick writes 100 fills, their orders and decisions and 10 snapshots
    (`LiveView.update`; target < 300 ms), as the median of 20 ticks;
(c) the same update done naively: re-reading every table of the journal (fills, orders, decisions,
    snapshots, and each strategy's ledger), in the same run.
Usage: python bench/dashboard.py [--fills 1000000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

STRATEGIES, SYMBOLS_PER = 10, 10
START = pd.Timestamp("2015-01-01", tz="UTC")


def build(path: Path, fills: int, seed: int = 7) -> dict[str, int]:
    """A journal (the runner's schema) holding `fills` fills over 100 symbols, written in bulk."""
    from workbench.paper.journal import Journal

    Journal(path).close()  # the schema, as the runner creates it
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    per = fills // STRATEGIES
    bars = max(per // (2 * SYMBOLS_PER), 1)  # each symbol fills an entry and an exit every bar or so
    stamps = [(START + pd.Timedelta(hours=b)).isoformat() for b in range(bars + 1)]
    t0 = 1.7e9
    for s in range(STRATEGIES):
        name = f"strat{s}"
        syms = [f"S{s}_{k}/USD" for k in range(SYMBOLS_PER)]
        orders, fill_rows, decisions = [], [], []
        for i in range(per):
            sym = syms[i % SYMBOLS_PER]
            bar = stamps[i // (2 * SYMBOLS_PER)]
            side = "buy" if (i // SYMBOLS_PER) % 2 == 0 else "sell"
            cid = f"wb{s:02d}{i:09d}"
            price = f"{100 + rng.normal():.4f}"
            if i % 2 == 0:
                orders.append((cid, name, sym, bar, "entry", side, "market", "1", "filled", "1", price,
                               "0.01", t0 + i, t0 + i))
            fill_rows.append((f"f{s:02d}{i:09d}", cid, name, sym, side, "1", price, "0.01", bar, "signal",
                              t0 + i))
            decisions.append((name, bar, sym, "signal", side, "strategy signal", None, t0 + i))
        db.executemany("INSERT INTO orders (client_order_id, artifact, symbol, bar, leg, side, type, qty, "
                       "status, filled_qty, avg_fill_price, fee, created, updated) VALUES "
                       "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", orders)
        db.executemany("INSERT INTO fills (fill_id, client_order_id, artifact, symbol, side, qty, price, "
                       "fee, bar, reason, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?)", fill_rows)
        db.executemany("INSERT INTO decisions (artifact, bar, symbol, kind, action, reason, detail, time) "
                       "VALUES (?,?,?,?,?,?,?,?)", decisions)
        snaps = [(name, stamps[b], "100000", f"{100000 + rng.normal() * 100:.2f}",
                  json.dumps({sym: "0" for sym in syms[:3]}), t0 + b) for b in range(bars)]
        db.executemany("INSERT INTO snapshots (artifact, bar, cash, equity, positions, time) VALUES "
                       "(?,?,?,?,?,?)", snaps)
        db.commit()
    db.close()
    return {"fills": STRATEGIES * per, "bars": bars}


def tick(path: Path, k: int) -> None:
    """What one tick of the 10 strategies writes: 100 fills with their orders and decisions, snapshots."""
    db = sqlite3.connect(path, timeout=30)
    now = time.time()
    with db:
        for s in range(STRATEGIES):
            name = f"strat{s}"
            bar = (START + pd.Timedelta(days=3650, hours=k)).isoformat()
            for j in range(SYMBOLS_PER):
                cid = f"t{uuid.uuid4().hex[:20]}"
                sym = f"S{s}_{j}/USD"
                db.execute("INSERT INTO orders (client_order_id, artifact, symbol, bar, leg, side, type, "
                           "qty, status, filled_qty, avg_fill_price, fee, created, updated) VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (cid, name, sym, bar, "entry", "buy", "market", "1", "filled", "1", "100", "0.01",
                            now, now))
                db.execute("INSERT INTO fills (fill_id, client_order_id, artifact, symbol, side, qty, price, "
                           "fee, bar, reason, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (f"t{cid}", cid, name, sym, "buy", "1", "100", "0.01", bar, "signal", now))
                db.execute("INSERT INTO decisions (artifact, bar, symbol, kind, action, reason, detail, "
                           "time) VALUES (?,?,?,?,?,?,?,?)",
                           (name, bar, sym, "signal", "long", "signal", None, now))
            db.execute("INSERT INTO snapshots (artifact, bar, cash, equity, positions, time) VALUES "
                       "(?,?,?,?,?,?)", (name, bar, "1", "100000", "{}", now))
    db.close()


def naive(path: Path) -> float:
    """A full re-read of the journal, as a page without increments would do on every update."""
    from workbench.paper.journal import Journal

    t0 = time.perf_counter()
    with Journal(path, durable=False) as j:
        j.fills_frame()
        j.orders_frame()
        j.decisions_frame()
        j.snapshots_frame()
        for s in range(STRATEGIES):
            j.ledger(f"strat{s}", 100_000.0)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", type=int, default=1_000_000)
    ap.add_argument("--ticks", type=int, default=20)
    args = ap.parse_args()
    from workbench.paper.live import LiveView

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        t0 = time.perf_counter()
        made = build(path, args.fills)
        built = time.perf_counter() - t0
        print(f"dashboard: a journal of {made['fills']:,} fills over {STRATEGIES * SYMBOLS_PER} symbols "
              f"({STRATEGIES} strategies, {made['bars']:,} bars each; built in {built:.1f} s)")
        view = LiveView(path)
        t0 = time.perf_counter()
        state = view.load()
        first = time.perf_counter() - t0
        print(f"(a) first load of the Live page's state: {first * 1000:.0f} ms (target < 2000 ms); "
              f"{state.n_fills:,} fills, {len(state.open_orders)} open orders, "
              f"{sum(len(v) for v in state.equity.values()):,} equity points")
        updates, naives = [], []
        for k in range(args.ticks):
            tick(path, k)
            t0 = time.perf_counter()
            view.update()
            updates.append(time.perf_counter() - t0)
            if k < 3:
                naives.append(naive(path))
        assert view.state.n_fills == made["fills"] + args.ticks * STRATEGIES * SYMBOLS_PER
        up, nv = statistics.median(updates), statistics.median(naives)
        print(f"(b) update after a tick of 100 fills: median {up * 1000:.1f} ms, max "
              f"{max(updates) * 1000:.1f} ms over {args.ticks} ticks (target < 300 ms)")
        print(f"(c) naive full re-read per update, same run: median {nv * 1000:.0f} ms -> increments are "
              f"{nv / up:,.0f}x faster")
        view.close()


if __name__ == "__main__":
    main()
