"""A paper config drafted from promoted artifacts (`draft_config`, the dashboard's Controls form): the YAML it
shows loads with the loader `paper run` uses, its artifacts are checked as a session would check them, it
is saved atomically and never over another file, and the saved file runs. Bad input is one line each, and
a page without the token can neither build nor save."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cli_runner import invoke
from paper_helpers import build_lake, spec_for, write_artifact

from workbench.dashboard.controls import ConfigForm
from workbench.errors import ConfigError
from workbench.paper.journal import Journal
from workbench.paper.service import RISK_DEFAULTS, draft_config, load_config, save_config
from workbench.promote.registry import Registry


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    """A registry with `btc_1h` (two versions, v2 current) and `btc_1d` (a daily artifact)."""
    root = tmp_path / "registry"
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12})
    for v in (1, 2):
        write_artifact(root / "btc_1h" / f"v{v}.json", spec, name="btc_1h", version=v)
    (root / "btc_1h" / "CURRENT").write_text("2")
    daily = dataclasses.replace(spec, timeframe="1d", periods_per_year=365.0)
    write_artifact(root / "btc_1d" / "v1.json", daily, name="btc_1d")
    (root / "btc_1d" / "CURRENT").write_text("1")
    return Registry(root)


def test_a_draft_loads_as_it_says_and_is_saved_once(reg: Registry, tmp_path: Path) -> None:
    text, config = draft_config(name="desk1", artifacts=["btc_1h", "btc_1h@1"], cash=50_000.0,
                                clock_start="2025-03-01", clock_speed=36_000, registry=reg)
    assert "API keys never go here" in text and "key:" not in text and "secret" not in text
    folder = tmp_path / "configs"
    path = save_config(text, "desk1", folder)
    assert path == folder / "desk1.yaml" and path.read_text() == text
    loaded = load_config(path)
    assert loaded == dataclasses.replace(config, path=path)
    assert [e.artifact for e in loaded.strategies] == ["btc_1h", "btc_1h@1"]
    assert loaded.cash == 50_000.0 and loaded.clock_speed == 36_000.0
    assert loaded.risk.max_drawdown == RISK_DEFAULTS["max_drawdown"]
    with pytest.raises(ConfigError, match="exists; choose another name"):
        save_config("name: other\n", "desk1", folder)
    assert path.read_text() == text  # untouched
    assert sorted(p.name for p in folder.iterdir()) == ["desk1.yaml"]  # no temporary file left


@pytest.mark.parametrize(("kw", "says"), [
    ({"artifacts": []}, "pick at least one artifact"),
    ({"artifacts": ["nope"]}, "no promoted strategy 'nope'"),
    ({"artifacts": ["btc_1h@7"]}, "btc_1h has no version 7"),
    ({"name": "two words"}, "line 3: name 'two words' may hold only"),
    ({"cash": -5.0}, "broker.cash=-5.0 must be a positive amount"),
    ({"clock_start": "2025-03-01"}, "needs a start time and a positive speed"),
    ({"clock_start": "someday", "clock_speed": 60.0}, "is not a time"),
    ({"broker": "ibkr"}, "broker.kind"),
    ({"artifacts": ["btc_1h", "btc_1d"]}, "must share a timeframe"),
    ({"risk": {"max_drawdown": 3}}, "risk.max_drawdown=3"),
])
def test_bad_input_is_one_line(reg: Registry, kw: dict, says: str) -> None:
    args = {"name": "desk1", "artifacts": ["btc_1h"], "registry": reg, **kw}
    with pytest.raises(ConfigError) as err:
        draft_config(**args)
    message = str(err.value)
    assert says in message and "\n" not in message and "/tmp" not in message, message


def test_a_bad_name_or_an_unwritable_folder_saves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="may hold only"):
        save_config("name: x\n", "../escape", tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        save_config("name: x\n", "x", blocker / "configs")


def test_the_form_builds_and_saves_and_refuses_without_the_token(reg: Registry, tmp_path: Path) -> None:
    form = ConfigForm(allowed=True, origin="127.0.0.1", registry=reg, folder=tmp_path)
    assert form.artifacts.options == ["btc_1d", "btc_1h", "btc_1d@1", "btc_1h@1", "btc_1h@2"]
    assert form.save() is None and "build the config first" in form.message.object
    form.artifacts.value = ["btc_1h"]
    form.name.value = "from_page"
    assert form.build() and "artifact: btc_1h" in form.yaml.object and not form.save_button.disabled
    form.cash.value = 20_000.0  # a change after Build: the draft shown is stale, Save waits for a new build
    assert form.save_button.disabled and form.save() is None
    assert form.build()
    saved = form.save()
    assert saved == tmp_path / "from_page.yaml" and "workbench paper run" in form.message.object
    assert load_config(saved).cash == 20_000.0
    form.name.value = "bad name"
    assert not form.build() and "may hold only" in form.message.object and form.save_button.disabled

    locked = ConfigForm(allowed=False, origin="10.0.0.9", registry=reg, folder=tmp_path)
    assert locked.artifacts.options == [] and locked.build_button.disabled
    assert not locked.build() and "refused" in locked.message.object
    assert locked.save() is None


def test_an_empty_or_damaged_registry_is_one_line(tmp_path: Path) -> None:
    empty = ConfigForm(allowed=True, origin="x", registry=Registry(tmp_path / "none"))
    assert empty.artifacts.options == [] and "holds no artifact yet" in empty.message.object
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "v1.json").write_text("{")
    (bad / "a" / "CURRENT").write_text("one")
    damaged = ConfigForm(allowed=True, origin="x", registry=Registry(bad))
    assert "cannot read the registry" in damaged.message.object


def test_the_saved_draft_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_lake(data, symbols=("BTC/USDT",))
    reg = Registry(data / "registry")
    write_artifact(data / "registry" / "fast" / "v1.json", spec_for("sma_cross", {"fast": 5, "slow": 12}),
                   name="fast")
    (data / "registry" / "fast" / "CURRENT").write_text("1")
    text, _ = draft_config(name="drafted", artifacts=["fast"], clock_start="2025-03-01", clock_speed=36_000,
                           risk={"stale_bars": 1000, "max_bar_move": 0.5}, registry=reg)
    path = save_config(text, "drafted", tmp_path)
    r = invoke(["paper", "run", str(path), "--ticks", "5"], data=data, cwd=tmp_path,
               env={"WORKBENCH_PAPER_CRASH": None})
    assert r.returncode == 0, r.stderr
    with Journal(data / "paper" / "drafted" / "journal.sqlite") as j:
        assert [s["name"] for s in j.specs()] == ["fast@v1"]
        assert j.done_ticks_range("fast@v1") is not None and len(j.snapshots_frame("fast@v1")) >= 1
