"""Sweep benchmark: SMA crossover grid on one symbol x 525,600 one-minute bars, with baselines.

Prints, from one run: the workbench sweep's combinations per second, ms per combination, peak
memory and numba compile time; (a) the same sweep written the idiomatic vectorbt way
(MA.run + Portfolio.from_signals + the portfolio's metric methods) on a sample of combinations;
(b) backtesting.py on a handful; the memory-bandwidth floor; and an identity check of trades and
metrics against vectorbt's full Portfolio on the same inputs. Each part runs in its own process
so that peak memory is its own. Usage: python bench/sweep.py [--vbt-combos 100] [--bt-combos 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

FEES, SLIPPAGE, INIT_CASH = 0.001, 0.0005, 100_000.0
GRID = {"fast": list(range(5, 101, 5)), "slow": list(range(10, 301, 10))}
START, END = "2025-01-01", "2026-01-01"  # 525,600 one-minute bars


def minute_bars() -> pd.DataFrame:
    """The benchmarks' data: one year of synthetic BTC/USDT one-minute bars (seeded)."""
    from workbench.data.sources.synthetic import SyntheticSource

    bars = SyntheticSource(seed=7).bars("BTC/USDT", "1m", pd.Timestamp(START, tz="UTC"),
                                        pd.Timestamp(END, tz="UTC")).set_index("ts")
    bars.attrs.update(symbol="BTC/USDT", timeframe="1m")
    return bars


def _combos() -> list[tuple[int, int]]:
    return [(f, s) for f in GRID["fast"] for s in GRID["slow"] if f < s]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_workbench() -> dict:
    """The workbench sweep: compile (or cache load) timed apart from the run."""
    t0 = time.perf_counter()
    from workbench.backtest import Costs
    from workbench.backtest.sweep import sweep
    import_s = time.perf_counter() - t0
    bars = minute_bars()
    costs = Costs(fees=FEES, slippage=SLIPPAGE)
    t0 = time.perf_counter()
    sweep("sma_cross", bars.iloc[:2000], {"fast": [5], "slow": [10]}, fixed={"short": False}, costs=costs)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sweep("sma_cross", bars, GRID, fixed={"short": False}, costs=costs)
    run_s = time.perf_counter() - t0
    n = len(res.table)
    return {"combos": n, "run_s": run_s, "ms_per_combo": 1000 * run_s / n, "combos_per_s": n / run_s,
            "signals_s": res.timings["signals_s"], "kernel_s": res.timings["kernel_s"],
            "compile_s": compile_s, "import_s": import_s, "peak_mb": _peak_mb(),
            "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
            "table": res.table.to_json(orient="split")}


def part_workbench_limit() -> dict:
    """The same grid with limit entries (`sma_pullback`: a buy limit 0.2 % under the cross bar's close,
    resting 5 bars): the resting-order path of the kernel."""
    from workbench.backtest import Costs
    from workbench.backtest.sweep import sweep

    bars = minute_bars()
    costs = Costs(fees=FEES, slippage=SLIPPAGE)
    fixed = {"order": "limit", "offset": 0.002, "tif": 5, "short": False}
    sweep("sma_pullback", bars.iloc[:2000], {"fast": [5], "slow": [10]}, fixed=fixed, costs=costs)
    t0 = time.perf_counter()
    res = sweep("sma_pullback", bars, GRID, fixed=fixed, costs=costs)
    run_s = time.perf_counter() - t0
    n = len(res.table)
    return {"combos": n, "run_s": run_s, "combos_per_s": n / run_s, "signals_s": res.timings["signals_s"],
            "kernel_s": res.timings["kernel_s"], "trades": int(res.table["n_trades"].sum())}


def part_fused() -> dict:
    """Baseline: a fused numba kernel written for this one strategy (moving averages from a cumulative
    sum, the cross, next-open fills with fees and slippage, all in one pass per combination, combinations
    in parallel): the ceiling a general engine is measured against."""
    import numba

    @numba.njit(parallel=True, cache=False)
    def run(open_, cs, fasts, slows, fees, slip, init_cash, out):
        n = open_.shape[0]
        for k in numba.prange(fasts.shape[0]):
            f, s = fasts[k], slows[k]
            cash, pos, above, trades = init_cash, 0.0, False, 0
            value = init_cash
            for i in range(s, n):
                # signals of bar i-1 act at bar i's open
                b = i - 1
                fm = (cs[b + 1] - cs[b + 1 - f]) / f
                sm = (cs[b + 1] - cs[b + 1 - s]) / s
                now = fm > sm
                if now and not above and pos == 0.0 and b >= s:
                    px = open_[i] * (1 + slip)
                    pos = cash / (px * (1 + fees))
                    cash -= pos * px * (1 + fees)
                    trades += 1
                elif not now and above and pos > 0.0:
                    px = open_[i] * (1 - slip)
                    cash += pos * px * (1 - fees)
                    pos = 0.0
                above = now
                value = cash + pos * open_[i]
            out[k, 0] = value / init_cash - 1.0
            out[k, 1] = trades

    bars = minute_bars()
    open_, close = bars["open"].to_numpy(), bars["close"].to_numpy()
    cs = np.concatenate([[0.0], np.cumsum(close)])
    combos = np.array(_combos())
    out = np.empty((len(combos), 2))
    run(open_, cs, combos[:2, 0].copy(), combos[:2, 1].copy(), FEES, SLIPPAGE, INIT_CASH, out[:2])  # compile
    t0 = time.perf_counter()
    run(open_, cs, combos[:, 0].copy(), combos[:, 1].copy(), FEES, SLIPPAGE, INIT_CASH, out)
    run_s = time.perf_counter() - t0
    return {"combos": len(combos), "run_s": run_s, "combos_per_s": len(combos) / run_s}


def part_vectorbt(n_combos: int) -> dict:
    """Baseline (a): the idiomatic vectorbt sweep on a sample of the same combinations."""
    import vectorbt as vbt

    bars = minute_bars()
    combos = _combos()
    rng = np.random.default_rng(0)
    sample = [combos[i] for i in sorted(rng.choice(len(combos), size=min(n_combos, len(combos)),
                                                   replace=False))]
    close, open_ = bars["close"], bars["open"]
    t0 = time.perf_counter()
    fast = vbt.MA.run(close, window=[f for f, _ in sample], short_name="fast")
    slow = vbt.MA.run(close, window=[s for _, s in sample], short_name="slow")
    entries = fast.ma_crossed_above(slow).vbt.fshift(1)
    exits = fast.ma_crossed_below(slow).vbt.fshift(1)
    entries.columns = exits.columns = pd.MultiIndex.from_tuples(sample, names=["fast", "slow"])
    pf = vbt.Portfolio.from_signals(close, entries.fillna(False).astype(bool),
                                    exits.fillna(False).astype(bool), price=open_, fees=FEES,
                                    slippage=SLIPPAGE, init_cash=INIT_CASH, freq="1min")
    metrics = pd.DataFrame({
        "total_return": pf.total_return(), "sharpe": pf.sharpe_ratio(year_freq="365 days"),
        "sortino": pf.sortino_ratio(year_freq="365 days"), "max_drawdown": pf.max_drawdown(),
        "n_trades": pf.trades.count(), "win_rate": pf.trades.win_rate(),
    })
    run_s = time.perf_counter() - t0
    del pf
    return {"combos": len(sample), "run_s": run_s, "ms_per_combo": 1000 * run_s / len(sample),
            "peak_mb": _peak_mb(), "sample": sample,
            "n_trades": metrics["n_trades"].tolist()}


def part_backtesting(n_combos: int) -> dict:
    """Baseline (b): backtesting.py on a handful of combinations (next-open fills by default)."""
    try:
        from backtesting import Backtest, Strategy
        from backtesting.lib import crossover
    except ImportError:
        return {"skipped": "backtesting.py is not installed (pip install -e '.[bench]')"}

    bars = minute_bars()
    df = bars.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]
    df.index = df.index.tz_localize(None)

    def sma(x: np.ndarray, n: int) -> np.ndarray:
        return pd.Series(x).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        fast = 10
        slow = 50

        def init(self) -> None:
            self.ma1 = self.I(sma, self.data.Close, self.fast)
            self.ma2 = self.I(sma, self.data.Close, self.slow)

        def next(self) -> None:
            if crossover(self.ma1, self.ma2):
                self.buy()
            elif crossover(self.ma2, self.ma1):
                self.position.close()

    combos = _combos()[:: max(1, len(_combos()) // n_combos)][:n_combos]
    import warnings

    t0 = time.perf_counter()
    for f, s in combos:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Backtest(df, SmaCross, cash=1e9, commission=FEES, finalize_trades=True).run(fast=f, slow=s)
    run_s = time.perf_counter() - t0
    return {"combos": len(combos), "run_s": run_s, "ms_per_combo": 1000 * run_s / len(combos),
            "peak_mb": _peak_mb()}


def part_identity(n_sample: int) -> dict:
    """Trades and metrics of sampled sweep rows vs vectorbt's full Portfolio on the same signals."""
    import vectorbt as vbt

    from workbench.backtest import Costs, backtest
    from workbench.backtest.sweep import sweep
    from workbench.strategies import get_strategy

    bars = minute_bars()
    costs = Costs(fees=FEES, slippage=SLIPPAGE)
    combos = _combos()
    rng = np.random.default_rng(1)
    sample = [combos[i] for i in rng.choice(len(combos), size=n_sample, replace=False)]
    table = sweep("sma_cross", bars, {"fast": sorted({f for f, _ in sample}),
                                      "slow": sorted({s for _, s in sample})},
                  fixed={"short": False}, costs=costs).table.set_index(["fast", "slow"])
    strat = get_strategy("sma_cross")
    worst = {}
    for f, s in sample:
        sig = strat.signals(bars, {"fast": f, "slow": s})
        entries = pd.Series(sig.long_entries, index=bars.index).shift(1, fill_value=False)
        exits = pd.Series(sig.long_exits, index=bars.index).shift(1, fill_value=False)
        pf = vbt.Portfolio.from_signals(bars["close"], entries, exits, price=bars["open"], fees=FEES,
                                        slippage=SLIPPAGE, init_cash=INIT_CASH, freq="1min")
        row = table.loc[(f, s)]
        trades = pf.trades.records_readable
        closed = trades[trades["Status"] == "Closed"]
        res = backtest("sma_cross", bars, {"fast": f, "slow": s}, costs=costs)
        mine = res.trades[res.trades["status"] == "closed"]
        pairs = {
            "total_return": (row["total_return"], pf.total_return()),
            "sharpe": (row["sharpe"], pf.sharpe_ratio(year_freq="365 days")),
            "sortino": (row["sortino"], pf.sortino_ratio(year_freq="365 days")),
            "max_drawdown": (row["max_drawdown"], pf.max_drawdown()),
            "win_rate": (row["win_rate"], pf.trades.closed.win_rate()),
            "n_trades": (row["n_trades"], len(closed)),
            "final_equity": (res.final_equity, pf.final_value()),
            "trade_pnl": (mine["pnl"].to_numpy(), closed["PnL"].to_numpy()),
            "trade_entry_price": (mine["entry_price"].to_numpy(), closed["Avg Entry Price"].to_numpy()),
            "trade_exit_price": (mine["exit_price"].to_numpy(), closed["Avg Exit Price"].to_numpy()),
        }
        for key, (a, b) in pairs.items():
            a, b = np.atleast_1d(np.asarray(a, dtype=float)), np.atleast_1d(np.asarray(b, dtype=float))
            if a.shape != b.shape:
                worst[key] = float("inf")
                continue
            d = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
            worst[key] = max(worst.get(key, 0.0), float(np.nanmax(d, initial=0.0)))
    return {"sample": [list(c) for c in sample], "worst_rel_diff": worst}


def part_floor() -> dict:
    """The memory-bandwidth floor: reading the close array once."""
    close = minute_bars()["close"].to_numpy()
    best = min(_timed(lambda: float(close.sum())) for _ in range(50))
    return {"read_close_ms": best * 1000}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_part(part: str, *args: str, script: str = __file__) -> dict:
    """Run one part of a benchmark script in its own process (peak memory its own); its JSON result."""
    out = subprocess.run([sys.executable, script, "--part", part, *args], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part")
    ap.add_argument("--vbt-combos", type=int, default=100)
    ap.add_argument("--bt-combos", type=int, default=3)
    ap.add_argument("--identity-sample", type=int, default=6)
    args = ap.parse_args()
    if args.part:
        fn = {"workbench": part_workbench, "floor": part_floor, "fused": part_fused,
              "limit": part_workbench_limit,
              "vectorbt": lambda: part_vectorbt(args.vbt_combos),
              "backtesting": lambda: part_backtesting(args.bt_combos),
              "identity": lambda: part_identity(args.identity_sample)}[args.part]
        print(json.dumps(fn(), default=float))
        return

    say = print
    combos = _combos()
    say(f"SMA crossover sweep: {len(combos)} combinations (fast 5..100/5 x slow 10..300/10, fast < slow), "
        f"1 symbol x 525,600 1m bars, fees {FEES:.2%}, slippage {SLIPPAGE:.2%}, next-open fills")
    wb = run_part("workbench")
    if "error" in wb:
        raise SystemExit(f"workbench sweep failed: {wb['error']}")
    floor = run_part("floor")
    say(f"\nworkbench sweep: {wb['combos']} combos in {wb['run_s']:.2f} s = "
        f"{wb['ms_per_combo']:.2f} ms/combo "
        f"({wb['combos_per_s']:.0f} combos/s; signals {wb['signals_s']:.2f} s, kernel {wb['kernel_s']:.2f} s "
        f"on {wb['threads']} threads); peak {wb['peak_mb']:.0f} MB; numba compile/cache load "
        f"{wb['compile_s']:.1f} s (imports {wb['import_s']:.1f} s)")
    fused = run_part("fused")
    if "error" in fused:
        say(f"  fused kernel baseline failed: {fused['error']}")
    else:
        say(f"  a fused numba kernel for this one strategy, same run: {fused['combos_per_s']:.0f} combos/s "
            f"-> workbench at {wb['combos_per_s'] / fused['combos_per_s']:.2f}x of it "
            "(target >= 500 combos/s)")
    say(f"  distance to the bandwidth floor measured now ({floor['read_close_ms']:.2f} ms): "
        f"{wb['ms_per_combo'] / floor['read_close_ms']:.1f}x")
    lim = run_part("limit")
    if "error" in lim:
        say(f"limit entries: failed: {lim['error']}")
    else:
        say(f"limit entries (sma_pullback, buy limit 0.2 % under the close, 5 bars): {lim['combos']} combos "
            f"in {lim['run_s']:.2f} s = {lim['combos_per_s']:.0f} combos/s "
            f"(signals {lim['signals_s']:.2f} s, "
            f"kernel {lim['kernel_s']:.2f} s; {lim['trades']:,} trades; target >= 200 combos/s)")
    vb = run_part("vectorbt", "--vbt-combos", str(args.vbt_combos))
    if "error" in vb:
        say(f"(a) vectorbt idiomatic: failed: {vb['error']}")
    else:
        say(f"(a) vectorbt idiomatic, {vb['combos']} combos in one call: {vb['ms_per_combo']:.1f} ms/combo, "
            f"peak {vb['peak_mb']:.0f} MB -> workbench is "
            f"{vb['ms_per_combo'] / wb['ms_per_combo']:.0f}x faster "
            f"per combination (target >= 20x)")
        table = pd.read_json(io.StringIO(wb["table"]), orient="split").set_index(["fast", "slow"])
        mine = [int(table.loc[tuple(c), "n_trades"]) for c in vb["sample"]]
        same = sum(int(a) == int(b) for a, b in zip(mine, vb["n_trades"], strict=True))
        say(f"    its trade counts equal the workbench's on {same}/{len(mine)} combos "
            "(vectorbt's own MA and cross definitions)")
    bt = run_part("backtesting", "--bt-combos", str(args.bt_combos))
    if "skipped" in bt or "error" in bt:
        say(f"(b) backtesting.py: {bt.get('skipped') or bt.get('error')}")
    else:
        say(f"(b) backtesting.py, {bt['combos']} combos: {bt['ms_per_combo'] / 1000:.2f} s/combo -> "
            "workbench "
            f"is {bt['ms_per_combo'] / wb['ms_per_combo']:.0f}x faster (target >= 500x)")
    ident = run_part("identity", "--identity-sample", str(args.identity_sample))
    if "error" in ident:
        say(f"identity check failed: {ident['error']}")
    else:
        worst = ident["worst_rel_diff"]
        ok = all(v < 1e-9 for v in worst.values())
        say(f"identity vs vectorbt's full Portfolio on the same signals ({len(ident['sample'])} combos): "
            f"{'OK' if ok else 'MISMATCH'}; worst relative difference "
            + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    say(f"memory target < 4 GB: workbench peak {wb['peak_mb'] / 1024:.2f} GB")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
