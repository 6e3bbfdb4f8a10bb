"""The README's architecture table says what `lint-imports` enforces, no more and no less.

Each row of the table in README "Architecture" names parts of `workbench` and what they must not
import; the `forbidden` contracts in pyproject.toml must say exactly the same (strict: no indirect
chains allowed), and the faces (the command line, the dashboard) must be protected. `make test` runs
`lint-imports` itself.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_rules() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("part", "---"):
            continue
        forbidden = {f"workbench.{m}" for m in re.findall(r"`([a-z_.]+)`", cells[2])}
        for part in re.findall(r"`([a-z_]+)`", cells[0]):
            rules[f"workbench.{part}"] = forbidden
    return rules


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_part_of_the_package_is_in_the_table() -> None:
    parts = {p.stem for p in (ROOT / "workbench").iterdir()
             if (p.is_dir() and (p / "__init__.py").exists())
             or (p.suffix == ".py" and not p.stem.startswith("__"))}
    assert {f"workbench.{p}" for p in parts} == set(_readme_rules())


def test_the_forbidden_contracts_are_the_tables_rules() -> None:
    contracts: dict[str, set[str]] = {}
    for c in _contracts():
        if c["type"] != "forbidden":
            continue
        assert not c.get("allow_indirect_imports", False), f"{c['name']}: forbid indirect imports too"
        for source in c["source_modules"]:
            assert source not in contracts, f"{source} has two forbidden contracts: merge them"
            contracts[source] = set(c["forbidden_modules"])
    table = {part: rule for part, rule in _readme_rules().items() if rule}
    assert contracts == table


def test_the_faces_are_protected() -> None:
    protected = {tuple(c["protected_modules"]): c["allowed_importers"]
                 for c in _contracts() if c["type"] == "protected"}
    # the command line is imported by `python -m workbench` only; the dashboard by the command line only
    assert protected == {("workbench.cli",): ["workbench.__main__"],
                         ("workbench.dashboard",): ["workbench.cli"]}
