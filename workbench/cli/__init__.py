"""The `workbench` command line (typer): `app.py` gathers the command groups, `common.py` and
`options.py` hold what they share, and each other module is one group (`data`, `backtest`, `sweep`,
`optimize`, `promote`, `paper`, `report`, `pipeline`, ...).

Nothing outside this package imports it: pipelines and notebooks call the Python API.
"""

from __future__ import annotations


def main() -> None:
    """The console script's entry point (`workbench = "workbench.cli:main"`): see `app.main`."""
    from workbench.cli.app import main as run

    run()
