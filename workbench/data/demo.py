"""The embedded demo lake: SYNTHETIC crypto and equity bars, perpetual futures and their funding rates,
for every later stage to work on."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.data.funding import FundingSyncResult
from workbench.data.lake import Lake, Progress, SyncResult
from workbench.data.sources.synthetic import DEMO_CRYPTO, DEMO_EQUITY, DEMO_PERPS, SyntheticSource


@dataclass(frozen=True)
class DemoSlice:
    """One part of the demo lake: which symbols, timeframe and range."""

    symbols: tuple[str, ...]
    timeframe: str
    start: str
    end: str


# the perpetual futures: 1m bars, and their funding settlements over the same range
DEMO_PERP_SLICE = DemoSlice(DEMO_PERPS, "1m", "2025-01-01", "2026-01-01")
# fixed dates, so the demo lake and its fingerprints are the same on every machine and every day
DEMO_SLICES = (
    DemoSlice(DEMO_CRYPTO, "1m", "2025-01-01", "2026-01-01"),
    DEMO_PERP_SLICE,
    DemoSlice(DEMO_EQUITY, "1m", "2025-01-01", "2026-01-01"),
    DemoSlice(DEMO_EQUITY, "1d", "2018-01-01", "2026-01-01"),
)


def build_demo(lake: Lake, *, seed: int = 7, progress: Progress | None = None
               ) -> list[SyncResult | FundingSyncResult]:
    """Fill `lake` with the demo slices and the perpetuals' funding from the synthetic source
    (incremental: reruns add nothing)."""
    source = SyntheticSource(seed=seed)
    results: list[SyncResult | FundingSyncResult] = []
    for sl in DEMO_SLICES:
        results += lake.sync(source, list(sl.symbols), sl.timeframe, sl.start, sl.end,
                             progress=progress)
    perps = DEMO_PERP_SLICE
    results += lake.sync_funding(source, list(perps.symbols), perps.start, perps.end,
                                 progress=progress)
    return results


__all__ = ["DEMO_PERPS", "DEMO_PERP_SLICE", "DEMO_SLICES", "DemoSlice", "build_demo"]
