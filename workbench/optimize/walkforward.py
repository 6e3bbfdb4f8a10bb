"""Walk-forward optimisation: tune on each train window, trade the winner on the unseen test window.

For every fold of a `WalkForward` splitter an Optuna study searches the strategy's parameter space on
the train window (seeded TPE by default), scoring each trial with the same kernel as `backtest`. The
fold's best feasible parameters then trade its test window, starting flat with the equity the
previous fold ended with, and flat again at its end; the test windows stitch into one out-of-sample
(OOS) equity curve and trade list. Overfitting diagnostics come from the actual trials of the run.

Trials are shared through Optuna storage (see `storage`): any number of worker processes, on this
machine or others, can join a run; an interrupted run resumes where it stopped. A trial's sampler is
seeded from (seed, fold, trials already finished), so one worker gives the same result every time,
and a resumed run the same result as an uninterrupted one.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar, cast

import numba
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from workbench.backtest.engine import (
    Costs,
    Direction,
    Execution,
    Fill,
    Lot,
    Sizing,
    Timeline,
    as_bar_dict,
    buy_and_hold,
    fingerprint,
    resolve_annualisation,
    simulate,
)
from workbench.backtest.holdings import held_values
from workbench.backtest.metrics import compute_metrics
from workbench.backtest.rebalance import simulate_weights
from workbench.backtest.sweep import Evaluator
from workbench.backtest.weight_strategies import (
    WeightEvaluator,
    check_weight_execution,
    resolve_strategy,
    weight_trades,
)
from workbench.errors import ConfigError, DataError, WorkbenchError, did_you_mean
from workbench.optimize import storage as st
from workbench.optimize.overfitting import (
    bootstrap_trades,
    compare_to_benchmark,
    deflated_sharpe_ratio,
    pbo_cscv,
    sharpe_significance,
)
from workbench.optimize.splitter import Fold, WalkForward
from workbench.strategies.base import Signals, Strategy, check_signal_bars
from workbench.strategies.indicators import indicator_cache
from workbench.strategies.weights import WeightStrategy
from workbench.version import code_version

log = logging.getLogger(__name__)



class ObjectiveMetric(StrEnum):
    """What a trial maximises (see `Objective`)."""

    SHARPE = "sharpe"
    SORTINO = "sortino"
    CALMAR = "calmar"
    RETURN_DD = "return_dd"


class SamplerKind(StrEnum):
    """Optuna's samplers the walk-forward offers."""

    TPE = "tpe"
    RANDOM = "random"
    QMC = "qmc"


class PrunerKind(StrEnum):
    """Optuna's pruners the walk-forward offers (`none` prunes nothing)."""

    NONE = "none"
    MEDIAN = "median"
    PERCENTILE = "percentile"
    HYPERBAND = "hyperband"
    SUCCESSIVE_HALVING = "successive_halving"


OBJECTIVES = tuple(m.value for m in ObjectiveMetric)
SAMPLERS = tuple(m.value for m in SamplerKind)
PRUNERS = tuple(m.value for m in PrunerKind)
_OPEN = (TrialState.WAITING, TrialState.RUNNING)
WORST = -1e9  # the score of a trial whose objective is undefined (NaN or infinite)
FoldProgress = Callable[[int, int, int], None]  # (fold, finished trials, budget)
_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, kw_only=True)
class Objective:
    """What a trial maximises: a metric of the train-window backtest, and a minimum trade count.

    ``return_dd`` is annual return minus ``dd_penalty`` times the max drawdown (as a positive
    fraction). Trials with fewer than ``min_trades`` closed trades are infeasible: the sampler learns
    to avoid them and they are never selected.
    """

    metric: ObjectiveMetric = ObjectiveMetric.SHARPE  # a plain "sharpe" etc. is turned into one
    min_trades: int = 1
    dd_penalty: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", _member(ObjectiveMetric, self.metric, "objective"))
        if self.min_trades < 0:
            raise ConfigError(f"min_trades={self.min_trades} must be 0 or more")
        if not (math.isfinite(self.dd_penalty) and self.dd_penalty >= 0):
            raise ConfigError(f"dd_penalty={self.dd_penalty} must be a non-negative number")

    def raw(self, m: Mapping[str, float]) -> float:
        """The objective of one backtest's metrics, NaN or infinite when undefined (e.g. no trades)."""
        if self.metric is ObjectiveMetric.RETURN_DD:
            return float(m["annual_return"] - self.dd_penalty * abs(m["max_drawdown"]))
        return float(m[self.metric.value])

    def value(self, m: Mapping[str, float]) -> float:
        """The score a trial reports: `raw`, or WORST when that is undefined."""
        v = self.raw(m)
        return v if math.isfinite(v) else WORST


def _member(kind: type[_E], value: Any, what: str) -> _E:
    """`value` as a member of the StrEnum `kind`, or a ConfigError naming the choices."""
    try:
        return kind(value)
    except ValueError:
        names = [m.value for m in kind]
        raise ConfigError(f"{what} {value!r} is unknown{did_you_mean(str(value), names)}; use one of "
                          f"{', '.join(names)}") from None


def make_sampler(name: str | SamplerKind, seed: int, options: Mapping[str, Any] | None = None
                 ) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name (tpe, random, qmc), seeded."""
    options = dict(options or {})
    kind = _member(SamplerKind, name, "sampler")
    samplers = {SamplerKind.TPE: optuna.samplers.TPESampler,
                SamplerKind.RANDOM: optuna.samplers.RandomSampler,
                SamplerKind.QMC: optuna.samplers.QMCSampler}
    try:
        return samplers[kind](seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"sampler {kind} options {options}: {exc}") from None


def make_pruner(name: str | PrunerKind | None, options: Mapping[str, Any] | None = None
                ) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name; steps are the symbols of a run, so it needs several to prune."""
    options = dict(options or {})
    kinds = {PrunerKind.NONE: optuna.pruners.NopPruner, PrunerKind.MEDIAN: optuna.pruners.MedianPruner,
             PrunerKind.PERCENTILE: optuna.pruners.PercentilePruner,
             PrunerKind.HYPERBAND: optuna.pruners.HyperbandPruner,
             PrunerKind.SUCCESSIVE_HALVING: optuna.pruners.SuccessiveHalvingPruner}
    kind = _member(PrunerKind, name or PrunerKind.NONE, "pruner")
    if kind is PrunerKind.PERCENTILE:
        options.setdefault("percentile", 25.0)
    try:
        return kinds[kind](**options)
    except TypeError as exc:
        raise ConfigError(f"pruner {kind} options {options}: {exc}") from None


def signal_lookback(strat: Strategy | WeightStrategy, params: Mapping[str, Any]) -> int:
    """Bars of history before a window that its signals are computed on (indicator warm-up).

    Three warm-ups, so exponential indicators have converged too; the paper runner uses the same.
    """
    return 3 * int(strat.warmup(params)) + 10


def _seed(seed: int, fold: int, done: int) -> int:
    return int(np.random.SeedSequence([seed, fold, done]).generate_state(1)[0])


def run_id_for(settings: Mapping[str, Any]) -> str:
    """A run's id from its settings: the same settings resume the same run."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() else "_" for c in str(settings["strategy"])).strip("_")
    return f"wf-{name}-{digest}"


# ------------------------------------------------------------------------------------------ the run


@dataclass
class _Run:
    """Everything a worker needs: settings, the bars, the folds, and per-fold evaluators."""

    run_id: str
    settings: dict[str, Any]
    frames: dict[str, pd.DataFrame]
    strat: Strategy | WeightStrategy
    folds: list[Fold]
    objective: Objective
    execution: Execution
    storage_url: str
    stale_after: float = 600.0
    timings: dict[str, float] = field(default_factory=lambda: {"sample_s": 0.0, "backtest_s": 0.0,
                                                               "storage_s": 0.0, "trials": 0})

    def study_name(self, k: int) -> str:
        return f"{self.run_id}:fold{k}"

    @functools.cached_property
    def index(self) -> pd.DatetimeIndex:
        """The run's timeline: the union of its symbols' bars (folds are positions on it)."""
        return Timeline(self.frames).index

    def window(self, start: int, stop: int, symbols: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """Each symbol's own bars inside timeline positions [start, stop)."""
        lo, hi = self.index[start], self.index[stop - 1]
        return {s: self.frames[s].loc[lo:hi] for s in (symbols or list(self.frames))}

    def units(self) -> list[list[str]]:
        syms = list(self.frames)
        return [syms] if self.settings["portfolio"] else [[s] for s in syms]

    @property
    def costs(self) -> Costs:
        return self.execution.costs

    @property
    def fill(self) -> Fill:
        return self.execution.fill

    def unit_execution(self, unit: list[str], **changes: Any) -> Execution:
        """The run's execution settings for some of its symbols (their recorded lot rules)."""
        return self.execution.replace(lots=self.execution.lot_map(unit), **changes)

    def evaluators(self, fold: Fold) -> list[Evaluator] | list[WeightEvaluator]:
        sl = fold.train()
        ppy = self.settings["periods_per_year"]
        if isinstance(self.strat, WeightStrategy):  # one portfolio of every symbol
            return [WeightEvaluator(self.strat, self.window(sl.start, sl.stop), execution=self.execution,
                                    periods_per_year=ppy)]
        return [Evaluator(self.strat, self.window(sl.start, sl.stop, unit),
                          execution=self.unit_execution(unit), periods_per_year=ppy)
                for unit in self.units()]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        fixed = self.settings["fixed"]
        values = {p.name: fixed[p.name] if p.name in fixed else p.suggest(trial)
                  for p in self.strat.space.params}
        if not self.strat.space.feasible(values):
            raise optuna.TrialPruned("parameter constraints not met")
        return self.strat.params(values)

    def work(self, storage: optuna.storages.BaseStorage, progress: Callable[[], None] | None = None) -> None:
        """Claim and evaluate trials, fold by fold, until every fold's budget is taken."""
        s = self.settings
        timeout = s["timeout"]
        for k, fold in enumerate(self.folds):
            sid = st.study_id(storage, self.study_name(k))
            st.recover_stale(storage, sid, self.stale_after)
            evaluators: Sequence[Evaluator | WeightEvaluator] | None = None
            deadline = None if timeout is None else time.monotonic() + timeout
            with indicator_cache():
                while True:
                    t0 = time.perf_counter()
                    tid = st.claim(storage, sid)
                    if tid is None:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        storage.set_trial_system_attr(tid, "failed_reason", "fold timeout")
                        storage.set_trial_state_values(tid, state=TrialState.FAIL)
                        st.release(tid)
                        continue
                    evaluators = evaluators or self.evaluators(fold)
                    self._trial(storage, sid, k, tid, evaluators, t0)
                    if progress is not None:
                        progress()
            st.sync(storage)

    def _trial(self, storage: optuna.storages.BaseStorage, sid: int, k: int, tid: int,
               evaluators: Sequence[Evaluator | WeightEvaluator], t0: float) -> None:
        s = self.settings
        tm = self.timings
        done = len(storage.get_all_trials(sid, deepcopy=False, states=st.FINISHED))
        sampler = make_sampler(s["sampler"], _seed(s["seed"], k, done), s["sampler_options"])
        study = optuna.load_study(study_name=self.study_name(k), storage=storage, sampler=sampler,
                                  pruner=make_pruner(s["pruner"], s["pruner_options"]))
        trial = optuna.Trial(study, tid)
        try:
            try:
                params = self.suggest(trial)
                t1 = time.perf_counter()
                tm["sample_s"] += t1 - t0
                rows = []
                for i, ev in enumerate(evaluators):
                    rows.append(ev.score(params))
                    if len(evaluators) > 1 and i < len(evaluators) - 1:
                        trial.report(float(np.mean([self.objective.value(r) for r in rows])), i)
                        if trial.should_prune():
                            raise optuna.TrialPruned(f"pruned after {i + 1} of {len(evaluators)} symbols")
                t2 = time.perf_counter()
                tm["backtest_s"] += t2 - t1
                metrics = _aggregate(rows)
                value = float(np.mean([self.objective.value(r) for r in rows]))
                trial.set_user_attr("metrics", metrics)
                # infeasible when positive: the sampler learns to avoid it, selection skips it
                trial.set_constraint("min_trades", self.objective.min_trades - (metrics["n_trades"] or 0))
                study.tell(trial, value)
                tm["storage_s"] += time.perf_counter() - t2
            except optuna.TrialPruned:
                tm["sample_s"] += time.perf_counter() - t0
                study.tell(trial, state=TrialState.PRUNED)
            tm["trials"] += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was recovered by another worker while running", trial.number)
        except Exception as exc:
            storage.set_trial_system_attr(tid, "failed_reason", f"{type(exc).__name__}: {exc}"[:500])
            storage.set_trial_state_values(tid, state=TrialState.FAIL)
            storage.create_new_trial(sid, template_trial=optuna.trial.create_trial(
                state=TrialState.WAITING, system_attrs={"fixed_params": {}}))
            if isinstance(exc, WorkbenchError):
                raise
            raise WorkbenchError(f"{self.strat.name} failed in fold {k} trial {trial.number}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        finally:
            st.release(tid)


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float | None]:
    """One metrics dict for a trial: the mean over symbols, trade counts summed (None where undefined)."""
    if len(rows) == 1:
        return {k: (v if math.isfinite(v) else None) for k, v in rows[0].items()}
    out: dict[str, float | None] = {}
    for key in rows[0]:
        vals = np.array([r[key] for r in rows], dtype=float)
        v = float(vals.sum()) if key in ("n_trades", "n_open_trades") else float(np.nanmean(vals)) \
            if np.isfinite(vals).any() else float("nan")
        out[key] = v if math.isfinite(v) else None
    return out


def _metric(m: Mapping[str, Any] | None, key: str) -> float:
    v = None if m is None else m.get(key)
    return float("nan") if v is None else float(v)


# ------------------------------------------------------------------------------------- entry points


def walk_forward(strategy: str | Strategy | WeightStrategy, bars: pd.DataFrame | Mapping[str, pd.DataFrame],
                 *,
                 splitter: WalkForward | None = None, folds: int = 8, n_trials: int = 100,
                 objective: str | ObjectiveMetric | Objective = ObjectiveMetric.SHARPE, min_trades: int = 1,
                 timeout: float | None = None, seed: int = 0, sampler: str | SamplerKind = SamplerKind.TPE,
                 sampler_options: Mapping[str, Any] | None = None,
                 pruner: str | PrunerKind | None = None, pruner_options: Mapping[str, Any] | None = None,
                 fixed: Mapping[str, Any] | None = None, workers: int = 1, storage: str | None = None,
                 name: str | None = None, execution: Execution | None = None, costs: Costs | None = None,
                 fill: Fill | str | None = None, sizing: Sizing | None = None,
                 direction: Direction | str | None = None, init_cash: float | None = None,
                 max_exposure: float | None = None, portfolio: bool = False,
                 timeframe: str | None = None, calendar: str | None = None, stale_after: float = 600.0,
                 progress: FoldProgress | None = None, save: bool = True,
                 lots: Lot | Mapping[str, Lot] | None = None) -> WalkForwardResult:
    """Walk-forward optimise `strategy` on `bars`; returns the fold table, OOS record and diagnostics.

    `workers` processes on this machine share each fold's study; more can join from anywhere with
    `join_run(run_id, storage)`. With several symbols each trades on its own and a trial scores the
    mean of their objectives (`portfolio=True` trades them together; a weight strategy always trades its
    universe as one portfolio, every fold refitting what it fits, e.g. `allocate`'s allocator, on the bars
    it sees). Re-running the same call
    resumes the run (or returns it, when finished); `name` fixes the run id. The execution settings
    as in `simulate` (one `Execution`, or its fields).
    """
    t_start = time.perf_counter()
    strat = resolve_strategy(strategy)
    frames = as_bar_dict(bars)
    run = _build_run(strat, frames, splitter=splitter or WalkForward(n_folds=folds), n_trials=n_trials,
                     objective=objective if isinstance(objective, Objective) else Objective(
                         metric=_member(ObjectiveMetric, objective, "objective"), min_trades=min_trades),
                     timeout=timeout, seed=seed, sampler=sampler, sampler_options=sampler_options,
                     pruner=pruner, pruner_options=pruner_options, fixed=fixed,
                     execution=Execution.of(execution, costs=costs, fill=fill, sizing=sizing,
                                            direction=direction, init_cash=init_cash,
                                            max_exposure=max_exposure, lots=lots),
                     portfolio=portfolio, timeframe=timeframe, calendar=calendar,
                     name=name, storage=storage, stale_after=stale_after)
    if workers < 1:
        raise ConfigError(f"workers={workers} must be at least 1")
    store = st.open_storage(run.storage_url)
    for k, fold in enumerate(run.folds):
        st.create_fold_study(store, run.study_name(k), run.settings["n_trials"], {
            "settings": run.settings, "run_id": run.run_id, "fold": k,
            "fold_bounds": [fold.train_start, fold.train_end, fold.test_start, fold.test_end]})
    budget = run.settings["n_trials"]
    sids = [st.study_id(store, run.study_name(k)) for k in range(len(run.folds))]
    last_poll = [0.0]

    def poll(force: bool = False) -> None:
        if progress is None or (not force and time.monotonic() - last_poll[0] < 0.25):
            return
        last_poll[0] = time.monotonic()
        for k, sid in enumerate(sids):
            progress(k, len(store.get_all_trials(sid, deepcopy=False, states=st.FINISHED)), budget)

    poll(force=True)
    children = _start_workers(run, workers - 1)
    diagnosed: dict[int, dict[str, Any]] = {}
    others: list[dict[str, float]] = []
    try:
        run.work(store, progress=poll)
        _wait_for_folds(run, store, sids, children, poll)
        optimize_s = time.perf_counter() - t_start
        # the processes share the folds' diagnostics (PBO and importances: most of the finishing work);
        # this one diagnoses its share while the others send theirs
        for k in _fold_shares(len(run.folds), workers)[0]:
            diagnosed[k] = _fold_diagnostics(run, store, sids[k], k)
        result = _finish(run, store, sids, diagnosed, gather=lambda: _collect(children, diagnosed, others,
                                                                  patience=run.stale_after))
    finally:
        for p, _ in children:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    poll(force=True)
    timings = dict(run.timings, optimize_s=optimize_s)
    for got in others:
        for key, v in got.items():
            timings[f"other_workers_{key}"] = timings.get(f"other_workers_{key}", 0.0) + v
    result.timings.update(timings, total_s=time.perf_counter() - t_start, workers=workers)
    if save:
        result.save()
    return result


def join_run(run_id: str, storage: str, *, bars: Mapping[str, pd.DataFrame] | None = None,
             lake: Any = None, wait: float = 0.0, progress: Callable[[], None] | None = None
             ) -> dict[str, float]:
    """Work on an existing run from another process or machine until its trial budget is taken.

    The bars come from `bars` or this machine's lake (as the run recorded them) and must have the
    run's data fingerprint. `wait` seconds allow starting workers before the run. Returns this
    worker's timings.
    """
    store = st.open_storage(storage)
    deadline = time.monotonic() + wait
    while True:
        try:
            attrs = optuna.load_study(study_name=f"{run_id}:fold0", storage=store).user_attrs
            if attrs.get("ready"):
                break
        except KeyError:
            pass
        if time.monotonic() >= deadline:
            raise ConfigError(f"run {run_id} is not in {st.redact(storage)}; start it with "
                              "`workbench optimize walk-forward ... --storage` first (or give --wait)")
        time.sleep(0.2)
    settings = attrs["settings"]
    if bars is None:
        from workbench.backtest.engine import load_bars
        from workbench.data.lake import Lake

        d = settings["data"]
        ex = Execution.from_dict(settings)
        bars = load_bars(lake or Lake(), settings["symbols"], settings["timeframe"], d["start"], d["end"],
                         source=d["source"], costs=ex.costs, fill=ex.fill)
    frames = as_bar_dict(bars)
    if fingerprint(frames) != settings["data"]["fingerprint"]:
        raise DataError(f"this worker's bars differ from run {run_id}'s (fingerprint "
                        f"{fingerprint(frames)[:12]} vs {settings['data']['fingerprint'][:12]}); "
                        "sync the same data into this machine's lake")
    run = _run_from_settings(run_id, settings, frames, storage)
    run.work(store, progress=progress)
    return dict(run.timings)


def _build_run(strat: Strategy | WeightStrategy, frames: dict[str, pd.DataFrame], *, splitter: WalkForward,
               n_trials: int,
               objective: Objective, timeout: float | None, seed: int, sampler: str | SamplerKind,
               sampler_options: Mapping[str, Any] | None, pruner: str | PrunerKind | None,
               pruner_options: Mapping[str, Any] | None, fixed: Mapping[str, Any] | None,
               execution: Execution, portfolio: bool, timeframe: str | None, calendar: str | None,
               name: str | None, storage: str | None, stale_after: float) -> _Run:
    if n_trials < 1:
        raise ConfigError(f"n_trials={n_trials} must be at least 1")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout={timeout} must be a positive number of seconds per fold")
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(strat.space.names))
    if unknown:
        raise ConfigError(f"{strat.name} has no parameter(s) {unknown}; it takes {strat.space.names}")
    free = [p.name for p in strat.space.params if p.name not in fixed]
    if not free:
        raise ConfigError(f"nothing to optimise: {strat.name}'s parameter space is empty or every "
                          "parameter is fixed; free at least one")
    make_sampler(sampler, seed, sampler_options)  # checks the name and options
    if isinstance(strat, WeightStrategy):
        check_weight_execution(execution, strat.name)
        portfolio = True  # (its targets span the universe: the symbols share one cash account)
    make_pruner(pruner, pruner_options)
    timeframe, calendar, ppy = resolve_annualisation(frames, timeframe, calendar, None)
    first = next(iter(frames.values()))
    worst_warmup = max(_warmup(strat, {**c, **fixed}) for c in _corners(strat))
    for s, df in frames.items():
        check_signal_bars(df, 0, s)
    # the splitter refuses folds too short for the largest warm-up any trial can draw
    splitter = replace(splitter, min_train_bars=max(splitter.min_train_bars, worst_warmup + 2))
    union = Timeline(frames).index  # folds split the union timeline (mixed calendars)
    folds = splitter.split(union)
    settings: dict[str, Any] = {
        "strategy": strat.name,
        "symbols": list(frames),
        "timeframe": timeframe,
        "calendar": calendar,
        "periods_per_year": ppy,
        # end is exclusive (as load_bars takes it): just after the last bar
        "data": {"source": first.attrs.get("source"), "start": union[0].isoformat(),
                 "end": (union[-1] + pd.Timedelta(1, "us")).isoformat(), "bars": len(union),
                 "fingerprint": fingerprint(frames)},
        "splitter": splitter.describe(),
        "objective": {**asdict(objective), "metric": objective.metric.value},
        "n_trials": int(n_trials),
        "timeout": timeout,
        "seed": int(seed),
        "sampler": _member(SamplerKind, sampler, "sampler").value,
        "sampler_options": dict(sampler_options or {}),
        "pruner": _member(PrunerKind, pruner or PrunerKind.NONE, "pruner").value,
        "pruner_options": dict(pruner_options or {}),
        "fixed": fixed,
        **execution.to_dict(list(frames)),
        "portfolio": bool(portfolio),
    }
    run_id = name or run_id_for(settings)
    if not run_id or any(c in run_id for c in "/\\:") or run_id.startswith("."):
        raise ConfigError(f"run name {run_id!r} must be non-empty without / \\ : or a leading dot")
    url = storage or st.default_storage(run_id)
    return _Run(run_id=run_id, settings=settings, frames=frames, strat=strat, folds=folds,
                objective=objective, execution=Execution.from_dict(settings), storage_url=url,
                stale_after=stale_after)


def _corners(strat: Strategy | WeightStrategy) -> list[dict[str, Any]]:
    """Parameter sets at the ends of every range (for the largest warm-up any trial can need)."""
    lo = {p.name: p.low if p.kind in ("int", "float") else p.default for p in strat.space.params}
    hi = {p.name: p.high if p.kind in ("int", "float") else p.default for p in strat.space.params}
    return [lo, hi]


def _warmup(strat: Strategy | WeightStrategy, params: dict[str, Any]) -> int:
    try:
        return int(strat.warmup(params))
    except (KeyError, TypeError, ValueError):
        return 1


def _run_from_settings(run_id: str, settings: dict[str, Any], frames: dict[str, pd.DataFrame],
                       storage: str) -> _Run:
    strat = resolve_strategy(settings["strategy"])
    splitter = WalkForward.from_describe(settings["splitter"])
    return _Run(run_id=run_id, settings=settings, frames=frames, strat=strat,
                folds=splitter.split(Timeline(frames).index),
                objective=Objective(**settings["objective"]), execution=Execution.from_dict(settings),
                storage_url=storage)


def _child(run: _Run, parent: int, queue: Any, index: int, processes: int) -> None:
    """A forked local worker: its own storage connection, its own identity, same bars in memory. Once
    no trial is left to claim it diagnoses folds `index`, `index + processes`, ... (each once its
    trials have all finished) and sends them, then its timings."""
    st.reset_worker_identity()
    store = st.open_storage(run.storage_url)

    def check_parent() -> None:
        if os.getppid() != parent:  # the coordinator died: stop, its restart recovers our trial
            os._exit(3)

    run.timings = {k: 0.0 for k in run.timings}
    run.work(store, progress=check_parent)
    queue.put(("timings", run.timings))
    for k in _fold_shares(len(run.folds), processes)[index]:
        sid = st.study_id(store, run.study_name(k))
        while store.get_all_trials(sid, deepcopy=False, states=_OPEN):  # others' trials still running
            check_parent()
            time.sleep(0.02)
        queue.put(("fold", k, _fold_diagnostics(run, store, sid, k, parallel=False)))
    queue.put(("done",))


def _fold_shares(n_folds: int, processes: int) -> list[list[int]]:
    """Which folds each process diagnoses (0: the coordinator): in turn, except that the coordinator,
    which also runs the out-of-sample windows and the run's diagnostics (about two folds' work, measured
    with bench/walkforward.py), gives up to two of its folds to the workers."""
    shares = [list(range(i, n_folds, processes)) for i in range(processes)]
    for give in range(2):
        if processes > 1 and len(shares[0]) > 1:
            shares[1 + give % (processes - 1)].append(shares[0].pop())
    return shares


def _collect(children: list[tuple[Any, Any]], diagnosed: dict[int, dict[str, Any]],
             timings: list[dict[str, float]], patience: float = 600.0) -> None:
    """Read what the worker processes send (their timings, their folds' diagnostics) until each says it
    is done or has exited; a fold a worker did not send is diagnosed by `_finish` instead."""
    import queue as queues

    for p, q in children:
        heard = time.monotonic()
        while True:
            try:
                msg = q.get(timeout=0.05)
            except queues.Empty:
                if p.exitcode is not None and q.empty():
                    break  # (died: its folds are left to _finish)
                if time.monotonic() - heard > patience:  # stuck: stop it, _finish does its folds
                    log.warning("worker %s sent nothing for %.0f s; its folds are diagnosed here", p.pid,
                                patience)
                    p.terminate()
                    break
                continue
            heard = time.monotonic()
            if msg[0] == "done":
                break
            if msg[0] == "timings":
                timings.append(msg[1])
            else:
                diagnosed[msg[1]] = msg[2]


def _start_workers(run: _Run, n: int) -> list[tuple[Any, Any]]:
    if n <= 0:
        return []
    ctx = mp.get_context("fork")  # the children share the loaded bars and compiled kernels
    out: list[tuple[Any, Any]] = []
    # a child must never run the finalisers of objects it inherited: a Jupyter kernel's zmq sockets
    # (or a database connection) collected in a forked process can crash it; frozen objects are
    # never collected, in the children or (until unfrozen) here
    gc.collect()
    gc.freeze()
    try:
        for _ in range(n):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(run, os.getpid(), q, len(out) + 1, n + 1), daemon=True)
            p.start()
            out.append((p, q))
    finally:
        gc.unfreeze()
    return out


def _wait_for_folds(run: _Run, store: optuna.storages.BaseStorage, sids: list[int],
                    children: list[tuple[Any, Any]], poll: Callable[..., None]) -> None:
    """Wait until no trial of any fold is waiting or running (other workers finishing theirs)."""
    while True:
        waiting = running = 0
        for sid in sids:
            st.recover_stale(store, sid, run.stale_after)
            for t in store.get_all_trials(sid, deepcopy=False, states=_OPEN):
                waiting += t.state is TrialState.WAITING
                running += t.state is TrialState.RUNNING
        if waiting:  # budget put back by a recovery (or left by a worker that stopped): do it here
            run.work(store, progress=poll)
            continue
        if running == 0:
            break
        poll()
        time.sleep(0.1)
    bad = [p.exitcode for p, _ in children if p.exitcode not in (None, 0)]
    if bad:
        log.warning("worker process(es) exited with %s; their trials were recovered", bad)


# --------------------------------------------------------------------------------- post-processing


def _fold_trials(run: _Run, trials: Sequence[optuna.trial.FrozenTrial]
                 ) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """A fold's complete trials, and those of them that are feasible (enough trades, a real score)."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    feasible = [t for t in complete
                if _metric(t.user_attrs.get("metrics"), "n_trades") >= run.objective.min_trades
                and t.value is not None and t.value > WORST]
    return complete, feasible


def _fold_diagnostics(run: _Run, store: optuna.storages.BaseStorage, sid: int, k: int, *,
                      parallel: bool = True) -> dict[str, Any]:
    """Fold k's PBO and parameter importances, from its finished trials."""
    complete, feasible = _fold_trials(run, store.get_all_trials(sid, deepcopy=False))
    return {"pbo": _fold_pbo(run, run.folds[k], feasible, parallel=parallel),
            "importances": _importances(run, complete)}


def _finish(run: _Run, store: optuna.storages.BaseStorage, sids: list[int],
            diagnosed: Mapping[int, Mapping[str, Any]] | None = None,
            gather: Callable[[], None] | None = None) -> WalkForwardResult:
    """The run's result from its trials: out-of-sample windows, fold table and diagnostics. Each fold's
    PBO and importances come from `diagnosed` (`gather()`, called once everything else is done, fills
    in what other processes computed) or are computed here."""
    s = run.settings
    names = run.strat.space.names
    trial_rows: list[dict[str, Any]] = []
    fold_rows: list[dict[str, Any]] = []
    equities: list[pd.Series] = []
    exposures: list[np.ndarray] = []
    traded_value = 0.0
    trades: list[pd.DataFrame] = []
    importances: list[dict[str, float]] = []
    pbo_per_fold: list[dict[str, Any]] = []
    sr_vars: list[float] = []
    fold_trials: list[tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]] = []
    cash = s["init_cash"]
    sqrt_ppy = math.sqrt(s["periods_per_year"])
    for k, (fold, sid) in enumerate(zip(run.folds, sids, strict=True)):
        trials = store.get_all_trials(sid, deepcopy=False)
        for t in trials:
            m = t.user_attrs.get("metrics")
            trial_rows.append({"fold": k, "number": t.number, "state": t.state.name, "value": t.value,
                               **{p: t.params.get(p, s["fixed"].get(p)) for p in names},
                               "sharpe": _metric(m, "sharpe"), "total_return": _metric(m, "total_return"),
                               "max_drawdown": _metric(m, "max_drawdown"), "n_trades": _metric(m, "n_trades"),
                               "worker": t.system_attrs.get("worker"),
                               "failed_reason": t.system_attrs.get("failed_reason"),
                               "duration_s": (t.duration.total_seconds() if t.duration else None)})
        complete, feasible = _fold_trials(run, trials)
        fold_trials.append((complete, feasible))
        sharpes = np.array([_metric(t.user_attrs.get("metrics"), "sharpe") for t in complete]) / sqrt_ppy
        sharpes = sharpes[np.isfinite(sharpes)]
        if sharpes.size > 1:
            sr_vars.append(float(np.var(sharpes, ddof=1)))
        best = max(feasible, key=lambda t: (t.value, -t.number)) if feasible else None
        params = run.strat.params({**{p: best.params.get(p) for p in best.params}, **s["fixed"]}) \
            if best else None
        equity, tr, oos, gross, traded = _oos_window(run, fold, params, cash)
        equity.name = "equity"
        cash = float(equity.iloc[-1])
        equities.append(equity)
        exposures.append(gross)
        traded_value += traded
        if len(tr):
            trades.append(tr.assign(fold=k))
        is_m = best.user_attrs.get("metrics") if best else None
        row: dict[str, Any] = {
            "fold": k, "train_start": run.index[fold.train_start],
            "train_end": run.index[fold.train_end - 1],
            "test_start": equity.index[0], "test_end": equity.index[-1],
            "n_trials": len(trials), "n_complete": len(complete), "n_feasible": len(feasible),
            "n_pruned": sum(t.state is TrialState.PRUNED for t in trials),
            "n_failed": sum(t.state is TrialState.FAIL for t in trials),
            "best_trial": best.number if best else None,
            **{f"param_{p}": (params or {}).get(p) for p in names},
            "is_objective": best.value if best else float("nan"),
            "is_sharpe": _metric(is_m, "sharpe"), "is_annual_return": _metric(is_m, "annual_return"),
            "is_max_drawdown": _metric(is_m, "max_drawdown"), "is_n_trades": _metric(is_m, "n_trades"),
            "oos_objective": run.objective.raw(oos) if params else float("nan"),
            "oos_sharpe": oos["sharpe"], "oos_annual_return": oos["annual_return"],
            "oos_total_return": oos["total_return"], "oos_max_drawdown": oos["max_drawdown"],
            "oos_n_trades": oos["n_trades"],
        }
        is_ret = row["is_annual_return"]
        row["wfe"] = row["oos_annual_return"] / is_ret if is_ret and is_ret > 0 else float("nan")
        fold_rows.append(row)
    trials_df = pd.DataFrame(trial_rows)
    oos_equity = pd.concat(equities)
    oos_trades = pd.concat(trades, ignore_index=True) if trades else pd.DataFrame(
        columns=["symbol", "direction", "entry_time", "exit_time", "pnl", "return", "fold"])
    bench = _benchmark(run, oos_equity.index)
    n_complete = int(sum(r["n_complete"] for r in fold_rows))
    diagnostics = _diagnostics(run, pd.DataFrame(fold_rows), oos_equity, bench, oos_trades, n_complete,
                               float(np.mean(sr_vars)) if sr_vars else float("nan"), [],
                               exposure=np.concatenate(exposures), traded_value=traded_value)
    # last, each fold's PBO and importances (computed here, or by the other processes meanwhile)
    if gather is not None:
        gather()
    for k, row in enumerate(fold_rows):
        complete, feasible = fold_trials[k]
        diag = (diagnosed or {}).get(k) or {"pbo": _fold_pbo(run, run.folds[k], feasible),
                                            "importances": _importances(run, complete)}
        row["pbo"] = diag["pbo"].get("pbo", float("nan"))
        pbo_per_fold.append({"fold": k, **diag["pbo"]})
        importances.append({"fold": k, **diag["importances"]})
    folds = pd.DataFrame(fold_rows)
    diagnostics = replace(diagnostics, pbo=_pbo_summary(pbo_per_fold))
    imp = pd.DataFrame(importances).set_index("fold") if importances else pd.DataFrame()
    stability = param_stability(folds, run.strat, s["fixed"])
    inputs = {"run_id": run.run_id, **s, "storage": st.redact(run.storage_url),
              "code_version": code_version(), "folds": [asdict(f) for f in run.folds]}
    return WalkForwardResult(run_id=run.run_id, settings=s, inputs=inputs, folds=folds, trials=trials_df,
                             oos_equity=oos_equity, oos_benchmark=bench, oos_trades=oos_trades,
                             diagnostics=diagnostics, importances=imp, stability=stability,
                             timings={})


def _oos_window(run: _Run, fold: Fold, params: dict[str, Any] | None, cash: float
                ) -> tuple[pd.Series, pd.DataFrame, dict[str, float], np.ndarray, float]:
    """Trade the test window with the fold's winner: flat at start and end, signals warmed up on the
    bars before it. No winner (no feasible trial) means staying flat.

    Returns the equity, trades and metrics of the window, its per-bar gross exposure (fraction of the
    window's equity) and the value it traded, from which the stitched OOS exposure and turnover come."""
    s = run.settings
    syms = s["symbols"]
    test_index = run.index[fold.test_start:fold.test_end]
    if params is None:
        flat = pd.Series(cash, index=test_index)
        none = np.zeros(len(test_index))
        metrics = compute_metrics(flat, cash, s["periods_per_year"], exposure=none, traded_value=0.0)
        return flat, pd.DataFrame(), {**metrics, "n_trades": 0, "n_open_trades": 0}, none, 0.0
    start = max(0, fold.test_start - signal_lookback(run.strat, params))
    sub = run.window(start, fold.test_end, syms)
    if isinstance(run.strat, WeightStrategy):
        return _oos_weights(run, run.strat, sub, test_index, params, cash)
    lag = 1 if run.fill is Fill.NEXT_OPEN else 0
    signals = {}
    for sym in syms:
        # positions on the symbol's own bars (mixed calendars: each has its own)
        n = len(sub[sym])
        off = int(sub[sym].index.searchsorted(test_index[0]))
        last = n - 1 - lag  # the bar whose exit signal fills inside the window
        arrays = run.strat.signals(sub[sym], params, validate=False).arrays(n, run.strat.name)
        # copies: the arrays may be the strategy's own (or read-only views of pandas data)
        a: dict[str, Any] = {k: v.copy() for k, v in arrays.items()}
        for key in ("long_entries", "short_entries"):
            a[key][:off] = False
            a[key][max(off, last, 0):] = False
        if last >= 0:
            for key in ("long_exits", "short_exits"):
                a[key][last] = True
        signals[sym] = Signals(**a)
    units = run.units()
    equity = pd.Series(0.0, index=test_index)
    held = np.zeros(len(test_index))  # gross position value, summed over units
    traded = 0.0
    trade_parts = []
    for unit in units:
        share = cash / len(units)
        res = simulate({sym: sub[sym] for sym in unit}, {sym: signals[sym] for sym in unit},
                       execution=run.unit_execution(unit, init_cash=share),
                       periods_per_year=s["periods_per_year"], timeframe=s["timeframe"],
                       calendar=s["calendar"], strategy=run.strat.name, params=params)
        # a unit's own timeline may be sparser than the run's: its value holds between its bars
        full = res.equity.index.union(test_index)
        value = res.equity.reindex(full).ffill().fillna(share).reindex(test_index).to_numpy()
        equity = equity + value
        if res.gross_exposure is not None:
            ratio = res.gross_exposure.reindex(full).ffill().fillna(0.0).reindex(test_index).to_numpy()
            held += ratio * value
        inside = res.orders[res.orders["time"] >= test_index[0]]
        traded += float((inside["size"].abs() * inside["price"]).sum())
        trade_parts.append(res.trades)
    tr = pd.concat(trade_parts, ignore_index=True) if trade_parts else pd.DataFrame()
    tr = tr[tr["entry_time"] >= test_index[0]] if len(tr) else tr
    values = equity.to_numpy()
    gross = np.divide(held, values, out=np.zeros_like(held), where=values != 0.0)
    metrics = compute_metrics(equity, cash, s["periods_per_year"], trades=tr if len(tr) else None,
                              exposure=gross, traded_value=traded)
    metrics["n_trades"] = int((tr["status"] == "closed").sum()) if len(tr) else 0
    if not len(tr):
        metrics["n_open_trades"] = 0
    return equity, tr.reset_index(drop=True), metrics, gross, traded


def _oos_weights(run: _Run, strat: WeightStrategy, sub: dict[str, pd.DataFrame], test_index: pd.DatetimeIndex,
                 params: dict[str, Any], cash: float
                 ) -> tuple[pd.Series, pd.DataFrame, dict[str, float], np.ndarray, float]:
    """`_oos_window` for a weight strategy: its targets computed on the window's bars with the warm-up
    before it; the targets in force when the window opens act at its first bar (they fill at its open,
    or its first close), those of later rebalance bars as they come, and every symbol is sold out by the
    window's last bar, so the window starts and ends in cash like a signal strategy's."""
    s = run.settings
    lag = 1 if run.fill is Fill.NEXT_OPEN else 0
    targets = {}
    for sym, own in strat.targets(sub, params).items():
        t = own.to_numpy(dtype=float).copy()
        off = int(sub[sym].index.searchsorted(test_index[0]))  # the symbol's first bar in the window
        act = off - lag  # the signal bar whose order fills at the window's first own bar
        if act >= 0:
            known = np.flatnonzero(~np.isnan(t[:act + 1]))
            carried = t[known[-1]] if known.size else np.nan
            t[:act + 1] = np.nan
            t[act] = carried
        last = len(t) - 1 - lag  # flat at the end: the last signal bar whose order fills inside
        if last >= max(act, 0):
            t[last] = 0.0
            t[last + 1:] = np.nan
        targets[sym] = t
    ex = run.execution
    res = simulate_weights(sub, targets, costs=ex.costs, fill=ex.fill, init_cash=cash,
                           max_exposure=ex.max_exposure, lots=ex.lot_map(list(sub)))
    equity = res.equity.reindex(test_index).ffill().fillna(cash)
    values = held_values(res, sub).reindex(test_index).fillna(0.0)
    eq = equity.to_numpy()
    gross = np.divide(values.abs().sum(axis=1).to_numpy(), eq, out=np.zeros(len(eq)), where=eq != 0.0)
    tr = weight_trades(res.orders)
    o = res.orders
    traded = float((o["size"] * o["price"]).sum()) if len(o) else 0.0
    metrics = compute_metrics(equity, cash, s["periods_per_year"], trades=tr if len(tr) else None,
                              exposure=gross, traded_value=traded)
    metrics["n_trades"] = int((tr["status"] == "closed").sum()) if len(tr) else 0
    if not len(tr):
        metrics["n_open_trades"] = 0
    return equity, tr, metrics, gross, traded


def _benchmark(run: _Run, index: pd.DatetimeIndex) -> pd.Series:
    """Buy-and-hold (equal weight) over the out-of-sample span with the run's costs."""
    s = run.settings
    tl = Timeline({sym: run.frames[sym].loc[index[0]:index[-1]] for sym in s["symbols"]})
    open_, _, _, close = tl.prices()
    bench = buy_and_hold(open_, close, tl.index, run.costs, run.fill, s["init_cash"], tl.slippage(run.costs))
    return bench.reindex(index)


def _fold_pbo(run: _Run, fold: Fold, feasible: Sequence[optuna.trial.FrozenTrial], *,
              parallel: bool = True) -> dict[str, Any]:
    """PBO (CSCV) of one fold from its distinct feasible trials' train-window returns."""
    seen: dict[str, dict[str, Any]] = {}
    for t in feasible:
        p = run.strat.params({**t.params, **run.settings["fixed"]})
        seen.setdefault(json.dumps(p, sort_keys=True, default=str), p)
    combos = list(seen.values())
    n = fold.n_train
    splits = 16
    while splits > 2 and n < 2 * splits:
        splits -= 2
    if len(combos) < 2 or n < 4:
        return {"pbo": float("nan"), "n_configs": len(combos),
                "note": "fewer than 2 distinct feasible trials"}
    returns = np.zeros((n, len(combos)))
    with indicator_cache():  # trials share moving-average windows: each is computed once
        for ev in run.evaluators(fold):
            _add_returns(ev.equity_curves(combos, parallel=parallel), float(ev.init_cash),
                         1.0 / len(run.units()), returns)
    res = pbo_cscv(returns, n_splits=splits)
    return {"pbo": res.pbo, "n_configs": len(combos), "n_splits": splits,
            "prob_oos_loss": res.prob_oos_loss, "logit_median": float(np.median(res.logits))}


@numba.njit(cache=True, error_model="numpy")
def _add_returns(values: np.ndarray, init_cash: float, weight: float, out: np.ndarray) -> None:
    """out (n, K) += weight x the bar returns of equity curves `values` (K, n), the first from
    `init_cash` (one pass: the curves of a fold's trials are tens of MB)."""
    k, n = values.shape
    for i in range(n):
        for c in range(k):
            prev = values[c, i - 1] if i > 0 else init_cash
            out[i, c] += (values[c, i] / prev - 1.0) * weight


IMPORTANCE_TREES = 16


def _importances(run: _Run, complete: Sequence[optuna.trial.FrozenTrial]) -> dict[str, float]:
    """fANOVA parameter importances of one fold's scored trials (empty when not computable)."""
    scored = [t for t in complete if t.value is not None and t.value > WORST and t.params]
    varying = {p for p in run.strat.space.names if p not in run.settings["fixed"]
               and len({t.params.get(p) for t in scored}) > 1}
    if len(scored) < 3 or not varying:
        return {}
    study = optuna.create_study(direction="maximize")
    study.add_trials([t for t in scored if set(t.params) >= varying])
    try:
        # 16 trees, not Optuna's 64: a fold holds tens of trials, and fANOVA took longer than they did
        ev = optuna.importance.FanovaImportanceEvaluator(n_trees=IMPORTANCE_TREES, seed=run.settings["seed"])
        return {k: float(v) for k, v in
                optuna.importance.get_param_importances(study, evaluator=ev, params=sorted(varying)).items()}
    except (ValueError, RuntimeError) as exc:
        log.info("importances not computable: %s", exc)
        return {}


@dataclass(frozen=True)
class Diagnostics:
    """The out-of-sample record's overfitting diagnostics, typed: headline figures as properties,
    each test's detail as its own block (what `to_dict` stores in the run record)."""

    oos_metrics: dict[str, Any]
    n_trials: int
    trial_sharpe_variance: float
    deflated_sharpe: dict[str, Any]
    sharpe_test: dict[str, Any]
    pbo: dict[str, Any]  # mean, per_fold
    benchmark: dict[str, Any]
    monte_carlo: dict[str, Any]  # bootstrap, shuffle (or a note without closed trades)
    walk_forward_efficiency: float
    sharpe_efficiency: float
    sharpe_efficiency_folds: int

    @property
    def dsr(self) -> float:
        """Deflated Sharpe ratio: the probability the OOS Sharpe beats the best of the trials by luck."""
        return _num(self.deflated_sharpe.get("dsr"))

    @property
    def pbo_mean(self) -> float:
        """Probability of backtest overfitting, averaged over the folds that have one."""
        return _num(self.pbo.get("mean"))

    @property
    def sharpe_p_value(self) -> float:
        return _num(self.sharpe_test.get("p_value"))

    @property
    def psr(self) -> float:
        """Probabilistic Sharpe ratio against zero."""
        return _num(self.sharpe_test.get("psr"))

    @property
    def excess_return(self) -> float:
        """OOS return over buy-and-hold of the same symbols with the same costs."""
        return _num(self.benchmark.get("excess_return", self.oos_metrics.get("excess_return")))

    @property
    def benchmark_return(self) -> float:
        return _num(self.benchmark.get("benchmark_return"))

    @property
    def bootstrap_p_loss(self) -> float:
        """Share of bootstrapped trade sequences that lose money (NaN without closed trades)."""
        return _num((self.monte_carlo.get("bootstrap") or {}).get("total_return_p_loss"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as the run record stores it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnostics:
        """Inverse of `to_dict` (records of older runs miss newer blocks: those read as NaN)."""
        nan = float("nan")
        return cls(oos_metrics=dict(d.get("oos_metrics", {})), n_trials=int(d.get("n_trials") or 0),
                   trial_sharpe_variance=_num(d.get("trial_sharpe_variance")),
                   deflated_sharpe=dict(d.get("deflated_sharpe", {"dsr": nan})),
                   sharpe_test=dict(d.get("sharpe_test", {})), pbo=dict(d.get("pbo", {"mean": nan})),
                   benchmark=dict(d.get("benchmark", {})), monte_carlo=dict(d.get("monte_carlo", {})),
                   walk_forward_efficiency=_num(d.get("walk_forward_efficiency")),
                   sharpe_efficiency=_num(d.get("sharpe_efficiency")),
                   sharpe_efficiency_folds=int(d.get("sharpe_efficiency_folds") or 0))

    def __getitem__(self, key: str) -> Any:
        """Key access as in records of earlier versions (prefer the attributes)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _diagnostics(run: _Run, folds: pd.DataFrame, equity: pd.Series, bench: pd.Series, trades: pd.DataFrame,
                 n_trials: int, sr_variance: float, pbo_per_fold: list[dict[str, Any]], *,
                 exposure: np.ndarray | None = None, traded_value: float = 0.0) -> Diagnostics:
    s = run.settings
    ppy = s["periods_per_year"]
    init = s["init_cash"]
    values = equity.to_numpy(dtype=float)
    rets = values / np.concatenate([[init], values[:-1]]) - 1.0
    bvals = bench.to_numpy(dtype=float)
    brets = bvals / np.concatenate([[init], bvals[:-1]]) - 1.0
    oos = compute_metrics(equity, init, ppy, trades=trades if len(trades) else None, benchmark=bench,
                          index=cast(pd.DatetimeIndex, equity.index),  # the test bars' times
                          exposure=exposure, traded_value=traded_value)
    if not len(trades):
        oos["n_trades"] = 0
        oos["n_open_trades"] = 0
    out: dict[str, Any] = {"oos_metrics": oos, "n_trials": n_trials, "trial_sharpe_variance": sr_variance}
    out["deflated_sharpe"] = (deflated_sharpe_ratio(rets, n_trials=max(n_trials, 1),
                                                    sr_variance=sr_variance).as_dict()
                              if math.isfinite(sr_variance) else {"dsr": float("nan")})
    out["sharpe_test"] = sharpe_significance(rets, periods_per_year=ppy).as_dict()
    out["pbo"] = _pbo_summary(pbo_per_fold)
    out["benchmark"] = compare_to_benchmark(rets, brets, periods_per_year=ppy)
    closed = trades[trades["status"] == "closed"] if len(trades) and "status" in trades else trades
    if len(closed):
        at_entry = equity.reindex(pd.DatetimeIndex(closed["entry_time"]), method="ffill").to_numpy()
        trade_rets = closed["pnl"].to_numpy(dtype=float) / at_entry
        out["monte_carlo"] = {m: bootstrap_trades(trade_rets, seed=s["seed"], method=m).as_dict()
                              for m in ("bootstrap", "shuffle")}
    else:
        out["monte_carlo"] = {"note": "no closed out-of-sample trades"}
    is_ret = folds["is_annual_return"].mean()
    out["walk_forward_efficiency"] = float(folds["oos_annual_return"].mean() / is_ret) if is_ret > 0 \
        else float("nan")
    # a fold whose IS or OOS Sharpe is undefined (no trades, flat equity) has no place in a Sharpe ratio
    defined = np.isfinite(folds["is_sharpe"].to_numpy(dtype=float)) & \
        np.isfinite(folds["oos_sharpe"].to_numpy(dtype=float))
    is_sh = float(folds["is_sharpe"][defined].mean()) if defined.any() else float("nan")
    out["sharpe_efficiency"] = float(folds["oos_sharpe"][defined].mean() / is_sh) if is_sh > 0 \
        else float("nan")
    out["sharpe_efficiency_folds"] = int(defined.sum())
    return Diagnostics(**out)


def _pbo_summary(pbo_per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's PBO: the mean over the folds that have one, and each fold's."""
    pbos = [p["pbo"] for p in pbo_per_fold if math.isfinite(p.get("pbo", float("nan")))]
    return {"mean": float(np.mean(pbos)) if pbos else float("nan"), "per_fold": pbo_per_fold}


def param_stability(folds: pd.DataFrame, strat: Strategy | WeightStrategy,
                    fixed: Mapping[str, Any]) -> pd.DataFrame:
    """How much each optimised parameter moves across folds (std relative to its range, modal share)."""
    rows = []
    for p in strat.space.params:
        if p.name in fixed:
            continue
        vals = folds[f"param_{p.name}"].dropna()
        row: dict[str, Any] = {"param": p.name,
                               "values": [v.item() if hasattr(v, "item") else v for v in vals]}
        if len(vals):
            counts = vals.astype(str).value_counts()
            row["mode"] = vals.iloc[[str(v) for v in vals].index(counts.index[0])]
            row["mode_share"] = float(counts.iloc[0] / len(vals))
        if p.kind in ("int", "float") and len(vals):
            num = vals.astype(float)
            low, high = p.bounds
            row.update(mean=float(num.mean()), std=float(num.std(ddof=0)),
                       range_share=float(num.std(ddof=0) / (high - low)) if high != low else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- the result


@dataclass
class WalkForwardResult:
    """A finished walk-forward run: fold table, trials, stitched OOS record, diagnostics, figures."""

    run_id: str
    settings: dict[str, Any]
    inputs: dict[str, Any]
    folds: pd.DataFrame
    trials: pd.DataFrame
    oos_equity: pd.Series
    oos_benchmark: pd.Series
    oos_trades: pd.DataFrame
    diagnostics: Diagnostics
    importances: pd.DataFrame
    stability: pd.DataFrame
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def oos_metrics(self) -> dict[str, float]:
        """Metrics of the stitched out-of-sample equity curve."""
        return self.diagnostics.oos_metrics

    def summary(self) -> dict[str, Any]:
        """The headline figures, for a CLI table or a promotion gate."""
        d = self.diagnostics
        m = d.oos_metrics
        return {
            "run_id": self.run_id, "strategy": self.settings["strategy"], "folds": len(self.folds),
            "trials": d.n_trials, "oos_total_return": m["total_return"], "oos_sharpe": m["sharpe"],
            "oos_max_drawdown": m["max_drawdown"], "oos_trades": m["n_trades"],
            "benchmark_return": d.benchmark_return, "walk_forward_efficiency": d.walk_forward_efficiency,
            "deflated_sharpe": d.dsr, "pbo": d.pbo_mean, "sharpe_p_value": d.sharpe_p_value,
        }

    def figure(self) -> Any:
        """OOS equity vs buy-and-hold with the fold boundaries and each fold's parameters."""
        from workbench.optimize.plots import oos_equity_figure

        return oos_equity_figure(self)

    def scatter_figure(self) -> Any:
        """In-sample vs out-of-sample objective per fold (points below the diagonal lost their edge)."""
        from workbench.optimize.plots import is_oos_figure

        return is_oos_figure(self)

    def stability_figure(self) -> Any:
        """Each optimised parameter's chosen value per fold, against its range."""
        from workbench.optimize.plots import stability_figure

        return stability_figure(self)

    def save(self, root: Any = None) -> Any:
        """Write the run record (``data/runs/<run_id>/``) atomically; promotion and reports read it."""
        from workbench.optimize.records import save_run

        return save_run(self, root)
