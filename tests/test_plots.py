"""Plotly figures: traces, downsampling, heatmap pivots, bad columns and atomic HTML output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from workbench.backtest.plots import (
    backtest_figure,
    downsample_ohlc,
    drawdown_figure,
    equity_figure,
    price_figure,
    sweep_heatmap,
    write_html,
)
from workbench.errors import ConfigError


def make_bars(n: int = 300, seed: int = 1, freq: str = "1min") -> pd.DataFrame:
    """A random walk of OHLCV bars indexed by a tz-aware UTC DatetimeIndex."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
    close = 100 * np.exp(rng.normal(0, 2e-3, n).cumsum())
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, n))
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1, 10, n)},
        index=index,
    )


def make_trades(bars: pd.DataFrame) -> pd.DataFrame:
    """Three closed trades (signal, stop-loss, take-profit) and one open one, some with stop levels."""
    t = bars.index
    c = bars["close"]
    nat = pd.NaT
    rows = [
        ("BTC/USDT", "long", t[10], c.iloc[10], t[40], c.iloc[40], "signal", np.nan, np.nan),
        ("BTC/USDT", "short", t[60], c.iloc[60], t[90], c.iloc[90], "stop_loss",
         c.iloc[60] * 1.02, np.nan),
        ("BTC/USDT", "long", t[120], c.iloc[120], t[150], c.iloc[150], "take_profit",
         c.iloc[120] * 0.98, c.iloc[120] * 1.03),
        ("BTC/USDT", "long", t[250], c.iloc[250], nat, np.nan, "open", c.iloc[250] * 0.97, np.nan),
    ]
    frame = pd.DataFrame(rows, columns=[
        "symbol", "direction", "entry_time", "entry_price", "exit_time", "exit_price", "exit_reason",
        "stop_loss_price", "take_profit_price",
    ])
    frame["exit_time"] = pd.to_datetime(frame["exit_time"], utc=True)
    frame["size"] = 1.5
    frame["pnl"] = (frame["exit_price"] - frame["entry_price"]) * frame["size"]
    frame["return"] = frame["exit_price"] / frame["entry_price"] - 1
    frame["status"] = np.where(frame["exit_time"].isna(), "open", "closed")
    return frame


def traces_by_name(fig: go.Figure) -> dict[str, go.BaseTraceType]:
    return {t.name: t for t in fig.data}


@pytest.fixture
def bars() -> pd.DataFrame:
    return make_bars()


@pytest.fixture
def trades(bars: pd.DataFrame) -> pd.DataFrame:
    return make_trades(bars)


def test_price_figure_candles_and_trade_markers(bars: pd.DataFrame, trades: pd.DataFrame) -> None:
    fig = price_figure(bars, trades, title="BTC")
    by_name = traces_by_name(fig)
    assert fig.data[0].type == "candlestick"
    assert len(fig.data[0].x) == len(bars)
    assert set(by_name) == {
        "price", "stop loss", "take profit", "long entry", "short entry",
        "exit: signal", "exit: stop loss", "exit: take profit",
    }
    assert by_name["long entry"].marker.symbol == "triangle-up"
    assert by_name["short entry"].marker.symbol == "triangle-down"
    assert len(by_name["long entry"].x) == 3
    assert len(by_name["short entry"].x) == 1
    # the open trade has an entry but no exit marker
    exits = sum(len(t.x) for n, t in by_name.items() if n.startswith("exit:"))
    assert exits == 3
    assert all(t.marker.symbol == "x" for n, t in by_name.items() if n.startswith("exit:"))
    assert len({t.marker.color for n, t in by_name.items() if n.startswith("exit:")}) == 3
    sl = by_name["stop loss"]
    assert list(sl.y).count(None) == 3
    assert sl.y[0] == sl.y[1] == pytest.approx(trades["stop_loss_price"].iloc[1])
    # the open trade's stop runs to the last bar
    assert pd.Timestamp(sl.x[-2]) == bars.index[-1].tz_localize(None)
    tp = by_name["take profit"]
    assert [v for v in tp.y if v is not None] == pytest.approx([trades["take_profit_price"].iloc[2]] * 2)
    hover = by_name["exit: stop loss"].hovertext[0]
    assert "stop_loss" in hover and "pnl" in hover and f"{trades['entry_price'].iloc[1]:.6g}" in hover
    assert fig.layout.template.layout.paper_bgcolor == "white"
    assert fig.layout.hovermode == "x unified"
    assert fig.layout.xaxis.rangeslider.visible is False
    assert fig.layout.title.text == "BTC"


def test_price_figure_without_trades_or_levels(bars: pd.DataFrame, trades: pd.DataFrame) -> None:
    assert len(price_figure(bars).data) == 1
    assert len(price_figure(bars, trades.iloc[0:0]).data) == 1
    plain = trades.drop(columns=["stop_loss_price", "take_profit_price"])
    names = set(traces_by_name(price_figure(bars, plain)))
    assert "stop loss" not in names and "take profit" not in names


def test_price_figure_accepts_ts_column(bars: pd.DataFrame) -> None:
    fig = price_figure(bars.rename_axis("ts").reset_index())
    assert len(fig.data[0].x) == len(bars)


def test_downsampling_bounds_candles_and_keeps_extremes() -> None:
    big = make_bars(20_001, seed=3)
    big.iloc[12_345, big.columns.get_loc("high")] = 1_000.0
    big.iloc[777, big.columns.get_loc("low")] = 1.0
    small = downsample_ohlc(big, 500)
    assert len(small) <= 500
    assert small["high"].max() == big["high"].max() == 1_000.0
    assert small["low"].min() == big["low"].min() == 1.0
    assert small["open"].iloc[0] == big["open"].iloc[0]
    assert small["close"].iloc[-1] == big["close"].iloc[-1]
    assert small["volume"].sum() == pytest.approx(big["volume"].sum())
    assert (small["high"] >= small[["open", "close"]].max(axis=1)).all()
    fig = price_figure(big, max_points=500)
    candle = fig.data[0]
    assert len(candle.x) <= 500
    assert max(candle.high) == 1_000.0 and min(candle.low) == 1.0


def test_equity_and_drawdown_figures(bars: pd.DataFrame) -> None:
    equity = bars["close"] * 100
    benchmark = bars["open"] * 100
    fig = equity_figure(equity, benchmark, title="eq")
    assert [t.name for t in fig.data] == ["strategy", "buy & hold"]
    assert len(equity_figure(equity).data) == 1
    big = pd.Series(np.linspace(1, 2, 12_000), index=pd.date_range("2024", periods=12_000, freq="min",
                                                                    tz="UTC"))
    small = equity_figure(big, max_points=1000).data[0]
    assert len(small.x) <= 1000 and small.y[-1] == big.iloc[-1]

    dd = drawdown_figure(equity).data[0]
    assert dd.fill == "tozeroy"
    expected = (equity / equity.cummax() - 1) * 100
    assert np.asarray(dd.y) == pytest.approx(expected.to_numpy())
    assert max(dd.y) <= 0


def test_drawdown_downsampling_keeps_the_worst_point() -> None:
    values = np.full(10_000, 100.0)
    values[4321] = 60.0
    equity = pd.Series(values, index=pd.date_range("2024", periods=10_000, freq="min", tz="UTC"))
    dd = drawdown_figure(equity, max_points=100).data[0]
    assert len(dd.x) <= 100
    assert min(dd.y) == pytest.approx(-40.0)


def test_backtest_figure_has_three_shared_rows(bars: pd.DataFrame, trades: pd.DataFrame) -> None:
    equity = bars["close"] * 100
    fig = backtest_figure(bars, trades, equity, bars["open"] * 100, title="run")
    axes = {t.name: t.yaxis for t in fig.data}
    assert axes["price"] == "y" and axes["long entry"] == "y" and axes["stop loss"] == "y"
    assert axes["strategy"] == "y2" and axes["buy & hold"] == "y2"
    assert axes["drawdown"] == "y3"
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3"}
    assert fig.layout.xaxis.matches == "x3" or fig.layout.xaxis2.matches == "x3"
    assert not fig.layout.xaxis.rangeslider.visible
    assert fig.layout.hovermode == "x unified"


def sweep_table() -> pd.DataFrame:
    rows = []
    for sym, bump in (("A", 0.0), ("B", 0.5)):
        for fast in (5, 10, 20):
            for slow in (10, 20, 50):
                if fast >= slow:  # infeasible combinations are simply absent
                    continue
                rows.append({"symbol": sym, "fast": fast, "slow": slow, "sharpe": fast / slow + bump,
                             "total_return": fast - slow})
    return pd.DataFrame(rows)


def test_sweep_heatmap_pivots_and_blanks_infeasible_cells() -> None:
    fig = sweep_heatmap(sweep_table(), x="fast", y="slow")
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert list(heat.x) == ["5", "10", "20"]
    assert list(heat.y) == ["10", "20", "50"]
    z = np.asarray(heat.z, dtype=float)
    # row slow=20, column fast=10: max over symbols of 10/20 (+0.5 for B)
    assert z[1, 1] == pytest.approx(1.0)
    assert np.isnan(z[0, 1]) and np.isnan(z[0, 2]) and np.isnan(z[1, 2])
    assert np.isfinite(z[2]).all()
    assert "fast=%{x}" in heat.hovertemplate and "max(sharpe)" in heat.hovertemplate
    assert np.asarray(heat.customdata)[1, 1] == 2

    mean = np.asarray(sweep_heatmap(sweep_table(), "fast", "slow", agg="mean").data[0].z, dtype=float)
    assert mean[1, 1] == pytest.approx(0.75)


def test_sweep_heatmap_nan_metric_stays_blank() -> None:
    table = sweep_table()
    table.loc[(table["fast"] == 5) & (table["slow"] == 50), "sharpe"] = np.nan
    z = np.asarray(sweep_heatmap(table, "fast", "slow").data[0].z, dtype=float)
    assert np.isnan(z[2, 0])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"x": "fats", "y": "slow"}, "did you mean 'fast'"),
        ({"x": "fast", "y": "nope"}, "y='nope'"),
        ({"x": "fast", "y": "slow", "metric": "sortino"}, "metric='sortino'"),
        ({"x": "fast", "y": "slow", "agg": "maximum"}, "agg='maximum'"),
        ({"x": "fast", "y": "fast"}, "different"),
    ],
)
def test_sweep_heatmap_bad_arguments(kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        sweep_heatmap(sweep_table(), **kwargs)
    message = str(info.value)
    assert needle in message and "\n" not in message
    if "agg" not in kwargs and kwargs["x"] != kwargs["y"]:
        assert "available: symbol, fast, slow, sharpe, total_return" in message


def test_write_html_is_self_contained_and_atomic(tmp_path: Path, bars: pd.DataFrame) -> None:
    fig = price_figure(bars, title="MARKER-TITLE-42")
    target = tmp_path / "nested" / "deeper" / "report.html"
    out = write_html(fig, target)
    assert out == target and target.is_file()
    text = target.read_text(encoding="utf-8")
    assert "plotly" in text.lower() and "MARKER-TITLE-42" in text
    assert "2024-01-01T00:00:00" in text  # the bar times are embedded
    assert "<script src=" not in text.replace(" ", "")  # the library is inlined, so it works offline
    assert len(text) > 1_000_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]
    write_html(fig, str(target))  # overwriting works too
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_write_html_unwritable_destination(tmp_path: Path, bars: pd.DataFrame) -> None:
    fig = equity_figure(bars["close"])
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create directory"):
        write_html(fig, blocker / "out.html")
    if os.name == "posix" and os.geteuid() == 0:
        return  # root writes through permissions
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            write_html(fig, locked / "out.html")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_the_walk_forward_chart_keeps_its_legend_out_of_the_title() -> None:
    from types import SimpleNamespace

    from workbench.optimize.plots import oos_equity_figure

    idx = pd.date_range("2025-01-01", periods=200, freq="h", tz="UTC")
    equity = pd.Series(np.linspace(100.0, 120.0, len(idx)), index=idx)
    folds = pd.DataFrame({"fold": [0, 1], "test_start": [idx[0], idx[100]], "test_end": [idx[100], idx[-1]],
                          "param_fast": [5, 10], "is_objective": [1.0, 1.2], "oos_objective": [0.5, 0.7]})
    run = SimpleNamespace(oos_equity=equity, oos_benchmark=equity * 0.9, folds=folds,
                          settings={"strategy": "sma_cross"})
    fig = oos_equity_figure(run)  # type: ignore[arg-type]
    assert fig.layout.title.text.startswith("sma_cross: out-of-sample equity")
    legend = fig.layout.legend
    assert legend.yanchor == "top" and legend.y < 0  # under the plot: never in the title's band
    assert fig.layout.margin.b >= 80  # room under the dates for a wrapped legend


def test_a_multi_symbol_result_charts_the_portfolio_and_each_symbols_price() -> None:
    from workbench.backtest import backtest
    from workbench.data.sources.synthetic import SyntheticSource

    start = pd.Timestamp("2025-01-01", tz="UTC")
    src = SyntheticSource(seed=2)
    bars = {s: src.bars(s, "1h", start, start + pd.Timedelta(days=20)).set_index("ts")
            for s in ("BTC/USDT", "ETH/USDT")}
    result = backtest("sma_cross", bars, {"fast": 5, "slow": 20})
    whole = result.figure()
    assert "portfolio of BTC/USDT, ETH/USDT" in whole.layout.title.text
    assert {t.type for t in whole.data} == {"scatter"} and "drawdown" in {t.name for t in whole.data}
    eth = result.figure("ETH/USDT")
    assert eth.layout.title.text.endswith("ETH/USDT in a portfolio of 2")
    assert eth.data[0].type == "candlestick" and not {"strategy", "drawdown"} & {t.name for t in eth.data}
