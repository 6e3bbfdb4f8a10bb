"""The options of a sync as the command line and pipeline YAML write them: text → a checked `SyncJob`.

`workbench data sync` and a pipeline's sync step both build one from the same options, so a
pipeline behaves like the command a researcher would type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.config import split_list

if TYPE_CHECKING:
    from workbench.data.lake import Lake
    from workbench.data.quality import QualityPolicy
    from workbench.data.sources import Source


@dataclass(frozen=True)
class SyncJob:
    """Which bars to fetch from which source, and how strictly to check them."""

    source: Source
    symbols: list[str]
    timeframe: str
    start: str | None
    end: str | None
    full: bool
    fill_gaps: bool
    policy: QualityPolicy

    @classmethod
    def from_options(
        cls, *, source: str, symbols: str, timeframe: str = "1m", start: str | None = None,
        end: str | None = None, full: bool = False, fill_gaps: bool = False, policy: str | None = None,
    ) -> SyncJob:
        """Check every option of `workbench data sync` (same names and defaults)."""
        from workbench.data.quality import QualityPolicy
        from workbench.data.sources import get_source

        pol = QualityPolicy.parse(policy)
        src = get_source(source)
        return cls(source=src, symbols=split_list(symbols), timeframe=timeframe, start=start, end=end,
                   full=full, fill_gaps=fill_gaps, policy=pol)

    def run(self, lake: Lake, progress: Callable[[str, int, int], None] | None = None) -> list[Any]:
        """Fetch into `lake` (incremental unless `full`); returns the per-symbol results."""
        return lake.sync(self.source, self.symbols, self.timeframe, self.start, self.end, full=self.full,
                         fill_gaps=self.fill_gaps, policy=self.policy, progress=progress)
