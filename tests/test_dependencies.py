"""Every runtime dependency in pyproject.toml is used by the package: a dependency is listed only
where `workbench/` needs it (the design's rule), so an unused one fails the suite.

A distribution counts as used when `workbench/` imports one of its top-level modules (mapped with
`importlib.metadata.packages_distributions()`, so `python-dotenv` is `dotenv`, `scikit-learn` is
`sklearn`). The few that the package needs without importing them are listed in `NOT_IMPORTED`,
each with the file and text that show what uses it, and those must stay true too.
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# distribution -> (file, text in that file that shows the use)
NOT_IMPORTED = {
    # SQLAlchemy loads the driver by name from Optuna's storage URL
    "psycopg": ("workbench/optimize/storage.py", "postgresql+psycopg://"),
    # papermill starts this kernel to execute the report notebooks
    "ipykernel": ("workbench/reports/runner.py", 'kernel_name="python3"'),
    # the researcher's front end, a program the package never imports
    "jupyterlab": ("README.md", "`jupyter lab`"),
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [_norm(re.split(r"[\[<>=!~;\s]", spec, maxsplit=1)[0]) for spec in project["dependencies"]]


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "workbench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _modules_of() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            out.setdefault(_norm(dist), set()).add(module)
    return out


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    imported, modules = _imported_top_level(), _modules_of()
    unused = []
    for dist in _runtime_dependencies():
        if dist in NOT_IMPORTED:
            continue
        assert modules.get(dist), f"{dist} is not installed in this environment: pip install -e ."
        if not modules[dist] & imported:
            unused.append(dist)
    assert not unused, (
        f"runtime dependencies that workbench/ never imports: {unused}; drop them from "
        "[project] dependencies (and say why in the README's Dependencies), or list them in "
        "NOT_IMPORTED with what uses them"
    )


def test_dependencies_used_without_an_import_are_still_used() -> None:
    deps = set(_runtime_dependencies())
    imported, modules = _imported_top_level(), _modules_of()
    for dist, (file, text) in NOT_IMPORTED.items():
        assert dist in deps, f"{dist} is no longer a dependency: remove it from NOT_IMPORTED"
        assert text in (ROOT / file).read_text(), f"{file} no longer shows {dist} in use ({text!r})"
        assert not modules.get(dist, set()) & imported, f"{dist} is imported now: drop it from NOT_IMPORTED"



def test_a_workbench_process_skips_jsonschema_s_iri_grammar_and_still_validates_notebooks() -> None:
    """The 3 s import of rfc3987-syntax is skipped once the workbench is imported; notebooks still
    validate (nbformat runs jsonschema) and a chart still renders."""
    import subprocess
    import sys

    code = ("import sys, workbench, nbformat, plotly.io, papermill; "
            "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')]); nbformat.validate(nb); "
            "print(sys.modules['rfc3987_syntax'] is None, 'jsonschema' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
