"""The example strategy shipped in research/ is discovered, passes the look-ahead check and backtests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from workbench.backtest import backtest
from workbench.data.sources.synthetic import SyntheticSource
from workbench.strategies import get_strategy, list_strategies
from workbench.strategies.lookahead import check_lookahead

RESEARCH = Path(__file__).resolve().parent.parent / "research"


def test_example_research_strategy_is_discovered_and_honest() -> None:
    assert "breakout_momentum" in list_strategies(RESEARCH)
    strategy = get_strategy("breakout_momentum", RESEARCH)
    bars = SyntheticSource(seed=7).bars("ETH/USDT", "1h", pd.Timestamp("2025-01-01", tz="UTC"),
                                        pd.Timestamp("2025-05-01", tz="UTC")).set_index("ts")
    assert check_lookahead(strategy, bars, cuts=4).ok
    result = backtest(strategy, bars)
    assert result.metrics["n_trades"] > 0
    assert set(result.trades["exit_reason"]) <= {"signal", "trailing_stop", "open"}
