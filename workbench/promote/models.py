"""Retraining: a challenger trained on the latest data replaces the champion only when it wins.

`retrain` trains and registers a new version of a model (the challenger) from its train spec over
the latest bars, then judges it with model gates (`pipelines/model_gates.yaml`, the same gate
machinery as a strategy's promotion): its own purged-CV AUC, and the champion's recipe (its
features, label, model and parameters, from its lineage) against the challenger's on the same rows
and the same purged folds of the new data, so neither is favoured by its window. The ``champion``
alias moves only when every gate passes, with a recorded reason; a refused challenger stays the
``challenger`` with the verdicts recorded on its version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.models.registry import quiet
from workbench.promote.gates import GateSet, Verdict, load_gates


@dataclass
class RetrainResult:
    """What a retrain did: the new version, the champion it was judged against, the verdicts."""

    name: str
    version: int
    champion_before: int | None
    champion: int
    promoted: bool
    reason: str
    verdicts: list[Verdict] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        verdict = ("now the champion" if self.promoted
                   else f"stays the challenger (champion: v{self.champion})")
        return f"{self.name} version {self.version}: {verdict}; {self.reason}"


def retrain(lake: Any, spec: Any, *, gates: str | Path | GateSet | None = None, registry: Any = None,
            start: Any = None, end: Any = None,
            progress: Callable[[int, int], None] | None = None) -> RetrainResult:
    """Train a challenger of `spec` (a TrainSpec or its YAML) on [start, end) and move the champion
    alias to it only if it passes `gates` (None: the built-in model gates)."""
    from workbench.models.registry import CHAMPION, ModelRegistry
    from workbench.models.training import TrainSpec, load_train_spec, train_model

    spec = spec if isinstance(spec, TrainSpec) else load_train_spec(spec)
    updates = {k: str(v) for k, v in (("start", start), ("end", end)) if v is not None}
    if updates:
        spec = TrainSpec.model_validate({**spec.model_dump(exclude_unset=True), **updates})
    gate_set = load_gates(gates, scope="model")
    registry = registry or ModelRegistry(data=lake.root)
    before = _champion(registry, spec.name)
    res = train_model(lake, spec, registry=registry, progress=progress)
    folds = [f["roc_auc"] for f in res.cv["folds"]]
    values: dict[str, float] = {"cv_auc": float(res.cv["cv_roc_auc_mean"]),
                                "cv_auc_worst": float(np.nanmin(folds)) if folds else math.nan}
    details: dict[str, str] = {}
    if before is None:
        reason = f"the first version of {spec.name}: the champion until a challenger beats it"
        values.update(auc_gain=math.inf, log_loss_gain=math.inf)
        details.update(auc_gain="no champion to beat", log_loss_gain="no champion to beat")
        verdicts = gate_set.evaluate(values, details)
        return RetrainResult(spec.name, res.version, None, res.version, True, reason, verdicts, values)
    champ = registry.get(spec.name, before)
    gains, why = _same_folds(lake, spec, json.loads(champ.tags.get("workbench.lineage", "{}")))
    values.update(gains)
    if why:
        details.update(auc_gain=why, log_loss_gain=why)
    verdicts = gate_set.evaluate(values, details)
    failed = [v for v in verdicts if not v.passed]
    shown = ", ".join(f"{k} {v:+.4f}" if k.endswith("gain") else f"{k} {v:.4f}" for k, v in values.items()
                      if math.isfinite(v))
    if failed:
        reason = f"refused by {', '.join(v.failure() for v in failed)}"
    else:
        reason = f"retrain: beats v{before} on the same purged folds ({shown})"
        registry.promote(spec.name, res.version, alias=CHAMPION, reason=reason)
    _record(registry, spec.name, res.version, verdicts, before, not failed, reason)
    now = before if failed else res.version
    return RetrainResult(spec.name, res.version, before, now, not failed, reason, verdicts, values)


def _champion(registry: Any, name: str) -> int | None:
    from workbench.models.registry import CHAMPION

    with quiet():
        names = [m.name for m in registry.client.search_registered_models()]
    if name not in names:
        return None
    return cast(int | None, registry._alias_version(name, CHAMPION))


def _same_folds(lake: Any, spec: Any, lineage: dict[str, Any]) -> tuple[dict[str, float], str]:
    """The champion's recipe and the challenger's, cross-validated on the rows both have and the same
    purged folds of the challenger's data: (auc_gain, log_loss_gain), or NaNs and why not."""
    from workbench.backtest.engine import fingerprint, load_bars
    from workbench.features import FeatureSet
    from workbench.models.training import (
        LabelSpec,
        TrainSpec,
        add_tick_columns,
        build_dataset,
        cross_validate,
        tick_fingerprint,
    )

    nan = {"auc_gain": math.nan, "log_loss_gain": math.nan}
    if not lineage.get("feature_set"):
        return nan, "the champion records no recipe (feature set) to compare with"
    if LabelSpec.model_validate(lineage["label"]).effective() != spec.label.effective():
        return nan, ("the champion predicts another label; compare them live instead "
                     "(`workbench model drift`)")
    old_fs = FeatureSet.from_resolved(lineage["feature_set"], name=spec.name)
    old = TrainSpec.model_validate({
        **spec.model_dump(exclude_unset=True),
        "features": [f.model_dump(exclude_unset=True) for f in old_fs.features],
        "model": lineage.get("model", spec.model), "params": lineage.get("params", {}),
        "seed": lineage.get("seed", spec.seed), "weights": lineage.get("weights", spec.weights)})
    bars = load_bars(lake, spec.symbols, spec.timeframe, spec.start, spec.end, source=spec.source)
    sets = []
    for s in (spec, old):
        frames = add_tick_columns(lake, dict(bars), s.feature_set(), spec.timeframe, source=spec.source)
        sets.append(build_dataset(frames, s, fingerprint=tick_fingerprint(fingerprint(frames), frames)))
    keys = [pd.MultiIndex.from_arrays([ds.symbols.to_numpy(), ds.X.index]) for ds in sets]
    both = keys[0].intersection(keys[1])
    subsets = [_subset(ds, key.isin(both)) for ds, key in zip(sets, keys, strict=True)]
    new_cv, old_cv = (cross_validate(ds, s) for ds, s in zip(subsets, (spec, old), strict=True))
    return {"auc_gain": new_cv["cv_roc_auc_mean"] - old_cv["cv_roc_auc_mean"],
            "log_loss_gain": old_cv["cv_log_loss_mean"] - new_cv["cv_log_loss_mean"]}, ""


def _subset(ds: Any, mask: np.ndarray) -> Any:
    from workbench.models.training import Dataset

    if not mask.any():
        raise ConfigError("the champion's and the challenger's features share no labelled bar; give a longer "
                          "range")
    return Dataset(ds.X.loc[mask], ds.y.loc[mask], ds.t1.loc[mask], ds.weight.loc[mask], ds.symbols.loc[mask],
                   ds.lineage)


def _record(registry: Any, name: str, version: int, verdicts: list[Verdict], champion: int | None,
            promoted: bool, reason: str) -> None:
    """The retrain's verdicts on the challenger's version, where `workbench model show` finds them."""
    record = {"champion": champion, "promoted": promoted, "reason": reason,
              "verdicts": [v.to_dict() for v in verdicts]}
    with quiet():
        registry.client.set_model_version_tag(name, str(version), "workbench.retrain",
                                              json.dumps(record, sort_keys=True, default=str))


__all__ = ["RetrainResult", "retrain"]
