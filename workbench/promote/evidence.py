"""The evidence a promotion is judged on: every gate's value, measured from a walk-forward run record.

Most values are read from the run's diagnostics. Two are re-checked against the lake now: the
look-ahead check re-runs the strategy with the promoted parameters on the run's bars (truncated and
randomly continued after several cuts), and the data fingerprint is recomputed over the same range.
The promoted parameters are the last fold's (trained on the most recent window).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.backtest.metrics import na_reason
from workbench.errors import ConfigError, WorkbenchError
from workbench.strategies.base import Strategy
from workbench.strategies.weights import WeightStrategy

if TYPE_CHECKING:
    from workbench.backtest.engine import BacktestResult
    from workbench.backtest.portfolio import PortfolioResult
    from workbench.data.quality import QualityReport
    from workbench.optimize.walkforward import Diagnostics, WalkForwardResult

log = logging.getLogger(__name__)

LOOKAHEAD_CUTS = 5


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """Gate values (`values`), a reason per gate where there is more to say (`details`), and the
    full record kept in the artifact (`record`)."""

    values: dict[str, Any]
    details: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_values(diagnostics: Diagnostics | Mapping[str, Any]) -> dict[str, float]:
    """The numeric gate values of a run, from its diagnostics (NaN where the run has none)."""
    from workbench.optimize.walkforward import Diagnostics

    d = diagnostics if isinstance(diagnostics, Diagnostics) else Diagnostics.from_dict(diagnostics)
    m = d.oos_metrics
    return {
        "oos_sharpe": _num(m.get("sharpe")),
        "deflated_sharpe": d.dsr,
        "sharpe_p_value": d.sharpe_p_value,
        "psr": d.psr,
        "pbo": d.pbo_mean,
        "oos_trades": _num(m.get("n_trades")),
        "oos_max_drawdown": abs(_num(m.get("max_drawdown"))),
        "oos_total_return": _num(m.get("total_return")),
        "excess_return": d.excess_return,
        "walk_forward_efficiency": d.walk_forward_efficiency,
        "bootstrap_p_loss": d.bootstrap_p_loss,
    }


def _plain(value: Any) -> Any:
    """numpy scalars to Python, NaN to None (a fold without a winner has NaN parameters)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def promoted_params(folds: pd.DataFrame, settings: Mapping[str, Any], strat: Strategy | WeightStrategy
                    ) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """The parameters to promote, the fold they come from, and every fold's chosen parameters.

    The last fold's winner (trained on the most recent window) merged with the run's fixed values and
    validated by the strategy. A last fold without a feasible trial falls back to the latest fold that
    had one (logged); a run with none anywhere cannot be promoted.
    """
    cols = [c for c in folds.columns if c.startswith("param_")]
    table: list[dict[str, Any]] = []
    for _, row in folds.iterrows():
        chosen = _plain(row.get("best_trial")) is not None
        entry = {"fold": int(row["fold"]),
                 "train_start": _iso(row.get("train_start")), "train_end": _iso(row.get("train_end")),
                 "test_start": _iso(row.get("test_start")), "test_end": _iso(row.get("test_end")),
                 "params": {c.removeprefix("param_"): _plain(row[c]) for c in cols} if chosen else None,
                 "is_sharpe": _plain(row.get("is_sharpe")), "oos_sharpe": _plain(row.get("oos_sharpe")),
                 "oos_n_trades": _plain(row.get("oos_n_trades"))}
        table.append(entry)
    chosen_folds = [e for e in table if e["params"] is not None]
    if not chosen_folds:
        raise ConfigError("the run chose no parameters in any fold (no feasible trial); re-run the "
                          "walk-forward with more trials or a lower --min-trades")
    last = chosen_folds[-1]
    if last is not table[-1]:
        log.warning("the last fold (%d) had no feasible trial; promoting fold %d's parameters",
                    table[-1]["fold"], last["fold"])
    values = {k: v for k, v in last["params"].items() if v is not None}
    params = strat.params({**values, **settings.get("fixed", {})})
    return params, int(last["fold"]), table


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()


def run_bars(settings: Mapping[str, Any], lake: Any) -> dict[str, pd.DataFrame]:
    """The run's bars from the lake, exactly as the walk-forward saw them (same range, same frames).

    The recorded end is exclusive and falls just after the last bar's open; reading up to the end of
    that bar's bucket (then cutting at the recorded end) keeps a resampled last bar whole.
    """
    from workbench.backtest.engine import Execution, as_bar_dict, load_bars
    from workbench.data.timeframe import Timeframe

    d = settings["data"]
    tf = Timeframe.parse(settings["timeframe"])
    end = pd.Timestamp(d["end"])
    read_end = tf.floor(end - pd.Timedelta(1, "us")) + tf.delta
    ex = Execution.from_dict(settings)
    bars = load_bars(lake, list(settings["symbols"]), settings["timeframe"], d["start"], max(end, read_end),
                     source=d.get("source"), costs=ex.costs, fill=ex.fill)
    return as_bar_dict({s: df[df.index < end] for s, df in bars.items()})


def run_quality(settings: Mapping[str, Any], lake: Any = None) -> list[QualityReport]:
    """The quality checks of the run's bars as the lake holds them now, one report per symbol
    (nothing is changed; see `workbench.data.quality.check_bars`)."""
    from workbench.data.calendar import Calendar
    from workbench.data.lake import Lake
    from workbench.data.quality import check_bars

    frames = run_bars(settings, lake if lake is not None else Lake())
    cal = Calendar(settings["calendar"])
    return [check_bars(df.reset_index(), settings["timeframe"], cal, label=sym) for sym, df in frames.items()]


def promoted_backtest(run: WalkForwardResult, *, params: Mapping[str, Any] | None = None,
                      lake: Any = None, capital: float | None = None) -> BacktestResult | PortfolioResult:
    """A backtest over the run's whole period, with its bars, costs, fill, sizing, direction and cash
    (`capital`, default the run's), of `params` (default: the promoted parameters, the last fold's).
    Several symbols share one cash account. A weight strategy's is its book's `PortfolioResult`
    (`workbench.backtest.portfolio`).

    Part of the period is in-sample for these parameters: it shows what the strategy does, the run's
    out-of-sample record is the evidence.
    """
    from workbench.backtest.engine import Execution, backtest
    from workbench.backtest.weight_strategies import resolve_strategy
    from workbench.data.lake import Lake

    s = run.settings
    strat = resolve_strategy(s["strategy"])
    chosen = dict(params) if params is not None else promoted_params(run.folds, s, strat)[0]
    ex = Execution.from_dict(s)
    if capital is not None:
        ex = ex.replace(init_cash=capital)
    frames = run_bars(s, lake if lake is not None else Lake())
    if isinstance(strat, WeightStrategy):
        from workbench.backtest.portfolio import backtest_portfolio

        return backtest_portfolio(frames, strategy=strat, params=chosen, costs=ex.costs, fill=ex.fill,
                                  init_cash=ex.init_cash, max_exposure=ex.max_exposure,
                                  lots=ex.lot_map(list(frames)), timeframe=s["timeframe"])
    return backtest(strat, frames, chosen, execution=ex, periods_per_year=float(s["periods_per_year"]),
                    timeframe=s["timeframe"], calendar=s["calendar"])


def check_fingerprint(settings: Mapping[str, Any], frames: Mapping[str, pd.DataFrame] | None,
                      error: str | None) -> dict[str, Any]:
    """Recompute the data fingerprint over the run's range and compare with the recorded one."""
    from workbench.backtest.engine import fingerprint

    recorded = settings["data"].get("fingerprint")
    out: dict[str, Any] = {"recorded": recorded, "lake": None, "match": False,
                           "start": settings["data"].get("start"), "end": settings["data"].get("end"),
                           "bars": None, "error": error}
    if frames is not None:
        out["lake"] = fingerprint(frames)
        out["bars"] = len(next(iter(frames.values())))
        out["match"] = out["lake"] == recorded
    return out


def check_run_lookahead(strat: Strategy | WeightStrategy, frames: Mapping[str, pd.DataFrame] | None,
                        params: Mapping[str, Any], error: str | None, cuts: int = LOOKAHEAD_CUTS,
                        seed: int = 0) -> dict[str, Any]:
    """`check_lookahead` on every symbol's bars with the promoted parameters; a weight strategy's
    `check_weight_lookahead` on the whole universe, its violations told per symbol."""
    from workbench.strategies.lookahead import check_lookahead, check_weight_lookahead

    out: dict[str, Any] = {"ok": False, "cuts": cuts, "symbols": {}, "error": error}
    if frames is None:
        return out
    try:
        if isinstance(strat, WeightStrategy):
            rep = check_weight_lookahead(strat, frames, params, cuts=cuts, seed=seed)
            for sym in frames:
                bad = [str(v) for v in rep.violations if v.field == f"weights.{sym}"]
                out["symbols"][sym] = {"ok": not bad, "cuts": [c.isoformat() for c in rep.cuts],
                                       "violations": bad}
        else:
            for sym, df in frames.items():
                rep = check_lookahead(strat, df, params, cuts=cuts, seed=seed)
                out["symbols"][sym] = {"ok": rep.ok, "cuts": [c.isoformat() for c in rep.cuts],
                                       "violations": [str(v) for v in rep.violations]}
    except WorkbenchError as exc:
        out["error"] = str(exc)
        return out
    out["ok"] = all(v["ok"] for v in out["symbols"].values())
    return out


def gather_evidence(*, settings: Mapping[str, Any], diagnostics: Diagnostics | Mapping[str, Any],
                    strat: Strategy | WeightStrategy, params: Mapping[str, Any], lake: Any = None,
                    checks: Collection[str] | None = None, lookahead_cuts: int = LOOKAHEAD_CUTS,
                    folds: pd.DataFrame | None = None) -> Evidence:
    """Every gate's value for a run. `checks` limits the lake re-checks run ("lookahead",
    "data_fingerprint"; None runs both); a check not run has no value. `folds` (the run's) lets the
    model gate see where the out-of-sample windows start."""
    from workbench.optimize.walkforward import Diagnostics

    d = diagnostics if isinstance(diagnostics, Diagnostics) else Diagnostics.from_dict(diagnostics)
    values: dict[str, Any] = dict(run_values(d))
    details: dict[str, str] = {}
    why = na_reason("sharpe", d.oos_metrics)
    if why and math.isnan(values["oos_sharpe"]):  # an undefined Sharpe fails, and says why
        details["oos_sharpe"] = f"undefined out of sample: {why} (n/a)"
    checks = {"lookahead", "data_fingerprint"} if checks is None else set(checks)
    record: dict[str, Any] = {
        "values": {},
        "oos_metrics": dict(d.oos_metrics),
        "benchmark": dict(d.benchmark),
        "n_trials": d.n_trials,
        "pbo_per_fold": [p.get("pbo") for p in d.pbo.get("per_fold", [])],
    }
    frames = None
    error = None
    if checks & {"lookahead", "data_fingerprint"}:
        from workbench.data.lake import Lake

        try:
            frames = run_bars(settings, lake if lake is not None else Lake())
        except WorkbenchError as exc:
            error = str(exc)
    if "data_fingerprint" in checks:
        fp = check_fingerprint(settings, frames, error)
        values["data_fingerprint"] = fp["match"]
        record["data_fingerprint"] = fp
        if error:
            details["data_fingerprint"] = f"bars unavailable: {error}"
        elif not fp["match"]:
            details["data_fingerprint"] = (f"lake bars differ: {str(fp['lake'])[:19]} vs recorded "
                                           f"{str(fp['recorded'])[:19]} ({fp['bars']} vs "
                                           f"{settings['data'].get('bars')} bars)")
        else:
            details["data_fingerprint"] = f"{fp['bars']} bars match {str(fp['recorded'])[:19]}"
    if "lookahead" in checks:
        la = check_run_lookahead(strat, frames, params, error, cuts=lookahead_cuts)
        values["lookahead"] = la["ok"] if not la["error"] else None
        record["lookahead"] = la
        if la["error"]:
            details["lookahead"] = f"not checked: {la['error']}"
        elif la["ok"]:
            details["lookahead"] = f"clean over {lookahead_cuts} cuts x {len(la['symbols'])} symbol(s)"
        else:
            bad = {s: v["violations"] for s, v in la["symbols"].items() if v["violations"]}
            n = sum(len(v) for v in bad.values())
            sym, first = next(iter(bad.items()))
            details["lookahead"] = f"{n} violation(s); {sym}: {first[0]}"
    if folds is not None:
        values["model_oos"], details["model_oos"] = model_out_of_sample(strat, folds)
    record["values"] = dict(values)
    return Evidence(values=values, details=details, record=record)


def model_out_of_sample(strat: Strategy | WeightStrategy, folds: pd.DataFrame) -> tuple[bool, str]:
    """Whether every model `strat` trades was trained on bars (labels included) that end before the
    run's first out-of-sample bar: a fixed version evaluated on its own training data would score its
    memory, not its skill."""
    from workbench.data.timeframe import Timeframe
    from workbench.strategies.base import pins_of

    models = pins_of(strat).get("models", []) if isinstance(strat, Strategy) else []
    if not models:
        return True, "the strategy trades no model"
    first = pd.Timestamp(folds["test_start"].min())
    for m in models:
        if not m.get("trained_until"):
            return False, f"model {m['name']} v{m['version']} records no training end"
        tf = Timeframe.parse(str(m.get("timeframe") or "1m"))
        horizon = int((m.get("label") or {}).get("horizon", 0))
        ends = pd.Timestamp(m["trained_until"]) + (horizon + 1) * tf.delta  # the last label's bar closes
        if ends > first:
            return False, (f"model {m['name']} v{m['version']} saw bars until {ends:%Y-%m-%d %H:%M} (labels "
                           f"included), after the first out-of-sample bar {first:%Y-%m-%d %H:%M}; "
                           "walk-forward from after its training range, or train it on earlier data")
    shown = ", ".join(f"{m['name']} v{m['version']}" for m in models)
    return True, f"{shown} trained before the first out-of-sample bar {first:%Y-%m-%d}"
