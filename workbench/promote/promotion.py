"""`promote`: judge a walk-forward run against the gates and, when it passes, version it in the registry."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import ConfigError, PromotionRejected
from workbench.promote.artifact import Artifact
from workbench.promote.evidence import gather_evidence, promoted_params
from workbench.promote.gates import GateSet, Verdict, load_gates
from workbench.promote.registry import Registry, check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PromotionResult:
    """What `promote` did: the stored artifact (None on a dry run), every gate's verdict, whether a new
    version was written, and whether the current version already was this promotion."""

    artifact: Artifact | None
    verdicts: list[Verdict] = field(default_factory=list)
    promoted: bool = False
    already_current: bool = False

    @property
    def passed(self) -> bool:
        """Whether every gate passed."""
        return all(v.passed for v in self.verdicts)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    def gates_frame(self) -> pd.DataFrame:
        """One row per gate: value, rule, verdict and detail (the layout of `Artifact.gates_frame`)."""
        rows = [{"gate": v.name, "value": v.value, "rule": f"{v.op.value} {v.threshold}", "passed": v.passed,
                 "detail": v.detail} for v in self.verdicts]
        return pd.DataFrame(rows, columns=["gate", "value", "rule", "passed", "detail"])


def default_name(settings: dict[str, Any]) -> str:
    """``<strategy>-<symbols>-<timeframe>``, lower case, other characters as ``_``."""
    syms = "+".join(settings["symbols"]) if len(settings["symbols"]) <= 3 else \
        f"{settings['symbols'][0]}+{len(settings['symbols']) - 1}"
    raw = f"{settings['strategy']}-{syms}-{settings['timeframe']}".lower()
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9+.-]", "_", raw)).strip("_.-+")


def rejection_message(run_id: str, failed: list[Verdict]) -> str:
    """One line: which gates failed, with their values and thresholds, and the way out."""
    shown = "; ".join(v.failure() for v in failed)
    return (f"run {run_id} failed {len(failed)} promotion gate(s): {shown}; improve the strategy, "
            "or pass --force --reason '...' to promote it anyway")


def promote(run_id: str, *, gates: str | Path | GateSet | None = None, name: str | None = None,
            force: bool = False, reason: str | None = None, lake: Any = None,
            registry: Registry | str | Path | None = None, runs_root: Any = None,
            dry_run: bool = False) -> PromotionResult:
    """Judge walk-forward run `run_id` against `gates` (a YAML path, a GateSet, or None for the built-in
    defaults) and store it as the next version of `name` (default ``<strategy>-<symbols>-<timeframe>``).

    The promoted parameters are the last fold's. A failing gate raises `PromotionRejected` (its
    `.verdicts` holds every verdict) unless `force`, which needs a `reason`; both are recorded.
    `dry_run` only evaluates. Promoting the run again while its version is current writes nothing.
    """
    from workbench.backtest.weight_strategies import resolve_strategy
    from workbench.optimize.records import load_run
    from workbench.optimize.walkforward import signal_lookback
    from workbench.strategies.base import Strategy, pins_of
    from workbench.version import code_version

    reason = reason.strip() if isinstance(reason, str) else reason
    if force and not reason:
        raise ConfigError("a forced promotion needs --reason '...' (why the failing gates are acceptable)")
    gate_set = load_gates(gates)
    if name is not None:
        check_name(name)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    run = load_run(run_id, runs_root)
    s = run.settings
    strat = resolve_strategy(s["strategy"])  # a signal or a weight strategy
    params, params_fold, fold_params = promoted_params(run.folds, s, strat)
    needed = [g.name for g in gate_set if g.name in ("lookahead", "data_fingerprint")]
    evidence = gather_evidence(settings=s, diagnostics=run.diagnostics, strat=strat, params=params, lake=lake,
                               checks=needed, folds=run.folds)
    verdicts = gate_set.evaluate(evidence.values, evidence.details)
    failed = [v for v in verdicts if not v.passed]
    for v in verdicts:
        log.info("gate %s: %s (%s)", v.name, "pass" if v.passed else "FAIL", v.detail)
    if dry_run:
        return PromotionResult(artifact=None, verdicts=verdicts)
    if failed and not force:
        exc = PromotionRejected(rejection_message(run.run_id, failed))
        exc.verdicts = verdicts
        raise exc
    from workbench.backtest.engine import Execution

    execution = Execution.from_dict(s).to_dict(list(s["symbols"]))  # checked as the run's are
    artifact = Artifact(
        name=name or default_name(s), version=0, strategy=strat.name, params=dict(params),
        symbols=list(s["symbols"]), timeframe=s["timeframe"], calendar=s["calendar"],
        periods_per_year=float(s["periods_per_year"]), **execution,
        portfolio=bool(s.get("portfolio", False)), data=dict(s["data"]),
        lookback=int(signal_lookback(strat, params)), run_id=run.run_id, code_version=code_version(),
        run_code_version=run.inputs.get("code_version"),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), params_fold=params_fold,
        fold_params=fold_params, gates=[v.to_dict() for v in verdicts], gates_file=gate_set.describe(),
        evidence=evidence.record, forced=bool(force), force_reason=reason if force else None,
        pins=pins_of(strat) if isinstance(strat, Strategy) else {})  # (a weight strategy trades no model)
    if failed:
        log.info("forcing %s past failed gate(s) %s: %s", run.run_id, [v.name for v in failed], reason)
    stored, created = reg.promote(artifact, reason=reason)
    return PromotionResult(artifact=stored, verdicts=verdicts, promoted=created, already_current=not created)
