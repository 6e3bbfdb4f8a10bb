"""`workbench report`: run a notebook template as a reproducible report; list the templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

report_app = typer.Typer(
    help="Notebook templates executed with papermill as reproducible HTML reports.", no_args_is_help=True
)


@report_app.command("run")
def report_run(
    notebook: Annotated[str, typer.Argument(
        help="A template name (see `report ls`), an .ipynb path, or a pipeline .yaml (runs its steps).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value (JSON values parse).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Reports folder: writes <out>/<name>/<timestamp>/.")] = Path(
        "reports"
    ),
    name: Annotated[str | None, typer.Option(help="Report name (default: the notebook's).")] = None,
    show_code: Annotated[bool, typer.Option(help="Show the code cells in the HTML.")] = False,
) -> None:
    """Execute a notebook with parameters; write the executed notebook, the HTML and a manifest.

    Given a pipeline file, run the pipeline (its report steps and the jobs they build on); -p then
    overrides the pipeline's parameters."""
    from workbench.cli.common import out as console
    from workbench.reports import parse_parameters, run_report

    if Path(notebook).suffix in (".yaml", ".yml"):
        from workbench.cli.pipeline import run_and_print

        if name is not None or show_code:
            from workbench.errors import ConfigError

            raise ConfigError("--name and --show-code apply to a notebook; a pipeline's report steps set "
                              "name: and show_code: themselves")
        run_and_print(notebook, param, reports=out)
        return

    res = run_report(notebook, parse_parameters(param or []), out=out, name=name, show_code=show_code)
    m = res.manifest
    console.print(
        f"report {m['name']}: {m['status']} in {m['duration_s']:.1f} s; recorded "
        f"{', '.join(f'{k}={v}' for k, v in m['recorded'].items()) or 'nothing'}",
        highlight=False,
    )
    console.print(f"html: {res.html}", highlight=False)
    console.print(f"manifest: {res.folder / 'manifest.json'}", highlight=False)


@report_app.command("ls")
def report_ls() -> None:
    """The notebook templates and the parameters each one takes."""
    from workbench.cli.common import out as console
    from workbench.reports.runner import declared_parameters, notebooks_dir

    for nb in sorted(notebooks_dir().glob("*.ipynb")):
        params = declared_parameters(nb)
        console.print(f"{nb.stem}: " + ", ".join(f"{k}={v}" for k, v in params.items()), highlight=False)
