"""What a paper-trading journal says, as tables and charts for the monitor notebook and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import data_dir
from workbench.errors import ConfigError, did_you_mean
from workbench.paper.journal import Journal
from workbench.paper.replay import Parity, drift, journal_trades


def find_journal(root: str | Path | None = None) -> Path | None:
    """The most recently written journal under ``<data dir>/paper`` (a run or a replay); None when there
    is none."""
    base = Path(root) if root is not None else data_dir() / "paper"
    found = sorted(base.rglob("journal.sqlite"), key=lambda p: p.stat().st_mtime) if base.is_dir() else []
    return found[-1] if found else None


def latest_journal(root: str | Path | None = None) -> Path:
    """The most recently written journal under ``<data dir>/paper`` (a run or a replay)."""
    found = find_journal(root)
    if found is None:
        base = Path(root) if root is not None else data_dir() / "paper"
        raise ConfigError(f"no paper-trading journal under {base}; run `workbench paper run` or "
                          "`workbench paper replay --journal <folder>` first")
    return found


def journal_file(path: str | Path) -> Path:
    """The journal.sqlite that `path` names: the file itself, the folder holding one, or a paper config
    (its session's journal)."""
    p = Path(path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        from workbench.paper.service import load_config

        p = load_config(p).root() / "journal.sqlite"
    elif p.is_dir():
        p = p / "journal.sqlite"
    if not p.is_file():
        raise ConfigError(f"no journal at {p}; give the journal.sqlite of a paper run or replay, "
                          "its folder, or the paper config whose session has run")
    return p


class Monitor:
    """Read-only views of one journal: the book, equity, trades, orders and decisions per strategy."""

    def __init__(self, path: str | Path) -> None:
        """`path`: a journal.sqlite, the folder holding one, or a paper config (its session's journal)."""
        self.path = journal_file(path)
        self.journal = Journal(self.path, durable=False)

    def strategies(self) -> list[str]:
        """The strategies this journal traded."""
        from workbench.paper.runner import specs_in

        return [spec.name for spec in specs_in(self.journal)]

    def book(self) -> pd.DataFrame:
        """One row per strategy: capital, cash, equity, P&L, positions, last tick."""
        from workbench.paper.service import status

        st = status(self.journal)
        return pd.DataFrame(st["strategies"]).set_index("name") if st["strategies"] else pd.DataFrame()

    def halts(self) -> pd.DataFrame:
        """Halts in force."""
        return pd.DataFrame(self.journal.active_halts())

    def equity(self, strategy: str) -> pd.Series:
        """Equity after each tick."""
        snaps = self.journal.snapshots_frame(strategy)
        return pd.Series(snaps["equity"].map(float).to_numpy(), index=pd.to_datetime(snaps["bar"], utc=True),
                         name="equity")

    def equity_figure(self, strategy: str) -> Any:
        """The equity curve of a strategy from its journal."""
        from workbench.backtest.plots import equity_figure

        return equity_figure(self.equity(strategy), title=f"{strategy}: equity from the journal")

    def trades(self, strategy: str) -> pd.DataFrame:
        """Round trips from the journal's fills."""
        return journal_trades(self.journal, strategy)

    def orders(self, strategy: str) -> pd.DataFrame:
        """Every order with its status, fills and refusal reason."""
        cols = ["client_order_id", "symbol", "bar", "leg", "side", "type", "qty", "status", "filled_qty",
                "avg_fill_price", "fee", "reject_reason"]
        return self.journal.orders_frame(strategy)[cols]

    def decisions(self, strategy: str, kinds: tuple[str, ...] = ()) -> pd.DataFrame:
        """Decisions and refusals with their reasons (optionally only some kinds: risk, data, order...)."""
        d = self.journal.decisions_frame(strategy)
        if kinds:
            d = d[d["kind"].isin(kinds)]
        return d[["bar", "symbol", "kind", "action", "reason"]]

    def drift(self, strategy: str, lake: Any = None) -> Parity:
        """The journal's trades of `strategy` against a shadow backtest of the bars it traded
        (`workbench.paper.replay.drift`): a replay must match it; a live run shows what trading changed."""
        from workbench.data.lake import Lake
        from workbench.paper.runner import specs_in

        specs = {spec.name: spec for spec in specs_in(self.journal)}
        if strategy not in specs:
            raise ConfigError(f"journal {self.path} holds no strategy {strategy!r}"
                              f"{did_you_mean(strategy, specs)}; it traded {', '.join(specs) or 'none'}")
        return drift(self.journal, specs[strategy], lake if lake is not None else Lake())

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()
