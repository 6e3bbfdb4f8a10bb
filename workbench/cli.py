"""The `workbench` command line: a thin face over the Python API (all logic lives in the package)."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workbench import __version__
from workbench.data.lake import Lake, describe_sync
from workbench.errors import WorkbenchError

app = typer.Typer(help="Quant research workbench: data lake, backtests, walk-forward, paper "
                  "trading.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="The data lake: build the demo, sync sources, import, inspect.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

# piped output (CI logs, `make demo | tee`) gets a readable width instead of rich's 80 columns
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class _State:
    data_dir: Path | None = None


def _lake() -> Lake:
    return Lake(_State.data_dir)


@app.callback()
def _root(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Data root (default: $WORKBENCH_DATA_DIR or ./data).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")
                       ] = False,
) -> None:
    if version:
        out.print(f"workbench {__version__}")
        raise typer.Exit()
    _State.data_dir = data_dir
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def print_frame(df: pd.DataFrame, title: str | None = None) -> None:
    """Render a DataFrame as a rich table."""
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else
                         "left")
    for row in df.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    out.print(table)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 or v == 0 else f"{v:.4g}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d %H:%M")
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return f"{v:,}" if isinstance(v, int) else str(v)


@contextmanager
def _progress(description: str):
    bars: dict[str, int] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as prog:
        def update(label: str, n: int, total: int) -> None:
            if label not in bars:
                bars[label] = prog.add_task(f"{description} {label}", total=total or None)
            prog.advance(bars[label], n)

        yield update


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


# ---------------------------------------------------------------------- data commands
@data_app.command("demo")
def data_demo(seed: Annotated[int, typer.Option(help="Seed of the synthetic market.")] = 7
              ) -> None:
    """Build the demo lake from the SYNTHETIC market (crypto 1m, equities 1m and 1d)."""
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
) -> None:
    """Fetch bars from a source into the lake (incremental by default)."""
    from workbench.data.quality import QualityPolicy
    from workbench.data.sources import get_source

    pol = QualityPolicy.parse(policy)
    src = get_source(source)
    lake = _lake()
    with _progress("sync") as prog:
        results = lake.sync(src, _split(symbols), timeframe, start, end, full=full,
                            fill_gaps=fill_gaps, policy=pol,
                            progress=prog)
    print_frame(describe_sync(results), title="sync")
    for r in results:
        if r.report is not None and not r.report.ok:
            out.print(str(r.report))


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
    """Show what the lake holds: coverage per series."""
    lake = _lake()
    frame = lake.coverage_frame(source=source, symbol=symbol, timeframe=timeframe)
    if frame.empty:
        out.print(f"the lake at {lake.root} is empty: run `workbench data demo` or "
                  "`workbench data sync`")
        return
    print_frame(frame, title=f"lake {lake.root}")
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

    reports = _lake().check(source, symbol, timeframe, policy=QualityPolicy.parse(policy))
    if not reports:
        raise WorkbenchError("nothing to check: the lake has no matching series")
    frames = [r.to_frame() for r in reports if not r.ok]
    for r in reports:
        if r.ok:
            out.print(f"[green]ok[/]  {r.label}: {r.rows:,} bars")
    if frames:
        print_frame(pd.concat(frames, ignore_index=True), title="issues")
    bad = [i for r in reports for i in r.issues if i.action is Action.REJECT]
    if bad:
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
    written = lake.export(path, source, _split(symbols), timeframe, start, end)
    fp = lake.fingerprint(source, _split(symbols), timeframe, start, end)
    out.print(f"wrote {written} ({fp})")


# ---------------------------------------------------------------------- the main job
@app.command("demo")
def demo() -> None:
    """The main job on embedded SYNTHETIC data: build the demo lake and show its coverage."""
    data_demo(seed=7)
    data_ls(None, None, None, False)


def main() -> None:
    """Entry point: run the app, turning WorkbenchErrors into one line and a non-zero exit."""
    try:
        app()
    except WorkbenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
