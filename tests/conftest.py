"""Shared fixtures: every test gets its own data root, so nothing touches ./data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_server import postgres_url  # noqa: F401

from workbench import Lake


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(root))
    return root


@pytest.fixture
def lake(data_root: Path) -> Lake:
    return Lake(data_root)
