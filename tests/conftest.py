"""Shared fixtures: every test gets its own data root, so nothing touches ./data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pg_server import postgres_url  # noqa: F401

from workbench import Lake
from workbench.data.sources.synthetic import SyntheticSource


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(root))
    return root


@pytest.fixture
def lake(data_root: Path) -> Lake:
    return Lake(data_root)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seeded lake for the report templates: 1h synthetic BTC/USDT, first half of 2025."""
    root = tmp_path_factory.mktemp("reports") / "data"
    start, end = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-07-01", tz="UTC")
    Lake(root).write_bars(
        "synthetic", "BTC/USDT", "1h", SyntheticSource(seed=7).bars("BTC/USDT", "1h", start, end)
    )
    return root

