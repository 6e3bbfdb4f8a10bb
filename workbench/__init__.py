"""workbench: a Jupyter-centric quant research workbench for crypto and US equities."""

from workbench.data.lake import Lake
from workbench.data.quality import QualityPolicy, check_bars
from workbench.data.sources import get_source
from workbench.errors import WorkbenchError
from workbench.version import __version__

__all__ = ["Lake", "QualityPolicy", "WorkbenchError", "__version__", "check_bars", "get_source"]
