"""Plotly figures of a walk-forward run: OOS equity with folds, IS vs OOS, parameter stability."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.backtest.plots import MAX_POINTS, STRATEGY_COLOR, _equity_traces, _naive_utc, _style

if TYPE_CHECKING:
    from workbench.optimize.walkforward import WalkForwardResult

FOLD_SHADE = "rgba(31, 119, 180, 0.06)"


def _params_text(row: pd.Series) -> str:
    parts = [f"{c.removeprefix('param_')}={row[c]}" for c in row.index if c.startswith("param_")]
    return ", ".join(parts) if parts else "no feasible trial: flat"


def oos_equity_figure(result: WalkForwardResult, max_points: int = MAX_POINTS) -> go.Figure:
    """Stitched out-of-sample equity and buy-and-hold; every other fold shaded, its params on hover."""
    fig = go.Figure(_equity_traces(result.oos_equity, result.oos_benchmark, max_points))
    folds = result.folds
    for i, (_, row) in enumerate(folds.iterrows()):
        x0, x1 = _naive_utc([row["test_start"], row["test_end"]])
        if i % 2 == 0:
            fig.add_vrect(x0=x0, x1=x1, fillcolor=FOLD_SHADE, line_width=0, layer="below")
        fig.add_vline(x=x0, line={"color": "#bbbbbb", "width": 1, "dash": "dot"})
    eq = result.oos_equity
    at_start = eq.reindex(pd.DatetimeIndex(folds["test_start"]), method="ffill")
    fig.add_trace(go.Scatter(
        x=_naive_utc(folds["test_start"]), y=at_start.to_numpy(), mode="markers", name="fold start",
        marker={"color": STRATEGY_COLOR, "size": 7, "symbol": "line-ns-open"},
        text=[f"fold {int(r['fold'])}: {_params_text(r)}<br>IS {r['is_objective']:.3g} / "
              f"OOS {r['oos_objective']:.3g}" for _, r in folds.iterrows()],
        hovertemplate="%{text}<extra></extra>"))
    _style(fig, f"{result.settings['strategy']}: out-of-sample equity over {len(folds)} folds")
    # the legend goes under the dates: above the plot it overprinted the title once it wrapped
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0.0},
                      margin={"t": 60, "b": 90})
    fig.update_yaxes(title_text="equity")
    return fig


def is_oos_figure(result: WalkForwardResult, metric: str = "objective") -> go.Figure:
    """In-sample vs out-of-sample score of each fold's winner, with the no-decay diagonal."""
    f = result.folds
    x = f[f"is_{metric}"].astype(float)
    y = f[f"oos_{metric}"].astype(float)
    finite = np.isfinite(x) & np.isfinite(y)
    fig = go.Figure(go.Scatter(
        x=x[finite], y=y[finite], mode="markers+text", text=[f"fold {k}" for k in f["fold"][finite]],
        textposition="top center", marker={"size": 10, "color": STRATEGY_COLOR}, name="fold winner",
        hovertemplate="IS %{x:.3g}<br>OOS %{y:.3g}<extra>%{text}</extra>"))
    if finite.any():
        lo = float(min(x[finite].min(), y[finite].min(), 0.0))
        hi = float(max(x[finite].max(), y[finite].max(), 0.0))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="OOS = IS",
                                 line={"color": "#999999", "dash": "dash"}, hoverinfo="skip"))
    _style(fig, f"In-sample vs out-of-sample {metric} per fold")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(title_text=f"in-sample {metric}")
    fig.update_yaxes(title_text=f"out-of-sample {metric}", zeroline=True)
    return fig


def stability_figure(result: WalkForwardResult) -> go.Figure:
    """One panel per optimised parameter: the value each fold chose."""
    params = [c.removeprefix("param_") for c in result.folds.columns if c.startswith("param_")]
    fixed = result.settings.get("fixed", {})
    params = [p for p in params if p not in fixed] or params
    rows = max(1, len(params))
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=params, vertical_spacing=0.08)
    for i, p in enumerate(params, start=1):
        vals = result.folds[f"param_{p}"]
        y: Any = vals.astype(float) if vals.map(_is_number).all() else vals.astype(str)
        fig.add_trace(go.Scatter(x=result.folds["fold"], y=y, mode="lines+markers", name=p,
                                 marker={"size": 8}, hovertemplate=f"fold %{{x}}: {p}=%{{y}}<extra></extra>"),
                      row=i, col=1)
    _style(fig, "Parameter stability across folds", height=max(300, 220 * rows))
    fig.update_layout(hovermode="closest", showlegend=False)
    fig.update_xaxes(title_text="fold", dtick=1, row=rows, col=1)
    return fig


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and \
        not (isinstance(v, float) and math.isnan(v))
