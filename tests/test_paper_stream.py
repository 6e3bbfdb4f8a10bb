"""The paper runner on streamed bars: a collector records a (simulated) venue's trades, the runner
builds its bars from them and decides at each bar close, without polling any REST source."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from collect_helpers import Running
from paper_helpers import spec_for, write_artifact

from workbench.data.collector import Collector, CollectSettings
from workbench.data.feeds.simulated import SimulatedFeed
from workbench.data.lake import Lake
from workbench.data.ticks import TickKind, TickWriter
from workbench.errors import ConfigError
from workbench.paper.service import PaperSession, load_config


def test_the_runner_decides_on_each_streamed_bar_close(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    lake = Lake(data)
    # a minute recorded earlier (by a collector that ran before): the strategy's window
    rng = np.random.default_rng(1)
    t0 = pd.Timestamp.now(tz="UTC").floor("1s").value - 60 * 10**9
    with TickWriter(lake.ticks, "simulated") as w:
        w.extend(TickKind.TRADES, [(t0 + k * 10**8, t0 + k * 10**8, "BTC/USDT", k - 10**6,
                                    float(40_000 * np.exp(rng.normal(0, 1e-3))), 0.1, "buy")
                                   for k in range(600)])
    collector = Collector(lake, SimulatedFeed(seed=3, rate=40), CollectSettings(
        source="simulated", symbols=["BTC/USDT"], streams=["trades"]))
    run = Running(collector)
    try:
        spec = replace(spec_for("sma_cross", {"fast": 5, "slow": 20}), timeframe="1s", source="simulated",
                       periods_per_year=365 * 86400.0)
        art = write_artifact(tmp_path / "s.json", spec, name="streamed")
        cfg = tmp_path / "paper.yaml"
        cfg.write_text(f"name: live\nbroker: {{kind: sim}}\nstrategies: [{{artifact: {art}}}]\n"
                       "schedule: {delay: 0}\ndata: {stream: true}\n")
        config = load_config(cfg)
        assert config.stream and not config.sync
        time.sleep(1.0)  # the collector is live
        session = PaperSession(config, lake=lake)
        try:
            lags = []
            for _ in range(5):
                close = pd.Timestamp.now(tz="UTC").ceil("1s")
                time.sleep(max(0.0, (close - pd.Timestamp.now(tz="UTC")).total_seconds()))
                results = session.tick()
                lags.append((pd.Timestamp.now(tz="UTC") - close).total_seconds())
                [r] = results
                assert r.status in ("done", "skipped"), r.message
                assert r.bar == close - pd.Timedelta(seconds=1)  # decided on the bar that just closed
            assert max(lags) < 2.0  # the bench measures the latency; this checks it is bounded
            ticks = pd.read_sql_query("SELECT * FROM ticks", session.journal.db)
            assert len(ticks) >= 5
        finally:
            session.close()
    finally:
        run.stop()


def test_streamed_bars_refuse_settings_that_would_have_no_effect(tmp_path: Path) -> None:
    cfg = tmp_path / "paper.yaml"
    cfg.write_text("name: x\nstrategies: [a.json]\ndata: {stream: true, sync: true}\n")
    with pytest.raises(ConfigError, match="sync has no effect when the bars are streamed"):
        load_config(cfg)
    cfg.write_text("name: x\nstrategies: [a.json]\ndata: {stream: true}\n"
                   "schedule: {clock: {start: 2025-01-01, speed: 60}}\n")
    with pytest.raises(ConfigError, match=r"schedule\.clock cannot run with data\.stream"):
        load_config(cfg)


def test_recorded_trades_replay_through_the_runner_trade_for_trade(tmp_path: Path) -> None:
    """Research on recorded ticks: a paper replay (runner + sim broker) over bars built from the
    trades equals the backtest on the same bars, trade for trade."""
    from workbench.paper.replay import replay

    lake = Lake(tmp_path)
    rng = np.random.default_rng(9)
    t0 = pd.Timestamp("2026-03-02", tz="UTC").value
    n = 40_000
    ts = np.sort(rng.integers(t0, t0 + 6 * 3600 * 10**9, n))
    price = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.TRADES, [(int(t), int(t), "BTC/USDT", i, float(p), 0.2, "buy" if i % 2 else "sell")
                                   for i, (t, p) in enumerate(zip(ts, price, strict=True))])
    spec = replace(spec_for("sma_cross", {"fast": 5, "slow": 20}), timeframe="1m", source="binance",
                   periods_per_year=525_600.0)
    res = replay(spec, "2026-03-02 01:00", "2026-03-02 06:00", lake=lake, workdir=tmp_path / "replay")
    assert res.parity.ok, res.parity
    assert len(res.backtest.trades) > 5
