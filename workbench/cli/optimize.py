"""`workbench optimize`: walk-forward optimisation (resumable, shared by workers), its saved runs and
their out-of-sample diagnostics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.metrics import na_reason
from workbench.backtest.options import check_output
from workbench.cli.common import _kv_table, _lake, _progress, out, print_frame
from workbench.cli.options import (
    CashOpt,
    CostsOpt,
    DirectionOpt,
    EndOpt,
    ExposureOpt,
    FillOpt,
    FractionOpt,
    LotsOpt,
    RiskOpt,
    SizingOpt,
    SourceOpt,
    StartOpt,
    StrategyOpt,
    SymbolsOpt,
    TargetVolOpt,
    TimeframeOpt,
)
from workbench.errors import ConfigError

optimize_app = typer.Typer(help="Walk-forward optimisation with Optuna and overfitting diagnostics.",
                           no_args_is_help=True)
StorageOpt = Annotated[str | None, typer.Option(
    help="Optuna storage: a journal file path (default data/optimize/<run>.journal), sqlite:///path.db "
    "or postgresql://user@host:port/db (workers on several machines).")]


@optimize_app.command("walk-forward")
def walk_forward_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    timeframe: TimeframeOpt = "1h",
    folds: Annotated[int, typer.Option(help="Number of walk-forward folds.")] = 8,
    trials: Annotated[int, typer.Option(help="Optuna trials per fold.")] = 100,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine sharing each study.")] = 1,
    train: Annotated[str | None, typer.Option(
        help="Train window: bars (2000) or a duration (90d); default 4x the test window.")] = None,
    test: Annotated[str | None, typer.Option(
        help="Test window: bars or a duration; default: the folds fill the data.")] = None,
    purge: Annotated[str, typer.Option(help="Gap (embargo) between train and test: bars or a duration.")
                     ] = "0",
    anchored: Annotated[bool, typer.Option(help="Expanding train windows from the first bar.")] = False,
    objective: Annotated[str, typer.Option(help="sharpe, sortino, calmar or return_dd.")] = "sharpe",
    min_trades: Annotated[int, typer.Option(help="Trials with fewer closed trades are infeasible.")] = 1,
    dd_penalty: Annotated[float, typer.Option(help="return_dd: annual return - this x max drawdown.")
                          ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    sampler: Annotated[str, typer.Option(help="tpe, random or qmc.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="none, median, percentile, hyperband or successive_halving "
                                        "(steps are symbols).")] = "none",
    timeout: Annotated[float | None, typer.Option(help="Seconds per fold per worker.")] = None,
    storage: StorageOpt = None,
    name: Annotated[str | None, typer.Option(
        help="Run id (default: derived from the settings, so the same command resumes).")] = None,
    fixed: Annotated[str | None, typer.Option(help="Parameters held at one value, e.g. short=false.")
                     ] = None,
    portfolio: Annotated[bool, typer.Option(help="Trade the symbols together with shared cash.")] = False,
    start: StartOpt = None,
    end: EndOpt = None,
    source: SourceOpt = None,
    costs: CostsOpt = None,
    fill: FillOpt = "next_open",
    sizing: SizingOpt = "fixed",
    fraction: FractionOpt = None,
    risk: RiskOpt = None,
    target_vol: TargetVolOpt = None,
    direction: DirectionOpt = "both",
    cash: CashOpt = 100_000.0,
    max_exposure: ExposureOpt = 1.0,
    lots: LotsOpt = None,
    html: Annotated[Path | None, typer.Option(help="Write the OOS equity chart here (.html).")] = None,
) -> Any:
    """Walk-forward optimise a strategy on lake bars; resumable, shareable with other workers."""
    from workbench.optimize.options import WalkForwardJob

    job = WalkForwardJob.from_options(
        strategy=strategy, symbols=symbols, timeframe=timeframe, folds=folds, trials=trials, workers=workers,
        train=train, test=test, purge=purge, anchored=anchored, objective=objective, min_trades=min_trades,
        dd_penalty=dd_penalty, seed=seed, sampler=sampler, pruner=pruner, timeout=timeout, storage=storage,
        name=name, fixed=fixed, portfolio=portfolio, start=start, end=end, source=source, costs=costs,
        fill=fill, sizing=sizing, fraction=fraction, risk=risk, target_vol=target_vol, direction=direction,
        cash=cash, max_exposure=max_exposure, lots=lots, html=html)
    bars = job.load(_lake())
    with _progress("fold", hide_on_error=True) as prog:
        seen: dict[int, int] = {}

        def advance(fold: int, done: int, total: int) -> None:
            prog(str(fold), done - seen.get(fold, 0), total)
            seen[fold] = done

        result = job.run(bars, progress=advance)
    _show_run(result)
    if job.html is not None:
        out.print(f"wrote chart {job.write_chart(result)}", markup=False)
    return result


def _objective(value: Any, n_trades: Any) -> str:
    """A fold's objective (3 significant digits), or n/a with the reason when it is undefined."""
    v = float(value) if value is not None else math.nan
    if math.isfinite(v):
        return f"{v:.3g}"
    return "n/a (no trades)" if pd.notna(n_trades) and n_trades == 0 else "n/a"


def _show_run(result: Any) -> None:
    from workbench.optimize.records import runs_dir

    f = result.folds
    params = [c for c in f.columns if c.startswith("param_")]
    table = Table(title=f"walk-forward {result.run_id}: {len(f)} folds", title_justify="left")
    for c in ("fold", "test window", "params", "IS", "OOS", "OOS return", "trades", "PBO"):
        table.add_column(c, justify="left" if c in ("test window", "params") else "right")
    for _, r in f.iterrows():
        shown = ", ".join(f"{c.removeprefix('param_')}={r[c]}" for c in params) if pd.notna(r["best_trial"]) \
            else "no feasible trial"
        table.add_row(str(r["fold"]), f"{pd.Timestamp(r['test_start']):%Y-%m-%d} .. "
                      f"{pd.Timestamp(r['test_end']):%Y-%m-%d}", escape(shown),
                      _objective(r["is_objective"], r["is_n_trades"]),
                      _objective(r["oos_objective"], r["oos_n_trades"]),
                      fmt_metric("total_return", r["oos_total_return"]),
                      str(int(r["oos_n_trades"])), f"{r['pbo']:.2f}")
    out.print(table)
    d = result.diagnostics
    m = d.oos_metrics
    rows = [("OOS total return", f"{fmt_metric('total_return', m['total_return'])} (buy & hold "
             f"{fmt_metric('total_return', d.benchmark_return)})"),
            ("OOS Sharpe", f"{m['sharpe']:.3f} (p = {d.sharpe_p_value:.3f} that it is <= 0)"
             if math.isfinite(m["sharpe"]) else fmt_metric("sharpe", m["sharpe"], na_reason("sharpe", m))),
            ("OOS max drawdown", fmt_metric("max_drawdown", m["max_drawdown"])),
            ("OOS trades", str(int(m["n_trades"]))),
            ("walk-forward efficiency", f"{d.walk_forward_efficiency:.2f}"),
            ("deflated Sharpe ratio", f"{d.dsr:.3f} ({d.n_trials} trials)"),
            ("PBO (CSCV, mean of folds)", f"{d.pbo_mean:.2f}")]
    mc = d.monte_carlo.get("bootstrap")
    if mc:
        rows.append(("bootstrap 95% return", f"{mc['total_return_low']:+.2%} .. "
                     f"{mc['total_return_high']:+.2%} (P(loss) {mc['total_return_p_loss']:.2f})"))
        rows.append(("bootstrap 95% max DD",
                     f"{mc['max_drawdown_low']:.2%} .. {mc['max_drawdown_high']:.2%}"))
    out.print(_kv_table(rows, title="out-of-sample diagnostics"))
    out.print(f"run record: {runs_dir() / result.run_id}", markup=False)


@optimize_app.command("worker")
def optimize_worker_cmd(
    run_id: Annotated[str, typer.Argument(help="The run to join (printed by walk-forward).")],
    storage: Annotated[str, typer.Option(help="The run's Optuna storage URL (same as the coordinator's).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the run to be created.")] = 0.0,
) -> None:
    """Join a running walk-forward from this process or machine (bars come from this machine's lake)."""
    from workbench.optimize import join_run

    done = [0]

    def tick() -> None:
        done[0] += 1

    out.print(f"joining {escape(run_id)}", highlight=False)
    t = join_run(run_id, storage, lake=_lake(), wait=wait, progress=tick)
    out.print(f"worker finished: {int(t['trials'])} trials (sampling {t['sample_s']:.1f} s, "
              f"backtests {t['backtest_s']:.1f} s)", highlight=False)


@optimize_app.command("runs")
def optimize_runs_cmd() -> None:
    """List the saved walk-forward runs."""
    from workbench.cli.common import err
    from workbench.optimize import list_runs, run_index

    for line in run_index().damaged.values():
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    runs = list_runs()
    if runs.empty:
        out.print("no walk-forward runs yet: run `workbench optimize walk-forward`")
        return
    cols = [c for c in ("run_id", "strategy", "symbols", "folds", "trials", "oos_sharpe", "deflated_sharpe",
                        "pbo", "written") if c in runs.columns]
    print_frame(runs[cols], title="walk-forward runs")


@optimize_app.command("rm")
def optimize_rm_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id (see `workbench optimize runs`).")],
    storage: StorageOpt = None,
) -> None:
    """Delete a run: its fold studies (in --storage, default its journal file) and its run record."""
    import shutil

    from workbench.optimize import storage as st
    from workbench.optimize.records import runs_dir

    url = storage or st.default_storage(run_id)
    record = runs_dir() / run_id
    if storage is None and not Path(url).exists() and not record.exists():
        raise ConfigError(f"no run {run_id!r} here; list them with `workbench optimize runs`")
    n = st.delete_run_studies(st.open_storage(url), run_id) if storage or Path(url).exists() else 0
    if storage is None and Path(url).exists():
        Path(url).unlink()
    shutil.rmtree(record, ignore_errors=True)
    out.print(f"deleted run {escape(run_id)}: {n} fold studies and its record", highlight=False)


@optimize_app.command("show")
def optimize_show_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id (see `workbench optimize runs`).")],
    html: Annotated[Path | None, typer.Option(help="Write the OOS equity chart here (.html).")] = None,
) -> None:
    """Print a saved run's fold table and diagnostics."""
    from workbench.optimize import load_run

    html_path = check_output(html, (".html", ".htm"), "--html")
    result = load_run(run_id)
    _show_run(result)
    if html_path is not None:
        from workbench.backtest.plots import write_html

        out.print(f"wrote chart {write_html(result.figure(), html_path)}", markup=False)

