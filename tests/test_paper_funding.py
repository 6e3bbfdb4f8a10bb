"""Paper trading perpetuals: the runner books the funding the backtest pays (SEMANTICS.md "Funding"), so a
replay of a perpetual strategy with funding equals its backtest trade for trade, and the journal's funding
equals the backtest's."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from paper_helpers import BRACKETS, brackets_registered, build_lake, spec_for

from workbench.backtest.engine import Costs
from workbench.data.sources.synthetic import SyntheticSource
from workbench.paper.journal import Journal
from workbench.paper.replay import replay
from workbench.paper.sim import SimBroker

PERPS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
PERIOD = ("2025-03-01", "2025-03-11")


@pytest.fixture(autouse=True)
def _brackets():
    with brackets_registered():
        yield


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    lake = build_lake(tmp_path_factory.mktemp("perp_lake"), symbols=PERPS)
    lake.sync_funding(SyntheticSource(seed=7), list(PERPS), "2025-01-01", "2025-04-01")
    return lake


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_a_perpetual_strategy_with_funding_replays_trade_for_trade(lake, tmp_path: Path, fill: str) -> None:
    costs = Costs(fees=0.0005, slippage=0.0002, funding=True)
    spec = spec_for(BRACKETS.name, {"seed": 3}, symbols=PERPS, fill=fill, costs=costs, max_exposure=0.8)
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    assert res.parity.ok, f"{res.parity.summary()}\n{res.parity.differences.to_string()}"
    assert len(res.trades) == len(res.backtest.trades) >= 6
    assert set(res.trades["direction"]) == {"long", "short"}
    with Journal(res.journal_path) as j:
        paid = j.funding_frame(spec.name)
        total = sum((Decimal(a) for a in paid["amount"]), Decimal(0))
        # settlements every 8 hours on whatever was held, both ways
        amounts = paid["amount"].map(Decimal)
        assert len(paid) >= 10 and (amounts > 0).any() and (amounts < 0).any()
        assert set(pd.to_datetime(paid["bar"]).dt.hour) <= {0, 8, 16}
        assert float(total) == pytest.approx(res.backtest.charges["funding"], rel=1e-9)
        decided = j.decisions_frame(spec.name)
        assert (decided["kind"] == "funding").sum() == len(paid)
        # the ledger's equity at the last snapshot is the backtest's equity at that bar
        snaps = j.snapshots_frame(spec.name)
        last = snaps.iloc[-1]
        bar = pd.Timestamp(last["bar"])
        assert float(last["equity"]) == pytest.approx(float(res.backtest.equity.loc[bar]), rel=1e-9)
        ledger_cash = float(j.ledger(spec.name, spec.capital).cash)
    # the simulated venue charged the same funding to the account (its cash is the journal's)
    venue = SimBroker(tmp_path / "sim_broker.sqlite")
    try:
        assert venue.funding_paid == pytest.approx(float(total), rel=1e-9)
        assert venue.cash == pytest.approx(ledger_cash, rel=1e-9)
    finally:
        venue.close()
