"""The `workbench` command line: a thin face over the Python API (all logic lives in the package)."""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from workbench import __version__
from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.metrics import na_reason
from workbench.data.lake import Lake, describe_sync
from workbench.errors import ConfigError, WorkbenchError, did_you_mean

if TYPE_CHECKING:
    from workbench.backtest import BacktestResult, Costs, Sizing
    from workbench.strategies.base import Param, Strategy

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
    debug: bool = False


def _lake() -> Lake:
    return Lake(_State.data_dir)


def _print_version(value: bool) -> None:
    if value:
        from workbench.version import code_version

        out.print(f"workbench {__version__} ({code_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Data root (default: $WORKBENCH_DATA_DIR or ./data).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback of an unexpected error.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    _State.data_dir = data_dir
    _State.debug = debug
    if data_dir is not None:  # everything below (notebook kernels, child processes) sees the same lake
        from workbench.config import DATA_DIR_ENV

        os.environ[DATA_DIR_ENV] = str(data_dir.expanduser().resolve())
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
def _progress(description: str, *, hide_on_error: bool = False
              ) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr with elapsed time and ETA; `update(label, n, total)` advances the bar
    of `label` by n."""
    bars: dict[str, int] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
                  transient=False) as prog:
        def update(label: str, n: int, total: int) -> None:
            if label not in bars:
                bars[label] = prog.add_task(f"{description} {label}", total=total or None)
            prog.advance(bars[label], n)

        try:
            yield update
        except BaseException:
            if hide_on_error:  # the error line alone says what happened
                prog.live.transient = True
            raise


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
) -> Any:
    """Fetch bars from a source into the lake (incremental by default); returns the per-symbol results."""
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
    return results


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
    written = lake.export(path, source, _split(symbols), timeframe, start, end)
    fp = lake.fingerprint(source, _split(symbols), timeframe, start, end)
    out.print(f"wrote {written} ({fp})")


# ---------------------------------------------------------------------- backtests and sweeps
# ranked lowest first by --by; every other metric ranks highest first
_LOWER_IS_BETTER = frozenset({"annual_volatility", "max_drawdown_duration", "max_drawdown_days",
                              "turnover"})
_HEATMAP_AGGS = ("mean", "median", "max", "min")
_TOP_METRICS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades", "win_rate",
                "profit_factor", "exposure", "excess_return")

StrategyOpt = Annotated[str, typer.Option(
    help="Strategy name or composite spec (see `workbench strategies`), e.g. sma_cross or "
    "regime(macd).")]
SymbolsOpt = Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTC/USDT,ETH/USDT.")]
TimeframeOpt = Annotated[str, typer.Option(help="Bar timeframe (coarser than stored is resampled).")]
StartOpt = Annotated[str | None, typer.Option(help="First bar (UTC), e.g. 2025-03-01.")]
EndOpt = Annotated[str | None, typer.Option(help="End, exclusive (UTC).")]
SourceOpt = Annotated[str | None, typer.Option(
    help="Source label in the lake (default: the one source holding the symbols).")]
CostsOpt = Annotated[str | None, typer.Option(
    help="Costs, e.g. fees=0.001,slippage=0.0005 (keys: fees, slippage, slippage_vol, vol_window; "
    "default fees=0.001,slippage=0.0005).")]
FillOpt = Annotated[str, typer.Option(
    help="next_open: a signal on a bar's close trades at the next open; close: at that close.")]
SizingOpt = Annotated[str, typer.Option(help="fixed, risk or volatility.")]
FractionOpt = Annotated[float | None, typer.Option(
    help="fixed sizing: fraction of equity per entry (default 1/number of symbols).")]
RiskOpt = Annotated[float | None, typer.Option(
    help="risk sizing: fraction of equity lost if the stop is hit (default 0.01).")]
TargetVolOpt = Annotated[float | None, typer.Option(
    "--target-vol", help="volatility sizing: annualised target volatility (default 0.2).")]
DirectionOpt = Annotated[str, typer.Option(help="long, short or both (sides of the signals traded).")]
CashOpt = Annotated[float, typer.Option(help="Initial cash.")]
ExposureOpt = Annotated[float, typer.Option(
    "--max-exposure", help="Cap of each position as a fraction of equity.")]


def _pairs(text: str | None, option: str, example: str) -> dict[str, str]:
    """Parse ``name=value,name=value`` into a dict (values kept as text for the strategy to coerce)."""
    out: dict[str, str] = {}
    for part in _split(text or ""):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{option}: cannot parse {part!r}; write name=value pairs like {example}")
        if key in out:
            raise ConfigError(f"{option}: {key} is given twice; give each parameter once")
        out[key] = value
    return out


def _num(text: str, option: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}: {name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {name}: {text!r} is not a finite number")
    return value


def _range_values(param: Param, spec: str, option: str) -> list[Any]:
    """Values of an inclusive range ``a:b:step`` (``a:b`` walks the parameter's own step)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise ConfigError(f"{option}: cannot parse {param.name}={spec!r}; write a range as start:stop:step "
                          f"(e.g. {param.name}=5:50:5) or list values as v1|v2|v3")
    if param.kind not in ("int", "float"):
        raise ConfigError(f"{option}: {param.name} is a {param.kind} parameter, not a number; list its "
                          f"values like {'|'.join(map(str, param.grid()))}")
    a, b = _num(parts[0], option, param.name), _num(parts[1], option, param.name)
    if len(parts) == 3:
        step = _num(parts[2], option, param.name)
    elif param.step is not None or param.kind == "int":
        step = float(param.step or 1)
    else:
        raise ConfigError(f"{option}: {param.name} is a float without a default step; write "
                          f"{param.name}={parts[0]}:{parts[1]}:<step>")
    if step <= 0:
        raise ConfigError(f"{option}: {param.name}={spec}: the step must be positive")
    if a > b:
        raise ConfigError(f"{option}: {param.name}={spec}: the start is above the stop; "
                          "write start:stop:step")
    if param.kind == "int":
        if not all(float(v).is_integer() for v in (a, b, step)):
            raise ConfigError(f"{option}: {param.name} is an integer parameter; use whole numbers in "
                              f"{param.name}={spec}")
        return list(range(int(a), int(b) + 1, int(step)))
    n = math.floor((b - a) / step + 1e-9) + 1
    return [round(a + k * step, 12) for k in range(n)]


def parse_grid(text: str | None, strategy: Strategy, option: str = "--grid") -> dict[str, list[Any]]:
    """Parse ``fast=5:50:5,slow=20|50|100`` into {param: typed values} for the strategy's space."""
    grid: dict[str, list[Any]] = {}
    for name, spec in _pairs(text, option, "fast=5:50:5,slow=20|50|100").items():
        param = strategy.space[name]  # unknown names raise with a did-you-mean
        if ":" in spec:
            values: list[Any] = _range_values(param, spec, option)
        else:
            values = [v.strip() for v in spec.split("|")]
            if not all(values):
                raise ConfigError(f"{option}: {name}={spec!r} has an empty value; list values as v1|v2|v3")
        grid[name] = list(dict.fromkeys(param.coerce(v) for v in values))
    return grid


def parse_fixed(text: str | None, strategy: Strategy, option: str = "--fixed") -> dict[str, Any]:
    """Parse ``short=false,slow=50`` into {param: typed value} for the strategy's space."""
    return {name: strategy.space[name].coerce(value)
            for name, value in _pairs(text, option, "short=false").items()}


def rank_rows(table: pd.DataFrame, by: str, n: int) -> tuple[pd.DataFrame, int]:
    """The n best rows by a metric, finite values only (a run without trades has no Sharpe: NaN).

    Returns the rows and how many were left out for a NaN or infinite value.
    """
    if by not in table.columns:
        raise ConfigError(f"cannot rank by {by!r}: the table has no such column"
                          f"{did_you_mean(by, map(str, table.columns))}")
    values = pd.to_numeric(table[by], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(values)
    ranked = table[finite].sort_values(by, ascending=by in _LOWER_IS_BETTER, kind="stable")
    return ranked.head(n), int((~finite).sum())


def _metric_names() -> list[str]:
    """The metrics a sweep table holds (backtest() alone reports the per-bar-time ones)."""
    from workbench.backtest.metrics import METRIC_KEYS

    return [k for k in METRIC_KEYS if k not in ("max_drawdown_days", "avg_gross_exposure")]


def _check_metric(name: str, option: str) -> None:
    names = _metric_names()
    if name not in names:
        raise ConfigError(f"{option} {name!r} is not a metric{did_you_mean(name, names)}; "
                          f"use one of {', '.join(names)}")


def _output(path: Path | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    """Check an output path before any work: its suffix, and that its folder is (or can be) written."""
    if path is None:
        return None
    path = path.expanduser()
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, "
                          f"e.g. {path / ('out' + suffixes[0])}")
    parent = path.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot write {option} {path}: {ancestor} is a file, not a folder; "
                          "choose another path")
    if ancestor != parent:
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {option} {path}: {ancestor} is not writable; "
                              "choose a writable folder")
        return path
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {path}: {exc.strerror or exc}; choose a writable folder"
                          ) from None
    return path


def _sizing(kind: str, fraction: float | None, risk: float | None, target_vol: float | None) -> Sizing:
    from workbench.backtest import Sizing

    base = Sizing(kind=kind)  # an unknown kind fails here, naming the choices
    given = {"--fraction": (fraction, "fixed"), "--risk": (risk, "risk"),
             "--target-vol": (target_vol, "volatility")}
    for option, (value, needs) in given.items():
        if value is not None and base.kind.value != needs:
            raise ConfigError(f"{option} applies to --sizing {needs}, not {base.kind.value}; "
                              f"add --sizing {needs} or drop {option}")
    extra = {k: v for k, v in (("fraction", fraction), ("risk", risk), ("target_vol", target_vol))
             if v is not None}
    return Sizing(kind=base.kind, **extra)


def _costs(text: str | None) -> Costs:
    from workbench.backtest import Costs

    return Costs.parse(text) if text else Costs()


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _duration(seconds: float) -> str:
    """An estimate for people: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _span(inputs: Mapping[str, Any]) -> str:
    start, end = pd.Timestamp(inputs["start"]), pd.Timestamp(inputs["end"])
    synthetic = " [yellow]SYNTHETIC data[/]" if "synthetic" in inputs.get("sources", []) else ""
    return (f"{inputs['timeframe']} bars {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
            f"({inputs['bars']:,} bars, {inputs['calendar']}){synthetic}")


def _kv_table(rows: list[tuple[str, str]], title: str | None = None, head: tuple[str, str] | None = None
              ) -> Table:
    table = Table(title=title, show_header=head is not None, title_justify="left")
    table.add_column(head[0] if head else "", style="bold")
    table.add_column(head[1] if head else "", justify="right" if head else "left")
    for k, v in rows:
        table.add_row(escape(k), escape(v))
    return table


def _costs_text(costs: Mapping[str, Any]) -> str:
    text = f"fees {costs['fees']:g}, slippage {costs['slippage']:g}"
    if costs.get("slippage_vol"):
        text += f" + {costs['slippage_vol']:g} x volatility({costs['vol_window']})"
    return text


def _sizing_text(sizing: Mapping[str, Any], n_symbols: int) -> str:
    kind = sizing["kind"]
    if kind == "fixed":
        fraction = sizing["fraction"] if sizing["fraction"] is not None else 1 / n_symbols
        return f"fixed, {fraction * 100:.4g}% of equity per entry"
    if kind == "risk":
        return f"risk {sizing['risk']:g} of equity to the stop"
    return f"volatility target {sizing['target_vol']:g} (ATR {sizing['atr_window']})"


def _inputs_table(inputs: Mapping[str, Any]) -> Table:
    rows = [
        ("data fingerprint", str(inputs["data_fingerprint"])),
        ("code version", str(inputs["code_version"])),
        ("fill", str(inputs["fill"])),
        ("costs", _costs_text(inputs["costs"])),
        ("sizing", _sizing_text(inputs["sizing"], len(inputs["symbols"]))),
        ("direction", str(inputs["direction"])),
        ("cash / max exposure", f"{inputs['init_cash']:,.0f} / {inputs['max_exposure']:g}"),
        ("annualisation", f"{inputs['periods_per_year']:,.1f} bars a year ({inputs['calendar']})"),
    ]
    return _kv_table(rows, title="inputs")


def _trades_table(result: BacktestResult) -> Table | None:
    trades = result.trades
    if trades.empty:
        return None
    table = Table(title="trades", title_justify="left")
    for name in ("symbol", "closed", "open", "long", "short", "win rate", "pnl", "best", "worst",
                 "avg bars held", "exits"):
        table.add_column(name, justify="left" if name in ("symbol", "exits") else "right")
    groups = [(s, trades[trades["symbol"] == s]) for s in result.symbols]
    if len(result.symbols) > 1:
        groups.append(("all", trades))
    for sym, t in groups:
        if t.empty:
            table.add_row(escape(sym), "0", "0", "0", "0", "", "", "", "", "", "")
            continue
        closed = t[t["status"] == "closed"]
        pnl = closed["pnl"].astype(float)
        exits = closed["exit_reason"].value_counts()
        table.add_row(
            escape(sym), f"{len(closed):,}", f"{int((t['status'] == 'open').sum()):,}",
            f"{int((t['direction'] == 'long').sum()):,}", f"{int((t['direction'] == 'short').sum()):,}",
            fmt_metric("win_rate", (pnl > 0).mean() if len(pnl) else math.nan),
            f"{pnl.sum():,.2f}", fmt_metric("best_trade", closed["return"].max()),
            fmt_metric("worst_trade", closed["return"].min()),
            f"{closed['bars_held'].astype(float).mean():,.1f}" if len(closed) else "",
            ", ".join(f"{k} {v}" for k, v in exits.items()),
        )
    return table


def _per_symbol(path: Path, symbol: str, symbols: list[str]) -> Path:
    if len(symbols) == 1:
        return path
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in symbol)
    return path.with_name(f"{path.stem}_{safe}{path.suffix}")


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a writable folder") from None


def _heatmap_axes(strategy: Strategy, combos: list[dict[str, Any]], x: str | None, y: str | None
                  ) -> tuple[str, str]:
    """The heatmap's parameters: as given, else the first two that vary in the grid."""
    names = strategy.space.names
    for option, name in (("--x", x), ("--y", y)):
        if name is not None and name not in names:
            raise ConfigError(f"{option} {name!r} is not a parameter of {strategy.name}"
                              f"{did_you_mean(name, names)}; it has {', '.join(names)}")
    varying = [n for n in names if len({repr(c[n]) for c in combos}) > 1]
    x = x or next((n for n in varying if n != y), None)
    y = y or next((n for n in varying if n != x), None)
    if x is None or y is None or x == y:
        raise ConfigError("--heatmap needs two different parameters that vary in the grid; sweep at "
                          "least two, or name them with --x and --y")
    return x, y


@app.command("strategies")
def strategies_cmd(
    spec: Annotated[str | None, typer.Argument(
        help="Show one strategy (or a composite spec like regime(macd)) in detail.")] = None,
) -> None:
    """List the strategies (built-ins and ./research): parameters with defaults and ranges."""
    from workbench.strategies.registry import get_strategy, list_strategies

    if spec is not None:
        strat = get_strategy(spec)
        out.print(f"[bold]{escape(strat.name)}[/] ({escape(strat.source)}): {escape(strat.description)}")
        table = Table(title="parameters", title_justify="left")
        for name in ("name", "kind", "default", "range / choices", "grid", "meaning"):
            table.add_column(name, justify="right" if name == "grid" else "left")
        for p in strat.space.params:
            try:
                size = f"{len(p.grid()):,}"
            except WorkbenchError:
                size = "give values"
            table.add_row(*map(escape, (p.name, p.kind, str(p.default), _param_range(p), size, p.doc)))
        out.print(table)
        for c in strat.space.constraints:
            out.print(f"constraint: {c.expr}", markup=False)
        return
    table = Table(title="strategies", show_lines=True, title_justify="left")
    for name in ("strategy", "parameters: default [range step]", "constraints", "description"):
        table.add_column(escape(name))
    for name, strat in sorted(list_strategies().items()):
        params = "\n".join(f"{p.name}={p.default} {_param_range(p)}" for p in strat.space.params)
        constraints = "\n".join(c.expr for c in strat.space.constraints)
        label = name if strat.source == "builtin" else f"{name} ({strat.source})"
        table.add_row(*map(escape, (label, params, constraints, strat.description)))
    out.print(table)
    out.print("composites: regime(<strategy>) gates entries by a market regime; vote(<a>,<b>,...) "
              "is long while most components are")


def _param_range(p: Param) -> str:
    def num(v: float | None) -> str:
        return "" if v is None else (str(int(v)) if float(v).is_integer() else f"{v:g}")

    if p.kind in ("int", "float"):
        step = f" step {num(p.step)}" if p.step else ""
        return f"[{num(p.low)}..{num(p.high)}{step}]"
    if p.kind == "choice":
        return "{" + "|".join(map(str, p.choices)) + "}"
    return "{true|false}"


@app.command("backtest")
def backtest_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    timeframe: TimeframeOpt = "1h",
    params: Annotated[str | None, typer.Option(
        help="Strategy parameters, e.g. fast=10,slow=50 (the rest keep their defaults).")] = None,
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
    html: Annotated[Path | None, typer.Option(
        help="Write the chart (price, trades, equity, drawdown) here; one file per symbol if several.")
    ] = None,
    trades: Annotated[Path | None, typer.Option(help="Write every trade to this .csv or .parquet file.")
                      ] = None,
) -> None:
    """Backtest a strategy on lake bars; several symbols trade as one portfolio with shared cash."""
    from workbench.backtest import backtest, load_bars
    from workbench.backtest.plots import write_html
    from workbench.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    p = strat.params(_pairs(params, "--params", "fast=10,slow=50"))
    cost = _costs(costs)
    size = _sizing(sizing, fraction, risk, target_vol)
    html = _output(html, (".html", ".htm"), "--html")
    trades = _output(trades, (".csv", ".parquet"), "--trades")
    bars = load_bars(_lake(), _split(symbols), timeframe, start, end, source=source)
    with err.status(f"backtesting {strat.name}"):
        result = backtest(strat, bars, p, costs=cost, fill=fill, sizing=size, direction=direction,
                          init_cash=cash, max_exposure=max_exposure, timeframe=timeframe)
    inputs = result.inputs
    what = f"{_fmt_params(p)} on {', '.join(result.symbols)}"
    out.print(f"[bold]{escape(strat.name)}[/] {escape(what)}: {_span(inputs)}", highlight=False)
    rows = [(k, fmt_metric(k, v, na_reason(k, result.metrics))) for k, v in result.metrics.items()]
    out.print(_kv_table(rows, title="metrics", head=("metric", "value")))
    table = _trades_table(result)
    out.print(table if table is not None else "no trades")
    out.print(_inputs_table(inputs))
    if trades is not None:
        _write_table(result.trades, trades)
        out.print(f"wrote {len(result.trades):,} trades to {trades}", markup=False)
    if html is not None:  # several symbols: the portfolio's page, then a price page per symbol
        pages = [(None, html)] if len(result.symbols) > 1 else []
        pages += [(sym, _per_symbol(html, sym, result.symbols)) for sym in result.symbols]
        for sym, path in pages:
            written = write_html(result.figure(sym), path)
            out.print(f"wrote chart {written}", markup=False)


@app.command("sweep")
def sweep_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Write the results table here (.parquet or .csv).")],
    timeframe: TimeframeOpt = "1h",
    grid: Annotated[str | None, typer.Option(
        help="Values per parameter, comma-separated: name=start:stop:step (inclusive; start:stop walks "
        "the parameter's own step) or name=v1|v2|v3; parameters not named keep their default.")] = None,
    grid_all: Annotated[bool, typer.Option(
        "--grid-all", help="Walk the own grid of every parameter not named in --grid or --fixed.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", help="Run a sweep of more than 100,000 runs (combinations x symbols).")] = False,
    fixed: Annotated[str | None, typer.Option(
        help="Parameters held at one value, e.g. short=false.")] = None,
    portfolio: Annotated[bool, typer.Option(
        help="Trade the symbols together with shared cash (default: sweep each symbol on its own).")
    ] = False,
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
    top: Annotated[int, typer.Option(help="Show this many best rows.")] = 10,
    by: Annotated[str, typer.Option(
        help="Rank by this metric, best first (lowest first for annual_volatility, max_drawdown_duration "
        "and turnover); NaN and infinite values (e.g. the Sharpe of a run without trades) are not ranked.")
    ] = "sharpe",
    heatmap: Annotated[Path | None, typer.Option(help="Write a heatmap of --metric over --x and --y "
                                                 "(.html).")] = None,
    x: Annotated[str | None, typer.Option(help="Heatmap x parameter (default: the first varying).")
                 ] = None,
    y: Annotated[str | None, typer.Option(help="Heatmap y parameter (default: the second varying).")
                 ] = None,
    metric: Annotated[str | None, typer.Option(help="Heatmap metric (default: --by).")] = None,
    agg: Annotated[str, typer.Option(
        help="How the heatmap combines rows that share x and y (other parameters, symbols): mean, "
        "median, max or min.")] = "mean",
) -> Any:
    """Sweep a parameter grid on lake bars: every feasible combination, per symbol or as a portfolio."""
    from workbench.backtest import load_bars
    from workbench.backtest.plots import write_html
    from workbench.backtest.sweep import SweepPlan, check_sweep_size, sweep
    from workbench.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    values = parse_grid(grid, strat)
    pinned = parse_fixed(fixed, strat)
    both = sorted(set(values) & set(pinned))
    if both:
        raise ConfigError(f"{', '.join(both)} given in both --grid and --fixed; put each parameter in one")
    syms = _split(symbols)
    # unknown names, bad values, nothing named, too many runs: one error before any work
    check_sweep_size(strat, values, pinned, grid_all=grid_all, units=1 if portfolio else len(syms),
                     confirm_large=yes)
    combos = strat.space.grid(values, pinned, walk_all=grid_all)
    if not combos:
        raise ConfigError(f"the grid of {strat.name} has no feasible combination (constraints "
                          f"{', '.join(c.expr for c in strat.space.constraints)}); widen the ranges")
    if top < 1:
        raise ConfigError(f"--top {top} must be at least 1")
    _check_metric(by, "--by")
    metric = metric or by
    if heatmap is not None:
        _check_metric(metric, "--metric")
        x, y = _heatmap_axes(strat, combos, x, y)
        if agg not in _HEATMAP_AGGS:
            raise ConfigError(f"--agg {agg!r} is unknown{did_you_mean(agg, _HEATMAP_AGGS)}; "
                              f"use one of {', '.join(_HEATMAP_AGGS)}")
    cost = _costs(costs)
    size = _sizing(sizing, fraction, risk, target_vol)
    target = _output(out_path, (".parquet", ".csv"), "--out")
    heat_path = _output(heatmap, (".html", ".htm"), "--heatmap")
    bars = load_bars(_lake(), syms, timeframe, start, end, source=source)
    units = 1 if portfolio else len(syms)
    total = len(combos) * units
    what = f"{len(combos):,} combinations" + (f" x {units} symbols" if units > 1 else "")
    fixed_at = [n for n in strat.space.names if n not in values and n not in pinned] if not grid_all else []

    def announce(plan: SweepPlan) -> None:
        out.print(f"sweeping [bold]{escape(strat.name)}[/]: {what} on {escape(', '.join(syms))}"
                  f"{' as one portfolio' if portfolio else ''}, about {_duration(plan.estimate_s)}"
                  + (f"; at their defaults: {escape(', '.join(fixed_at))} (--grid-all walks them)"
                     if fixed_at else ""), highlight=False)
        prog(label, 0, total)  # the bar appears under the announcement

    with _progress("sweep", hide_on_error=True) as prog:
        label = strat.name
        seen = [0]

        def advance(done: int, _total: int) -> None:
            prog(label, done - seen[0], total)
            seen[0] = done

        result = sweep(strat, bars, values, fixed=pinned, costs=cost, fill=fill, sizing=size,
                       direction=direction, init_cash=cash, max_exposure=max_exposure,
                       portfolio=portfolio, progress=advance, timeframe=timeframe, grid_all=grid_all,
                       confirm_large=yes, on_start=announce)
    result.inputs["sources"] = sorted({str(df.attrs["source"]) for df in bars.values()
                                       if "source" in df.attrs})
    written = result.save(target)
    table = result.table
    t = result.timings
    out.print(f"{len(table):,} runs on {_span(result.inputs)} in {t['total_s']:.2f} s: "
              f"{len(table) / max(t['total_s'], 1e-9):,.0f} combos/s (signals {t['signals_s']:.2f} s, "
              f"simulation {t['kernel_s']:.2f} s)", highlight=False)
    where = ("the inputs are in its metadata" if written.suffix.lower() == ".parquet"
             else "CSV keeps no inputs: use .parquet to record them")
    out.print(f"wrote {written} ({len(table):,} rows; {where})", markup=False)
    best, left_out = rank_rows(table, by, top)
    varying = [p for p in strat.space.names if table[p].nunique() > 1] or strat.space.names
    metrics = [c for c in dict.fromkeys([by, *_TOP_METRICS]) if c in table.columns]
    shown = [*varying, "symbol", *metrics]
    rich_table = Table(title=f"top {len(best)} by {by}", title_justify="left")
    for c in shown:
        rich_table.add_column(c, justify="left" if c == "symbol" else "right")
    for row in best[shown].itertuples(index=False):
        rich_table.add_row(*[fmt_metric(c, v) if c in metrics else escape(str(v))
                             for c, v in zip(shown, row, strict=True)])
    out.print(rich_table)
    if left_out:
        out.print(f"{left_out:,} runs with an undefined {by} (n/a, e.g. no trades) are not ranked")
    if heat_path is not None:
        fig = result.heatmap(x, y, metric=metric, agg=agg)
        out.print(f"wrote heatmap {write_html(fig, heat_path)}", markup=False)
    return result


# ---------------------------------------------------------------------- walk-forward

optimize_app = typer.Typer(help="Walk-forward optimisation with Optuna and overfitting diagnostics.",
                           no_args_is_help=True)
app.add_typer(optimize_app, name="optimize")
from workbench.promote.cli import promote_app  # noqa: E402

app.add_typer(promote_app, name="promote")
from workbench.paper.cli import paper_app  # noqa: E402

app.add_typer(paper_app, name="paper")
from workbench.reports.cli import report_app  # noqa: E402

app.add_typer(report_app, name="report")
from workbench.pipelines.cli import pipeline_app, schedule_cmd  # noqa: E402

app.add_typer(pipeline_app, name="pipeline")
app.command("schedule")(schedule_cmd)
StorageOpt = Annotated[str | None, typer.Option(
    help="Optuna storage: a journal file path (default data/optimize/<run>.journal), sqlite:///path.db "
    "or postgresql://user@host:port/db (workers on several machines).")]


def _window(text: str | None, option: str) -> int | str | None:
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    if not t or not t[0].isdigit():
        raise ConfigError(f"{option} {text!r} must be a number of bars (e.g. 2000) or a duration (e.g. 90d)")
    return t


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
    html: Annotated[Path | None, typer.Option(help="Write the OOS equity chart here (.html).")] = None,
) -> Any:
    """Walk-forward optimise a strategy on lake bars; resumable, shareable with other workers."""
    from workbench.backtest import load_bars
    from workbench.optimize import Objective, WalkForward, walk_forward
    from workbench.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    pinned = parse_fixed(fixed, strat)
    splitter = WalkForward(n_folds=folds, train=_window(train, "--train"), test=_window(test, "--test"),
                           purge=_window(purge, "--purge") or 0, anchored=anchored)
    cost = _costs(costs)
    size = _sizing(sizing, fraction, risk, target_vol)
    html_path = _output(html, (".html", ".htm"), "--html")
    obj = Objective(metric=objective, min_trades=min_trades, dd_penalty=dd_penalty)
    bars = load_bars(_lake(), _split(symbols), timeframe, start, end, source=source)
    with _progress("fold", hide_on_error=True) as prog:
        seen: dict[int, int] = {}

        def advance(fold: int, done: int, total: int) -> None:
            prog(str(fold), done - seen.get(fold, 0), total)
            seen[fold] = done

        result = walk_forward(strat, bars, splitter=splitter, n_trials=trials, objective=obj, seed=seed,
                              sampler=sampler, pruner=pruner, timeout=timeout, fixed=pinned, workers=workers,
                              storage=storage, name=name, costs=cost, fill=fill, sizing=size,
                              direction=direction, init_cash=cash, max_exposure=max_exposure,
                              portfolio=portfolio, timeframe=timeframe, progress=advance)
    _show_run(result)
    if html_path is not None:
        from workbench.backtest.plots import write_html

        out.print(f"wrote chart {write_html(result.figure(), html_path)}", markup=False)
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
    m = d["oos_metrics"]
    b = d["benchmark"]
    rows = [("OOS total return", f"{fmt_metric('total_return', m['total_return'])} (buy & hold "
             f"{fmt_metric('total_return', b['benchmark_return'])})"),
            ("OOS Sharpe", f"{m['sharpe']:.3f} (p = {d['sharpe_test']['p_value']:.3f} that it is <= 0)"
             if math.isfinite(m["sharpe"]) else fmt_metric("sharpe", m["sharpe"], na_reason("sharpe", m))),
            ("OOS max drawdown", fmt_metric("max_drawdown", m["max_drawdown"])),
            ("OOS trades", str(int(m["n_trades"]))),
            ("walk-forward efficiency", f"{d['walk_forward_efficiency']:.2f}"),
            ("deflated Sharpe ratio", f"{d['deflated_sharpe']['dsr']:.3f} ({d['n_trials']} trials)"),
            ("PBO (CSCV, mean of folds)", f"{d['pbo']['mean']:.2f}")]
    mc = d["monte_carlo"].get("bootstrap")
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
    from workbench.optimize import list_runs

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

    html_path = _output(html, (".html", ".htm"), "--html")
    result = load_run(run_id)
    _show_run(result)
    if html_path is not None:
        from workbench.backtest.plots import write_html

        out.print(f"wrote chart {write_html(result.figure(), html_path)}", markup=False)


# ---------------------------------------------------------------------- the main job
DEMO_REPORTS = Path("reports") / "demo"


@app.command("demo")
def demo() -> None:
    """The main job on embedded SYNTHETIC data: lake, backtest, sweep, walk-forward, promotion, paper replay.

    Writes its charts, sweep table, heatmap and parity report under ./reports/demo.
    """
    data_demo(seed=7)
    data_ls(None, None, None, False)
    out.rule("backtest: sma_cross on BTC/USDT 1h, next-open fills, default costs")
    backtest_cmd(strategy="sma_cross", symbols="BTC/USDT", timeframe="1h", fill="next_open",
                 html=DEMO_REPORTS / "backtest_sma_cross.html")
    out.rule("sweep: sma_cross on BTC/USDT, ETH/USDT, SOL/USDT 1h")
    sweep_cmd(strategy="sma_cross", symbols="BTC/USDT,ETH/USDT,SOL/USDT", timeframe="1h",
              grid="fast=5:50:5,slow=20:200:20", fixed="short=false",
              out_path=DEMO_REPORTS / "sweep_sma_cross.parquet", top=5, by="sharpe",
              heatmap=DEMO_REPORTS / "sweep_sma_cross_heatmap.html", x="fast", y="slow", metric="sharpe")
    out.rule("walk-forward: sma_cross on BTC/USDT 1h, 6 rolling folds x 40 Optuna trials")
    walk_forward_cmd(strategy="sma_cross", symbols="BTC/USDT", timeframe="1h", folds=6, trials=40, workers=1,
                     min_trades=3, fixed="short=false", seed=7, purge="0",
                     start="2025-01-01", end="2026-01-01",  # 2025 only: a paper run may have grown the lake
                     html=DEMO_REPORTS / "walk_forward_sma_cross.html")
    ref = _demo_promote()
    out.rule(f"paper replay of {ref}: Jul-Dec 2025, simulated clock, sim broker, parity with the backtest")
    from workbench.paper.cli import paper_replay

    replays = _lake().root / "paper" / "replay"  # kept: the paper monitor notebook reads its journal
    parity = DEMO_REPORTS / "paper_replay_parity.html"
    [replayed] = paper_replay(artifact=ref, start="2025-07-01", end="2025-12-31", journal=replays,
                              window="anchored", capital=None, report=parity)
    out.print(f"parity report: {DEMO_REPORTS / 'paper_replay_parity.html'}")
    from workbench.promote import load_artifact
    from workbench.reports import run_report

    artifact = load_artifact(ref)
    out.rule(f"research report: notebooks/research_report.ipynb on {artifact.run_id} (papermill)")
    res = run_report("research_report", {"run_id": artifact.run_id, "artifact": artifact.ref,
                                         "journal": str(replayed.journal_path)}, out=Path("reports"))
    m = res.manifest
    out.print(f"research report {m['status']} in {m['duration_s']:.1f} s (data, strategy, walk-forward, "
              f"promotion, paper): {res.html.resolve() if res.html else res.folder}", highlight=False)


def _demo_promote() -> str:
    """Promote the demo's walk-forward run through the shipped gates, or force it with a recorded reason."""
    from workbench.errors import PromotionRejected
    from workbench.optimize import list_runs
    from workbench.promote.cli import _registry, _verdict_table
    from workbench.promote.promotion import promote

    lake = _lake()
    runs = list_runs(lake.root / "runs")
    run_id = str(runs[runs["strategy"] == "sma_cross"].sort_values("written")["run_id"].iloc[-1])
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


def _crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file; returns it (None if nowhere is writable)."""
    import time
    import traceback

    from workbench.config import data_dir

    text = "".join(traceback.format_exception(exc))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (data_dir(_State.data_dir) / "logs", Path(tempfile.gettempdir()) / "workbench-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(f"workbench {__version__}: {' '.join(sys.argv)}\n{text}")
            return path
        except OSError:
            continue
    return None


def _one_line(exc: BaseException) -> str:
    """The line printed for an error that is not a WorkbenchError."""
    if isinstance(exc, OSError) and exc.strerror:
        # unwritable/missing paths (--data-dir, --out, export targets) and full disks
        where = f" {exc.filename}" if exc.filename else ""
        why = ("a file is in the way of a folder" if isinstance(exc, FileExistsError | NotADirectoryError)
               else exc.strerror)
        return f"cannot use{where}: {why}; choose a path you can write (or free space) and run again"
    log = _crash_log(exc)
    where = f"the traceback is in {log}" if log else "no log could be written"
    return (f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}; {where} "
            "(run again with --debug to see it, and report it)")


def _handle(exc: BaseException) -> int:
    """Last resort of the CLI: one line on stderr and the exit code (KeyboardInterrupt: see item 11)."""
    if isinstance(exc, WorkbenchError):
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    if _State.debug:
        raise exc
    err.print(f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True)
    return 1


def main() -> None:
    """Entry point: run the app; any error ends as one line and a non-zero exit (`--debug`: traceback)."""
    _State.debug = "--debug" in sys.argv[1:]
    try:
        app()
    except KeyboardInterrupt:  # outside a command (typer turns one inside into SystemExit(130))
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130 and isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):
            _interrupted()
        raise
    except Exception as exc:  # the CLI's last resort: no traceback reaches a user
        sys.exit(_handle(exc))


def _interrupted() -> None:
    """Ctrl-C: one line on what was kept, exit 130 (the shell's code for SIGINT)."""
    err.print("interrupted: nothing is half-written (files are replaced whole); bars synced, walk-forward "
              "trials and paper orders journalled so far are kept and the same command resumes from them "
              "(a backtest or sweep starts over)", highlight=False, soft_wrap=True)
    sys.exit(130)


__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
