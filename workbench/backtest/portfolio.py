"""A portfolio of target weights run end to end: its targets from one of a weight strategy, an allocator on
a calendar schedule or a table of weights the user wrote, traded by `simulate_weights`, and measured like a
signal backtest (the same `compute_metrics` on its equity, against equal-weight buy and hold).

`backtest_portfolio` is what `workbench portfolio` runs (through `PortfolioJob`, which checks the command's
options before any bar is read); a notebook calls it the same way. A table of weights (`read_weight_table`)
sets, at each of its rows' times, the targets in force from the close of the first bar at or after that
time (traded like any target: at the next open with `next_open`, at that close with `close`); an empty
cell sets no new target for that symbol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.allocators import Allocator
from workbench.backtest.benchmark import benchmark_equity
from workbench.backtest.engine import (
    Costs,
    Execution,
    Fill,
    Lot,
    Timeline,
    fingerprint,
    resolve_annualisation,
)
from workbench.backtest.holdings import book_benchmark, held_weights, rebalance_metrics
from workbench.backtest.metrics import BENCHMARK_KEYS
from workbench.backtest.portfolio_risk import RiskLimits
from workbench.backtest.rebalance import (
    RebalanceResult,
    allocate,
    check_weight_settings,
    check_workers,
    simulate_weights,
)
from workbench.backtest.weight_strategies import find_weight_strategy
from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.strategies.weights import SCHEDULES, WeightStrategy
from workbench.version import code_version

TIME_COLUMNS = ("ts", "time", "date")
# the metrics of a signal backtest that apply to a rebalanced book: it has orders, not round trips, so
# the trade statistics (win rate, profit factor, ...) do not
PORTFOLIO_METRICS = ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar",
                     "max_drawdown", "max_drawdown_duration", "max_drawdown_days", "exposure",
                     "avg_gross_exposure", "turnover", "benchmark_return", "excess_return", *BENCHMARK_KEYS)


@dataclass
class PortfolioResult:
    """A target-weight portfolio's equity (union timeline), its buy-and-hold benchmark, gross exposure
    per bar, orders, the targets it was given (union rows that set one), metrics and inputs."""

    equity: pd.Series
    benchmark: pd.Series
    gross_exposure: pd.Series
    orders: pd.DataFrame
    targets: pd.DataFrame
    metrics: dict[str, float]
    inputs: dict[str, Any] = field(default_factory=dict)
    # an allocator's: per rebalance, the risk limits' report and each asset's risk contribution
    risk_report: pd.DataFrame | None = None
    contributions: pd.DataFrame | None = None

    @property
    def rebalances(self) -> int:
        """Bars that set new targets (drift re-applications not counted: see `bars_traded`)."""
        return len(self.targets)

    @property
    def bars_traded(self) -> int:
        """Bars on which at least one order filled."""
        return int(self.orders["time"].nunique())

    # the reading side of a signal backtest's `BacktestResult`, for the notebooks and reports that show
    # either kind of promoted strategy
    @property
    def params(self) -> dict[str, Any]:
        """The weight strategy's parameters (empty for an allocator or a table)."""
        return dict(self.inputs.get("params") or {})

    @property
    def trades(self) -> pd.DataFrame:
        """The book's round trips (`weight_trades`: a position from 0 back to 0), open ones marked at the
        last close."""
        from workbench.backtest.weight_strategies import weight_trades

        return weight_trades(self.orders, self.inputs.get("last_close"))

    def metrics_frame(self, formatted: bool = False) -> pd.DataFrame:
        """The metrics as a two-column table (`formatted`: as text people read, e.g. 12.34%)."""
        from workbench.backtest.metrics import metrics_frame

        return metrics_frame(self.metrics, formatted)

    def figure(self) -> Any:
        """The book's equity against its benchmark, and its drawdown (plotly)."""
        from workbench.backtest.plots import portfolio_figure

        return portfolio_figure(self.equity, self.benchmark,
                                title=f"{self.inputs.get('strategy', 'portfolio')} of "
                                      f"{', '.join(self.inputs.get('symbols', []))}")


# ---------------------------------------------------------------------------------------- weight tables
def read_weight_table(path: str | Path) -> pd.DataFrame:
    """A table of target weights from .csv or .parquet: wide (a ts/time/date column and one column of
    weights per symbol) or long (time, symbol and weight columns). Returns one row per time (UTC, sorted)
    and one column per symbol; NaN where a row sets no target for a symbol."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"weights file {path} must end in .csv or .parquet")
    if not path.is_file():
        raise ConfigError(f"no weights file {str(path)!r}: check the path")
    try:
        raw = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise DataError(f"cannot read weights file {path.name} ({why}): write a .csv or .parquet table "
                        "with a date column and one column of weights per symbol") from None
    table = weight_table(raw, path.name)
    table.attrs["name"] = path.name
    return table


def weight_table(raw: pd.DataFrame, name: str = "the weights table") -> pd.DataFrame:
    """`read_weight_table`'s checks and shape on a frame already in memory (wide or long)."""
    cols = [str(c) for c in raw.columns]
    raw = raw.set_axis(cols, axis=1)
    when = next((c for c in TIME_COLUMNS if c in cols), None)
    if when is None:
        raise DataError(f"{name} has no time column (one of {', '.join(TIME_COLUMNS)}); it has "
                        f"{', '.join(cols[:8]) or 'no columns'}: name the column of dates 'date'")
    times = pd.to_datetime(raw[when], utc=True, errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        first = raw[when].iloc[int(np.flatnonzero(bad)[0])]
        raise DataError(f"{name}: {when} {first!r} is not a date or time: write e.g. 2025-03-03")
    if {"symbol", "weight"} <= set(cols):  # long: one row per (time, symbol)
        extra = sorted(set(cols) - {when, "symbol", "weight"})
        if extra:
            raise DataError(f"{name} is a long table (symbol, weight) with other columns {extra}: drop them")
        long = pd.DataFrame({"time": times, "symbol": raw["symbol"].astype(str),
                             "weight": pd.to_numeric(raw["weight"], errors="coerce")})
        twice = long.duplicated(["time", "symbol"])
        if twice.any():
            row = long[twice].iloc[0]
            raise DataError(f"{name} gives {row['symbol']} two weights at {row['time']}: keep one")
        _check_numbers(long["weight"], raw["weight"], name, long["time"])
        table = long.pivot(index="time", columns="symbol", values="weight")
    else:
        values = raw.drop(columns=[when])
        if values.empty or not len(values.columns):
            raise DataError(f"{name} has no column of weights: one column per symbol, named by it")
        table = values.apply(pd.to_numeric, errors="coerce")
        for c in table.columns:
            _check_numbers(table[c], values[c], name, times, c)
        table.index = pd.DatetimeIndex(times, name="time")
        twice = table.index.duplicated()
        if twice.any():
            raise DataError(f"{name} has two rows at {table.index[twice][0]}: keep one")
    table = table.sort_index().dropna(how="all")
    if table.empty:
        raise DataError(f"{name} holds no weight: one row per rebalance date, one weight per symbol")
    table.columns = [str(c) for c in table.columns]
    return table


def _check_numbers(num: pd.Series, raw: pd.Series, name: str, times: pd.Series, column: str = "") -> None:
    """A cell that is given but not a finite number is an error naming it."""
    given = raw.notna().to_numpy() & ~(raw.astype(str).str.strip() == "").to_numpy()
    bad = given & ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        where = f"{column} at {times.iloc[k]}" if column else f"row {k + 1} ({times.iloc[k]})"
        raise DataError(f"{name}: the weight of {where} is {raw.iloc[k]!r}, not a finite number")


def check_table(table: pd.DataFrame, symbols: list[str], *, max_exposure: float = 1.0,
                name: str | None = None) -> pd.DataFrame:
    """A table of weights (`weight_table`'s shape) checked against the symbols traded (every column one
    of them and the other way round) and `max_exposure` (the targets in force after each row, its empty
    cells keeping the previous ones, hold at most that much of equity); returns it in symbol order."""
    name = name or table.attrs.get("name") or "the weights table"
    unknown = [c for c in table.columns if c not in symbols]
    if unknown:
        raise ConfigError(f"{name} has weights for {unknown[0]!r}{did_you_mean(unknown[0], symbols)}, which "
                          f"is not among the symbols {', '.join(symbols)}: add it to the symbols or drop "
                          "its column")
    absent = [s for s in symbols if s not in table.columns]
    if absent:
        raise ConfigError(f"{name} has no weights for {', '.join(absent)}: add a column for each symbol "
                          "traded, or leave them out of the symbols")
    table = table[symbols]
    held = table.ffill().fillna(0.0).abs().sum(axis=1)
    over = np.flatnonzero(held.to_numpy() > max_exposure + 1e-9)
    if over.size:
        k = int(over[0])
        raise DataError(f"{name}: the weights in force at {_when(table.index[k])} sum to {held.iloc[k]:.4g} "
                        f"of equity, more than max_exposure={max_exposure:g}: scale that row down (sum of "
                        "absolute weights) or raise max_exposure (--max-exposure)")
    return table


def table_targets(frames: Mapping[str, pd.DataFrame], table: pd.DataFrame, *, max_exposure: float = 1.0,
                  name: str | None = None) -> dict[str, pd.Series]:
    """Each symbol's targets on its own bars (as `simulate_weights` takes them) from a table of weights
    (`check_table`'s checks): a row at time t sets its targets at the first bar of the union timeline at
    or after t; a row before the first bar or after the last, or two rows on one bar, is an error."""
    symbols = list(frames)
    name = name or table.attrs.get("name") or "the weights table"
    table = check_table(table, symbols, max_exposure=max_exposure, name=name)
    index = Timeline(frames, symbols).index
    rows = index.searchsorted(table.index, side="left")
    before = np.flatnonzero(table.index < index[0])
    if before.size:
        raise DataError(f"{name} has a row at {_when(table.index[before[0]])}, before the first bar "
                        f"{_when(index[0])}: drop the rows before it or load earlier bars (--start)")
    after = np.flatnonzero(rows >= len(index))
    if after.size:
        raise DataError(f"{name} has a row at {_when(table.index[after[0]])}, after the last bar "
                        f"{_when(index[-1])}: drop the rows after it or load later bars (--end)")
    same = np.flatnonzero(np.diff(rows) == 0)
    if same.size:
        k = int(same[0])
        raise DataError(f"{name}: the rows at {_when(table.index[k])} and {_when(table.index[k + 1])} both "
                        f"fall on the bar {_when(index[rows[k]])}: keep one (or use a finer timeframe)")
    values = np.full((len(index), len(symbols)), np.nan)
    values[rows] = table.to_numpy(dtype=float)
    from workbench.strategies.weights import own_targets

    return own_targets(frames, index, values)


def _when(t: pd.Timestamp) -> str:
    t = pd.Timestamp(t)
    return f"{t:%Y-%m-%d}" if t == t.normalize() else f"{t:%Y-%m-%d %H:%M} UTC"


# ---------------------------------------------------------------------------------------- the run
def backtest_portfolio(frames: Mapping[str, pd.DataFrame], *, strategy: str | WeightStrategy | None = None,
                       params: Mapping[str, Any] | None = None, allocator: Allocator | None = None,
                       every: str | None = None, weights: pd.DataFrame | None = None,
                       costs: Costs | None = None, fill: Fill | str = Fill.NEXT_OPEN,
                       init_cash: float = 100_000.0, max_exposure: float = 1.0,
                       lots: Lot | Mapping[str, Lot] | None = None, drift: float | None = None,
                       timeframe: str | None = None, progress: Any = None, risk: RiskLimits | None = None,
                       benchmark: str | pd.DataFrame | pd.Series | None = None, workers: int = 1
                       ) -> PortfolioResult:
    """Backtest a portfolio whose targets come from exactly one of a weight `strategy` (with `params`;
    `every` sets its schedule parameter), an `allocator` refitted on the schedule `every` (default
    monthly), or a `weights` table (`read_weight_table`). Returns its equity, benchmark, orders and the
    signal backtest's metrics that apply to it (no trade statistics: a rebalanced book has no round
    trips). `progress(done, total)` after each allocator fit. `risk`: the allocator's limits at each
    rebalance (`RiskLimits`; its report is kept); `benchmark`: a symbol of `frames`, a bar frame or a price
    series the metrics measure alpha, beta, tracking error and IR against (default: equal-weight buy and
    hold of the symbols). `workers` > 1 fits the allocator's rebalances in that many processes."""
    given = [n for n, v in (("strategy", strategy), ("allocator", allocator), ("weights", weights))
             if v is not None]
    costs = costs or Costs()
    fill = check_weight_settings(costs, fill, drift)
    if len(given) != 1:
        raise ConfigError("give one source of target weights: a weight strategy, an allocator or a table of "
                          f"weights (got {' and '.join(given) or 'none'})")
    if every is not None and every not in SCHEDULES:
        raise ConfigError(f"unknown rebalance schedule {every!r}{did_you_mean(every, SCHEDULES)}; choose "
                          f"one of {', '.join(SCHEDULES)}")
    if params and strategy is None:
        raise ConfigError("params apply to a weight strategy; an allocator takes its settings, a table its "
                          "weights: drop params")
    if every is not None and weights is not None:
        raise ConfigError("a table of weights rebalances at its own rows' dates (a schedule would have no "
                          "effect): drop every")
    if allocator is not None and allocator.gross > max_exposure + 1e-12:
        raise ConfigError(f"allocator gross={allocator.gross:g} is more than max_exposure={max_exposure:g}: "
                          f"raise max_exposure to {allocator.gross:g} or lower gross")
    if not frames:
        raise DataError("a portfolio needs at least one symbol's bars")
    if workers != 1 and allocator is None:
        source_name = "a weight strategy" if strategy is not None else "a table of weights"
        raise ConfigError(f"workers={workers!r} fits an allocator's rebalances in processes ({source_name} "
                          "has none to fit): drop workers, or use an allocator")
    if risk is not None and allocator is None:
        raise ConfigError("risk limits act on an allocator's weights at its rebalances (a strategy or a "
                          "table sets its own): drop them, or use an allocator")
    source: dict[str, Any]
    allocation = None
    if strategy is not None:
        strat = find_weight_strategy(strategy) if isinstance(strategy, str) else strategy
        values = dict(params or {})
        if every is not None:
            if "every" in values:
                raise ConfigError("the schedule is given twice (every in params and as every): keep one")
            values["every"] = every
        p = strat.params(values)
        targets = strat.targets(frames, p)
        source = {"strategy": strat.name, "params": dict(p)}
    elif allocator is not None:
        schedule = every or "monthly"
        allocation = allocate(frames, allocator, every=schedule, risk=risk, progress=progress,
                              workers=workers)
        targets = allocation.targets
        source = {"strategy": f"allocator:{allocator.method}", "every": schedule,
                  "allocator": _allocator_dict(allocator)}
        if risk is not None:
            source["risk"] = {k: v for k, v in asdict(risk).items() if v is not None}
    else:
        assert weights is not None
        targets = table_targets(frames, weights, max_exposure=max_exposure)
        source = {"strategy": "weights table", "rows": len(weights)}
    res = simulate_weights(frames, targets, costs=costs, fill=fill, init_cash=init_cash,
                           max_exposure=max_exposure, lots=lots, drift=drift)
    bench = None if benchmark is None else benchmark_equity(res.equity, benchmark, init_cash=float(init_cash),
                                                            frames=frames)
    if isinstance(benchmark, str):
        source["benchmark"] = benchmark
    result = _measure(frames, res, targets, source, costs, timeframe, bench)
    if allocation is not None:
        result.risk_report, result.contributions = allocation.report, allocation.contributions
    return result


def _allocator_dict(a: Allocator) -> dict[str, Any]:
    """The allocator's method, window and the settings it was given (the others at their defaults)."""
    from dataclasses import asdict

    default = asdict(Allocator())
    return {k: v for k, v in asdict(a).items() if k in ("method", "window") or v != default[k]}


def _measure(frames: Mapping[str, pd.DataFrame], res: RebalanceResult, targets: Mapping[str, pd.Series],
             source: dict[str, Any], costs: Costs, timeframe: str | None,
             benchmark: pd.Series | None) -> PortfolioResult:
    """The metrics of a signal backtest that apply to a rebalanced book, and its inputs."""
    tl = Timeline(frames, list(frames))
    timeframe, calendar, ppy = resolve_annualisation(frames, timeframe, None, None)
    gross = held_weights(res, frames).abs().sum(axis=1, min_count=1)
    bench = benchmark if benchmark is not None else book_benchmark(res, frames, costs)
    every = rebalance_metrics(res, frames, timeframe=timeframe, calendar=calendar, costs=costs,
                              benchmark=bench)
    metrics = {k: every[k] for k in PORTFOLIO_METRICS}
    table = _union_targets(tl, targets)
    inputs = {
        **source,
        **res.inputs,
        "timeframe": timeframe, "calendar": calendar, "periods_per_year": ppy,
        "start": tl.index[0].isoformat(), "end": tl.index[-1].isoformat(), "bars": tl.n,
        "data_fingerprint": fingerprint(frames),
        "last_close": {s: float(f["close"].iloc[-1]) for s, f in frames.items() if len(f)},
        "sources": sorted({str(df.attrs["source"]) for df in frames.values() if "source" in df.attrs}),
        "code_version": code_version(),
    }
    return PortfolioResult(equity=res.equity, benchmark=bench,
                           gross_exposure=gross.rename("gross_exposure"),
                           orders=res.orders, targets=table, metrics=metrics, inputs=inputs)


def _union_targets(tl: Timeline, per_symbol: Mapping[str, pd.Series]) -> pd.DataFrame:
    """The targets set, one row per union bar where some symbol's own bar set one (NaN: none set)."""
    out = np.full((tl.n, len(tl.symbols)), np.nan)
    for j, s in enumerate(tl.symbols):
        own = per_symbol[s].reindex(tl.frames[s].index).to_numpy(dtype=float)
        out[tl.rows[s], j] = own
    frame = pd.DataFrame(out, index=tl.index, columns=tl.symbols)
    return frame[~np.isnan(out).all(axis=1)]


# ---------------------------------------------------------------------------------------- the command's job
# the options of a signal backtest that a target-weight portfolio has no use for: refused by name
_SIGNAL_ONLY = {
    "--sizing": "a portfolio's positions are its target weights",
    "--fraction": "a portfolio's positions are its target weights",
    "--risk": "a portfolio holds no stops to risk to",
    "--target-vol": "a portfolio's positions are its target weights (an allocator such as inverse_vol or "
                    "risk_parity weighs by volatility)",
    "--direction": "a target's sign says long or short",
}
_ALLOCATOR_OPTIONS = ("--window", "--min-history", "--max-weight", "--gross", "--max-turnover",
                      "--covariance")


@dataclass(frozen=True)
class PortfolioJob:
    """A portfolio as `workbench portfolio` asked for it, every option checked (`from_options` fails
    before any bar is read); `load` reads its bars and `run` backtests it."""

    symbols: list[str]
    strategy: WeightStrategy | None
    params: dict[str, Any] | None
    allocator: Allocator | None
    every: str | None
    table: pd.DataFrame | None
    weights: Path | None
    timeframe: str
    start: str | None
    end: str | None
    source: str | None
    execution: Execution  # fill, costs, cash, max exposure, lots (sizing and direction unused)
    drift: float | None
    orders: Path | None
    html: Path | None
    risk: RiskLimits | None = None
    benchmark: str | None = None
    workers: int = 1

    @classmethod
    def from_options(
        cls, *, symbols: str | None = None, strategy: str | None = None, params: str | None = None,
        allocator: str | None = None, weights: Path | None = None, every: str | None = None,
        window: int | None = None, min_history: int | None = None, max_weight: float | None = None,
        gross: float | None = None, max_turnover: float | None = None, covariance: str | None = None,
        drift: float | None = None, timeframe: str = "1d", start: str | None = None, end: str | None = None,
        source: str | None = None, costs: str | None = None, fill: str = "next_open",
        cash: float = 100_000.0, max_exposure: float = 1.0, lots: str | None = None,
        orders: Path | None = None, html: Path | None = None, vol_target: float | None = None,
        corr_cap: float | None = None, var_limit: float | None = None, cvar_limit: float | None = None,
        benchmark: str | None = None, workers: int = 1, **signal_only: Any,
    ) -> PortfolioJob:
        """Check every option of `workbench portfolio` (same names and defaults; `signal_only` holds the
        signal backtest's sizing, fraction, risk, target_vol and direction, refused when given)."""
        from workbench.backtest.options import check_output, parse_execution
        from workbench.config import split_list
        from workbench.strategies.grid import parse_pairs

        for key, value in signal_only.items():
            option = "--" + key.replace("_", "-")
            if option not in _SIGNAL_ONLY:
                raise TypeError(f"unknown option {key}")
            if value is not None:
                raise ConfigError(f"{option} applies to signal strategies (`workbench backtest`); "
                                  f"{_SIGNAL_ONLY[option]}: drop {option}")
        given = [o for o, v in (("--strategy", strategy), ("--allocator", allocator), ("--weights", weights))
                 if v is not None]
        if len(given) != 1:
            raise ConfigError("give one source of target weights: --strategy <weight strategy>, --allocator "
                              f"<method> or --weights <file> (got {' and '.join(given) or 'none'})")
        alloc_values: dict[str, Any] = dict(zip(
            _ALLOCATOR_OPTIONS, (window, min_history, max_weight, gross, max_turnover, covariance),
            strict=True))
        if allocator is None:
            for option, value in alloc_values.items():
                if value is not None:
                    raise ConfigError(f"{option} applies to --allocator (a {given[0][2:]} sets its own "
                                      f"weights): drop {option} or use --allocator")
        if params is not None and strategy is None:
            raise ConfigError(f"--params applies to --strategy; {given[0]} takes none: drop --params")
        limits = {"vol_target": vol_target, "corr_cap": corr_cap, "var_limit": var_limit,
                  "cvar_limit": cvar_limit}
        risk = None
        if any(v is not None for v in limits.values()):
            if allocator is None:
                named = ", ".join("--" + k.replace("_", "-") for k, v in limits.items() if v is not None)
                raise ConfigError(f"{named} act on an allocator's weights at its rebalances (a "
                                  f"{given[0][2:]} sets its own): drop them or use --allocator")
            risk = RiskLimits(vol_target=vol_target, corr_cap=corr_cap, var_limit=var_limit,
                              cvar_limit=cvar_limit)
        if workers != 1 and allocator is None:
            raise ConfigError(f"--workers fits an allocator's rebalances in processes ({given[0]} has none "
                              "to fit): drop --workers, or use --allocator")
        if every is not None and weights is not None:
            raise ConfigError("--every has no effect with --weights (the table's rows are its rebalance "
                              "dates): drop --every")
        strat, p, alloc, table = None, None, None, None
        if strategy is not None:
            strat = find_weight_strategy(strategy)
            values: dict[str, Any] = dict(parse_pairs(params, "--params", "lookback=63,top=2"))
            if every is not None and "every" in values:
                raise ConfigError("the schedule is given twice (--every and every= in --params): keep one")
            p = strat.params({**values, **({"every": every} if every is not None else {})})
        elif allocator is not None:
            if every is not None and every not in SCHEDULES:
                raise ConfigError(f"unknown rebalance schedule {every!r}{did_you_mean(every, SCHEDULES)}; "
                                  f"choose one of {', '.join(SCHEDULES)}")
            settings = {k[2:].replace("-", "_"): v for k, v in alloc_values.items() if v is not None}
            alloc = Allocator(method=allocator, **settings)
            check_workers(workers, alloc)
            if alloc.gross > max_exposure + 1e-12:
                raise ConfigError(f"--gross {alloc.gross:g} is more than --max-exposure {max_exposure:g}: "
                                  f"raise --max-exposure to {alloc.gross:g} or lower --gross")
        else:
            assert weights is not None
            table = read_weight_table(weights)
        syms = split_list(symbols) if symbols else (list(table.columns) if table is not None else [])
        if not syms:
            raise ConfigError("--symbols is required with --strategy and --allocator, e.g. --symbols "
                              "AAPL,MSFT,SPY")
        execution = parse_execution(symbols=syms, costs=costs, fill=fill, cash=cash,
                                    max_exposure=max_exposure, lots=lots)
        check_weight_settings(execution.costs, execution.fill, drift)
        if table is not None:  # what needs no bars: its symbols and its sums
            check_table(table, syms, max_exposure=max_exposure)
        return cls(symbols=syms, strategy=strat, params=p, allocator=alloc,
                   every=every if alloc is not None else None, table=table,
                   weights=Path(weights) if weights is not None else None, timeframe=timeframe, start=start,
                   end=end, source=source, execution=execution, drift=drift,
                   orders=check_output(orders, (".csv", ".parquet"), "--orders"),
                   html=check_output(html, (".html", ".htm"), "--html"), risk=risk,
                   benchmark=benchmark.strip() if benchmark else None, workers=workers)

    @property
    def label(self) -> str:
        """What sets the targets, in a few words."""
        if self.strategy is not None:
            return self.strategy.name
        if self.allocator is not None:
            return f"{self.allocator.method} allocator"
        return f"weights from {self.weights}"

    def load(self, lake: Any) -> dict[str, pd.DataFrame]:
        """The job's bars from the lake (a benchmark symbol outside the book's: under ``benchmark:``)."""
        from workbench.backtest.engine import load_bars

        bars = dict(load_bars(lake, self.symbols, self.timeframe, self.start, self.end, source=self.source,
                              costs=self.execution.costs, fill=self.execution.fill))
        if self.benchmark is not None and self.benchmark not in bars:
            [frame] = load_bars(lake, [self.benchmark], self.timeframe, self.start, self.end,
                                source=self.source).values()
            bars[f"benchmark:{self.benchmark}"] = frame
        return bars

    def run(self, bars: Mapping[str, pd.DataFrame], progress: Any = None) -> PortfolioResult:
        """Backtest the portfolio on `bars` (`progress(done, total)` after each allocator fit)."""
        ex = self.execution
        book = {s: f for s, f in bars.items() if not s.startswith("benchmark:")}
        bench: str | pd.DataFrame | None = self.benchmark
        if self.benchmark is not None and self.benchmark not in book:
            bench = bars[f"benchmark:{self.benchmark}"]
        return backtest_portfolio(book, strategy=self.strategy, params=self.params, allocator=self.allocator,
                                  every=self.every, weights=self.table, costs=ex.costs, fill=ex.fill,
                                  init_cash=ex.init_cash, max_exposure=ex.max_exposure, lots=ex.lots,
                                  drift=self.drift, timeframe=self.timeframe, progress=progress,
                                  risk=self.risk, benchmark=bench, workers=self.workers)


__all__ = ["PORTFOLIO_METRICS", "PortfolioJob", "PortfolioResult", "backtest_portfolio", "check_table",
           "read_weight_table", "table_targets", "weight_table"]
