"""Drift: do the features and predictions a model sees now look like those it was validated on?

Per feature and for the model's prediction, between the training window (the reference) and a
recent window: the population stability index (PSI, on the reference's deciles) and the
two-sample Kolmogorov-Smirnov statistic. The status follows PSI's usual thresholds: below 0.1
stable, 0.1-0.25 worth watching, above 0.25 a shift (KS is shown, not used: its p-value assumes
independent draws, which autocorrelated features are not). Where the recent labels are already known, the live
hit rate and AUC are set against the purged-CV estimate the version was registered with, and the
information coefficient (rank correlation of prediction and realised return) is shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from workbench.errors import ConfigError, DataError

PSI_WATCH, PSI_DRIFT = 0.1, 0.25


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `recent` against `reference`, on the reference's quantile bins
    (empty bins count as half an observation, so one empty bin does not make it infinite)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(recent, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) < bins or len(cur) < bins:
        raise DataError(f"PSI needs at least {bins} values on each side, got {len(ref)} and {len(cur)}")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1).astype(float)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1).astype(float)
    r = np.maximum(r, 0.5) / max(len(ref), 1)
    c = np.maximum(c, 0.5) / max(len(cur), 1)
    return float(np.sum((c - r) * np.log(c / r)))


def drift_table(reference: pd.DataFrame, recent: pd.DataFrame, *, bins: int = 10) -> pd.DataFrame:
    """One row per column of both frames: PSI, KS statistic and p-value, and a status."""
    common = [c for c in reference.columns if c in recent.columns]
    if not common:
        raise ConfigError("the reference and the recent data share no column to compare")
    rows = []
    for col in common:
        a = reference[col].to_numpy(dtype=float)
        b = recent[col].to_numpy(dtype=float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        value = psi(a, b, bins)
        ks = ks_2samp(a, b)
        # PSI alone decides: features are autocorrelated (a 24-bar volatility changes slowly), so a
        # KS p-value, which assumes independent draws, calls a stationary market's samples different
        status = "drift" if value > PSI_DRIFT else "watch" if value > PSI_WATCH else "ok"
        rows.append({"column": col, "psi": value, "ks": float(ks.statistic), "ks_p": float(ks.pvalue),
                     "status": status})
    return pd.DataFrame(rows)


@dataclass
class DriftReport:
    """The drift of one registered version over a recent window."""

    name: str
    version: int
    reference: tuple[pd.Timestamp, pd.Timestamp]
    recent: tuple[pd.Timestamp, pd.Timestamp]
    table: pd.DataFrame
    live: dict[str, float]
    expected: dict[str, float]

    @property
    def drifting(self) -> list[str]:
        return self.table.loc[self.table["status"] == "drift", "column"].tolist()

    def performance(self) -> pd.DataFrame:
        """Live hit rate, AUC and IC on the recent labels already known, beside the validated estimate."""
        rows = [{"metric": k, "live": self.live.get(k, math.nan), "validated": self.expected.get(k, math.nan)}
                for k in ("accuracy", "roc_auc", "ic")]
        return pd.DataFrame(rows).set_index("metric")

    def summary(self) -> str:
        head = (f"{self.name} version {self.version}: recent {self.recent[0]:%Y-%m-%d %H:%M} .. "
                f"{self.recent[1]:%Y-%m-%d %H:%M} against its training window")
        shifted = self.drifting
        verdict = (f"{len(shifted)} of {len(self.table)} drifting ({', '.join(shifted)})" if shifted
                   else f"no drift in {len(self.table)} columns")
        live = ""
        if self.live.get("rows"):
            live = (f"; live accuracy {self.live['accuracy']:.3f} on {int(self.live['rows'])} known labels "
                    f"(validated {self.expected.get('accuracy', math.nan):.3f})")
            if "roc_auc" in self.live:
                live += (f", AUC {self.live['roc_auc']:.3f} (validated "
                         f"{self.expected.get('roc_auc', math.nan):.3f})")
            if "ic" in self.live:
                live += f", IC {self.live['ic']:+.3f}"
        return f"{head}: {verdict}{live}"


def model_drift(lake: Any, registry: Any, name: str, ref: int | str = "champion", *,
                since: Any = None, until: Any = None, log: bool = True) -> DriftReport:
    """Features and predictions of version `ref` of `name` on recent bars (after its training window
    by default) against its training window; logged to MLflow as a drift run of that version unless
    `log` is False (a reader that only shows it, such as the dashboard)."""
    from workbench.backtest.engine import load_bars
    from workbench.models.serving import load_model
    from workbench.models.training import LabelSpec, labels_of

    model = load_model(name, ref, registry=registry)  # its feature set checked against its key
    lineage = model.lineage
    train_start, train_end = pd.Timestamp(lineage["start"]), pd.Timestamp(lineage["end"])
    start = _utc(since) if since is not None else train_end
    frames = load_bars(lake, lineage["symbols"], lineage["timeframe"], None, until,
                       source=lineage.get("source") or None)
    label = LabelSpec.model_validate(lineage["label"])
    ref_rows, cur_rows, known = [], [], []
    for bars in frames.values():
        X = model.features(bars)
        X = X[X.notna().all(axis="columns")]
        ref_rows.append(X[(X.index >= train_start) & (X.index <= train_end)])
        recent = X[X.index > start]
        cur_rows.append(recent)
        if len(recent):
            lab = labels_of(bars, label)
            lab = lab[lab.index.isin(recent.index)]
            known.append((recent.loc[lab.index], (lab["label"] > 0).astype(int), lab["ret"]))
    reference, current = pd.concat(ref_rows), pd.concat(cur_rows)
    if len(current) < 10:
        raise DataError(f"only {len(current)} bars of {', '.join(frames)} after {start}: nothing recent to "
                        "compare; sync newer bars or pass an earlier --since")
    reference = reference.assign(prediction=model.predict_features(reference))
    current = current.assign(prediction=model.predict_features(current))
    table = drift_table(reference, current)
    live: dict[str, float] = {"rows": 0.0}
    if known and sum(len(y) for _, y, _ in known):
        Xk = pd.concat([x for x, _, _ in known])
        yk = pd.concat([y for _, y, _ in known]).to_numpy()
        rk = pd.concat([r for _, _, r in known]).to_numpy(dtype=float)
        p = model.predict_features(Xk)
        live = {"rows": float(len(yk)), "accuracy": float(((p >= 0.5) == yk).mean())}
        if len(np.unique(yk)) == 2:
            from sklearn.metrics import roc_auc_score

            live["roc_auc"] = float(roc_auc_score(yk, p))
        ok = np.isfinite(rk)
        if ok.sum() > 2 and np.ptp(p[ok]) > 0 and np.ptp(rk[ok]) > 0:
            from scipy.stats import spearmanr

            # information coefficient: rank correlation of the prediction with the realised return
            live["ic"] = float(spearmanr(p[ok], rk[ok]).statistic)
    v = registry.get(name, lineage["version"])
    expected = {"accuracy": v.metrics.get("cv_accuracy_mean", math.nan),
                "roc_auc": v.metrics.get("cv_roc_auc_mean", math.nan)}
    report = DriftReport(name, int(lineage["version"]), (reference.index.min(), reference.index.max()),
                         (current.index.min(), current.index.max()), table, live, expected)
    if log:
        _log_drift(registry, report)
    return report


def _utc(t: Any) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _log_drift(registry: Any, report: DriftReport) -> None:
    import mlflow

    from workbench.models.registry import quiet

    with quiet(), registry.active(), mlflow.start_run(experiment_id=registry.experiment_id(),
                          run_name=f"drift-{report.name}-v{report.version}"):
        mlflow.set_tags({"workbench.drift_of": f"{report.name}/{report.version}",
                         "workbench.drifting": ",".join(report.drifting),
                         "workbench.recent": json.dumps([str(t) for t in report.recent])})
        metrics = {f"psi.{col}": float(v) for col, v in zip(report.table["column"], report.table["psi"],
                                                             strict=True)}
        metrics.update({f"live_{k}": v for k, v in report.live.items() if math.isfinite(v)})
        mlflow.log_metrics(metrics)


__all__ = ["PSI_DRIFT", "PSI_WATCH", "DriftReport", "drift_table", "model_drift", "psi"]
