"""Plotly figures shared by notebooks, HTML reports and the CLI, built from plain pandas objects.

Timestamps are shown in UTC (converted to tz-naive for plotly.js, which ignores offsets). Long series
are downsampled for display only: candles by OHLC buckets (first/max/min/last), equity by the last
value of each bucket and drawdown by the worst value of each bucket, so extremes are never lost.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ConfigError, did_you_mean
from workbench.files import atomic_path

__all__ = [
    "backtest_figure",
    "downsample_ohlc",
    "drawdown_figure",
    "equity_figure",
    "price_figure",
    "risk_contributions_figure",
    "sweep_heatmap",
    "turnover_figure",
    "weights_figure",
    "write_html",
]

TEMPLATE = "plotly_white"
MAX_POINTS = 5000

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"
LONG_ENTRY_COLOR = "#1b7f3b"
SHORT_ENTRY_COLOR = "#c62828"
STRATEGY_COLOR = "#1f77b4"
BENCHMARK_COLOR = "#7f7f7f"
DRAWDOWN_COLOR = "#d62728"
STOP_LOSS_COLOR = "#d62728"
TAKE_PROFIT_COLOR = "#2ca02c"
EXIT_COLORS = {
    "signal": "#5c6bc0",
    "stop_loss": "#d62728",
    "take_profit": "#2ca02c",
    "trailing_stop": "#ff7f0e",
}
OTHER_EXIT_COLOR = "#8c564b"
FEES_COLOR = "#ff7f0e"
SLIPPAGE_COLOR = "#9467bd"
TURNOVER_COLOR = STRATEGY_COLOR
# one color per symbol, the same in every portfolio figure (by the symbol's place in the book)
SYMBOL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")

_OHLC = ("open", "high", "low", "close")
_AGGS = ("max", "min", "mean", "median", "sum", "first", "last", "std", "count")


# ----------------------------------------------------------------------------- helpers


def _naive_utc(values: Any) -> pd.DatetimeIndex:
    """Timestamps as a tz-naive UTC DatetimeIndex (plotly.js does not understand offsets)."""
    index = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return index.tz_localize(None)


def _bars_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars indexed by time (a 'ts' column is accepted too), sorted, with the OHLC columns checked."""
    if not isinstance(bars, pd.DataFrame):
        raise ConfigError(f"bars must be a pandas DataFrame, got {type(bars).__name__}")
    frame = bars
    if not isinstance(frame.index, pd.DatetimeIndex):
        if "ts" in frame.columns:
            frame = frame.set_index("ts")
        else:
            raise ConfigError("bars must be indexed by a DatetimeIndex (or carry a 'ts' column)")
    missing = [c for c in _OHLC if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"bars lack column(s) {', '.join(missing)}; available: {', '.join(map(str, frame.columns))}"
        )
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index()
    return frame


def _bucket_starts(n: int, max_points: int) -> np.ndarray:
    """Start positions of consecutive equal-width buckets so that there are at most `max_points`."""
    if max_points < 1:
        raise ConfigError(f"max_points must be >= 1, got {max_points}")
    width = max(1, math.ceil(n / max_points))
    return np.arange(0, n, width)


def downsample_ohlc(bars: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most `max_points` OHLC candles (first/max/min/last, volume summed), stamped at bucket start."""
    frame = _bars_frame(bars)
    n = len(frame)
    if n <= max_points:
        return frame
    starts = _bucket_starts(n, max_points)
    ends = np.r_[starts[1:], n] - 1
    out = {
        "open": frame["open"].to_numpy(dtype=float)[starts],
        "high": np.fmax.reduceat(frame["high"].to_numpy(dtype=float), starts),
        "low": np.fmin.reduceat(frame["low"].to_numpy(dtype=float), starts),
        "close": frame["close"].to_numpy(dtype=float)[ends],
    }
    if "volume" in frame.columns:
        out["volume"] = np.add.reduceat(np.nan_to_num(frame["volume"].to_numpy(dtype=float)), starts)
    return pd.DataFrame(out, index=frame.index[starts])


def _series(values: pd.Series, name: str) -> pd.Series:
    """A float series indexed by time, sorted, with NaN dropped."""
    if not isinstance(values, pd.Series):
        raise ConfigError(f"{name} must be a pandas Series, got {type(values).__name__}")
    if not isinstance(values.index, pd.DatetimeIndex):
        raise ConfigError(f"{name} must be indexed by a DatetimeIndex")
    s = values.astype(float).dropna()
    return s if s.index.is_monotonic_increasing else s.sort_index()


def _downsample_last(s: pd.Series, max_points: int) -> pd.Series:
    """The last value of each of at most `max_points` buckets (the series' final point is kept)."""
    if len(s) <= max_points:
        return s
    starts = _bucket_starts(len(s), max_points)
    ends = np.r_[starts[1:], len(s)] - 1
    return s.iloc[ends]


def _downsample_min(s: pd.Series, max_points: int) -> pd.Series:
    """The lowest value of each of at most `max_points` buckets, at the time it occurred."""
    if len(s) <= max_points:
        return s
    starts = _bucket_starts(len(s), max_points)
    values = s.to_numpy()
    ends = np.r_[starts[1:], len(s)]
    pos = np.array([a + int(np.argmin(values[a:b])) for a, b in zip(starts, ends, strict=True)])
    return s.iloc[pos]


def _drawdown_pct(equity: pd.Series) -> pd.Series:
    """Drawdown from the running peak, in percent (0 at new highs, negative underwater)."""
    peak = equity.cummax()
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = (equity / peak - 1.0) * 100.0
    return dd.where(peak > 0, 0.0)


def _fmt(value: Any, spec: str = ".6g") -> str:
    """A number for hover text; '-' for missing values."""
    try:
        if value is None or pd.isna(value):
            return "-"
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def _fmt_time(value: Any) -> str:
    """A timestamp for hover text, in UTC; 'open' when missing."""
    if value is None or pd.isna(value):
        return "open"
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _style(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """The shared look: white template, unified hover, no range slider, legend on top."""
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title} if title else None,
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0.0},
        margin={"l": 60, "r": 30, "t": 80 if title else 50, "b": 40},
    )
    if height is not None:
        fig.update_layout(height=height)
    fig.update_xaxes(rangeslider_visible=False, showspikes=True, spikemode="across", spikethickness=1)
    return fig


# ----------------------------------------------------------------------------- trace builders


def _candle_trace(bars: pd.DataFrame, max_points: int) -> go.Candlestick:
    """Candlesticks of the bars, downsampled to at most `max_points` candles."""
    shown = downsample_ohlc(bars, max_points)
    name = "price" if len(shown) == len(bars) else f"price ({len(bars):,} bars as {len(shown):,} candles)"
    return go.Candlestick(
        x=_naive_utc(shown.index),
        open=shown["open"].to_numpy(dtype=float),
        high=shown["high"].to_numpy(dtype=float),
        low=shown["low"].to_numpy(dtype=float),
        close=shown["close"].to_numpy(dtype=float),
        name=name,
        increasing={"line": {"color": UP_COLOR, "width": 1}, "fillcolor": UP_COLOR},
        decreasing={"line": {"color": DOWN_COLOR, "width": 1}, "fillcolor": DOWN_COLOR},
        showlegend=True,
    )


def _trade_hover(t: pd.Series) -> str:
    """Hover text of one trade."""
    ret = t.get("return")
    ret_txt = "-" if ret is None or pd.isna(ret) else f"{float(ret) * 100:+.2f}%"
    lines = [
        f"<b>{t.get('symbol', '')} {t.get('direction', '')}</b> ({t.get('exit_reason', '')})",
        f"entry {_fmt_time(t.get('entry_time'))} @ {_fmt(t.get('entry_price'))}",
        f"exit {_fmt_time(t.get('exit_time'))} @ {_fmt(t.get('exit_price'))}",
        f"size {_fmt(t.get('size'))}  pnl {_fmt(t.get('pnl'), ',.2f')}  return {ret_txt}",
    ]
    for col, label in (("stop_loss_price", "stop"), ("take_profit_price", "target")):
        if col in t.index and not pd.isna(t[col]):
            lines.append(f"{label} {_fmt(t[col])}")
    return "<br>".join(lines)


def _level_segments(
    trades: pd.DataFrame, column: str, end: pd.Timestamp | None
) -> tuple[list[Any], list[Any]]:
    """x/y of one line per trade at its level from entry to exit, separated by None gaps."""
    xs: list[Any] = []
    ys: list[Any] = []
    entry = _naive_utc(trades["entry_time"])
    exit_ = trades["exit_time"]
    for i, level in enumerate(trades[column].to_numpy(dtype=float)):
        if np.isnan(level):
            continue
        stop = exit_.iloc[i]
        if pd.isna(stop):
            if end is None:
                continue
            stop_x = end
        else:
            stop_x = _naive_utc([stop])[0]
        xs += [entry[i], stop_x, None]
        ys += [level, level, None]
    return xs, ys


def _trade_traces(trades: pd.DataFrame | None, end: pd.Timestamp | None) -> list[go.Scatter]:
    """Entry triangles, exit crosses by reason and stop/target segments of the trades."""
    if trades is None or len(trades) == 0:
        return []
    required = ("direction", "entry_time", "entry_price", "exit_time", "exit_price")
    missing = [c for c in required if c not in trades.columns]
    if missing:
        raise ConfigError(
            f"trades lack column(s) {', '.join(missing)}; available: {', '.join(map(str, trades.columns))}"
        )
    trades = trades.reset_index(drop=True)
    hover = [_trade_hover(t) for _, t in trades.iterrows()]
    traces: list[go.Scatter] = []

    for column, name, color in (
        ("stop_loss_price", "stop loss", STOP_LOSS_COLOR),
        ("take_profit_price", "take profit", TAKE_PROFIT_COLOR),
    ):
        if column not in trades.columns:
            continue
        xs, ys = _level_segments(trades, column, end)
        if xs:
            traces.append(go.Scatter(
                x=xs, y=ys, mode="lines", name=name, connectgaps=False, hoverinfo="skip",
                line={"color": color, "width": 1.5, "dash": "dash"},
            ))

    direction = trades["direction"].astype(str).str.lower()
    for side, symbol, color in (
        ("long", "triangle-up", LONG_ENTRY_COLOR),
        ("short", "triangle-down", SHORT_ENTRY_COLOR),
    ):
        mask = (direction == side).to_numpy()
        if not mask.any():
            continue
        sub = trades[mask]
        traces.append(go.Scatter(
            x=_naive_utc(sub["entry_time"]), y=sub["entry_price"].to_numpy(dtype=float),
            mode="markers", name=f"{side} entry",
            marker={"symbol": symbol, "size": 11, "color": color, "line": {"color": "white", "width": 1}},
            hovertext=[hover[i] for i in np.flatnonzero(mask)], hoverinfo="text",
        ))

    closed = trades["exit_time"].notna().to_numpy() & trades["exit_price"].notna().to_numpy()
    reasons = (
        trades["exit_reason"].astype(str) if "exit_reason" in trades.columns
        else pd.Series("exit", index=trades.index)
    )
    order = [r for r in EXIT_COLORS if r in set(reasons[closed])]
    order += sorted(set(reasons[closed]) - set(order))
    for reason in order:
        mask = closed & (reasons == reason).to_numpy()
        sub = trades[mask]
        traces.append(go.Scatter(
            x=_naive_utc(sub["exit_time"]), y=sub["exit_price"].to_numpy(dtype=float),
            mode="markers", name=f"exit: {reason.replace('_', ' ')}",
            marker={"symbol": "x", "size": 9, "color": EXIT_COLORS.get(reason, OTHER_EXIT_COLOR),
                    "line": {"width": 1, "color": EXIT_COLORS.get(reason, OTHER_EXIT_COLOR)}},
            hovertext=[hover[i] for i in np.flatnonzero(mask)], hoverinfo="text",
        ))
    return traces


def _equity_traces(
    equity: pd.Series, benchmark: pd.Series | None, max_points: int
) -> list[go.Scatter]:
    """Strategy and buy-and-hold equity lines."""
    eq = _downsample_last(_series(equity, "equity"), max_points)
    traces = [go.Scatter(
        x=_naive_utc(eq.index), y=eq.to_numpy(), mode="lines", name="strategy",
        line={"color": STRATEGY_COLOR, "width": 1.8}, hovertemplate="%{y:,.2f}",
    )]
    if benchmark is not None:
        bm = _downsample_last(_series(benchmark, "benchmark"), max_points)
        traces.append(go.Scatter(
            x=_naive_utc(bm.index), y=bm.to_numpy(), mode="lines", name="buy & hold",
            line={"color": BENCHMARK_COLOR, "width": 1.3, "dash": "dot"}, hovertemplate="%{y:,.2f}",
        ))
    return traces


def _drawdown_trace(equity: pd.Series, max_points: int) -> go.Scatter:
    """The underwater curve in percent, filled down from zero."""
    dd = _downsample_min(_drawdown_pct(_series(equity, "equity")), max_points)
    return go.Scatter(
        x=_naive_utc(dd.index), y=dd.to_numpy(), mode="lines", name="drawdown",
        fill="tozeroy", line={"color": DRAWDOWN_COLOR, "width": 1},
        fillcolor="rgba(214, 39, 40, 0.25)", hovertemplate="%{y:.2f}%",
    )


def _last_time(bars: pd.DataFrame) -> pd.Timestamp | None:
    """The last bar's time (tz-naive UTC), where open trades' levels end."""
    return _naive_utc(bars.index[-1:])[0] if len(bars) else None


# ----------------------------------------------------------------------------- public figures


def price_figure(
    bars: pd.DataFrame,
    trades: pd.DataFrame | None = None,
    title: str = "",
    max_points: int = MAX_POINTS,
    *,
    symbol: str | None = None,
) -> go.Figure:
    """Candlesticks (downsampled past `max_points`) with trade entries, exits and stop/target levels."""
    frame = _bars_frame(bars)
    trades = _trades_for(trades, symbol)
    fig = go.Figure()
    fig.add_trace(_candle_trace(frame, max_points))
    for trace in _trade_traces(trades, _last_time(frame)):
        fig.add_trace(trace)
    _style(fig, title)
    fig.update_yaxes(title_text="price")
    return fig


def equity_figure(
    equity: pd.Series,
    benchmark: pd.Series | None = None,
    title: str = "",
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """Strategy equity against buy-and-hold, downsampled to the last value per bucket."""
    fig = go.Figure(_equity_traces(equity, benchmark, max_points))
    _style(fig, title)
    fig.update_yaxes(title_text="equity")
    return fig


def drawdown_figure(equity: pd.Series, title: str = "", max_points: int = MAX_POINTS) -> go.Figure:
    """The underwater curve (drawdown from the running peak) in percent, filled."""
    fig = go.Figure(_drawdown_trace(equity, max_points))
    _style(fig, title)
    fig.update_yaxes(title_text="drawdown %", ticksuffix="%")
    return fig


def backtest_figure(
    bars: pd.DataFrame,
    trades: pd.DataFrame | None,
    equity: pd.Series,
    benchmark: pd.Series | None = None,
    title: str = "",
    max_points: int = MAX_POINTS,
    *,
    symbol: str | None = None,
) -> go.Figure:
    """Price with trades, equity against buy-and-hold and drawdown, stacked on one shared time axis."""
    frame = _bars_frame(bars)
    trades = _trades_for(trades, symbol)
    fig = make_subplots(
        rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.55, 0.25, 0.20],
    )
    fig.add_trace(_candle_trace(frame, max_points), row=1, col=1)
    for trace in _trade_traces(trades, _last_time(frame)):
        fig.add_trace(trace, row=1, col=1)
    for trace in _equity_traces(equity, benchmark, max_points):
        fig.add_trace(trace, row=2, col=1)
    fig.add_trace(_drawdown_trace(equity, max_points), row=3, col=1)
    _style(fig, title, height=900)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="equity", row=2, col=1)
    fig.update_yaxes(title_text="drawdown %", ticksuffix="%", row=3, col=1)
    return fig


def portfolio_figure(
    equity: pd.Series,
    benchmark: pd.Series | None = None,
    title: str = "",
    max_points: int = MAX_POINTS,
) -> go.Figure:
    """A portfolio's equity against buy-and-hold over its drawdown, on one shared time axis (the
    page of a multi-symbol backtest; each symbol's price and trades get a `price_figure`)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.65, 0.35])
    for trace in _equity_traces(equity, benchmark, max_points):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(_drawdown_trace(equity, max_points), row=2, col=1)
    _style(fig, title, height=700)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", ticksuffix="%", row=2, col=1)
    return fig


def _trades_for(trades: pd.DataFrame | None, symbol: str | None) -> pd.DataFrame | None:
    """The trades of one symbol when asked (and the frame has a symbol column), else all of them."""
    if trades is None:
        return None
    if not isinstance(trades, pd.DataFrame):
        raise ConfigError(f"trades must be a pandas DataFrame, got {type(trades).__name__}")
    if symbol is not None and "symbol" in trades.columns:
        return trades[trades["symbol"] == symbol]
    return trades


def _sorted_unique(values: pd.Series) -> list[Any]:
    """The distinct non-missing values, sorted (by their text when they do not compare)."""
    unique = list(values.dropna().unique())
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=str)


def _check_columns(table: pd.DataFrame, names: Sequence[tuple[str, str]]) -> None:
    """Raise a ConfigError naming the first argument that is not a column of the table."""
    columns = [str(c) for c in table.columns]
    for arg, name in names:
        if name not in table.columns:
            raise ConfigError(
                f"sweep_heatmap: {arg}={name!r} is not a column of the table{did_you_mean(name, columns)}; "
                f"available: {', '.join(columns)}"
            )


def sweep_heatmap(
    table: pd.DataFrame,
    x: str,
    y: str,
    metric: str = "sharpe",
    agg: str = "max",
    title: str = "",
) -> go.Figure:
    """A heatmap of `metric` over two sweep parameters, aggregating the other dimensions with `agg`."""
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"sweep_heatmap: table must be a pandas DataFrame, got {type(table).__name__}")
    _check_columns(table, (("x", x), ("y", y), ("metric", metric)))
    if x == y:
        raise ConfigError(f"sweep_heatmap: x and y must be different columns, both are {x!r}")
    if agg not in _AGGS:
        raise ConfigError(f"sweep_heatmap: agg={agg!r} is not supported{did_you_mean(agg, _AGGS)}; "
                          f"choose one of {', '.join(_AGGS)}")
    values = pd.to_numeric(table[metric], errors="coerce")
    if values.isna().all() and len(table):
        raise ConfigError(f"sweep_heatmap: metric {metric!r} has no numeric values")
    frame = pd.DataFrame({"x": table[x], "y": table[y], "v": values})
    grouped = frame.groupby(["y", "x"], dropna=True)["v"]
    z = grouped.agg(agg).unstack("x")
    counts = grouped.count().unstack("x")
    xs = _sorted_unique(frame["x"])
    ys = _sorted_unique(frame["y"])
    z = z.reindex(index=ys, columns=xs)
    counts = counts.reindex(index=ys, columns=xs).fillna(0).astype(int)
    if agg == "count":
        z = z.where(counts > 0)

    zarr = z.to_numpy(dtype=float)
    finite = zarr[np.isfinite(zarr)]
    colors: dict[str, Any] = {"colorscale": "Viridis"}
    if finite.size and finite.min() < 0 < finite.max():
        colors = {"colorscale": "RdYlGn", "zmid": 0.0}
    label = f"{agg}({metric})"
    heat = go.Heatmap(
        z=zarr,
        x=[str(v) for v in xs],
        y=[str(v) for v in ys],
        customdata=counts.to_numpy(),
        hovertemplate=(
            f"{x}=%{{x}}<br>{y}=%{{y}}<br>{label}=%{{z:.4g}}<br>feasible runs=%{{customdata}}<extra></extra>"
        ),
        hoverongaps=False,
        colorbar={"title": {"text": label}},
        xgap=1,
        ygap=1,
        **colors,
    )
    if zarr.size <= 400:
        heat.update(texttemplate="%{z:.2f}", textfont={"size": 10})
    fig = go.Figure(heat)
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title or f"{label} by {x} and {y}"},
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
    )
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    return fig


# ----------------------------------------------------------------------------- target-weight books


def _symbol_color(j: int) -> str:
    return SYMBOL_COLORS[j % len(SYMBOL_COLORS)]


def _downsample_rows(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """The last row of each of at most `max_points` buckets (a step curve such as weights held; the
    final row is kept)."""
    if len(frame) <= max_points:
        return frame
    starts = _bucket_starts(len(frame), max_points)
    return frame.iloc[np.r_[starts[1:], len(frame)] - 1]


def weights_figure(result: Any, frames: Mapping[str, pd.DataFrame], title: str = "",
                   max_points: int = MAX_POINTS) -> go.Figure:
    """The weights a target-weight book held after every bar (`holdings.held_weights`), stacked per
    symbol: longs stacked up from 0, shorts down from it; the gap to 100% is cash."""
    from workbench.backtest.holdings import held_weights

    held = _downsample_rows(held_weights(result, frames), max_points) * 100.0
    x = _naive_utc(held.index)
    fig = go.Figure()
    for j, sym in enumerate(held.columns):
        w = held[sym].to_numpy(dtype=float)
        color = _symbol_color(j)
        fig.add_trace(go.Scatter(
            x=x, y=np.where(w > 0, w, 0.0), name=str(sym), mode="lines", stackgroup="long",
            legendgroup=str(sym), line={"width": 0.5, "color": color}, fillcolor=color,
            hovertemplate="%{y:.1f}%",
        ))
        if (w < 0).any():
            fig.add_trace(go.Scatter(
                x=x, y=np.where(w < 0, w, 0.0), name=f"{sym} (short)", mode="lines", stackgroup="short",
                legendgroup=str(sym), showlegend=False, line={"width": 0.5, "color": color}, fillcolor=color,
                hovertemplate="%{y:.1f}%",
            ))
    _style(fig, title or "Weights held")
    fig.update_yaxes(title_text="weight % of equity", ticksuffix="%")
    return fig


def turnover_figure(result: Any, frames: Mapping[str, pd.DataFrame], title: str = "") -> go.Figure:
    """Per rebalance (`holdings.rebalance_table`): the turnover in percent of equity, and the fees and
    slippage it paid stacked below, on one shared time axis."""
    from workbench.backtest.holdings import rebalance_table

    table = rebalance_table(result, frames)
    x = _naive_utc(table["time"])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45])
    fig.add_trace(go.Bar(
        x=x, y=table["rebalance_turnover"].to_numpy(dtype=float) * 100.0, name="turnover",
        marker={"color": TURNOVER_COLOR}, customdata=table["orders"].to_numpy(),
        hovertemplate="%{y:.1f}% (%{customdata} orders)",
    ), row=1, col=1)
    for column, color in (("fees", FEES_COLOR), ("slippage", SLIPPAGE_COLOR)):
        fig.add_trace(go.Bar(
            x=x, y=table[column].to_numpy(dtype=float), name=column, marker={"color": color},
            hovertemplate="%{y:,.2f}",
        ), row=2, col=1)
    _style(fig, title or "Turnover and costs per rebalance", height=600)
    fig.update_layout(barmode="stack", legend_traceorder="normal")
    fig.update_yaxes(title_text="turnover %", ticksuffix="%", row=1, col=1)
    fig.update_yaxes(title_text="costs", row=2, col=1)
    return fig


def risk_contributions_figure(contributions: pd.DataFrame, title: str = "") -> go.Figure:
    """Each asset's share of the portfolio's risk at every rebalance, stacked bars (a negative share, a
    hedge, below 0): `contributions` is rebalance time x asset, each row summing to 1."""
    if not (isinstance(contributions, pd.DataFrame) and isinstance(contributions.index, pd.DatetimeIndex)
            and len(contributions) and len(contributions.columns)):
        raise ConfigError("contributions must be a non-empty DataFrame indexed by rebalance time with one "
                          "column per asset (holdings.rebalance_risk gives one)")
    values = contributions.to_numpy(dtype=float)
    sums = values.sum(axis=1)
    bad = np.flatnonzero(~np.isfinite(sums) | (np.abs(sums - 1.0) > 1e-6))
    if bad.size:
        raise ConfigError(f"risk contributions at {contributions.index[bad[0]]} sum to {sums[bad[0]]:.6g}, "
                          "not 1: pass fractions of the portfolio's risk (drop rows with nothing held)")
    x = _naive_utc(contributions.index)
    fig = go.Figure([
        go.Bar(x=x, y=values[:, j] * 100.0, name=str(asset), marker={"color": _symbol_color(j)},
               hovertemplate="%{y:.1f}%")
        for j, asset in enumerate(contributions.columns)
    ])
    _style(fig, title or "Risk contributions per rebalance")
    fig.update_layout(barmode="relative")
    fig.update_yaxes(title_text="share of variance %", ticksuffix="%")
    return fig


def write_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write the figure as a self-contained offline HTML file, atomically (temp file then rename)."""
    target = Path(path).expanduser()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create directory {parent} for {target.name}: {exc.strerror or exc}"
        ) from exc
    try:
        with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fig.write_html(fh, include_plotlyjs=True, full_html=True)
    except PermissionError as exc:
        raise ConfigError(f"cannot write {target}: directory {parent} is not writable "
                          f"({exc.strerror or exc})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
