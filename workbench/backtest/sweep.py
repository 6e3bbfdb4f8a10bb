"""Parameter sweeps: every feasible combination of a strategy's grid, evaluated at the array level.

Combinations run on threads: each computes its signals with the strategy's own function (indicators
memoized across combinations), then runs the same simulation kernel as `backtest` on them, computing
only the metrics and never building a Portfolio. The kernel releases the GIL, so one thread simulates
while another computes signals, and each combination's arrays are simulated while they are still in
its core's cache. Work proceeds in chunks with progress. The metrics of any row equal those of
`backtest(...)` with the same inputs.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from workbench.backtest import kernels
from workbench.backtest.engine import (
    Costs,
    Direction,
    Execution,
    Fill,
    Lot,
    Sizing,
    Timeline,
    _compact,
    as_bar_dict,
    buy_and_hold,
    check_entry_orders,
    check_risk_stops,
    entry_order_matrices,
    lot_matrix,
    resolve_annualisation,
    run_inputs,
    signal_matrices,
    sized,
)
from workbench.backtest.metrics import EQUITY_KEYS, METRIC_KEYS, TRADE_KEYS, equity_stats_nb, trade_stats_nb
from workbench.backtest.weight_strategies import (
    WeightEvaluator,
    check_weight_execution,
    resolve_strategy,
    weight_backtest_metrics,
)
from workbench.errors import ConfigError, DataError, SweepTooLarge
from workbench.files import atomic_path
from workbench.strategies.base import Strategy, check_signal_bars
from workbench.strategies.indicators import indicator_cache
from workbench.strategies.weights import WeightStrategy

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# a sweep of more runs (combinations x symbols swept on their own) than this needs an explicit yes:
# `confirm_large=True` in the API, `--yes` in the CLI (at ~200 runs/s on a year of minute bars it is
# about 8 minutes; a grid that walks every parameter's whole range is easily millions)
LARGE_SWEEP = 100_000
# combinations timed before a sweep starts, to estimate its duration
PILOT = 3
# the Parquet metadata key of a saved sweep's inputs
SWEEP_METADATA = b"workbench"
# metrics the kernel pass produces, in this order (benchmark ones are added per symbol)
_KERNEL_KEYS = (*EQUITY_KEYS, *TRADE_KEYS, "n_open_trades", "exposure", "turnover")


@dataclass
class SweepResult:
    """The tidy table (one row per combination and symbol: params + metrics) and its inputs."""

    strategy: str
    table: pd.DataFrame
    params: list[str]
    inputs: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def top(self, n: int = 10, by: str = "sharpe", ascending: bool = False) -> pd.DataFrame:
        """The n best rows by a metric; undefined values (NaN, e.g. the Sharpe of a run that never
        traded) rank last whatever the direction."""
        if by not in self.table.columns:
            metrics = [c for c in self.table.columns if c not in (*self.params, "symbol")]
            raise ConfigError(f"cannot rank by {by!r}; metrics are {', '.join(metrics)}")
        values = pd.to_numeric(self.table[by], errors="coerce")
        finite = np.isfinite(values.to_numpy(dtype=float))
        ranked = pd.concat([self.table[finite].sort_values(by, ascending=ascending, kind="stable"),
                            self.table[~finite]])
        return ranked.head(n)

    def heatmap(self, x: str | None = None, y: str | None = None, metric: str = "sharpe",
                agg: str = "max") -> Any:
        """Plotly heatmap of a metric over two parameters (other dimensions aggregated by `agg`)."""
        from workbench.backtest.plots import sweep_heatmap

        varying = [p for p in self.params if self.table[p].nunique() > 1]
        x = x or (varying[0] if varying else self.params[0])
        y = y or next((p for p in varying if p != x), None)
        if y is None:
            raise ConfigError("a heatmap needs two varying parameters; sweep at least two, or give x and y")
        return sweep_heatmap(self.table, x, y, metric=metric, agg=agg,
                             title=f"{self.strategy}: {metric} by {x} and {y}")

    def save(self, path: str | Any) -> Any:
        """Write the table as Parquet (``.parquet``) or CSV (``.csv``), atomically; inputs go in metadata."""
        import json
        from pathlib import Path

        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise ConfigError(f"sweep output {path} must end in .parquet or .csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {path.parent}: {exc.strerror}; "
                              "choose a writable folder") from None
        try:
            with atomic_path(path) as tmp:
                if suffix == ".parquet":
                    table = pa.Table.from_pandas(self.table, preserve_index=False)
                    meta = {**(table.schema.metadata or {}),
                            SWEEP_METADATA: json.dumps(self.inputs, default=str).encode()}
                    pq.write_table(table.replace_schema_metadata(meta), tmp)
                else:
                    self.table.to_csv(tmp, index=False)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}; choose a writable folder") from None
        return path


@dataclass(frozen=True)
class SweepIndex:
    """The saved sweeps under a folder (`sweeps`, one row per file, newest first) and the files that look
    like sweeps but cannot be read (`damaged`: path -> one line with the fix)."""

    sweeps: pd.DataFrame
    damaged: dict[str, str]


_SWEEP_COLUMNS = ["path", "strategy", "symbols", "timeframe", "combinations", "rows", "written"]


def _sweep_inputs(path: Any) -> tuple[dict[str, Any] | None, int]:
    """A Parquet file's sweep inputs (None: not a saved sweep) and its row count, from the footer only."""
    import json

    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    raw = (meta.metadata or {}).get(SWEEP_METADATA)
    return (json.loads(raw) if raw is not None else None), int(meta.num_rows)


def list_sweeps(folder: Any) -> SweepIndex:
    """Every sweep table saved as Parquet (`SweepResult.save`) under `folder`, found by the inputs in its
    metadata (other Parquet files are not sweeps and are skipped); only file footers are read."""
    from pathlib import Path

    root = Path(folder)
    rows, damaged = [], {}
    for f in sorted(root.rglob("*.parquet")) if root.is_dir() else []:
        rel = f.relative_to(root).as_posix()
        try:
            inputs, n = _sweep_inputs(f)
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            damaged[rel] = (f"sweep table {rel} is unreadable ({type(exc).__name__}); run its sweep again "
                            "(`workbench sweep ... --out`) to rewrite it")
            continue
        if not isinstance(inputs, dict):
            continue
        rows.append({"path": rel, "strategy": str(inputs.get("strategy", f.stem)),
                     "symbols": ",".join(str(s) for s in inputs.get("symbols") or []),
                     "timeframe": inputs.get("timeframe"), "combinations": inputs.get("combinations"),
                     "rows": n, "written": pd.Timestamp(f.stat().st_mtime, unit="s", tz="UTC").floor("s")})
    table = pd.DataFrame(rows, columns=_SWEEP_COLUMNS)
    table = table.sort_values("written", ascending=False, kind="stable").reset_index(drop=True)
    return SweepIndex(table, damaged)


def load_sweep(path: Any) -> SweepResult:
    """A sweep table saved as Parquet by `SweepResult.save`, with its inputs, read back (its heatmap and
    `top` work as on the fresh result)."""
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ConfigError(f"no sweep table at {path}; write one with `workbench sweep ... --out {path}`") \
            from None
    except (OSError, ValueError) as exc:
        raise DataError(f"sweep table {path} is unreadable ({type(exc).__name__}); run its sweep again to "
                        "rewrite it") from None
    raw = (table.schema.metadata or {}).get(SWEEP_METADATA)
    if raw is None:
        raise ConfigError(f"{path} is not a saved sweep (its metadata holds no sweep inputs); write one with "
                          "`workbench sweep ... --out file.parquet`")
    try:
        inputs = json.loads(raw)
    except ValueError:
        raise DataError(f"the sweep inputs in {path} are not JSON; run its sweep again to rewrite it") \
            from None
    frame = table.to_pandas()
    cols = [str(c) for c in frame.columns]
    params = cols[:cols.index("symbol")] if "symbol" in cols else [
        p for p in (*inputs.get("grid", {}), *inputs.get("fixed", {})) if p in cols]
    return SweepResult(strategy=str(inputs.get("strategy", path.stem)), table=frame, params=params,
                       inputs=inputs)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def score_nb(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash, max_exposure,
             lots, margin_bar, at_open, ppy, out, value, trades, otype, olim, ostp, otif, borrow_bar, imp,
             touch, fund, vcap):
    """Run the kernel for one parameter set and write its metrics (`_KERNEL_KEYS` order) into `out`.

    `value` (n,) receives the equity curve; `trades` (n*m+1, 2) is scratch for closed-trade pnl.
    Serial, so optimiser workers (forked processes) never touch numba's thread pool.
    """
    n = close.shape[0]
    stats = np.empty(kernels.N_STATS)
    kernels.simulate_nb(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash,
                        max_exposure, lots, margin_bar, at_open, value, np.empty(1), np.empty((1, 1)), stats,
                        trades, otype, olim, ostp, otif, touch, borrow_bar, imp, fund, vcap)
    eq = equity_stats_nb(value, init_cash, ppy)
    for q in range(8):
        out[q] = eq[q]
    n_closed = int(stats[kernels.ST_CLOSED])
    tr = trade_stats_nb(trades[:n_closed, 0], trades[:n_closed, 1])
    for q in range(8):
        out[8 + q] = tr[q]
    out[16] = stats[kernels.ST_OPEN]
    out[17] = stats[kernels.ST_EXPOSED_BARS] / n
    mean_value = stats[kernels.ST_SUM_VALUE] / n
    traded = stats[kernels.ST_TRADED_VALUE]
    if traded == 0.0:
        out[18] = 0.0
    elif mean_value != 0.0:
        out[18] = traded / mean_value / (n / ppy)
    else:
        out[18] = np.nan


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _sweep_chunk_nb(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash,
                    max_exposure, lots, margin_bar, at_open, ppy, out, values, trade_bufs, keep_values, otype,
                    olim, ostp, otif, borrow_bar, imp, touch, fund, vcap):
    """Run `score_nb` for every combination k of a chunk (signals (K, n, m)) in parallel.

    `values` is per-thread scratch (threads, n), or (K, n) kept per combination when `keep_values`;
    `trade_bufs` (threads, n*m+1, 2) is per-thread scratch, allocated once per sweep rather than per
    combination (fresh pages cost more than the work).
    """
    for k in numba.prange(le.shape[0]):
        t = numba.get_thread_id()
        value = values[k] if keep_values else values[t]
        score_nb(open_, high, low, close, le[k], lx[k], se[k], sx[k], sl[k], tp[k], tsl[k], frac[k], slip,
                 fees, init_cash, max_exposure, lots, margin_bar, at_open, ppy, out[k], value, trade_bufs[t],
                 otype[k], olim[k], ostp[k], otif[k], borrow_bar, imp, touch, fund, vcap)


def _drop_stale_cache(folder: Any = None) -> None:
    """numba's on-disk cache follows a function's own source file, not the files of the functions it
    calls: the sweep kernels here hold compiled copies of kernels.py's simulation and metrics.py's
    statistics. When either file changed since they were cached, their cache is dropped so that a sweep
    never scores with older rules than a backtest."""
    import hashlib
    from pathlib import Path

    from workbench.backtest import metrics

    try:
        sources = b"".join(Path(str(mod.__file__)).read_bytes() for mod in (kernels, metrics))
        dispatcher: Any = score_nb
        folder = Path(folder if folder is not None else dispatcher._cache._cache_path)
        stamp = folder / f"sweep.deps-{hashlib.sha256(sources).hexdigest()[:16]}.stamp"
        if stamp.exists():
            return
        for old in [*folder.glob("sweep.*.nbi"), *folder.glob("sweep.deps-*.stamp")]:
            old.unlink(missing_ok=True)
        stamp.touch()
    except (OSError, AttributeError):  # a read-only install, or numba changed its cache: nothing to drop
        log.debug("numba cache of the sweep kernels not checked", exc_info=True)


_drop_stale_cache()


def _stack_flex(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack per-combination flexible arrays (1 or n rows, 1 or m columns) to one (K, r, c) array."""
    rows = max(a.shape[0] for a in arrays)
    cols = max(a.shape[1] for a in arrays)
    out = np.empty((len(arrays), rows, cols))
    for k, a in enumerate(arrays):
        out[k] = np.broadcast_to(a, (rows, cols))
    return out


class Evaluator:
    """One strategy on one set of aligned bars, prepared once to score many parameter sets.

    The optimiser's objective and the sweep share it: signals from the strategy's own function, then
    the same kernel and metrics as `backtest`. Symbols trade together with shared cash.
    """

    def __init__(self, strat: Strategy, frames: Mapping[str, pd.DataFrame], *, execution: Execution,
                 periods_per_year: float) -> None:
        self.strat = strat
        self.frames = dict(frames)
        self.symbols = list(frames)
        self.execution = ex = execution
        self.lots = lot_matrix(ex.lot_map(self.symbols), self.symbols)
        self.margin_bar = ex.costs.margin_rate / float(periods_per_year)
        self.borrow_bar = ex.costs.borrow_rate / float(periods_per_year)
        self.costs, self.fill, self.sizing, self.direction = ex.costs, ex.fill, ex.sizing, ex.direction
        self.init_cash, self.max_exposure = ex.init_cash, ex.max_exposure
        costs = ex.costs
        self.ppy = float(periods_per_year)
        # the symbols' union timeline (mixed calendars: SEMANTICS.md "Timeline")
        self.timeline = Timeline(self.frames, self.symbols)
        self.open_, self.high, self.low, self.close = self.timeline.prices()
        self.n = self.close.shape[0]
        self.slip = _compact(self.timeline.slippage(costs))
        self.imp = _compact(self.timeline.impact(costs))
        self.fund = self.timeline.funding(costs)
        self.vcap = self.timeline.volume_cap(costs)
        self.touch = costs.limit_fill == "touch"
        self.value = np.empty(self.n)
        self._trades = np.empty((self.n * len(self.symbols) + 1, 2))

    def arrays(self, params: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
        """The kernel inputs of one parameter set: le, lx, se, sx, sl, tp, tsl, frac and the entry
        orders' type, limit, stop and time in force."""
        return _combo_arrays(self.strat, self.timeline, dict(params), self.direction, self.sizing, self.ppy,
                             int(self.fill is Fill.NEXT_OPEN))

    def score(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Metrics (`_KERNEL_KEYS`) of one parameter set; its equity curve is left in `self.value`."""
        le, lx, se, sx, sl, tp, tsl, frac, otype, olim, ostp, otif = self.arrays(params)
        out = np.full(len(_KERNEL_KEYS), np.nan)
        score_nb(self.open_, self.high, self.low, self.close, le, lx, se, sx, sl, tp, tsl, frac, self.slip,
                 float(self.costs.fees), self.init_cash, self.max_exposure, self.lots, self.margin_bar,
                 self.fill is Fill.NEXT_OPEN, self.ppy, out, self.value, self._trades, otype, olim, ostp,
                 otif, self.borrow_bar, self.imp, self.touch, self.fund, self.vcap)
        return dict(zip(_KERNEL_KEYS, out.tolist(), strict=True))

    def equity_curves(self, combos: Sequence[Mapping[str, Any]], chunk: int = 16, *,
                      parallel: bool = True) -> np.ndarray:
        """Equity curves of many parameter sets, one row each (K, n), computed in parallel chunks
        (`parallel=False`: one by one, for forked processes, which must not touch numba's thread pool)."""
        out = np.empty((len(combos), self.n))
        if not parallel:
            for k, p in enumerate(combos):
                self.score(p)
                out[k] = self.value
            return out
        threads = numba.get_num_threads()
        trade_bufs = np.empty((threads, *self._trades.shape))
        for start in range(0, len(combos), chunk):
            part = [self.arrays(p) for p in combos[start:start + chunk]]
            le, lx, se, sx = (np.stack([a[q] for a in part]) for q in range(4))
            sl, tp, tsl, frac, otype, olim, ostp, otif = (_stack_flex([a[q] for a in part])
                                                          for q in range(4, 12))
            values = out[start:start + len(part)]  # (the kernel writes each curve into its row)
            stats = np.empty((len(part), len(_KERNEL_KEYS)))
            _sweep_chunk_nb(self.open_, self.high, self.low, self.close, le, lx, se, sx, sl, tp, tsl, frac,
                            self.slip, float(self.costs.fees), self.init_cash, self.max_exposure, self.lots,
                            self.margin_bar, self.fill is Fill.NEXT_OPEN, self.ppy, stats, values, trade_bufs,
                            True, otype, olim, ostp, otif, self.borrow_bar, self.imp, self.touch, self.fund,
                            self.vcap)
        return out


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep is about to do: its combinations, the units each is run on (symbols swept on
    their own, or 1 portfolio), and an estimate of its duration from a timed pilot."""

    combinations: int
    units: int
    estimate_s: float

    @property
    def runs(self) -> int:
        return self.combinations * self.units


def check_sweep_size(strat: Strategy | WeightStrategy, grid: Mapping[str, Sequence[Any]] | None,
                     fixed: Mapping[str, Any] | None, *, grid_all: bool, units: int,
                     confirm_large: bool) -> int:
    """The number of runs a sweep walks (before constraints), refused above `LARGE_SWEEP` unless
    `confirm_large`: the one rule the API and the CLI share, checked before any grid is built. A grid
    that names nothing (without `grid_all`) would run the defaults alone: refused too."""
    if not grid and not grid_all:
        free = [n for n in strat.space.names if n not in (fixed or {})] or strat.space.names
        raise ConfigError(f"nothing to sweep in {strat.name}: give values for {', '.join(free)} in the grid "
                          f"(--grid {free[0]}=...), or walk every parameter's own grid with --grid-all "
                          "(API: grid_all=True)")
    size = strat.space.grid_size(grid, fixed, walk_all=grid_all) * max(units, 1)
    if size > LARGE_SWEEP and not confirm_large:
        unnamed = [n for n in strat.space.names if n not in (grid or {}) and n not in (fixed or {})]
        hint = ("name fewer values in the grid" if not (grid_all and unnamed)
                else "drop --grid-all (grid_all=True) so unnamed parameters keep their defaults")
        raise SweepTooLarge(f"the sweep of {strat.name} has {size:,} runs, above {LARGE_SWEEP:,}: {hint}, "
                            "or confirm with --yes (API: confirm_large=True)")
    return size


def sweep(strategy: str | Strategy | WeightStrategy, bars: pd.DataFrame | Mapping[str, pd.DataFrame],
          grid: Mapping[str, Sequence[Any]] | None = None, *, fixed: Mapping[str, Any] | None = None,
          execution: Execution | None = None, costs: Costs | None = None, fill: Fill | str | None = None,
          sizing: Sizing | None = None, direction: Direction | str | None = None,
          init_cash: float | None = None, max_exposure: float | None = None,
          portfolio: bool = False, memory_mb: float = 512.0,
          progress: Progress | None = None, periods_per_year: float | None = None,
          timeframe: str | None = None, calendar: str | None = None, grid_all: bool = False,
          confirm_large: bool = False, on_start: Callable[[SweepPlan], None] | None = None,
          lots: Lot | Mapping[str, Lot] | None = None) -> SweepResult:
    """Evaluate every feasible combination of the strategy's grid on each symbol (or on all together).

    `grid` lists the values per parameter; `fixed` pins some; the others keep their default unless
    `grid_all=True` walks their own grid too (a sweep grows only along what was asked for). More
    than `LARGE_SWEEP` runs need `confirm_large=True`. With several symbols each is swept on its own
    (one row per combination and symbol) unless `portfolio=True`, which trades them together with
    shared cash. `memory_mb` caps a chunk (the combinations dispatched together: at most that much of
    signal arrays, of which each thread holds one at a time); `on_start(plan)` gets the count
    and a timed estimate before the work starts; `progress(done, total)` is called after each chunk.
    The execution settings as in `simulate` (one `Execution`, or its fields).

    A weight strategy (a `WeightStrategy` or its name, e.g. ``allocate``) trades its symbols as one
    book whatever `portfolio` says: one row per combination, scored by `WeightEvaluator`; sizing and
    direction do not apply to it and are refused.
    """
    t_start = time.perf_counter()
    strat = resolve_strategy(strategy)
    ex = Execution.of(execution, costs=costs, fill=fill, sizing=sizing, direction=direction,
                      init_cash=init_cash, max_exposure=max_exposure, lots=lots)
    if isinstance(strat, WeightStrategy):
        return _sweep_weights(strat, as_bar_dict(bars), grid, fixed=fixed, execution=ex,
                              periods_per_year=periods_per_year, timeframe=timeframe, calendar=calendar,
                              grid_all=grid_all, confirm_large=confirm_large, progress=progress,
                              on_start=on_start, t_start=t_start)
    costs, fill, sizing, direction, init_cash = ex.costs, ex.fill, ex.sizing, ex.direction, ex.init_cash
    max_exposure = ex.max_exposure
    frames = as_bar_dict(bars)
    symbols = list(frames)
    check_sweep_size(strat, grid, fixed, grid_all=grid_all, units=1 if portfolio else len(symbols),
                     confirm_large=confirm_large)
    lot_map = ex.lot_map(symbols)
    combos = strat.space.grid(grid, fixed, walk_all=grid_all)
    if not combos:
        raise ConfigError(f"the grid of {strat.name} has no feasible combination (constraints "
                          f"{[c.expr for c in strat.space.constraints]}); widen the ranges")
    combos = [strat.params(c) for c in combos]
    timeframe, calendar, periods_per_year = resolve_annualisation(frames, timeframe, calendar,
                                                                  periods_per_year)
    warm = max(strat.warmup(c) for c in combos)
    for s in symbols:
        check_signal_bars(frames[s], warm, strat.name, {"max warmup": warm})

    units = [symbols] if portfolio else [[s] for s in symbols]
    n = Timeline(frames).n  # the longest timeline of any unit (the union of all symbols' bars)
    m_unit = len(units[0])
    per_combo = n * m_unit * 4 + (3 * n * m_unit * 8 if _has_bar_stops(strat) else 0)
    # chunks large enough to keep every thread busy between two progress reports
    chunk = int(max(1, min(len(combos), 64, memory_mb * 1e6 // max(per_combo, 1))))
    total = len(combos) * len(units)
    if on_start is not None:
        estimate = _pilot(strat, frames, units[0], combos, total, execution=ex, ppy=periods_per_year)
        on_start(SweepPlan(len(combos), len(units), estimate))
    done = 0
    rows: list[dict] = []
    t_signals = t_kernel = 0.0
    for unit in units:
        sub = {s: frames[s] for s in unit}
        ev = Evaluator(strat, sub, execution=ex.replace(lots={s: lot_map[s] for s in unit}),
                       periods_per_year=periods_per_year)
        bench = buy_and_hold(ev.open_, ev.close, ev.timeline.index, costs, fill, init_cash, ev.slip)
        bench_ret = float(bench.iloc[-1] / init_cash - 1.0)
        threads = numba.get_num_threads()
        run_one = _Combination(ev, strat, direction, sizing, float(periods_per_year))
        # combinations on threads, each computing its signals and then its kernel pass: the kernel runs
        # without the GIL, so one thread's simulation overlaps another's signals (the indicator and
        # cross kernels release the GIL too)
        with indicator_cache(), ThreadPoolExecutor(max_workers=threads) as pool:
            for start in range(0, len(combos), chunk):
                part = combos[start:start + chunk]
                # each task runs in a copy of this context, so it sees the same indicator cache
                futures = [pool.submit(contextvars.copy_context().run, run_one, p) for p in part]
                for p, f in zip(part, futures, strict=True):
                    vals, ts, tk = f.result()
                    t_signals += ts / threads
                    t_kernel += tk / threads
                    row: dict[str, Any] = dict(p)
                    row["symbol"] = ",".join(unit)
                    row.update(zip(_KERNEL_KEYS, vals.tolist(), strict=True))
                    row["benchmark_return"] = bench_ret
                    row["excess_return"] = row["total_return"] - bench_ret
                    rows.append(row)
                done += len(part)
                if progress is not None:
                    progress(done, total)
    table = pd.DataFrame(rows)
    for key in ("n_trades", "n_open_trades", "max_drawdown_duration"):
        table[key] = table[key].astype("int64")
    metric_cols = [k for k in METRIC_KEYS if k in table.columns]
    table = table[[*strat.space.names, "symbol", *metric_cols]]
    inputs = run_inputs(strategy=strat.name, params=None, frames=frames, timeframe=timeframe,
                        calendar=calendar, periods_per_year=periods_per_year, execution=ex,
                        grid={k: list(v) for k, v in (grid or {}).items()},
                        fixed=dict(fixed or {}),
                        combinations=len(combos), portfolio=portfolio)
    # signals_s and kernel_s: the threads' seconds in each part, divided by the number of threads (the
    # parts overlap, so they add up to about the wall time of the work)
    timings = {"signals_s": t_signals, "kernel_s": t_kernel, "total_s": time.perf_counter() - t_start,
               "chunk": chunk}
    log.info("swept %d combinations x %d units in %.2fs", len(combos), len(units), timings["total_s"])
    return SweepResult(strategy=strat.name, table=table, params=strat.space.names, inputs=inputs,
                       timings=timings)


def _sweep_weights(strat: WeightStrategy, frames: dict[str, pd.DataFrame],
                   grid: Mapping[str, Sequence[Any]] | None, *, fixed: Mapping[str, Any] | None,
                   execution: Execution, periods_per_year: float | None, timeframe: str | None,
                   calendar: str | None, grid_all: bool, confirm_large: bool, progress: Progress | None,
                   on_start: Callable[[SweepPlan], None] | None, t_start: float) -> SweepResult:
    """`sweep` of a weight strategy: every combination trades the whole universe as one book (the
    symbol column names it, as a portfolio sweep's does), scored by `WeightEvaluator` one after another
    (an allocator's fits hold the GIL), its metrics those of `weight_backtest_metrics` against the
    equal-weight buy and hold of a signal sweep."""
    check_weight_execution(execution, strat.name)
    symbols = list(frames)
    check_sweep_size(strat, grid, fixed, grid_all=grid_all, units=1, confirm_large=confirm_large)
    combos = [strat.params(c) for c in strat.space.grid(grid, fixed, walk_all=grid_all)]
    if not combos:
        raise ConfigError(f"the grid of {strat.name} has no feasible combination (constraints "
                          f"{[c.expr for c in strat.space.constraints]}); widen the ranges")
    timeframe, calendar, periods_per_year = resolve_annualisation(frames, timeframe, calendar,
                                                                  periods_per_year)
    for s in symbols:
        check_signal_bars(frames[s], 0, s)
    ev = WeightEvaluator(strat, frames, execution=execution, periods_per_year=periods_per_year)
    warm = max(int(strat.warmup(c)) for c in combos)
    if ev.n <= warm:
        raise DataError(f"{strat.name} needs more than {warm} bars for the largest warm-up in the grid, and "
                        f"the bars span {ev.n}: load more history or shorten its windows")
    tl = Timeline(frames, symbols)
    open_, _high, _low, close = tl.prices()
    bench = buy_and_hold(open_, close, tl.index, execution.costs, execution.fill, execution.init_cash,
                         _compact(tl.slippage(execution.costs)))
    book = ",".join(symbols)
    keys = [k for k in METRIC_KEYS if k in (*_KERNEL_KEYS, "benchmark_return", "excess_return")]
    rows: list[dict[str, Any]] = []
    t_first = time.perf_counter()
    for k, p in enumerate(combos):
        t0 = time.perf_counter()
        m = weight_backtest_metrics(ev.run(p), frames, periods_per_year, benchmark=bench)
        rows.append({**p, "symbol": book, **{key: m[key] for key in keys}})
        # the estimate: the first combination (it loads what the others reuse) and the second timed
        if on_start is not None and k == min(1, len(combos) - 1):
            took = time.perf_counter() - t0
            on_start(SweepPlan(len(combos), 1, t0 - t_first + took * (len(combos) - k)))
        if progress is not None and (on_start is None or k >= min(1, len(combos) - 1)):
            progress(k + 1, len(combos))
    table = pd.DataFrame(rows, columns=[*strat.space.names, "symbol", *keys])
    for key in ("n_trades", "n_open_trades", "max_drawdown_duration"):
        table[key] = table[key].astype("int64")
    inputs = run_inputs(strategy=strat.name, params=None, frames=frames, timeframe=timeframe,
                        calendar=calendar, periods_per_year=periods_per_year, execution=execution,
                        grid={k: list(v) for k, v in (grid or {}).items()}, fixed=dict(fixed or {}),
                        combinations=len(combos), portfolio=True)
    timings = {"signals_s": ev.timings["targets_s"], "kernel_s": ev.timings["simulate_s"],
               "total_s": time.perf_counter() - t_start, "chunk": 1}
    log.info("swept %d combinations of %s on one book of %d symbols in %.2fs", len(combos), strat.name,
             len(symbols), timings["total_s"])
    return SweepResult(strategy=strat.name, table=table, params=strat.space.names, inputs=inputs,
                       timings=timings)


class _Combination:
    """Scores one combination on the calling thread: its signals (the GIL held in parts), then its kernel
    pass without the GIL (another thread computes the next signals meanwhile) on arrays still hot in
    this core's cache. Each thread keeps its own equity curve and trade buffers."""

    def __init__(self, ev: Evaluator, strat: Strategy, direction: Direction, sizing: Sizing,
                 ppy: float) -> None:
        self.ev, self.strat, self.direction, self.sizing, self.ppy = ev, strat, direction, sizing, ppy
        self.lag = int(ev.fill is Fill.NEXT_OPEN)
        self.scratch = threading.local()

    def __call__(self, p: dict) -> tuple[np.ndarray, float, float]:
        """The combination's metrics (`_KERNEL_KEYS`), and the seconds its signals and kernel took."""
        ev = self.ev
        t0 = time.perf_counter()
        le, lx, se, sx, sl, tp, tsl, frac, otype, olim, ostp, otif = _combo_arrays(
            self.strat, ev.timeline, p, self.direction, self.sizing, self.ppy, self.lag)
        t1 = time.perf_counter()
        buf = self.scratch
        if not hasattr(buf, "value"):
            buf.value = np.empty(ev.n)
            buf.trades = np.empty(ev._trades.shape)
        out = np.full(len(_KERNEL_KEYS), np.nan)
        score_nb(ev.open_, ev.high, ev.low, ev.close, le, lx, se, sx, sl, tp, tsl, frac, ev.slip,
                 float(ev.costs.fees), ev.init_cash, ev.max_exposure, ev.lots, ev.margin_bar,
                 ev.fill is Fill.NEXT_OPEN, self.ppy, out, buf.value, buf.trades, otype, olim, ostp, otif,
                 ev.borrow_bar, ev.imp, ev.touch, ev.fund, ev.vcap)
        return out, t1 - t0, time.perf_counter() - t1


def _pilot(strat: Strategy, frames: Mapping[str, pd.DataFrame], unit: list[str], combos: list[dict],
           total: int, *, execution: Execution, ppy: float) -> float:
    """Seconds a sweep of `total` runs should take: a few combinations timed one by one (after one
    untimed run that loads the compiled kernels), spread over the threads the sweep uses."""
    ev = Evaluator(strat, {s: frames[s] for s in unit}, execution=execution.replace(lots=None),
                   periods_per_year=ppy)
    sample = combos[:PILOT + 1]
    with indicator_cache():
        t0 = time.perf_counter()
        ev.score(sample[0])
        t1 = time.perf_counter()
        for p in sample[1:]:
            ev.score(p)
        t2 = time.perf_counter()
    per_run = (t2 - t1) / (len(sample) - 1) if len(sample) > 1 else t1 - t0
    return per_run * total / max(numba.get_num_threads(), 1)


def _has_bar_stops(strat: Strategy) -> bool:
    return any(p.name.endswith(("stop", "atr_mult", "trail")) for p in strat.space.params)




def _combo_arrays(strat: Strategy, tl: Timeline, p: dict, direction: Direction, sizing: Sizing, ppy: float,
                  lag: int) -> tuple[np.ndarray, ...]:
    """Kernel inputs of one parameter set: each symbol's signals on its own bars, placed on the timeline."""
    per = [strat.signals(tl.frames[s], p, validate=False).arrays(len(tl.frames[s]), strat.name, compact=True)
           for s in tl.symbols]
    for s, a in zip(tl.symbols, per, strict=True):
        if a["order_type"].any():  # (market entries only need no check, nor the closes)
            check_entry_orders(a, tl.frames[s]["close"].to_numpy(dtype=np.float64), f"{strat.name}{p}[{s}]")
    placed = tl.place_signals(per, lag)
    le, lx, se, sx, sl, tp, tsl = signal_matrices(placed, tl.n, direction)
    frac = sized(tl.sizing(sizing, sl, tsl, ppy, lag), placed, tl.n)
    check_risk_stops(sizing, le, se, frac, f"{strat.name}{p}")
    return (le, lx, se, sx, _compact(sl), _compact(tp), _compact(tsl),
            _compact(np.asarray(frac, dtype=np.float64)), *entry_order_matrices(placed, tl.n))
