"""`workbench data`: build the demo lake, sync sources and funding rates, import CSV files, list, check
and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape

from workbench.cli.common import _lake, _progress, out, print_frame
from workbench.data.lake import describe_sync
from workbench.errors import WorkbenchError
from workbench.strategies.grid import split_list

data_app = typer.Typer(help="The data lake: build the demo, sync sources, import, inspect.",
                       no_args_is_help=True)


@data_app.command("demo")
def data_demo(seed: Annotated[int, typer.Option(help="Seed of the synthetic market.")] = 7
              ) -> None:
    """Build the demo lake from the SYNTHETIC market (crypto and perpetuals 1m with funding, equities
    1m and 1d)."""
    from workbench.data.demo import build_demo

    lake = _lake()
    with _progress("demo") as prog:
        results = build_demo(lake, seed=seed, progress=prog)
    added = sum(r.rows_added for r in results)
    out.print(f"demo lake at {lake.root} (SYNTHETIC data, seed {seed}): {added:,} rows added")


@data_app.command("sync")
def data_sync(
    source: Annotated[str, typer.Option(help="synthetic, alpaca, or ccxt:<exchange>.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTC/USDT,ETH/USDT.")],
    timeframe: Annotated[str, typer.Option(help="1m 5m 15m 1h 4h 1d.")] = "1m",
    start: Annotated[str | None, typer.Option(help="First bar (UTC); default: resume.")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (default: now).")] = None,
    full: Annotated[bool, typer.Option(help="Re-fetch the whole range, not just what's missing.")
                    ] = False,
    fill_gaps: Annotated[bool, typer.Option(help="Also re-request stored gaps in the range.")
                         ] = False,
    policy: Annotated[str | None, typer.Option(help="Quality policy, e.g. gap=reject,spike=drop.")
                      ] = None,
) -> Any:
    """Fetch bars from a source into the lake (incremental by default); returns the per-symbol results."""
    from workbench.data.options import SyncJob

    job = SyncJob.from_options(source=source, symbols=symbols, timeframe=timeframe, start=start, end=end,
                               full=full, fill_gaps=fill_gaps, policy=policy)
    lake = _lake()
    with _progress("sync") as prog:
        results = job.run(lake, progress=prog)
    print_frame(describe_sync(results), title="sync")
    for r in results:
        if r.report is not None and not r.report.ok:
            out.print(str(r.report))
    return results


@data_app.command("funding")
def data_funding(
    source: Annotated[str, typer.Option(help="synthetic, or ccxt:<futures exchange> (e.g. "
                                        "ccxt:binanceusdm).")],
    symbols: Annotated[str, typer.Option(help="Comma-separated perpetuals, e.g. "
                                         "BTC/USDT:USDT,ETH/USDT:USDT.")],
    start: Annotated[str | None, typer.Option(help="First settlement (UTC); default: resume.")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (default: now).")] = None,
) -> Any:
    """Fetch funding-rate history of perpetual futures into the lake (incremental); returns the
    per-symbol results."""
    from workbench.data.funding import describe_funding_sync, empty_funding, funding_summary
    from workbench.data.sources import get_source

    src = get_source(source)
    lake = _lake()
    with _progress("funding") as prog:
        results = lake.sync_funding(src, split_list(symbols), start, end, progress=prog)
    print_frame(describe_funding_sync(results), title="funding sync")
    rows = []
    for r in results:
        stored = (lake.read_funding(r.source, r.symbol, start, end)
                  if lake.has_funding(r.source, r.symbol) else empty_funding())
        rows.append({"series": r.label, **funding_summary(stored)})
    print_frame(_as_percent(pd.DataFrame(rows)), title="funding rates stored in the range")
    return results


def _as_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """Funding rates shown as percentages: per interval to 4 decimals, annualised to 2."""
    out = frame.copy()
    for col, digits in (("mean_rate", 4), ("mean_annualized", 2)):
        if col in out.columns:
            out[col] = [("" if v is None or pd.isna(v) else f"{100 * v:.{digits}f}%") for v in out[col]]
    return out


@data_app.command("import-csv")
def data_import_csv(
    path: Annotated[Path, typer.Argument(help="A CSV file, or a folder of <symbol>.csv files.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe of the bars in the file.")],
    symbol: Annotated[str | None, typer.Option(
        help="Symbol of the file's bars (omit if the file has a symbol column).")] = None,
    source: Annotated[str, typer.Option(help="Source label in the lake.")] = "csv",
    map_: Annotated[str | None, typer.Option("--map", help="Column mapping, e.g. ts=Date,"
                                             "close=Close.")] = None,
    tz: Annotated[str, typer.Option(help="Zone of naive timestamps, e.g. America/New_York.")
                  ] = "UTC",
    ts_unit: Annotated[str | None, typer.Option(help="Epoch unit: s, ms, us, ns.")] = None,
    ts_format: Annotated[str | None, typer.Option(help="strftime format of timestamps.")] = None,
    delimiter: Annotated[str, typer.Option(help="Field separator.")] = ",",
    policy: Annotated[str | None, typer.Option(help="Quality policy, e.g. spike=drop.")] = None,
) -> None:
    """Import bars from your CSV files (validated; re-importing is idempotent)."""
    from workbench.data.quality import QualityPolicy
    from workbench.data.sources.csv import CsvSource, parse_column_map

    pol = QualityPolicy.parse(policy)
    lake = _lake()
    if symbol is None:
        results = lake.import_file(path, source=source, timeframe=timeframe, policy=pol)
    else:
        src = CsvSource(path, name=source, columns=parse_column_map(map_), tz=tz,
                        ts_unit=ts_unit, ts_format=ts_format, delimiter=delimiter)
        results = [lake.write_bars(source, symbol, timeframe, src.read(symbol, timeframe),
                                   policy=pol)]
    for r in results:
        out.print(f"{r.key}: {r.rows_in:,} rows read, {r.rows_added:,} added, "
                  f"{r.rows_replaced:,} replaced")
        if not r.report.ok:
            out.print(str(r.report))


@data_app.command("ls")
def data_ls(
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe.")] = None,
    gaps: Annotated[bool, typer.Option(help="List the gaps of each series too.")] = False,
) -> None:
    """Show what the lake holds: coverage per series, then the stored funding rates."""
    lake = _lake()
    frame = lake.coverage_frame(source=source, symbol=symbol, timeframe=timeframe)
    funding = lake.funding_frame(source, symbol) if timeframe is None else pd.DataFrame()
    if frame.empty and funding.empty:
        out.print(f"the lake at {lake.root} is empty: run `workbench data demo` or "
                  "`workbench data sync`")
        return
    if not frame.empty:
        print_frame(frame, title=f"lake {lake.root}")
    if not funding.empty:
        print_frame(_as_percent(funding), title="funding rates")
    if gaps:
        for cov in lake.coverage(source, symbol, timeframe):
            for a, b, n in cov.gaps:
                out.print(f"{cov.source}:{cov.symbol}:{cov.timeframe} gap {a} .. {b} ({n} bars)")


@data_app.command("check")
def data_check(
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe.")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy whose 'reject' kinds fail the check.")
                      ] = None,
) -> None:
    """Run the data-quality checks over stored bars; exits 1 if a rejectable issue is found."""
    from workbench.data.quality import Action, QualityPolicy

    lake = _lake()
    reports = lake.check(source, symbol, timeframe, policy=QualityPolicy.parse(policy))
    damaged = lake.damaged(source, symbol, timeframe)
    if not reports and not damaged:
        raise WorkbenchError("nothing to check: the lake has no matching series")
    for exc in damaged.values():
        out.print(f"[bold red]damaged[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    frames = [r.to_frame() for r in reports if not r.ok]
    for r in reports:
        if r.ok:
            out.print(f"[green]ok[/]  {r.label}: {r.rows:,} bars")
    if frames:
        print_frame(pd.concat(frames, ignore_index=True), title="issues")
    bad = [i for r in reports for i in r.issues if i.action is Action.REJECT]
    if bad or damaged:
        raise typer.Exit(1)


@data_app.command("export")
def data_export(
    path: Annotated[Path, typer.Argument(help="Output file: .parquet or .csv.")],
    source: Annotated[str, typer.Option(help="Source label in the lake.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe (coarser ones are resampled).")],
    start: Annotated[str | None, typer.Option(help="First bar (UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
) -> None:
    """Export a slice of the lake (long layout with a symbol column)."""
    lake = _lake()
    written = lake.export(path, source, split_list(symbols), timeframe, start, end)
    fp = lake.fingerprint(source, split_list(symbols), timeframe, start, end)
    out.print(f"wrote {written} ({fp})")



@data_app.command("prune")
def data_prune(
    kind: Annotated[str, typer.Option(help="Tick table: trades, quotes, book or gaps (bars are kept "
                                      "forever).")],
    older_than: Annotated[str, typer.Option(help="Age of the days to delete, e.g. 30d, 12w, 1y.")],
    source: Annotated[str | None, typer.Option(help="Only this source (default: all).")] = None,
) -> None:
    """Delete whole days of a tick table older than an age (retention: e.g. books 30d, trades 1y)."""
    from workbench.data.ticks import parse_age

    res = _lake().ticks.prune(kind, parse_age(older_than), source=source)
    out.print(f"pruned {res.partitions:,} symbol-days of {res.kind.value} ({res.rows:,} rows, "
              f"{res.bytes / 1e6:,.1f} MB) older than {older_than}")
