"""`workbench paper`: run, replay, status, halt/resume, trades export and drift of paper trading."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path

paper_app = typer.Typer(
    help="Paper trading of promoted artifacts: run on a schedule, replay with parity, "
    "status, halt/resume, trade log, drift.",
    no_args_is_help=True,
)

ConfigArg = Annotated[Path, typer.Argument(help="Paper config YAML, e.g. pipelines/paper.yaml.")]
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Paper config YAML.")]
DEFAULT_CONFIG = Path("pipelines/paper.yaml")


def _use_data_dir() -> None:
    """Make --data-dir the data root of everything this command builds."""
    from workbench.cli.common import _State

    if _State.data_dir is not None:
        os.environ["WORKBENCH_DATA_DIR"] = str(Path(_State.data_dir).expanduser().resolve())


def _consoles() -> tuple[Any, Any]:
    from workbench.cli.common import err, out

    return out, err


def _journal(config: Path) -> Any:
    from workbench.paper.journal import Journal
    from workbench.paper.service import load_config

    _use_data_dir()
    cfg = load_config(config)
    path = cfg.root() / "journal.sqlite"
    if not path.is_file():
        raise ConfigError(
            f"no journal for paper config {cfg.name!r} at {path}; start it with "
            f"`workbench paper run {config}`"
        )
    return Journal(path)


def _specs(journal: Any) -> list[Any]:
    from workbench.paper.runner import specs_in

    return specs_in(journal)


@paper_app.command("run")
def paper_run(
    config: ConfigArg = DEFAULT_CONFIG,
    ticks: Annotated[int | None, typer.Option(help="Stop after this many scheduled ticks.")] = None,
) -> None:
    """Trade the config's artifacts on a schedule aligned to their bar closes (SIGTERM stops cleanly)."""
    from workbench.paper.service import PaperSession, load_config

    _use_data_dir()
    out, _err = _consoles()
    cfg = load_config(config)
    session = PaperSession(cfg)
    names = ", ".join(s.name for s in session.specs)
    clock = (
        f"simulated clock from {cfg.clock_start} at {cfg.clock_speed:g}x" if cfg.clock_speed else "wall clock"
    )
    out.print(
        f"paper {cfg.name}: {names} on {session.broker.name} broker, {session.tf.name} bars, {clock}; "
        f"journal {session.journal.path}"
        + (f"; metrics on 127.0.0.1:{cfg.metrics_port}/metrics" if cfg.metrics_port is not None else "")
    )

    def show(results: list[Any]) -> None:
        for r in results:
            if r.status in ("done", "error", "stale"):
                out.print(
                    f"{r.artifact} bar {r.bar}: {r.status}, {len(r.orders)} order(s), {r.fills} fill(s), "
                    f"{r.latency_ms:.1f} ms {escape(r.message)}",
                    highlight=False,
                )

    try:
        n = session.run(max_ticks=ticks, on_tick=show)
    finally:
        session.close()
    out.print(f"stopped after {n} tick(s); `workbench paper status {config}` shows the book")


@paper_app.command("replay")
def paper_replay(
    artifact: Annotated[str, typer.Argument(help="Artifact: name, name@3, or a .json file.")],
    start: Annotated[str, typer.Option(help="First signal bar (UTC).")],
    end: Annotated[str, typer.Option(help="End of the replay, exclusive (UTC).")],
    journal: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the replay's journal and broker state (resumable); default: a temporary one."
        ),
    ] = None,
    window: Annotated[
        str,
        typer.Option(help="anchored (signals on every bar since the warm-up: parity) or trailing (as live)."),
    ] = "anchored",
    capital: Annotated[float | None, typer.Option(help="Starting capital (default: the artifact's).")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the parity table to this .csv or .html file.")
    ] = None,
) -> list[Any]:
    """Drive the runner over past bars (simulated clock, sim broker) and compare with the backtest."""
    from workbench.backtest.options import check_output
    from workbench.cli.common import _lake, _progress
    from workbench.paper.replay import replay
    from workbench.paper.service import specs_from_artifact
    from workbench.promote import load_artifact

    _use_data_dir()
    out, _err = _consoles()
    report = check_output(report, (".csv", ".html"), "--report")
    art = load_artifact(artifact)
    specs = specs_from_artifact(art, capital=capital)
    failed = False
    results = []
    for spec in specs:
        workdir = None if journal is None else journal / spec.name.replace("/", "_").replace("@", "_")
        with _progress("replay") as prog:
            def tick(k: int, n: int, _s: str = spec.name) -> None:
                prog(_s, 1, n)

            res = replay(
                spec,
                start,
                end,
                lake=_lake(),
                workdir=workdir,
                window=window,
                progress=tick,
            )
        s = res.summary()
        ran = len(res.latency_ms)
        timing = (
            f"tick median {s['tick_ms_median']:.2f} ms, p99 {s['tick_ms_p99']:.2f} ms"
            + (f" over the {ran} ticks run now (the journal held the others)" if ran < s["ticks"] else "")
            if ran
            else "nothing left to tick: the journal already held every bar (a resumed replay)"
        )
        out.print(
            f"{spec.name}: {s['ticks']} ticks {s['start']} .. {s['end']}, {s['trades']} trades "
            f"(backtest {s['backtest_trades']}); {timing}; journal {s['journal']}",
            highlight=False,
        )
        _parity_table(res, out)
        if spec.costs.funding:
            from workbench.paper.journal import Journal

            with Journal(res.journal_path) as j:
                paid = float(j.funding_frame(spec.name)["amount"].map(float).sum())
            out.print(f"funding paid (negative: received): journal {paid:,.2f}, backtest "
                      f"{getattr(res.backtest, 'charges', {}).get('funding', 0.0):,.2f}", highlight=False)
        if report is not None:
            _write_report(
                res, report if len(specs) == 1 else report.with_stem(f"{report.stem}-{_slug(spec.name)}")
            )
        failed |= not res.parity.ok
        results.append(res)
    if failed:
        raise DataError(
            "the replay's trades differ from the backtest's (table above); a strategy that looks "
            "ahead or a runner bug: check `workbench strategies` look-ahead and the journal"
        )
    return results


def _slug(name: str) -> str:
    """A spec's name as part of a file name (``book@v1/sma_cross@v1`` -> ``book_v1_sma_cross_v1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _parity_table(res: Any, out: Any) -> None:
    par = res.parity
    colour = "green" if par.ok else "bold red"
    out.print(f"[{colour}]{escape(par.summary())}[/]")
    trades = res.trades
    if len(trades) and "direction" not in trades:  # a weight strategy's: its rebalancing orders
        t = Table(title="replayed orders (journal)", title_justify="left")
        for c in ("time", "symbol", "side", "size", "price", "fees"):
            t.add_column(c)
        for _, r in trades.tail(10).iterrows():
            t.add_row(str(r["time"]), str(r["symbol"]), r["side"], f"{r['size']:.6g}", f"{r['price']:.4f}",
                      f"{r['fees']:,.2f}")
        if len(trades) > 10:
            t.caption = f"last 10 of {len(trades)}"
        out.print(t)
    elif len(trades):
        t = Table(title="replayed trades (journal)", title_justify="left")
        for c in (
            "symbol",
            "direction",
            "entry_time",
            "entry_price",
            "exit_time",
            "exit_price",
            "size",
            "pnl",
            "exit_reason",
        ):
            t.add_column(c)
        for _, r in trades.tail(10).iterrows():
            t.add_row(
                str(r["symbol"]),
                r["direction"],
                str(r["entry_time"]),
                f"{r['entry_price']:.4f}",
                str(r["exit_time"]),
                f"{r['exit_price']:.4f}",
                f"{r['size']:.6g}",
                f"{r['pnl']:,.2f}",
                str(r["exit_reason"]),
            )
        if len(trades) > 10:
            t.caption = f"last 10 of {len(trades)}"
        out.print(t)
    if not par.ok:
        d = Table(title="differences (replay vs backtest)", title_justify="left")
        for c in par.differences.columns:
            d.add_column(c)
        for _, r in par.differences.head(30).iterrows():
            d.add_row(*[str(v) for v in r])
        out.print(d)


def _side_by_side(res: Any) -> Any:
    """The journal's record beside the backtest's: trades on (symbol, entry time), or a weight
    strategy's orders on (time, symbol, side)."""
    from workbench.paper.replay import ORDER_COLUMNS, backtest_trades

    if "direction" not in res.trades:
        amounts = {c: f"replay_{c}" for c in ("size", "price", "fees")}
        r = res.trades.drop(columns="client_order_id").rename(columns=amounts)
        bt = res.backtest.orders[ORDER_COLUMNS].rename(columns={c: f"backtest_{c}" for c in amounts})
        return r.merge(bt, on=["time", "symbol", "side"], how="outer")
    r = res.trades.add_prefix("replay_").rename(
        columns={"replay_symbol": "symbol", "replay_entry_time": "entry_time"}
    )
    bt = backtest_trades(res.backtest)
    if not len(bt):
        return r
    bt = (
        bt.add_prefix("backtest_")
        .rename(columns={"backtest_symbol": "symbol", "backtest_entry_time": "entry_time"})
    )
    return r.merge(bt, on=["symbol", "entry_time"], how="outer") if len(r) else bt


def _write_report(res: Any, path: Path) -> None:
    table = _side_by_side(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a reader (or a crash) never sees half a file
        if path.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            diff_html = res.parity.differences.to_html(index=False) if not res.parity.ok else "<p>none</p>"
            tmp.write_text(
                f"<html><head><meta charset='utf-8'><title>parity {escape(res.spec.name)}</title></head>"
                f"<body><h1>Parity of {res.spec.name}</h1><p>{res.parity.summary()}</p>"
                f"<h2>Differences</h2>{diff_html}<h2>Trades</h2>{table.to_html(index=False)}</body></html>"
            )


@paper_app.command("status")
def paper_status(config: ConfigArg = DEFAULT_CONFIG) -> None:
    """Positions, cash, equity and P&L per strategy, the last tick, halts, open orders and recent errors."""
    from workbench.paper.service import status

    out, _err = _consoles()
    with _journal(config) as j:
        st = status(j)
    t = Table(title="strategies", title_justify="left")
    for c in ("strategy", "capital", "cash", "equity", "P&L", "positions", "last bar", "tick", "latency ms"):
        t.add_column(c)
    for s in st["strategies"]:
        pos = ", ".join(f"{k} {float(v):+.6g}" for k, v in s["positions"].items()) or "flat"
        t.add_row(
            s["name"],
            f"{s['capital']:,.2f}",
            f"{s['cash']:,.2f}",
            f"{s['equity']:,.2f}",
            f"{s['pnl']:+,.2f}",
            pos,
            str(s["last_bar"]),
            str(s["last_status"]),
            "" if s["latency_ms"] is None else f"{s['latency_ms']:.1f}",
        )
    out.print(t)
    out.print(
        f"orders {st['orders']} (open {st['open_orders']}, rejected {st['rejected']}), fills {st['fills']}"
    )
    if st["halts"]:
        h = Table(title="halts in force", title_justify="left")
        for c in ("scope", "source", "reason"):
            h.add_column(c)
        for x in st["halts"]:
            h.add_row(x["scope"], x["source"], escape(x["reason"]))
        out.print(h)
    else:
        out.print("no halts in force")
    for e in st["errors"]:
        out.print(f"[red]error[/] {e['time']}: {escape(e['message'])}", highlight=False)


@paper_app.command("halt")
def paper_halt(
    config: ConfigArg = DEFAULT_CONFIG,
    reason: Annotated[str, typer.Option(help="Why (journaled).")] = "",
    strategy: Annotated[str | None, typer.Option(help="Halt one strategy (default: all).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Halt one symbol of --strategy only.")] = None,
) -> None:
    """Manual kill switch: no new entries (exits still run) until `paper resume`."""
    from workbench.paper.halts import halt

    out, _err = _consoles()
    if not reason.strip():
        raise ConfigError("a halt needs --reason '...' (it is journaled)")
    with _journal(config) as j:
        scope = halt(j, reason, strategy=strategy, symbol=symbol, source="manual")
    out.print(f"halted {scope}: {reason.strip()}")


@paper_app.command("resume")
def paper_resume(
    config: ConfigArg = DEFAULT_CONFIG,
    reason: Annotated[str, typer.Option(help="Why (journaled).")] = "",
    strategy: Annotated[str | None, typer.Option(help="Resume one strategy (default: every halt).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Resume one symbol of --strategy only.")] = None,
) -> None:
    """Lift halts (manual, kill switch, breakers, reconciliation) for all, one strategy or one symbol."""
    from workbench.paper.halts import resume

    out, _err = _consoles()
    if not reason.strip():
        raise ConfigError("resuming needs --reason '...' (it is journaled)")
    with _journal(config) as j:
        n = resume(j, reason, strategy=strategy, symbol=symbol, source="manual")
    what = f"{strategy}:{symbol}" if symbol and strategy else strategy
    out.print(f"lifted {n} halt(s)" + (f" of {what}" if what else ""))


@paper_app.command("trades")
def paper_trades(
    config: ConfigArg = DEFAULT_CONFIG,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the trade log to .csv or .parquet.")
    ] = None,
    fills: Annotated[bool, typer.Option(help="Export fills instead of round trips.")] = False,
) -> None:
    """The trade log (round trips from the journal's fills), printed or exported."""
    from workbench.backtest.options import check_output
    from workbench.cli.common import print_frame
    from workbench.paper.replay import journal_trades

    out, _err = _consoles()
    out_path = check_output(out_path, (".csv", ".parquet"), "--out")
    with _journal(config) as j:
        if fills:
            table = j.fills_frame()
        else:
            parts = [journal_trades(j, s.name).assign(strategy=s.name) for s in _specs(j)]
            table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if out_path is None:
        print_frame(table.tail(30), title=f"{'fills' if fills else 'trades'} (last 30 of {len(table)})")
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        if out_path.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    out.print(f"wrote {len(table)} {'fills' if fills else 'trades'} to {out_path}")


@paper_app.command("drift")
def paper_drift(config: ConfigArg = DEFAULT_CONFIG) -> None:
    """Compare the journal with a shadow backtest of the same bars (what live trading changed)."""
    from workbench.cli.common import _lake, print_frame
    from workbench.paper.replay import drift

    out, _err = _consoles()
    with _journal(config) as j:
        for spec in _specs(j):
            par = drift(j, spec, _lake())
            colour = "green" if par.ok else "yellow"
            out.print(f"[{colour}]{spec.name}: {escape(par.summary().replace('parity', 'drift'))}[/]")
            if not par.ok:
                print_frame(par.differences.head(30), title="differences (journal vs shadow backtest)")
