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


# The files that take longest, run first: with one file per worker (`--dist loadfile`), a long file
# that starts last keeps one core busy while the other waits (measured: 4 s to 30 s each).
SLOW_FIRST = ("test_pipelines.py", "test_mlflow_ui.py", "test_reports.py", "test_walkforward_pg.py",
              "test_collect.py", "test_paper_durability.py", "test_cli_paper.py", "test_models_training.py",
              "test_report_browser.py", "test_paper_replay.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
