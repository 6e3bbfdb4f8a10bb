"""Shared pieces of the paper-trading tests: a small lake of 1h synthetic bars, specs and artifact files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.engine import Costs, Direction, Fill, Lot, Sizing
from workbench.data.lake import Lake
from workbench.data.sources.synthetic import SyntheticSource
from workbench.optimize.walkforward import signal_lookback
from workbench.paper.runner import StrategySpec
from workbench.strategies import registry
from workbench.strategies.base import ParamSpace, Signals, Strategy, float_param, int_param
from workbench.strategies.registry import get_strategy

START, END = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-05-01", tz="UTC")
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def build_lake(
    root: Path, symbols: tuple[str, ...] = SYMBOLS, start: pd.Timestamp = START, end: pd.Timestamp = END
) -> Lake:
    """A lake with 1h synthetic bars of `symbols` in [start, end)."""
    lake = Lake(root)
    src = SyntheticSource(seed=7)
    for sym in symbols:
        lake.write_bars("synthetic", sym, "1h", src.bars(sym, "1h", start, end))
    return lake


def _bracket_signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Entries and exits drawn from each bar's own timestamp (causal), with stop, target and trail."""
    t = pd.DatetimeIndex(bars.index).as_unit("ns").asi8 // 3_600_000_000_000
    h = (t * 2654435761 + p["seed"] * 97) % 1000
    le = h < 60
    se = (h >= 60) & (h < 110)
    lx = (h >= 500) & (h < 530)
    sx = (h >= 530) & (h < 560)
    return Signals(le, lx, se, sx, stop_loss=p["sl"], take_profit=p["tp"], trailing_stop=p["tsl"])


BRACKETS = Strategy(
    name="test_brackets",
    space=ParamSpace.of(
        int_param("seed", 1, 0, 100),
        float_param("sl", 0.01, 0.001, 0.5),
        float_param("tp", 0.015, 0.001, 0.5),
        float_param("tsl", 0.02, 0.001, 0.5),
    ),
    fn=_bracket_signals,
    warmup=lambda p: 1,
)


@contextmanager
def registered(*strategies: Strategy) -> Iterator[None]:
    """Register test strategies for the duration of a test (other modules list the built-ins)."""
    registry.list_strategies()
    for s in strategies:
        registry.register(s)
    try:
        yield
    finally:
        for s in strategies:
            registry._BUILTINS.pop(s.name, None)


@contextmanager
def brackets_registered() -> Iterator[Strategy]:
    """Register the market-entry test strategy for the duration of a test."""
    with registered(BRACKETS):
        yield BRACKETS


def spec_for(
    strategy: str,
    params: dict[str, Any] | None = None,
    *,
    symbols: tuple[str, ...] = ("BTC/USDT",),
    fill: str = "next_open",
    costs: Costs | None = None,
    sizing: Sizing | None = None,
    direction: str = "both",
    capital: float = 100_000.0,
    max_exposure: float = 1.0,
    name: str | None = None,
    lots: dict[str, Lot] | None = None,
) -> StrategySpec:
    """A runner spec as an artifact would give it."""
    strat = get_strategy(strategy)
    p = strat.params(params)
    return StrategySpec(
        name=name or strategy,
        strategy=strategy,
        params=p,
        symbols=symbols,
        timeframe="1h",
        periods_per_year=8760.0,
        costs=costs or Costs(fees=0.001, slippage=0.0005, slippage_vol=0.5),
        fill=Fill(fill),
        sizing=sizing or Sizing(),
        direction=Direction(direction),
        capital=capital,
        max_exposure=max_exposure,
        lookback=signal_lookback(strat, p),
        source="synthetic",
        lots=dict(lots or {}),
    )


def write_artifact(path: Path, spec: StrategySpec, *, name: str = "paper_test", version: int = 1) -> Path:
    """An artifact file the registry loader accepts, for the runner's tests (promotion has its own)."""
    from workbench.promote.artifact import Artifact

    art = Artifact(
        name=name,
        version=version,
        strategy=spec.strategy,
        params=dict(spec.params),
        symbols=list(spec.symbols),
        timeframe=spec.timeframe,
        calendar=spec.calendar,
        periods_per_year=spec.periods_per_year,
        costs=spec.to_dict()["costs"],
        fill=spec.fill.value,
        sizing=spec.to_dict()["sizing"],
        direction=spec.direction.value,
        init_cash=spec.capital,
        max_exposure=spec.max_exposure,
        lots=spec.to_dict()["lots"],
        portfolio=True,
        data={
            "source": spec.source,
            "start": START.isoformat(),
            "end": END.isoformat(),
            "bars": 0,
            "fingerprint": "sha256:test",
        },
        lookback=spec.lookback,
        run_id="wf-test",
        code_version="test",
        run_code_version=None,
        created_at="2026-01-01T00:00:00+00:00",
        params_fold=0,
        fold_params=[],
        gates=[],
        gates_file={},
        evidence={},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(art.to_dict(), indent=2))
    return path


def finite(x: Any) -> bool:
    return bool(np.isfinite(float(x)))
