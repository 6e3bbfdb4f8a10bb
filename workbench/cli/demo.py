"""`workbench demo`: the main job on embedded SYNTHETIC data, from the lake to a paper replay."""

from __future__ import annotations

from pathlib import Path

from workbench.cli.backtest import backtest_cmd
from workbench.cli.common import _lake, out
from workbench.cli.data import data_demo, data_ls
from workbench.cli.optimize import walk_forward_cmd
from workbench.cli.sweep import sweep_cmd

DEMO_REPORTS = Path("reports") / "demo"


def demo() -> None:
    """The main job on embedded SYNTHETIC data: lake, backtest, sweep, walk-forward, a model in the
    registry, promotion, paper replay.

    Writes its charts, sweep table, heatmap and parity report under ./reports/demo.
    """
    data_demo(seed=7)
    data_ls(None, None, None, False)
    _demo_collect()
    from workbench.cli.demo_tickfills import _demo_tickfills

    _demo_tickfills()
    out.rule("backtest: sma_cross on BTC/USDT 1h, next-open fills, default costs")
    backtest_cmd(strategy="sma_cross", symbols="BTC/USDT", timeframe="1h", fill="next_open",
                 html=DEMO_REPORTS / "backtest_sma_cross.html")
    out.rule("sweep: sma_cross on BTC/USDT, ETH/USDT, SOL/USDT 1h")
    sweep_cmd(strategy="sma_cross", symbols="BTC/USDT,ETH/USDT,SOL/USDT", timeframe="1h",
              grid="fast=5:50:5,slow=20:200:20", fixed="short=false",
              out_path=DEMO_REPORTS / "sweep_sma_cross.parquet", top=5, by="sharpe",
              heatmap=DEMO_REPORTS / "sweep_sma_cross_heatmap.html", x="fast", y="slow", metric="sharpe")
    _demo_execution()
    out.rule("walk-forward: sma_cross on BTC/USDT 1h, 6 rolling folds x 40 Optuna trials")
    walk_forward_cmd(strategy="sma_cross", symbols="BTC/USDT", timeframe="1h", folds=6, trials=40, workers=1,
                     min_trades=3, fixed="short=false", seed=7, purge="0",
                     start="2025-01-01", end="2026-01-01",  # 2025 only: a paper run may have grown the lake
                     html=DEMO_REPORTS / "walk_forward_sma_cross.html")
    ref = _demo_promote("sma_cross")
    out.rule(f"paper replay of {ref}: Jul-Dec 2025, simulated clock, sim broker, parity with the backtest")
    from workbench.cli.paper import paper_replay

    replays = _lake().root / "paper" / "replay"  # kept: the paper monitor notebook reads its journal
    parity = DEMO_REPORTS / "paper_replay_parity.html"
    [replayed] = paper_replay(artifact=ref, start="2025-07-01", end="2025-12-31", journal=replays,
                              window="anchored", capital=None, report=parity)
    out.print(f"parity report: {DEMO_REPORTS / 'paper_replay_parity.html'}")
    _demo_portfolio(ref)
    from workbench.promote import load_artifact
    from workbench.reports import run_report

    artifact = load_artifact(ref)
    out.rule(f"research report: notebooks/research_report.ipynb on {artifact.run_id} (papermill)")
    res = run_report("research_report", {"run_id": artifact.run_id, "artifact": artifact.ref,
                                         "journal": str(replayed.journal_path)}, out=Path("reports"))
    m = res.manifest
    out.print(f"research report {m['status']} in {m['duration_s']:.1f} s (data, strategy, walk-forward, "
              f"promotion, paper): {res.html.resolve() if res.html else res.folder}", highlight=False)
    _demo_model()
    out.rule("dashboard: the replay's journal, and the runs, registry, sweeps, models, lake and reports "
             "above, in a browser (127.0.0.1 only)")
    out.print(f"workbench dashboard {replayed.journal_path}   # then open http://127.0.0.1:8050/ (Live, "
              "Controls, Research)", highlight=False)


def _demo_execution() -> None:
    """Resting entry orders and a perpetual that pays funding, each backtested and swept."""
    out.rule("backtest: sma_pullback on BTC/USDT 1h: the cross entered with a buy limit 0.5 % under the "
             "close, resting 5 bars")
    backtest_cmd(strategy="sma_pullback", symbols="BTC/USDT", timeframe="1h",
                 params="fast=10,slow=50,order=limit,offset=0.005,tif=5",
                 html=DEMO_REPORTS / "backtest_sma_pullback.html")
    out.rule("sweep: sma_pullback on BTC/USDT 1h, limit offset x time in force")
    sweep_cmd(strategy="sma_pullback", symbols="BTC/USDT", timeframe="1h",
              grid="offset=0.001:0.02:0.003,tif=1:13:3", fixed="fast=10,slow=50,order=limit",
              out_path=DEMO_REPORTS / "sweep_sma_pullback.parquet", top=5, by="sharpe",
              heatmap=DEMO_REPORTS / "sweep_sma_pullback_heatmap.html", x="offset", y="tif", metric="sharpe")
    out.rule("backtest: sma_cross long and short on the perpetuals BTC/USDT:USDT, ETH/USDT:USDT 1h, paying "
             "funding every 8 h")
    costs = "fees=0.0005,slippage=0.0002,funding=true"
    backtest_cmd(strategy="sma_cross", symbols="BTC/USDT:USDT,ETH/USDT:USDT", timeframe="1h",
                 params="fast=20,slow=100,short=true", costs=costs,
                 html=DEMO_REPORTS / "backtest_perp_funding.html")
    out.rule("sweep: sma_cross on the perpetuals with funding (one portfolio per combination)")
    sweep_cmd(strategy="sma_cross", symbols="BTC/USDT:USDT,ETH/USDT:USDT", timeframe="1h",
              grid="fast=10:40:10,slow=60:180:40", fixed="short=true", costs=costs, portfolio=True,
              out_path=DEMO_REPORTS / "sweep_perp_funding.parquet", top=5, by="sharpe")
    from workbench.cli.paper import paper_replay

    replays = _lake().root / "paper"
    for what, strategy, symbols, fixed, run_costs in (
            ("limit entries", "sma_pullback", "BTC/USDT", "order=limit,tif=5,short=false", None),
            ("a perpetual paying funding", "sma_cross", "BTC/USDT:USDT", "short=true", costs)):
        out.rule(f"walk-forward, promotion and paper replay of {strategy} on {symbols} 1h ({what})")
        walk_forward_cmd(strategy=strategy, symbols=symbols, timeframe="1h", folds=3, trials=12, workers=1,
                         min_trades=3, fixed=fixed, seed=7, purge="0", costs=run_costs,
                         start="2025-01-01", end="2026-01-01")
        ref = _demo_promote(strategy)
        paper_replay(artifact=ref, start="2025-09-01", end="2025-12-31",
                     journal=replays / f"replay_{strategy}", window="anchored", capital=None,
                     report=DEMO_REPORTS / f"paper_replay_{strategy}_parity.html")


def _demo_portfolio(main_ref: str) -> None:
    """A cross-sectional book on the demo equities (momentum picks, risk parity sizes them), then two
    promoted strategies combined into one book and paper-replayed as its members."""
    from workbench.cli.paper import paper_replay
    from workbench.cli.portfolio import portfolio_cmd
    from workbench.cli.promote import promote_book_cmd
    from workbench.promote import load_artifact

    out.rule("portfolio: xs_momentum picks the 2 strongest of AAPL, MSFT, SPY (1d), risk parity sizes them, "
             "monthly")
    portfolio_cmd(strategy="xs_momentum+risk_parity", symbols="AAPL,MSFT,SPY", params="lookback=126,top=2,"
                  "alloc_window=126,every=monthly", costs="fees=0.0005,slippage=0.0002",
                  html=DEMO_REPORTS / "portfolio_xs_momentum_risk_parity.html")
    pullback = load_artifact("sma_pullback-btc_usdt-1h").ref
    out.rule(f"book: {main_ref} and {pullback} in one account, shares by inverse volatility of their "
             "out-of-sample returns")
    promote_book_cmd(members=f"{main_ref},{pullback}", name="demo_book", allocator="inverse_vol", window=500,
                     gross=1.0, max_weight=None, capital=100_000.0, reason="demo: two promoted strategies")
    out.rule("paper replay of demo_book: Sep-Dec 2025, each member on its share, parity with its backtest")
    paper_replay(artifact="demo_book", start="2025-09-01", end="2025-12-31",
                 journal=_lake().root / "paper" / "replay_book", window="anchored", capital=None,
                 report=DEMO_REPORTS / "paper_replay_book_parity.html")


def _demo_model() -> None:
    """Train, register and validate a model on Jan-Jun 2025; walk-forward its fixed version over the
    second half (thresholds only: the model is never refit), promote it, and paper-replay it as live."""
    from workbench.cli.model import train_cmd
    from workbench.cli.paper import paper_replay

    out.rule("model: LightGBM on BTC/USDT, ETH/USDT 1h (Jan-Jun 2025), triple-barrier labels, purged "
             "5-fold CV, MLflow")
    train_cmd(Path("pipelines") / "models" / "demo_gbm.yaml")
    out.rule("walk-forward: ml_model(demo_gbm) (the champion, pure inference) on BTC/USDT 1h, Jul-Dec 2025")
    walk_forward_cmd(strategy="ml_model(demo_gbm)", symbols="BTC/USDT", timeframe="1h", folds=3, trials=15,
                     workers=1, min_trades=3, fixed="short=false", seed=7, purge="0",
                     start="2025-07-01", end="2026-01-01",
                     html=DEMO_REPORTS / "walk_forward_demo_gbm.html")
    ref = _demo_promote("ml_model(demo_gbm@")
    out.rule(f"paper replay of {ref}: Nov-Dec 2025 on a trailing window (as live), pure inference")
    paper_replay(artifact=ref, start="2025-11-01", end="2025-12-31",
                              journal=_lake().root / "paper" / "replay_model", window="trailing",
                              capital=None, report=DEMO_REPORTS / "paper_replay_model_parity.html")
    out.print(f"parity report: {DEMO_REPORTS / 'paper_replay_model_parity.html'}")


def _demo_promote(strategy: str) -> str:
    """Promote the demo's latest walk-forward run of `strategy` (a name, or the start of one) through the
    shipped gates, or force it with a recorded reason."""
    from workbench.cli.promote import _registry, _verdict_table
    from workbench.errors import PromotionRejected
    from workbench.optimize import list_runs
    from workbench.promote.promotion import promote

    lake = _lake()
    runs = list_runs(lake.root / "runs")
    mine = runs[runs["strategy"].astype(str).str.startswith(strategy)]
    run_id = str(mine.sort_values("written")["run_id"].iloc[-1])
    gates = Path("pipelines/promotion.yaml")
    out.rule(f"promotion: {run_id} against {gates if gates.is_file() else 'the built-in gates'}")
    kw = dict(gates=gates if gates.is_file() else None, lake=lake, registry=_registry(),
              runs_root=lake.root / "runs")
    try:
        res = promote(run_id, **kw)
        out.print(_verdict_table(res.verdicts, "promotion gates: all passed"))
    except PromotionRejected as exc:
        out.print(_verdict_table(getattr(exc, "verdicts", []), "promotion gates: refused"))
        out.print(f"[bold red]refused:[/] {exc}", highlight=False)
        reason = "demo: paper-trade the demo strategy despite its failed gates, to show the runner"
        res = promote(run_id, force=True, reason=reason, **kw)
        out.print(f"forced with a recorded reason: {reason!r}", highlight=False)
    assert res.artifact is not None
    out.print(f"artifact {res.artifact.ref}: {res.artifact.path}", highlight=False)
    return res.artifact.ref



def _demo_collect() -> None:
    """A short live collection from the SIMULATED venue (no network), with one dropped connection
    refilled from its history, then the tick tables and a chart of the recorded book."""
    import pandas as pd

    from workbench.backtest.plots import write_html
    from workbench.data.collector import CollectSettings, collect
    from workbench.data.feeds.simulated import SimulatedFeed
    from workbench.data.plots import plot_book

    out.rule("collect: 4 s of trades, quotes and books from a SIMULATED venue, one dropped connection")
    lake = _lake()
    settings = CollectSettings(source="simulated", symbols=["BTC/USDT", "ETH/USDT"],
                               streams=["trades", "quotes", "book"], book_depth=10, reconnect_wait=0.2)
    began = pd.Timestamp.now(tz="UTC")
    status = collect(lake, settings, duration=4.0, feed=SimulatedFeed(seed=7, rate=25, outage_after=1.5))
    out.print(f"received {', '.join(f'{n:,} {k} rows' for k, n in sorted(status.messages.items()))}; "
              f"{status.reconnects} reconnect, {status.backfilled} trades refilled from the venue's "
              f"history, {status.gaps} gaps recorded (quotes and books are not kept by venues), "
              f"durable within {status.durable_p99_ms:.1f} ms (p99)")
    trades = lake.read_trades("simulated", "BTC/USDT", began)  # this run's (the lake keeps earlier ones)
    book = lake.read_book("simulated", "BTC/USDT", began)
    ids = trades["trade_id"]
    whole = "none missing" if (ids.diff().dropna() == 1).all() else "SOME MISSING"
    bars = lake.read_tick_bars("simulated", "BTC/USDT", "1s", began)
    out.print(f"lake.read_trades: {len(trades):,} BTC/USDT trades, ids {ids.min()}..{ids.max()}, {whole}; "
              f"read_book: {book['ts'].nunique():,} snapshots; read_tick_bars(1s): {len(bars)} bars")
    chart = write_html(plot_book(book, trades, title="BTC/USDT book, SIMULATED venue"),
                       DEMO_REPORTS / "collect_book.html")
    out.print(f"book chart: {chart}")
