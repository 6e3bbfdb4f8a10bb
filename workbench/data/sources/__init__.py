"""Bar sources behind the `Source` contract, and `get_source` to build one from its name."""

from __future__ import annotations

from typing import Any

from workbench.data.sources.base import Source
from workbench.errors import ConfigError, did_you_mean

SOURCE_KINDS = ("synthetic", "ccxt", "alpaca")


def get_source(spec: str, **options: Any) -> Source:
    """Build a source from `synthetic`, `alpaca`, or `ccxt:<exchange>` (e.g. `ccxt:binance`)."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from workbench.data.sources.synthetic import SyntheticSource

        return SyntheticSource(**options)
    if kind == "ccxt":
        from workbench.data.sources.ccxt import CcxtSource

        if not arg:
            raise ConfigError("ccxt needs an exchange: write ccxt:<exchange id>, e.g. ccxt:binance")
        return CcxtSource(arg, **options)
    if kind == "alpaca":
        from workbench.data.sources.alpaca import AlpacaSource

        return AlpacaSource(**options)
    raise ConfigError(
        f"unknown source {spec!r}{did_you_mean(kind, SOURCE_KINDS)}: use synthetic, alpaca or "
        "ccxt:<exchange> (CSV files are imported with `workbench data import-csv`)"
    )


__all__ = ["SOURCE_KINDS", "Source", "get_source"]
