"""Live market-data feeds for the collector (one module per venue client) and `get_feed`."""

from __future__ import annotations

from workbench.data.feeds.base import Feed, Stream
from workbench.errors import ConfigError, did_you_mean

FEED_KINDS = ("alpaca", "ccxt", "simulated")


def get_feed(spec: str) -> Feed:
    """Build a feed from `alpaca`, `ccxt:<exchange>` (e.g. `ccxt:binance`) or `simulated` (no network)."""
    kind, _, arg = spec.partition(":")
    if kind == "ccxt":
        from workbench.data.feeds.ccxt import CcxtFeed

        if not arg:
            raise ConfigError("ccxt needs an exchange: write ccxt:<exchange id>, e.g. ccxt:binance")
        return CcxtFeed(arg)
    if kind == "alpaca":
        from workbench.data.feeds.alpaca import AlpacaFeed

        if arg:
            raise ConfigError(f"alpaca takes no exchange ({spec!r}): write alpaca")
        return AlpacaFeed()
    if kind == "simulated" and not arg:
        from workbench.data.feeds.simulated import SimulatedFeed

        return SimulatedFeed()
    raise ConfigError(f"unknown live source {spec!r}{did_you_mean(kind, FEED_KINDS)}: collect from alpaca, "
                      "ccxt:<exchange> or simulated")


__all__ = ["FEED_KINDS", "Feed", "Stream", "get_feed"]
