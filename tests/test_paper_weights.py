"""Parity for weight strategies: the paper runner rebalancing to a weight strategy's targets over past
bars sends, order for order, what the target-weight backtest trades (same bars, costs, lots, fill), on
one calendar and on a mixed crypto + NYSE universe."""

from __future__ import annotations

from pathlib import Path

import pytest
from paper_helpers import build_lake

from workbench.backtest.engine import Costs, Direction, Fill, Lot, Sizing
from workbench.backtest.weight_strategies import resolve_strategy
from workbench.optimize.walkforward import signal_lookback
from workbench.paper.replay import replay
from workbench.paper.runner import StrategySpec

CRYPTO = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def _spec(strategy: str, params: dict, symbols: tuple[str, ...] = CRYPTO, fill: str = "next_open",
          lots: dict[str, Lot] | None = None) -> StrategySpec:
    strat = resolve_strategy(strategy)
    p = strat.params(params)
    return StrategySpec(name=strategy, strategy=strategy, params=p, symbols=symbols, timeframe="1h",
                        periods_per_year=8760.0, costs=Costs(fees=0.001, slippage=0.0005, slippage_vol=0.5),
                        fill=Fill(fill), sizing=Sizing(), direction=Direction.BOTH, capital=100_000.0,
                        max_exposure=1.0, lookback=signal_lookback(strat, p), source="synthetic",
                        lots=dict(lots or {}))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    return build_lake(tmp_path_factory.mktemp("weights_lake"), symbols=CRYPTO)


def _check(res, least: int) -> None:
    assert res.parity.ok, f"{res.parity.summary()}\n{res.parity.differences.to_string()}"
    assert len(res.trades) == len(res.backtest.orders) >= least, "too few orders to prove much"


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_a_momentum_book_replays_order_for_order(lake, tmp_path: Path, fill: str) -> None:
    spec = _spec("xs_momentum", {"lookback": 24, "top": 2, "every": "daily"}, fill=fill,
                 lots={"BTC/USDT": Lot(step=0.001), "SOL/USDT": Lot(step=0.1, min_notional=50.0)})
    res = replay(spec, "2025-03-01", "2025-03-15", lake=lake, workdir=tmp_path)
    _check(res, 10)
    assert {"buy", "sell"} == set(res.trades["side"])


def test_an_allocator_book_replays_order_for_order(lake, tmp_path: Path) -> None:
    spec = _spec("allocate", {"method": "inverse_vol", "window": 48, "every": "daily"})
    res = replay(spec, "2025-03-01", "2025-03-10", lake=lake, workdir=tmp_path)
    _check(res, 10)


@pytest.fixture(scope="module")
def mixed_lake(tmp_path_factory: pytest.TempPathFactory):
    return build_lake(tmp_path_factory.mktemp("weights_mixed"), symbols=("BTC/USDT", "SPY"))


def test_a_crypto_and_nyse_book_waits_for_the_session_and_replays_order_for_order(mixed_lake,
                                                                                tmp_path: Path) -> None:
    spec = _spec("low_vol", {"lookback": 24, "top": 2, "every": "daily"}, symbols=("BTC/USDT", "SPY"))
    res = replay(spec, "2025-03-03", "2025-03-17", lake=mixed_lake, workdir=tmp_path)
    _check(res, 6)
    spy = res.trades[res.trades["symbol"] == "SPY"]
    assert len(spy) and all(t.tz_convert("America/New_York").hour in range(9, 16) for t in spy["time"])
