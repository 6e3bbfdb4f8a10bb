"""nbval runs every template here with its default (demo) parameters against a small seeded lake.

The lake is built before collection (kernels inherit the environment when they start): 1h
synthetic BTC/USDT for the first half of 2025, the range the templates' defaults read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def pytest_configure(config: object) -> None:
    if os.environ.get("WORKBENCH_NOTEBOOK_DATA"):
        os.environ["WORKBENCH_DATA_DIR"] = os.environ["WORKBENCH_NOTEBOOK_DATA"]
        return
    from workbench.data.lake import Lake
    from workbench.data.sources.synthetic import SyntheticSource

    root = Path(tempfile.mkdtemp(prefix="workbench-notebooks-")) / "data"
    lake = Lake(root)
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-07-01", tz="UTC")
    lake.write_bars("synthetic", "BTC/USDT", "1h", src.bars("BTC/USDT", "1h", start, end))
    os.environ["WORKBENCH_DATA_DIR"] = str(root)
