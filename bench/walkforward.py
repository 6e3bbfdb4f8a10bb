"""Walk-forward benchmark: 10 rolling folds x 50 Optuna trials, SMA crossover, 525,600 1m bars.

Prints, from one run: (a) a plain Optuna study per fold (default seeded TPE, in memory) whose
objective runs vectorbt's ``Portfolio.from_signals`` on the fold's train window and returns its
Sharpe; (b) the workbench's `walk_forward` with 1 and with 2 worker processes (journal storage on
disk, every trial persisted). Trials per second count the optimisation phase of each; the
workbench's time split between sampling (Optuna) and backtesting is printed, and so are the
ratios. Each part runs in its own process. Usage: python bench/walkforward.py [--trials 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from sweep import FEES, INIT_CASH, SLIPPAGE, minute_bars, run_part

FOLDS = 10


def part_optuna_vectorbt(trials: int) -> dict:
    """Baseline (a): per fold, a plain Optuna study over vectorbt from_signals on the train window."""
    import optuna
    import vectorbt as vbt

    from workbench.optimize import WalkForward

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bars = minute_bars()
    folds = WalkForward(n_folds=FOLDS).split(bars.index)
    n = 0
    t0 = time.perf_counter()
    for fold in folds:
        # a plain RangeIndex: vectorbt converts a tz-aware index element by element on every wrap
        # under pandas 3, which would make the baseline look slower than vectorbt is
        train = bars.iloc[fold.train()].reset_index(drop=True)
        close, open_ = train["close"], train["open"]

        def objective(trial: optuna.Trial, close: pd.Series = close, open_: pd.Series = open_) -> float:
            fast = trial.suggest_int("fast", 5, 200, step=5)
            slow = trial.suggest_int("slow", 10, 500, step=10)
            if fast >= slow:
                raise optuna.TrialPruned()
            f, s = close.rolling(fast).mean(), close.rolling(slow).mean()
            entries = (f > s) & (f.shift() <= s.shift())
            exits = (f < s) & (f.shift() >= s.shift())
            pf = vbt.Portfolio.from_signals(close, entries.shift(fill_value=False),
                                            exits.shift(fill_value=False), price=open_, fees=FEES,
                                            slippage=SLIPPAGE, init_cash=INIT_CASH, freq="1min")
            return float(pf.sharpe_ratio())

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=fold.fold))
        study.optimize(objective, n_trials=trials)
        n += len(study.trials)
    total = time.perf_counter() - t0
    return {"trials": n, "seconds": total, "trials_per_s": n / total, "folds": len(folds),
            "train_bars": folds[0].n_train}


def part_workbench(trials: int, workers: int) -> dict:
    """(b) the workbench: walk_forward with `workers` processes, journal storage in a temp folder."""
    from workbench.backtest import Costs
    from workbench.optimize import walk_forward

    bars = minute_bars()
    with tempfile.TemporaryDirectory() as tmp:
        # warm the numba cache and imports on a small slice first (not timed)
        walk_forward("sma_cross", bars.iloc[:20_000], folds=2, n_trials=3, fixed={"short": False},
                     storage=str(Path(tmp) / "warm.journal"), save=False)
        t0 = time.perf_counter()
        res = walk_forward("sma_cross", bars, folds=FOLDS, n_trials=trials, seed=0, workers=workers,
                           fixed={"short": False}, costs=Costs(fees=FEES, slippage=SLIPPAGE),
                           storage=str(Path(tmp) / "run.journal"), save=False)
        total = time.perf_counter() - t0
    t = res.timings
    n = int(res.folds["n_trials"].sum())
    own = t["sample_s"] + t["backtest_s"] + t["storage_s"]
    return {"trials": n, "seconds": t["optimize_s"], "total_s": total, "trials_per_s": n / t["optimize_s"],
            "sample_s": t["sample_s"], "backtest_s": t["backtest_s"], "storage_s": t["storage_s"],
            "own_trials": t["trials"], "own_s": own, "finish_s": total - t["optimize_s"]}


def _run(part: str, *args: str) -> dict:
    return run_part(part, *args, script=__file__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    if args.part:
        fn = {"optuna_vectorbt": lambda: part_optuna_vectorbt(args.trials),
              "workbench": lambda: part_workbench(args.trials, args.workers)}[args.part]
        print(json.dumps(fn(), default=float))
        return
    say = print
    say(f"walk-forward: {FOLDS} rolling folds x {args.trials} trials, SMA crossover (fast 5..200/5, slow "
        f"10..500/10, long only), 525,600 1m bars, fees {FEES:.2%}, slippage {SLIPPAGE:.2%}")
    base = _run("optuna_vectorbt", "--trials", str(args.trials))
    if "error" in base:
        raise SystemExit(f"baseline failed: {base['error']}")
    say(f"(a) Optuna + vectorbt from_signals: {base['trials']} trials in {base['seconds']:.1f} s = "
        f"{base['trials_per_s']:.1f} trials/s (train windows of {base['train_bars']:,} bars)")
    wb = {}
    for w in (1, 2):
        r = _run("workbench", "--trials", str(args.trials), "--workers", str(w))
        if "error" in r:
            raise SystemExit(f"workbench with {w} worker(s) failed: {r['error']}")
        wb[w] = r
        per = r["own_s"] / max(r["own_trials"], 1) * 1000
        plural = "s" if w > 1 else ""
        say(f"(b) workbench, {w} worker{plural}: {r['trials']} trials in {r['seconds']:.1f} s = "
            f"{r['trials_per_s']:.1f} trials/s -> {r['trials_per_s'] / base['trials_per_s']:.1f}x (a) "
            f"(target >= 4x); this process: {r['own_trials']} trials, {per:.1f} ms each = sampling "
            f"{r['sample_s']:.1f} s, backtests {r['backtest_s']:.1f} s, storage {r['storage_s']:.1f} s; "
            f"then OOS runs and diagnostics {r['finish_s']:.1f} s")
        say(f"    end to end (trials, OOS runs and diagnostics): {r['trials']} trials in "
            f"{r['total_s']:.1f} s = {r['trials'] / r['total_s']:.1f} trials/s (target >= 150)")
    ratio = wb[2]["trials_per_s"] / wb[1]["trials_per_s"]
    say(f"scaling: 2 workers / 1 worker = {ratio:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
