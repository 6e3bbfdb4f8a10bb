"""Portfolio benchmark: hierarchical risk parity on 500 symbols x 10 years of daily bars, monthly rebalance.

Prints, from one run: the workbench's full backtest (`Allocator(method="hrp")` targets on a monthly
schedule by `allocation_weights`, traded by `simulate_weights`) beside the same backtest written as a plain
pandas loop a user would write by hand (each month skfolio's `HierarchicalRiskParity` fitted on the
trailing 252 simple returns up to the rebalance bar, then the days walked with pandas, trading at the
next open by SEMANTICS.md "Target weights and rebalancing": sells first, buys capped by the cash, fees
and slippage). The `bt` library has no HRP of its own, so the loop is the baseline. Both take the same
seeded synthetic bars; the run fails unless their targets and equity are equal. It prints each side's
seconds, where they go (the fits, the simulation) and the ratios. Both fit skfolio's HRP; the workbench's
leaves out what its weights do not need (allocators.py `_lean_hrp`: the Portfolio objects, the second
covariance check, the cluster count) and orders the tree with `leaf_order`, scipy's ordering in a tenth
of its time. Both run in one process with BLAS on one thread (the fits' matrices are small; see
--blas-threads); then the workbench again with its fits in --workers processes.
Usage: python bench/portfolio.py [--symbols 500] [--years 10] [--quick] [--blas-threads 1] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

FEES, SLIPPAGE, INIT_CASH = 0.001, 0.0005, 100_000.0
WINDOW = 252
SEED = 19
SECTORS = 12


def daily_bars(n_symbols: int, years: int, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Seeded synthetic daily bars (SYNTHETIC, not market history) on a business-day index: log returns
    from a market factor, one of `SECTORS` sector factors and an idiosyncratic part (so the clustering has
    structure to find), each symbol with its own volatility; open/high/low/close/volume per bar."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-01", periods=252 * years + 10, tz="UTC", name="ts")
    n, m = len(index), n_symbols
    market = rng.normal(0.0003, 0.009, (n, 1))
    sector = rng.normal(0.0, 0.007, (n, SECTORS))[:, rng.integers(0, SECTORS, m)]
    vol = rng.uniform(0.008, 0.025, m)
    beta = rng.uniform(0.5, 1.5, m)
    logret = market * beta + sector + rng.normal(0.0, 1.0, (n, m)) * vol
    close = rng.uniform(10.0, 300.0, m) * np.exp(np.cumsum(logret, axis=0))
    gap = np.exp(rng.normal(0.0, 0.003, (n, m)))
    open_ = np.vstack([close[:1] / gap[:1], close[:-1]]) * gap
    wick = np.exp(np.abs(rng.normal(0.0, 0.006, (2, n, m))))
    high = np.maximum(open_, close) * wick[0]
    low = np.minimum(open_, close) / wick[1]
    volume = rng.lognormal(13.0, 0.5, (n, m)).round()
    return {f"S{j:03d}": pd.DataFrame({"open": open_[:, j], "high": high[:, j], "low": low[:, j],
                                       "close": close[:, j], "volume": volume[:, j]}, index=index)
            for j in range(m)}


def _hrp() -> object:
    """skfolio's HRP as its documentation sets it up: variance, Ledoit-Wolf covariance, long only."""
    from skfolio import RiskMeasure
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import HierarchicalRiskParity
    from skfolio.prior import EmpiricalPrior

    return HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE,
                                  prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))


def plain_loop(frames: dict[str, pd.DataFrame]) -> dict:
    """Baseline: the backtest by hand. Fits: at the first bar of each month with `WINDOW` returns behind
    it, skfolio's HRP on the trailing `WINDOW` simple returns of the closes up to that bar. Then the days
    in order, vectorised across symbols: targets set at bar b trade at bar b+1's open, sized on the equity
    at that open; sells, then buys in column order until the cash runs out; fees and slippage per fill."""
    t0 = time.perf_counter()
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    opens = pd.DataFrame({s: f["open"] for s, f in frames.items()})
    returns = closes.pct_change()
    month = closes.index.year * 100 + closes.index.month
    firsts = [i for i in range(len(closes)) if i == 0 or month[i] != month[i - 1]]
    setup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    targets = {}
    model = None
    for b in firsts:
        if b < WINDOW:
            continue
        model = _hrp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(returns.iloc[b - WINDOW + 1:b + 1])
        targets[closes.index[b]] = pd.Series(model.weights_, index=closes.columns)
    fits_s = time.perf_counter() - t0
    if model is None:
        raise SystemExit(f"no month starts after {WINDOW} bars: use more years")

    t0 = time.perf_counter()
    cash = INIT_CASH
    qty = pd.Series(0.0, index=closes.columns)
    pending = None
    equity = []
    for day in closes.index:
        if pending is not None:  # the targets of the previous bar, at this open
            px = opens.loc[day]
            value = cash + (qty * px).sum()
            delta = pending * value / px - qty
            sell = (-delta).clip(lower=0.0)
            proceeds = sell * px * (1.0 - SLIPPAGE)
            cash += (proceeds - proceeds * FEES).sum()
            qty -= sell
            buy = delta.clip(lower=0.0)
            fill = px * (1.0 + SLIPPAGE)
            cost = buy * fill * (1.0 + FEES)
            spent = cost.cumsum()
            short = spent > cash
            if short.any():  # the first buy that does not fit takes the cash left; the later ones none
                j = int(np.argmax(short.to_numpy()))
                left = cash - (spent.iloc[j - 1] if j else 0.0)
                buy.iloc[j] = max(left, 0.0) / (1.0 + FEES) / fill.iloc[j]
                buy.iloc[j + 1:] = 0.0
                cost = buy * fill * (1.0 + FEES)
            cash -= cost.sum()
            qty += buy
            pending = None
        if day in targets:
            pending = targets[day]
        equity.append(cash + (qty * closes.loc[day]).sum())
    walk_s = time.perf_counter() - t0
    return {"targets": pd.DataFrame(targets).T, "equity": pd.Series(equity, index=closes.index),
            "fits": len(targets), "setup_s": setup_s, "fits_s": fits_s, "walk_s": walk_s,
            "olo_s": _leaf_ordering_s(model)}


def _leaf_ordering_s(model: object) -> tuple[float, float]:
    """Seconds of the optimal leaf ordering of a fitted HRP's tree, part of every fit: scipy's (the
    loop's, through skfolio) and the workbench's `leaf_order` (the run fails unless they are equal)."""
    import scipy.cluster.hierarchy as sch

    from workbench.backtest.leaf_order import optimal_leaf_ordering

    tree = model.seriation_estimator_.hierarchical_clustering_estimator_
    seconds, orders = [], []
    for order in (sch.optimal_leaf_ordering, optimal_leaf_ordering):
        t0 = time.perf_counter()
        orders.append(order(tree.linkage_matrix_, tree.condensed_distance_))
        seconds.append(time.perf_counter() - t0)
    if not np.array_equal(*orders):
        raise SystemExit("MISMATCH: the workbench's leaf ordering differs from scipy's")
    return seconds[0], seconds[1]


def workbench(frames: dict[str, pd.DataFrame], workers: int = 1) -> dict:
    """The workbench's path: HRP targets on the monthly schedule (fitted in `workers` processes), then
    the rebalancing kernel."""
    from workbench.backtest import Costs
    from workbench.backtest.allocators import Allocator
    from workbench.backtest.rebalance import allocation_weights, simulate_weights

    allocator = Allocator(method="hrp", window=WINDOW)
    t0 = time.perf_counter()
    targets = allocation_weights(frames, allocator, "monthly", workers=workers)
    fits_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = simulate_weights(frames, targets, costs=Costs(fees=FEES, slippage=SLIPPAGE), init_cash=INIT_CASH)
    sim_s = time.perf_counter() - t0
    table = pd.DataFrame(targets)
    table = table[table.notna().any(axis=1)]
    return {"targets": table, "equity": res.equity, "orders": len(res.orders), "fits_s": fits_s,
            "sim_s": sim_s}


def warm_up() -> float:
    """Import skfolio and fit once, and compile (or load) the rebalancing kernel, on a small universe, so
    neither side's timing carries a first-call cost; returns the seconds it took."""
    t0 = time.perf_counter()
    small = daily_bars(8, 2, seed=1)
    workbench(small)
    plain_loop(small)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="100 symbols x 3 years")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes the workbench also fits in (a second run; default: the cores)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads for both sides (0: as the environment sets them)")
    args = ap.parse_args()
    if args.quick:
        args.symbols, args.years = 100, 3
    if args.blas_threads:
        # the fits' matrices are small (<= symbols x symbols): a multi-threaded BLAS spins on a busy
        # machine (a 100 x 100 eigvalsh 30x slower with 2 threads beside other work) and adds noise to
        # both sides alike
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    say = print
    frames = daily_bars(args.symbols, args.years)
    n = len(next(iter(frames.values())))
    say(f"HRP portfolio: {args.symbols} symbols x {n} daily bars ({args.years} years, synthetic, "
        f"seed {SEED}), monthly rebalance on the trailing {WINDOW} returns, next-open fills, "
        f"fees {FEES:.2%}, slippage {SLIPPAGE:.2%}; BLAS threads {args.blas_threads or 'as set'}")
    say(f"warm-up (imports, numba compile or cache load, one small fit each): {warm_up():.1f} s")

    wb = workbench(frames)
    base = plain_loop(frames)
    wide = workbench(frames, args.workers) if args.workers > 1 else None

    # identical targets and equity, or the figures mean nothing
    mine, theirs = wb["targets"], base["targets"]
    if list(mine.index) != list(theirs.index) or list(mine.columns) != list(theirs.columns):
        raise SystemExit(f"MISMATCH: the workbench set targets at {len(mine)} bars, the loop at "
                         f"{len(theirs)}")
    w_diff = float(np.abs(mine.to_numpy() - theirs.to_numpy()).max())
    e_rel = float((np.abs(wb["equity"].to_numpy() - base["equity"].to_numpy())
                   / np.abs(base["equity"].to_numpy())).max())
    if not np.allclose(mine.to_numpy(), theirs.to_numpy(), rtol=1e-9, atol=1e-15):
        raise SystemExit(f"MISMATCH: targets differ by up to {w_diff:.3g}")
    if not np.allclose(wb["equity"].to_numpy(), base["equity"].to_numpy(), rtol=1e-9, atol=0.0):
        raise SystemExit(f"MISMATCH: equity differs by up to {e_rel:.3g} (relative)")
    if wide is not None and not (wide["targets"].equals(mine) and wide["equity"].equals(wb["equity"])):
        raise SystemExit(f"MISMATCH: the fits in {args.workers} processes differ from those in one")

    wb_s = wb["fits_s"] + wb["sim_s"]
    base_s = base["setup_s"] + base["fits_s"] + base["walk_s"]
    fits = base["fits"]
    say(f"\nidentity: OK, {fits} rebalances; targets equal to {w_diff:.1e} (absolute), equity to {e_rel:.1e} "
        f"(relative); final equity {wb['equity'].iloc[-1]:,.2f}, {wb['orders']:,} orders")
    say(f"workbench: {wb_s:.2f} s = allocation_weights {wb['fits_s']:.2f} s ({fits} HRP fits, "
        f"{wb['fits_s'] / fits:.3f} s each) + simulate_weights {wb['sim_s']:.3f} s "
        f"-> the fits are {wb['fits_s'] / wb_s:.1%} of it")
    say(f"plain pandas loop: {base_s:.2f} s = frames to matrices {base['setup_s']:.2f} s + skfolio fits "
        f"{base['fits_s']:.2f} s ({base['fits_s'] / fits:.3f} s each) + the day walk {base['walk_s']:.2f} s")
    say(f"  -> workbench {base_s / wb_s:.1f}x faster over the whole backtest (target >= 10x); "
        f"fits {base['fits_s'] / wb['fits_s']:.1f}x, "
        f"simulation {(base['setup_s'] + base['walk_s']) / wb['sim_s']:.1f}x (setup and walk vs "
        "simulate_weights)")
    if wide is not None:
        wide_s = wide["fits_s"] + wide["sim_s"]
        say(f"workbench, fits in {args.workers} processes (identical targets and equity): {wide_s:.2f} s -> "
            f"{base_s / wide_s:.1f}x the plain loop")
    scipy_s, mine_s = base["olo_s"]
    say(f"  one fit's optimal leaf ordering of the {args.symbols}-asset tree (the same tree, equal orders): "
        f"scipy {scipy_s:.3f} s, the workbench's {mine_s:.3f} s")

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
