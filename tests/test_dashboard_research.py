"""The dashboard's Research page over real research data, in a real browser and without one.

One data folder is built for the module: a lake of 1h synthetic bars, a real walk-forward run saved as
its record (plus a record that is not JSON), two promoted versions in a real registry (one passing its
gates, one forced past a failing gate), a real sweep saved as Parquet, and rendered HTML reports. The
dashboard is served from it (Chromium as in test_dashboard: nothing reaches beyond 127.0.0.1): every
section shows its source's numbers, picking a run draws its diagnostics, picking a sweep its heatmap, a
report link opens the report, the damaged record is one line while the rest renders, a phone-width page
does not scroll sideways, and with a token set nothing is shown without it and reports need their
signature. Screenshots (desktop 1280x900, phone 375x800) go to reports/screenshots/.
"""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_dashboard import ALL_TEXT, TOKEN, WAIT_MS, chromium, tab

from workbench.backtest import load_bars, sweep
from workbench.backtest.plots import write_html
from workbench.backtest.sweep import SweepResult, list_sweeps, load_sweep
from workbench.dashboard import Access, Dashboard, DashboardServer
from workbench.dashboard.research import ResearchPage
from workbench.data.lake import Lake
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import PromotionRejected
from workbench.optimize import load_run, run_index, save_run, walk_forward
from workbench.paper.journal import Journal
from workbench.promote import Registry, promote
from workbench.reports.catalog import list_reports, report_file

pytestmark = pytest.mark.network  # a loopback server (the dashboard) and a browser talking to it

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
NUMBERS = """\
gates:
  oos_sharpe: {min: -100}
  sharpe_p_value: {max: 1}
  pbo: {max: 1}
  oos_trades: {min: 1}
"""
STRICT = "gates:\n  oos_sharpe: {min: 100}\n"
REPORT_TITLE = "research_report (20260101T000000000000Z)"
BROKEN = "wf-broken-0000000000"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data folder with a lake, runs, a registry, a sweep and reports; and an empty journal."""
    root = tmp_path_factory.mktemp("research")
    data, reports = root / "data", root / "reports"
    lake = Lake(data)
    lake.write_bars("synthetic", "BTC/USDT", "1h", SyntheticSource(seed=7).bars("BTC/USDT", "1h", START, END))
    bars = load_bars(lake, ["BTC/USDT"], "1h")
    run = walk_forward("sma_cross", bars, folds=3, n_trials=10, seed=0, save=False, fixed={"short": False},
                       storage=str(root / "wf.journal"))
    save_run(run, data / "runs")
    broken = data / "runs" / BROKEN
    broken.mkdir()
    (broken / "record.json").write_text("{not json")
    registry = Registry(data / "registry")
    (root / "numbers.yaml").write_text(NUMBERS)
    (root / "strict.yaml").write_text(STRICT)
    passed = promote(run.run_id, gates=root / "numbers.yaml", registry=registry, runs_root=data / "runs",
                     lake=lake)
    with pytest.raises(PromotionRejected):
        promote(run.run_id, gates=root / "strict.yaml", registry=registry, runs_root=data / "runs", lake=lake)
    forced = promote(run.run_id, gates=root / "strict.yaml", registry=registry, runs_root=data / "runs",
                     lake=lake, force=True, reason="testing the page")
    swept = sweep("sma_cross", bars, {"fast": [5, 10, 15], "slow": [30, 60, 90]}, fixed={"short": False})
    swept.save(reports / "demo" / "sweep_sma_cross.parquet")
    write_html(run.figure(), reports / "demo" / "walk_forward.html")
    folder = reports / "research_report" / "20260101T000000000000Z"
    folder.mkdir(parents=True)
    (folder / "research_report.html").write_text(
        f"<!doctype html><html><head><title>{REPORT_TITLE}</title></head>"
        "<body><p id='marker'>the research report body</p></body></html>")
    (folder / "manifest.json").write_text(json.dumps({"status": "ok"}))
    journal = Journal(root / "paper" / "journal.sqlite")
    journal.close()
    return {"root": root, "data": data, "reports": reports, "run": run, "journal": journal.path,
            "passed": passed.artifact, "forced": forced.artifact, "sweep": swept, "lake": lake}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, launched as test_dashboard launches it."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def url(world: dict[str, Any]) -> Iterator[str]:
    with served_research(world) as address:
        yield address


@contextmanager
def served_research(world: dict[str, Any], access: Access | None = None) -> Iterator[str]:
    """The dashboard of the module's (empty) journal over its data and reports folders."""
    server = DashboardServer(world["journal"], port=0, access=access or Access(), data=world["data"],
                             reports=world["reports"])
    address = server.start()
    try:
        yield address
    finally:
        server.stop()


def _research(t: Any) -> None:
    """Open the Research tab and wait until its sections have read their sources."""
    t.tab("Research")
    t.page.locator(".wb-runs-note", has_text="run(s)").first.wait_for(timeout=WAIT_MS)
    t.page.locator(".wb-reports-note", has_text="report(s)").first.wait_for(timeout=WAIT_MS)
    t.page.locator(".wb-models-note", has_text="model").first.wait_for(timeout=WAIT_MS)


def _fmt4(value: float) -> str:
    return f"{value:.4g}"


# ------------------------------------------------------------------------------------------ in a browser
def test_the_research_page_shows_every_source_with_its_own_numbers(
        world: dict[str, Any], url: str, browser: Any) -> None:
    from playwright.sync_api import expect

    run = world["run"]
    record = json.loads((world["data"] / "runs" / run.run_id / "record.json").read_text())
    with tab(browser, url) as t:
        _research(t)
        page = t.page
        # runs: the table lists the run with its record's figures; the damaged record is one line
        runs = page.locator(".wb-runs-table .tabulator-row")
        expect(runs).to_have_count(1, timeout=WAIT_MS)
        expect(runs.first).to_contain_text(run.run_id, timeout=WAIT_MS)
        expect(runs.first).to_contain_text(_fmt4(record["summary"]["oos_sharpe"]), timeout=WAIT_MS)
        expect(page.locator(".wb-runs-note .wb-problem")).to_have_text(
            f"run record {BROKEN} is not JSON: re-run its walk-forward to rewrite it, or delete it with "
            f"`workbench optimize rm {BROKEN}`", timeout=WAIT_MS)
        # picking the run draws its diagnostics; the Sharpe shown is the record's
        page.locator(".wb-run-pick select").select_option(run.run_id)
        sharpe = page.locator(".wb-run-sharpe").first
        sharpe.wait_for(timeout=WAIT_MS)
        assert float(sharpe.get_attribute("data-value") or "nan") == record["summary"]["oos_sharpe"]
        assert sharpe.inner_text() == f"{record['summary']['oos_sharpe']:.3f}"
        expect(page.locator(".wb-runs .js-plotly-plot")).to_have_count(3, timeout=WAIT_MS)
        expect(page.locator(".wb-folds .tabulator-row")).to_have_count(len(run.folds), timeout=WAIT_MS)

        # artifacts: both versions, the forced one's failed gate and reason, and the name's history
        arts = page.locator(".wb-artifacts-table .tabulator-row")
        expect(arts).to_have_count(2, timeout=WAIT_MS)
        forced = world["forced"]
        page.locator(".wb-artifact-pick select").select_option(forced.ref)
        expect(page.locator(".wb-verdict")).to_have_text("failed: oos_sharpe; forced: testing the page",
                                                         timeout=WAIT_MS)
        expect(page.locator(".wb-gates .tabulator-row")).to_have_count(len(forced.gates), timeout=WAIT_MS)
        expect(page.locator(".wb-artifact-history .tabulator-row")).to_have_count(2, timeout=WAIT_MS)
        page.locator(".wb-artifact-pick select").select_option(world["passed"].ref)
        expect(page.locator(".wb-verdict")).to_have_text("all gates passed", timeout=WAIT_MS)

        # sweeps: the saved table, its heatmap, and its best row is the table's best Sharpe
        expect(page.locator(".wb-sweeps-table .tabulator-row")).to_have_count(1, timeout=WAIT_MS)
        page.locator(".wb-sweep-pick select").select_option("demo/sweep_sma_cross.parquet")
        expect(page.locator(".wb-sweeps .js-plotly-plot")).to_have_count(1, timeout=WAIT_MS)
        best = world["sweep"].top(1).iloc[0]
        expect(page.locator(".wb-sweep-top .tabulator-row").first).to_contain_text(_fmt4(best["sharpe"]),
                                                                                   timeout=WAIT_MS)

        # models: no store in this data folder: one line naming the command that fills it
        expect(page.locator(".wb-models-note")).to_contain_text(
            "no model registry yet", timeout=WAIT_MS)
        expect(page.locator(".wb-models-note")).to_contain_text("workbench model train", timeout=WAIT_MS)
        assert not (world["data"] / "mlflow").exists()  # the page created no store

        # lake: its one series and its bar count
        coverage = world["lake"].coverage_frame()
        expect(page.locator(".wb-lake-note")).to_contain_text("1 series", timeout=WAIT_MS)
        expect(page.locator(".wb-coverage .tabulator-row")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator(".wb-lake-note")).to_contain_text(f"{int(coverage['rows'].sum()):,} bars",
                                                               timeout=WAIT_MS)
        page.locator(".wb-quality-check button").click()
        expect(page.locator(".wb-lake")).to_contain_text("1 series checked", timeout=WAIT_MS)

        # reports: newest first, each a link that opens the report from this server
        links = page.locator(".wb-report-link")
        expect(links).to_have_count(2, timeout=WAIT_MS)
        t.shot("research-desktop")
        link = page.locator(".wb-report-link", has_text=REPORT_TITLE)
        with t.context.expect_page() as opened:
            link.click()
        report = opened.value
        report.wait_for_load_state()
        assert report.url.startswith(url + "reports/research_report/")
        assert report.locator("#marker").inner_text() == "the research report body"
        assert "Traceback" not in page.evaluate(ALL_TEXT)
        t.clean()


def test_at_phone_width_the_research_page_does_not_scroll_sideways(
        world: dict[str, Any], url: str, browser: Any) -> None:
    from playwright.sync_api import expect

    with tab(browser, url, 375, 800) as t:
        _research(t)
        t.page.locator(".wb-run-pick select").select_option(world["run"].run_id)
        expect(t.page.locator(".wb-runs .js-plotly-plot")).to_have_count(3, timeout=WAIT_MS)
        t.page.locator(".wb-sweep-pick select").select_option("demo/sweep_sma_cross.parquet")
        expect(t.page.locator(".wb-sweeps .js-plotly-plot")).to_have_count(1, timeout=WAIT_MS)
        t.page.locator(".wb-artifact-pick select").select_option(world["forced"].ref)
        expect(t.page.locator(".wb-verdict")).to_be_visible(timeout=WAIT_MS)
        assert t.scroll_width() <= 375
        t.shot("research-phone")
        t.clean()


def test_with_a_token_the_research_page_and_its_reports_need_it(world: dict[str, Any], browser: Any) -> None:
    from playwright.sync_api import expect

    access = Access(token=TOKEN)
    with served_research(world, access) as url:
        with tab(browser, url) as t:  # no token: nothing of the research data
            t.tab("Research")
            expect(t.page.locator(".wb-research-token")).to_be_visible(timeout=WAIT_MS)
            text = t.page.evaluate(ALL_TEXT)
            assert world["run"].run_id not in text and "wb-report-link" not in text
            t.clean()
        with tab(browser, f"{url}?token={TOKEN}") as t:
            _research(t)
            href = t.page.locator(".wb-report-link", has_text=REPORT_TITLE).get_attribute("href") or ""
            assert "sig=" in href and TOKEN not in href
            assert TOKEN not in t.page.evaluate(ALL_TEXT).replace(f"token={TOKEN}", "")
            t.clean()
        with urllib.request.urlopen(url.rstrip("/") + href, timeout=30) as resp:
            assert resp.status == 200 and REPORT_TITLE in resp.read().decode()
        path = href.split("?")[0]
        for bad in (path, f"{path}?sig=0000", f"{path}?token=not-the-token-at-all-00000"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url.rstrip("/") + bad, timeout=30)
            assert refused.value.code == 403
            assert "Traceback" not in refused.value.read().decode()
        with urllib.request.urlopen(f"{url.rstrip('/')}{path}?token={TOKEN}", timeout=30) as resp:
            assert resp.status == 200


def test_reports_outside_the_folder_or_not_html_are_not_served(world: dict[str, Any], url: str) -> None:
    base = url.rstrip("/")
    with urllib.request.urlopen(f"{base}/reports/demo/walk_forward.html", timeout=30) as resp:
        assert resp.status == 200 and "connect-src 'self'" in resp.headers["Content-Security-Policy"]
    for bad in ("/reports/../data/runs/x/record.json", "/reports/%2e%2e/%2e%2e/etc/passwd",
                "/reports/demo/sweep_sma_cross.parquet", "/reports/demo/nothing.html", "/reports/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + bad, timeout=30)
        assert refused.value.code in (403, 404), bad
        assert "Traceback" not in refused.value.read().decode()


# ------------------------------------------------------------------------------------------ without one
def _page(data: Path, reports: Path) -> ResearchPage:
    page = ResearchPage(data, reports)
    page.load()
    return page


def _note(section: Any) -> str:
    return html.unescape(str(section.note.object))


def test_missing_sources_are_one_line_each_naming_the_command_that_fills_them(tmp_path: Path) -> None:
    page = _page(tmp_path / "nothing", tmp_path / "no-reports")
    expected = {page.runs: "workbench optimize walk-forward", page.artifacts: "workbench promote",
                page.sweeps: "workbench sweep", page.models: "workbench model train",
                page.lake: "workbench data demo", page.reports_section: "workbench report run"}
    for section, command in expected.items():
        note = _note(section)
        assert command in note, note
        assert "Traceback" not in note and "\n" not in note
        assert not section.shown
    assert not (tmp_path / "nothing").exists()  # reading created nothing


def test_a_damaged_source_is_one_line_and_the_other_sections_still_render(
        world: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    (data / "registry" / world["passed"].name / "CURRENT").write_text("garbage")
    run_dir = data / "runs" / world["run"].run_id
    (run_dir / "folds.parquet").write_bytes(b"not parquet")
    reports = tmp_path / "reports"
    shutil.copytree(world["reports"], reports)
    (reports / "broken.parquet").write_bytes(b"PAR1 broken")
    swept = world["sweep"]
    one = SweepResult(swept.strategy, swept.table[swept.table["slow"] == 30], swept.params, swept.inputs)
    one.save(reports / "one_parameter.parquet")
    page = _page(data, reports)
    note = _note(page.artifacts)
    assert "wb-problem" in note and "holds 'garbage', not a version number" in note
    assert "workbench promote rollback" in note and not page.artifacts.shown
    assert page.runs.shown and "1 run(s)" in _note(page.runs)
    assert "sweep table broken.parquet is unreadable" in _note(page.sweeps) and page.sweeps.shown
    assert page.lake.shown and page.reports_section.shown
    page.sweeps.pick.value = "one_parameter.parquet"  # no heatmap over one parameter: a line, its best rows
    line, best = page.sweeps.detail.objects
    assert "this sweep varies only fast: a heatmap needs two varying parameters" in line.object
    assert len(best.value) == 3
    page.runs.pick.value = world["run"].run_id  # its tables are damaged: one line where its charts go
    [line] = page.runs.detail.objects
    assert "is unreadable" in line.object and "re-run the walk-forward" in html.unescape(line.object)
    assert "Traceback" not in line.object


def test_the_page_reads_nothing_until_its_tab_is_shown(world: dict[str, Any]) -> None:
    board = Dashboard(world["journal"], data=world["data"], reports=world["reports"])
    try:
        assert not board.research.loaded and "not read yet" in _note(board.research.runs)
        board.tabs.active = 2
        assert board.research.loaded and "1 run(s)" in _note(board.research.runs)
    finally:
        board.close()
    hidden = Dashboard(world["journal"], allowed=False, data=world["data"], reports=world["reports"])
    hidden.tabs.active = 2
    assert not hidden.research.loaded
    hidden.close()


# ------------------------------------------------------------------------------------------ package reads
def test_the_package_lists_runs_sweeps_and_reports_it_can_read(world: dict[str, Any]) -> None:
    index = run_index(world["data"] / "runs")
    assert list(index.runs["run_id"]) == [world["run"].run_id] and list(index.damaged) == [BROKEN]
    assert load_run(world["run"].run_id, world["data"] / "runs").summary()["oos_sharpe"] == \
        index.runs["oos_sharpe"].iloc[0]
    sweeps = list_sweeps(world["reports"])
    assert list(sweeps.sweeps["path"]) == ["demo/sweep_sma_cross.parquet"] and not sweeps.damaged
    back = load_sweep(world["reports"] / "demo" / "sweep_sma_cross.parquet")
    pd.testing.assert_frame_equal(back.table, world["sweep"].table)
    assert back.params == world["sweep"].params and back.inputs["grid"] == {"fast": [5, 10, 15],
                                                                            "slow": [30, 60, 90]}
    reports = list_reports(world["reports"])
    assert set(reports["path"]) == {"demo/walk_forward.html",
                                    "research_report/20260101T000000000000Z/research_report.html"}
    row = reports.set_index("path").loc["research_report/20260101T000000000000Z/research_report.html"]
    assert (row["title"], row["status"], row["kind"]) == (REPORT_TITLE, "ok", "research_report")
    assert report_file("demo/walk_forward.html", world["reports"]) is not None
    for bad in ("../data/runs", "demo/../../x.html", "demo/sweep_sma_cross.parquet", "/etc/passwd", ""):
        assert report_file(bad, world["reports"]) is None


def test_the_models_section_shows_a_registered_model_its_versions_and_its_drift(
        world: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from workbench.models.drift import model_drift
    from workbench.models.registry import ModelRegistry
    from workbench.models.training import TrainSpec, train_model

    data = tmp_path / "data"
    shutil.copytree(world["data"] / "lake", data / "lake")
    registry = ModelRegistry(data=data)
    spec = TrainSpec.model_validate({
        "name": "gbm", "symbols": ["BTC/USDT"], "timeframe": "1h", "start": "2024-01-01", "end": "2024-02-20",
        "features": ["ret(1)", "ret(6)", "rsi(14)"], "model": "lightgbm", "params": {"n_estimators": 20},
        "label": {"kind": "triple_barrier", "horizon": 12, "pt": 1.5, "sl": 1.5, "vol_window": 24},
        "cv": {"kind": "purged_kfold", "n_splits": 3}, "seed": 5})
    train_model(Lake(data), spec, registry=registry)
    runs_before = len(registry.client.search_runs([registry.experiment_id()]))
    page = _page(data, tmp_path / "reports")
    assert "1 registered model(s)" in _note(page.models) and page.models.shown
    page.models.pick.value = "gbm"  # read at once without a server: versions, then the champion's drift
    history, drift = page.models.detail.objects[1], page.models._drift_box.objects
    assert list(history.value["version"]) == ["1"] and history.value["aliases"].iloc[0] == "champion"
    expected = model_drift(Lake(data), registry, "gbm", log=False)
    assert f"data-drifting='{len(expected.drifting)}'" in drift[0].object
    assert html.unescape(drift[0].object).count(expected.summary()) == 1
    assert list(drift[2].value["PSI"]) == [f"{v:.4g}" for v in expected.table["psi"]]
    # the page only reads: no drift run was logged to the store
    assert len(registry.client.search_runs([registry.experiment_id()])) == runs_before


@pytest.mark.notebook
def test_the_research_page_renders_inline_in_a_notebook(world: dict[str, Any]) -> None:
    import os

    import nbformat
    from nbclient import NotebookClient

    code = (f"from workbench.dashboard import Dashboard, view\nimport panel as pn\npn.extension('plotly', "
            f"'tabulator')\nboard = Dashboard({str(world['journal'])!r}, data={str(world['data'])!r}, "
            f"reports={str(world['reports'])!r})\nboard.tabs.active = 2\nboard.layout")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    root = str(Path(__file__).resolve().parent.parent)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, env_path) if p)
    try:
        NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.get("output_type") == "error"]
    rendered = json.dumps([o.get("data", {}) for o in outputs])
    assert "application/vnd.holoviews_exec.v0+json" in {m for o in outputs for m in o.get("data", {})}
    assert world["run"].run_id in rendered and "1 run(s)" in rendered  # the research data, inline
