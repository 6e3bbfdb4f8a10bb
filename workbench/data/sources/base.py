"""The `Source` contract: everything that can fill the lake with bars implements these few methods.

A source turns (symbol, timeframe, [start, end)) into bar frames in the lake's contract (see
`workbench.data.bars`), translating its own symbol spellings and timestamps at this boundary only.
`Lake.sync` does the rest: incremental ranges from coverage, validation, batching, verification.

Sources of perpetual futures also serve funding-rate history (`funding_symbol`, `fetch_funding`,
`funding_pages`; `Lake.sync_funding` drives them); the others refuse it in one line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import NoReturn

import pandas as pd

from workbench.data.calendar import Calendar, calendar_for_symbol
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError


class Source(ABC):
    """A provider of historical bars.

    Implementations set `name` (the lake's `source=` label) and `timeframes`, and implement
    `fetch`. `fetch` yields frames in ascending time order that together cover [start, end) as
    far as the provider has data; frames may overlap (the lake de-duplicates), and each must have
    the bar columns `ts open high low close volume` with `ts` the UTC bar open time.
    """

    name: str
    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h", "1d")

    @abstractmethod
    def fetch(
        self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp
    ) -> Iterator[pd.DataFrame]:
        """Yield bar frames for `symbol` covering [start, end) in ascending order."""

    def canonical_symbol(self, symbol: str) -> str:
        """Return the canonical spelling (`BTC/USDT`, `AAPL`); raise ConfigError if unknown."""
        symbol = symbol.strip()
        if not symbol:
            raise ConfigError("empty symbol: name a symbol such as BTC/USDT or AAPL")
        return symbol

    def calendar(self, symbol: str) -> Calendar:
        """The trading calendar of `symbol` (24/7 for crypto pairs, NYSE for tickers)."""
        return calendar_for_symbol(symbol)

    # ------------------------------------------------------------------ funding rates
    def funding_symbol(self, symbol: str) -> str:
        """The canonical spelling of a perpetual whose funding history this source serves (e.g.
        `BTC/USDT:USDT`); raises ConfigError for a spot symbol, or when the source has no funding."""
        self._no_funding()

    def fetch_funding(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Funding events of perpetual `symbol` settled in [start, end): columns `ts` (UTC settlement
        time) and `rate` (per funding interval, as the venue publishes it), sorted by `ts`."""
        self._no_funding()

    def funding_pages(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp
                      ) -> Iterator[pd.DataFrame]:
        """`fetch_funding` in ascending pages (one page unless the source pages its requests), so a
        sync keeps what arrived before a failure."""
        yield self.fetch_funding(symbol, start, end)

    def _no_funding(self) -> NoReturn:
        raise ConfigError(
            f"source {self.name!r} has no funding-rate history: funding applies to perpetual futures; "
            "sync it from a futures source, e.g. --source ccxt:binanceusdm (or synthetic)"
        )

    def check_timeframe(self, timeframe: Timeframe) -> None:
        """Raise ConfigError when the source cannot deliver `timeframe` directly."""
        if timeframe.name not in self.timeframes:
            raise ConfigError(
                f"source {self.name!r} does not serve {timeframe.name} bars: use one of "
                f"{', '.join(self.timeframes)} (coarser timeframes are resampled when read)"
            )


def spot_funding_error(symbol: str, example: str = "BTC/USDT:USDT", kind: str = "a spot symbol",
                       hint: str = "") -> ConfigError:
    """The one error for funding asked of something that is not a perpetual future."""
    return ConfigError(f"funding asked for {symbol}, {kind}: funding applies to perpetual futures "
                       f"(e.g. {example}){hint}")
