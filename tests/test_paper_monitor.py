"""The paper monitor (what the paper_monitor and research_report templates read): which journal,
and its views agree with the replay that wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest
from paper_helpers import build_lake, spec_for

from workbench.errors import ConfigError
from workbench.paper.monitor import Monitor, find_journal, latest_journal
from workbench.paper.replay import replay


def test_a_journal_is_found_by_file_folder_or_paper_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    assert find_journal() is None
    with pytest.raises(ConfigError, match=r"no paper-trading journal under .*; run `workbench paper run`"):
        latest_journal()
    lake = build_lake(data, symbols=("BTC/USDT",))
    folder = data / "paper" / "demo"  # where pipelines/paper-style config named demo keeps its journal
    res = replay(
        spec_for("sma_cross", {"fast": 10, "slow": 40}), "2025-03-01", "2025-03-15", lake=lake, workdir=folder
    )  # two weeks hold several trades; the views are compared with all of them
    assert res.parity.ok and len(res.trades) > 0
    config = tmp_path / "paper.yaml"
    config.write_text("name: demo\nstrategies:\n  - artifact: x\n")
    monitors = [Monitor(folder / "journal.sqlite"), Monitor(folder), Monitor(config)]
    assert {m.path for m in monitors} == {folder / "journal.sqlite"} == {latest_journal()}
    mon = monitors[1]
    assert mon.strategies() == ["sma_cross"]
    trades = mon.trades("sma_cross")
    assert len(trades) == len(res.trades)
    assert trades["pnl"].sum() == pytest.approx(float(res.trades["pnl"].sum()), rel=1e-9)
    equity = mon.equity("sma_cross")
    book = mon.book()
    assert len(equity) > 0 and equity.iloc[-1] == pytest.approx(float(book["equity"].iloc[0]), rel=1e-9)
    with pytest.raises(
        ConfigError,
        match=r"no journal at .*other; give the journal.sqlite of a paper run or replay, its folder",
    ):
        Monitor(tmp_path / "other")
