"""Notebook reports: papermill execution, manifests, failures, parameters, secrets, reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cli_runner import invoke

from workbench.errors import ConfigError
from workbench.reports import ReportFailed, parse_parameters, run_report

pytestmark = pytest.mark.notebook
KEY = "sk-test-9d8c7b6a5f4e3d2c1b0a-never-written"


def _notebook(path: Path, body: str, params: str = "x = 1") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


def test_a_report_writes_notebook_html_and_manifest(
    tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(lake_root))
    res = run_report("data_lake", {"end": "2025-02-01"}, out=tmp_path / "reports")
    assert res.ok and res.folder.parent == tmp_path / "reports" / "data_lake"
    m = json.loads((res.folder / "manifest.json").read_text())
    assert m["status"] == "ok" and m["parameters"] == {"end": "2025-02-01"} and m["duration_s"] > 0
    assert m["recorded"]["data_fingerprint"].startswith("sha256:") and m["recorded"]["bars"] == 744
    assert m["code_version"]
    html = res.html.read_text()
    assert "Data lake tour" in html and "plotly" in html.lower()
    assert "lake.coverage_frame()" not in html  # code hidden by default
    executed = nbformat.read(res.notebook, as_version=4)
    assert any('end = "2025-02-01"' in c.source for c in executed.cells)  # papermill's injected cell


def test_same_inputs_give_the_same_numbers(
    tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(lake_root))
    runs = [
        run_report("strategy_research", {"grid": {"fast": [5, 10], "slow": [40]}}, out=tmp_path / "r")
        for _ in range(2)
    ]
    assert runs[0].manifest["recorded"] == runs[1].manifest["recorded"]

    def metrics(res) -> str:
        nb = nbformat.read(res.notebook, as_version=4)
        cell = next(c for c in nb.cells if "metrics_frame" in c.source)
        return json.dumps(cell.outputs[0]["data"]["text/plain"])

    assert metrics(runs[0]) == metrics(runs[1])
    assert runs[0].folder != runs[1].folder


def test_a_failing_cell_gives_a_failed_manifest_naming_it(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "broken.ipynb", "y = x + 1\nraise ValueError('the data ran out')")
    with pytest.raises(
        ReportFailed, match=r"failed in cell 3 \('y = x \+ 1'\) with ValueError: the data ran out"
    ):
        run_report(nb, {"x": 5}, out=tmp_path / "reports")
    folder = next((tmp_path / "reports" / "broken").iterdir())
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "failed" and m["error"]["ename"] == "ValueError" and m["error"]["cell"] == 3
    assert (folder / "broken.ipynb").exists() and (folder / "broken.html").exists()


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "small.ipynb", "print(x)", params="x = 1\nsymbol = 'BTC/USDT'")
    with pytest.raises(
        ConfigError, match="takes no parameter 'symbl' \\(did you mean 'symbol'\\?\\); it takes x, symbol"
    ):
        run_report(nb, {"symbl": "ETH/USDT"}, out=tmp_path)
    with pytest.raises(ConfigError, match="looks like a credential"):
        run_report(nb, {"api_key": "abc"}, out=tmp_path)
    with pytest.raises(
        ConfigError, match="unknown notebook 'strategy_reserch' \\(did you mean 'strategy_research'"
    ):
        run_report("strategy_reserch")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        run_report(nb, {}, out=blocker / "reports")
    assert parse_parameters(["a=1", "b=[1, 2]", "c=BTC/USDT"]) == {"a": 1, "b": [1, 2], "c": "BTC/USDT"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_parameters(["oops"])


def test_credentials_in_the_environment_never_reach_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", KEY)
    body = (
        "from workbench.config import setting\nsecret = setting('APCA_API_SECRET_KEY')\n"
        "print('key present:', bool(secret), 'length', len(secret))"
    )
    res = run_report(_notebook(tmp_path / "keyed.ipynb", body), {"x": 2}, out=tmp_path / "reports")
    assert res.ok
    for f in res.folder.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_cli_runs_a_report_and_fails_with_one_line(tmp_path: Path, lake_root: Path) -> None:
    """`report run` in this process (cli_runner.invoke); `report ls` is the group's smoke test in a real
    process, started first so it overlaps the run."""
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(lake_root)}
    ls_proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "report", "ls"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ok = invoke(["report", "run", "data_lake", "-p", "end=2025-02-01", "--out", str(tmp_path / "r")],
                    data=lake_root)
        assert ok.returncode == 0, ok.stderr
        assert "report data_lake: ok" in ok.stdout and "html:" in ok.stdout
        bad = invoke(["report", "run", "data_lake", "-p", "symbl=X"], data=lake_root)
        assert bad.returncode == 1 and "it takes source, symbol" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        ls_out, ls_err = ls_proc.communicate(timeout=300)
    finally:
        ls_proc.kill()
    assert ls_proc.returncode == 0, ls_err
    assert "strategy_research:" in ls_out and "walk_forward_report:" in ls_out


def test_a_report_folder_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        res = run_report(_notebook(tmp_path / "tiny.ipynb", "y = x + 1"), {"x": 2}, out=tmp_path / "reports")
    finally:
        os.umask(old)
    assert oct(res.folder.stat().st_mode & 0o777) == oct(0o755)  # mkdtemp made it 0700
    assert {oct(f.stat().st_mode & 0o777) for f in res.folder.iterdir() if f.is_file()} == {oct(0o644)}


@pytest.mark.parametrize("strategy", ["rsi_mr", "bollinger_mr", "breakout_momentum"])
def test_strategy_research_works_for_any_strategy_with_tables_that_fit(
    tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    """Defaults and heatmap axes come from the strategy's parameter space (breakout_momentum is the
    user strategy shipped in research/); tables are formatted, without the pandas index."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(lake_root))
    monkeypatch.setenv("WORKBENCH_RESEARCH_DIR", str(repo / "research"))
    res = run_report("strategy_research", {"strategy": strategy, "end": "2025-04-01"}, out=tmp_path / "r")
    assert res.ok, res.manifest.get("error")
    nb = nbformat.read(res.notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    metrics = next(c for c in code if "metrics_frame" in c.source).outputs[0]["data"]
    assert "row_heading" not in metrics["text/html"] and "overflow-x:auto" in metrics["text/html"]
    assert "%" in metrics["text/plain"] and "0  total_return" not in metrics["text/plain"]
    heat = next(c for c in code if "heatmap" in c.source).outputs[0]["data"]
    axes = [p.name for p in __import__("workbench").get_strategy(strategy).space.params][:2]
    assert f"by {axes[0]} and {axes[1]}" in json.dumps(heat)
