"""Charts of the ML lifecycle (plotly, as every chart of the workbench): validation per fold and
path, feature importance, and a feature's values against its drifted recent window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def plot_cv(results: Mapping[str, Mapping[str, Any]], metric: str = "roc_auc") -> go.Figure:
    """`metric` per fold for several validations side by side (e.g. plain k-fold against purged),
    with 0.5 marked for AUC (no skill); CPCV paths, where given, as their own points."""
    fig = go.Figure()
    for name, cv in results.items():
        values = [f[metric] for f in cv["folds"]]
        fig.add_trace(go.Box(y=values, name=name, boxpoints="all", jitter=0.3))
        if cv.get("paths"):
            fig.add_trace(go.Box(y=[p[metric] for p in cv["paths"]], name=f"{name}: paths", boxpoints="all"))
    if metric == "roc_auc":
        fig.add_hline(y=0.5, line_dash="dot", annotation_text="no skill")
    fig.update_layout(title=f"out-of-sample {metric} per fold", yaxis_title=metric, showlegend=False,
                      height=380, margin={"t": 50, "b": 40})
    return fig


def plot_importance(table: pd.DataFrame) -> go.Figure:
    """MDA (with its spread over folds) and single-feature importance per feature."""
    t = table.sort_values("mda")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=t["mda"], y=t.index, orientation="h", name="MDA (shuffled on the folds)",
                         error_x={"type": "data", "array": t.get("mda_std", pd.Series(0.0, index=t.index))}))
    if "sfi" in t:
        fig.add_trace(go.Bar(x=t["sfi"], y=t.index, orientation="h", name="SFI (alone)"))
    fig.update_layout(title="feature importance: out-of-sample log loss added (MDA) / saved (SFI)",
                      barmode="group", height=max(300, 28 * len(t) + 120), margin={"t": 50, "b": 40})
    return fig


def plot_labels(labels: pd.DataFrame) -> go.Figure:
    """How the labels ended: each barrier's share, and the returns at the end."""
    fig = go.Figure()
    for barrier, part in labels.groupby("barrier"):
        share = len(part) / len(labels)
        fig.add_trace(go.Histogram(x=part["ret"], name=f"{barrier} ({share:.0%})", opacity=0.7, nbinsx=60))
    fig.update_layout(title="label returns by the barrier that ended them", barmode="overlay",
                      xaxis_title="log return", height=360, margin={"t": 50, "b": 40})
    return fig


def plot_features(X: pd.DataFrame, columns: list[str] | None = None, max_points: int = 5000) -> go.Figure:
    """A few feature columns over time (every n-th bar beyond `max_points`)."""
    cols = columns or list(X.columns[:4])
    step = max(1, int(np.ceil(len(X) / max_points)))
    view = X.iloc[::step]
    fig = go.Figure()
    for c in cols:
        fig.add_trace(go.Scattergl(x=view.index, y=view[c], name=c, mode="lines"))
    fig.update_layout(title="features", height=360, margin={"t": 50, "b": 40})
    return fig


__all__ = ["plot_cv", "plot_features", "plot_importance", "plot_labels"]


def plot_drift(report: Any) -> go.Figure:
    """PSI per feature and for the prediction (a `DriftReport`), with the watch and drift thresholds."""
    from workbench.models.drift import PSI_DRIFT, PSI_WATCH

    t = report.table
    colors = {"ok": "#2ca02c", "stable": "#2ca02c", "watch": "#ff7f0e", "drift": "#d62728"}
    fig = go.Figure(go.Bar(x=t["column"], y=t["psi"],
                           marker_color=[colors.get(s, "#888") for s in t["status"]],
                           hovertext=[f"KS {k:.3f}" for k in t["ks"]]))
    for level, name in ((PSI_WATCH, "watch"), (PSI_DRIFT, "drift")):
        fig.add_hline(y=level, line_dash="dot", annotation_text=name)
    fig.update_layout(title=f"{report.name} v{report.version}: population stability, recent vs training",
                      yaxis_title="PSI", height=380, margin={"t": 50, "b": 40})
    return fig
