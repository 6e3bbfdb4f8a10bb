"""Paper trading: the broker contract and its venues, the journaled runner, replays with backtest parity.

```python
from workbench.paper import replay, StrategySpec, load_config, PaperSession
res = replay(StrategySpec.from_artifact(load_artifact("sma_cross-btc_usdt-1h")), "2025-07-01", "2025-12-31",
             lake=Lake("data"))
res.parity.ok, res.trades
```
"""

from workbench.paper.broker import (
    Account,
    Broker,
    BrokerKind,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from workbench.paper.journal import Journal
from workbench.paper.replay import Parity, ReplayResult, compare_trades, drift, journal_trades, replay
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner, StrategySpec, TickResult
from workbench.paper.service import PaperConfig, PaperSession, load_config, status
from workbench.paper.sim import SimBroker

__all__ = [
    "Account",
    "Broker",
    "BrokerKind",
    "Journal",
    "Order",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "PaperConfig",
    "PaperSession",
    "Parity",
    "Position",
    "ReplayResult",
    "RiskLimits",
    "Runner",
    "Side",
    "SimBroker",
    "StrategySpec",
    "TickResult",
    "compare_trades",
    "drift",
    "journal_trades",
    "load_config",
    "replay",
    "status",
]
