"""Charts of recorded ticks: the order book over time, with the trades printed against it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

MAX_SNAPSHOTS = 2_000  # a longer recording is thinned to this many snapshots, evenly


def plot_book(book: pd.DataFrame, trades: pd.DataFrame | None = None, *, title: str = "order book"
              ) -> go.Figure:
    """Every stored level of every snapshot (`Lake.read_book`) as a point coloured by side and
    shaded by size, the best bid and ask as lines, and `trades` (`Lake.read_trades`) on top."""
    fig = go.Figure()
    if book.empty:
        fig.update_layout(title=f"{title}: no snapshots recorded")
        return fig
    stamps = book["recv_ts"].drop_duplicates().sort_values()
    if len(stamps) > MAX_SNAPSHOTS:
        keep = stamps.iloc[np.linspace(0, len(stamps) - 1, MAX_SNAPSHOTS).astype(int)]
        book = book[book["recv_ts"].isin(keep)]
    for side, colour in (("bid", "rgba(0,140,70,{a})"), ("ask", "rgba(200,40,40,{a})")):
        rows = book[book["side"] == side]
        alpha = (0.15 + 0.85 * rows["size"] / max(float(rows["size"].max()), 1e-12)).round(2)
        fig.add_trace(go.Scattergl(
            x=rows["ts"], y=rows["price"], mode="markers", name=f"{side}s",
            marker={"size": 5, "color": [colour.format(a=a) for a in alpha], "symbol": "square"},
            customdata=rows[["level", "size"]], hovertemplate="level %{customdata[0]}: %{y} x "
            "%{customdata[1]}<extra>" + side + "</extra>"))
        best = rows[rows["level"] == 0]
        fig.add_trace(go.Scattergl(x=best["ts"], y=best["price"], mode="lines", name=f"best {side}",
                                   line={"color": colour.format(a=1), "width": 1}))
    if trades is not None and not trades.empty:
        for side, symbol in (("buy", "triangle-up"), ("sell", "triangle-down")):
            t = trades[trades["side"] == side]
            fig.add_trace(go.Scattergl(x=t["ts"], y=t["price"], mode="markers", name=f"{side} trades",
                                       marker={"symbol": symbol, "size": 7, "color": "black"}))
    fig.update_layout(title=title, xaxis_title="time (UTC)", yaxis_title="price", template="plotly_white",
                      legend={"orientation": "h"})
    return fig


__all__ = ["plot_book"]
