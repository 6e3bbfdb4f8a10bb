"""The one loader of settings files: paper configs, pipelines and gates files refuse duplicate keys,
suggest the key meant by a typo and name the wrong type, each in one line with the file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workbench.config import ConfigModel, load_yaml, unknown_key, validate
from workbench.errors import ConfigError
from workbench.paper.service import load_config
from workbench.pipelines.spec import load_pipeline
from workbench.promote.gates import load_gates

PAPER = "name: demo\nbroker:\n  kind: sim\n  cash: 10000\nstrategies: [sma_cross]\n"
PIPELINE = "schedule: '0 2 * * *'\nsteps:\n  - sync:\n      source: synthetic\n      symbols: X\n"
GATES = "gates:\n  oos_sharpe: {min: 0.5}\n  pbo: {max: 0.5}\n"
LOADERS: dict[str, Callable[[Path], Any]] = {"paper": load_config, "pipeline": load_pipeline,
                                             "gates": load_gates}


def _error(tmp_path: Path, kind: str, text: str) -> str:
    """The one-line error of loading `text` as a `kind` file; the file is named in it."""
    p = tmp_path / f"{kind}.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        LOADERS[kind](p)
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg, msg
    return msg.replace(str(p), "<file>")


def test_the_example_files_load(tmp_path: Path) -> None:
    for kind, text in (("paper", PAPER), ("pipeline", PIPELINE), ("gates", GATES)):
        p = tmp_path / f"{kind}.yaml"
        p.write_text(text)
        assert LOADERS[kind](p) is not None


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("paper", PAPER + "broker: {kind: alpaca}\n", "<file>:6: key 'broker' is given twice; keep one"),
        ("paper", PAPER.replace("  cash", "  kind: ccxt\n  cash"), "<file>:4: key 'kind' is given twice"),
        ("pipeline", PIPELINE.replace("      symbols", "      source: demo\n      symbols"),
         "<file>:5: key 'source' is given twice"),
        ("gates", GATES + "  oos_sharpe: {min: 1}\n", "<file>:4: key 'oos_sharpe' is given twice"),
    ],
)
def test_a_key_given_twice_is_refused_with_file_and_line(
    tmp_path: Path, kind: str, text: str, expected: str
) -> None:
    assert _error(tmp_path, kind, text).startswith(expected)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("paper", PAPER.replace("  cash", "  csh"),
         "<file>:4: broker: unknown key 'csh' (did you mean 'cash'?); use kind, cash, options"),
        ("paper", PAPER + "metric: {port: 9100}\n",
         "<file>:6: unknown key 'metric' (did you mean 'metrics'?)"),
        ("pipeline", "descripton: nightly\n" + PIPELINE,
         "<file>:1: unknown key 'descripton' (did you mean 'description'?); use schedule, params"),
        ("pipeline", PIPELINE.replace("      symbols", "      symbls"),
         "<file>:3: step 1 (sync): unknown option 'symbls' (did you mean 'symbols'?)"),
        ("gates", GATES.replace("max:", "mx:"), "<file>:3: gates.pbo: unknown op 'mx' (did you mean 'max'?)"),
        ("gates", "gatse:\n" + GATES[len("gates:\n"):],
         "<file>:1: unknown top-level key 'gatse' (did you mean 'gates'?)"),
    ],
)
def test_an_unknown_key_gets_a_suggestion_with_file_and_line(
    tmp_path: Path, kind: str, text: str, expected: str
) -> None:
    assert _error(tmp_path, kind, text).startswith(expected)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("paper", PAPER + "metrics:\n  port: high\n",
         "<file>:7: metrics.port: must be a whole number, got 'high'"),
        ("paper", PAPER.replace("cash: 10000", "cash: plenty"), "<file>:4: broker.cash: must be a number"),
        ("paper", PAPER + "data: {sync: maybe}\n", "<file>:6: data.sync: must be true or false, got 'maybe'"),
        ("paper", PAPER + "risk:\n  stale_bars: 2.5\n", "<file>:7: risk.stale_bars: must be a whole number"),
        ("pipeline", "timeout: soon\n" + PIPELINE, "<file>:1: timeout must be a positive number of seconds"),
        ("pipeline", "params: [a, b]\n" + PIPELINE, "<file>:1: params: must be a mapping of names to values"),
        ("gates", GATES.replace("max: 0.5", "max: 0.5, description: 3"),
         "<file>:3: gates.pbo.description: must be text, got 3"),
        ("gates", GATES.replace("max: 0.5", "max: half"),
         "<file>:3: gates.pbo.max='half' is not a finite number"),
    ],
)
def test_a_wrong_type_names_the_key_and_its_line(tmp_path: Path, kind: str, text: str, expected: str) -> None:
    assert _error(tmp_path, kind, text).startswith(expected)


class _Section(ConfigModel):
    port: int | None = None
    hosts: list[str] = []  # noqa: RUF012 (pydantic copies defaults)


def test_the_loader_keeps_the_line_of_every_key_and_list_item(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("# settings\nport: 80\nhosts:\n  - a\n  - b\n")
    doc = load_yaml(p)
    assert doc.data == {"port": 80, "hosts": ["a", "b"]}
    assert (doc.line(("port",)), doc.line(("hosts", 1)), doc.line(("hosts", 1, "x"))) == (2, 5, 5)
    assert doc.at("hosts", 0) == f"{p}:4" and doc.at("nope") == str(p)
    p.write_text("port: 80\nhosts:\n  - a\n  - 3\n")
    with pytest.raises(ConfigError, match=r":4: hosts\[1\]: must be text, got 3$"):
        validate(_Section, load_yaml(p))


def test_merge_keys_may_override_but_written_keys_may_not_repeat(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {port: 1}\nother:\n  <<: *b\n  port: 2\n")
    assert load_yaml(p).data["other"] == {"port": 2}
    p.write_text("")
    assert load_yaml(p).data == {}


def test_plain_data_is_validated_with_the_same_messages() -> None:
    with pytest.raises(ConfigError, match=r"^settings: unknown key 'prot' \(did you mean 'port'\?\); use"):
        validate(_Section, {"prot": 1}, where="settings")
    assert validate(_Section, {"port": 8}).port == 8
    assert unknown_key("colour", ["color", "size"], "option") == (
        "unknown option 'colour' (did you mean 'color'?); use color, size")
