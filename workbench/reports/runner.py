"""Notebooks as reproducible reports: papermill executes a template with parameters, nbconvert renders it.

Each run writes ``reports/<name>/<timestamp>/`` with the executed notebook, a self-contained HTML
(code hidden by default, plotly charts interactive, nothing loaded from the network) and
``manifest.json``: parameters, what the notebook recorded (data fingerprints, run ids), code version,
duration and status. A failing cell gives a failed manifest naming the cell and the error, and
`ReportFailed`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import file_mode
from workbench.errors import ConfigError, WorkbenchError, did_you_mean
from workbench.version import code_version

log = logging.getLogger(__name__)

RECORD_ENV = "WORKBENCH_REPORT_RECORD"
SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential", re.I)
_OFFLINE_RENDERER = "workbench_offline"
# The lab template, minus everything it loads from a CDN (require.js, MathJax, mermaid, widgets):
# a report opens offline and never makes the browser reach the internet. plotly.js is inlined by
# the notebook renderer and sets window.Plotly itself, so nothing needs require.js.
_OFFLINE_TEMPLATE = "workbench_offline.html.j2"
_OFFLINE_TEMPLATE_SOURCE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


class ReportFailed(WorkbenchError):
    """A notebook cell raised; the manifest names the cell and the error."""


@dataclass
class ReportResult:
    """Where a report run wrote its files, and its manifest."""

    folder: Path
    notebook: Path
    html: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every cell ran."""
        return self.manifest.get("status") == "ok"


def notebooks_dir() -> Path:
    """The report templates: ./notebooks (or $WORKBENCH_NOTEBOOKS_DIR)."""
    return Path(os.environ.get("WORKBENCH_NOTEBOOKS_DIR") or "notebooks").resolve()


def find_notebook(name: str | Path) -> Path:
    """A notebook by path, or by name in the notebooks folder (``strategy_research``)."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.is_file():
        return p.resolve()
    folder = notebooks_dir()
    candidate = folder / (p.name if p.suffix == ".ipynb" else f"{p.name}.ipynb")
    if candidate.is_file():
        return candidate
    known = sorted(f.stem for f in folder.glob("*.ipynb")) if folder.is_dir() else []
    raise ConfigError(
        f"unknown notebook {str(name)!r}{did_you_mean(p.stem, known)}; "
        f"available: {', '.join(known) or 'none (is this the repository root?)'}"
    )


def declared_parameters(path: Path) -> dict[str, Any]:
    """The parameters a notebook declares in its `parameters` cell, with their defaults."""
    import papermill

    info = papermill.inspect_notebook(str(path))
    return {k: v.get("default") for k, v in info.items()}


def check_parameters(path: Path, parameters: dict[str, Any]) -> None:
    """Refuse undeclared parameters (naming the declared ones) and anything that looks like a secret."""
    declared = declared_parameters(path)
    for key in parameters:
        if SECRET_NAME.search(key):
            raise ConfigError(
                f"parameter {key!r} looks like a credential: secrets are never passed as "
                "parameters (they would be written into the executed notebook); put them in "
                "the environment or a .env file"
            )
        if key not in declared:
            raise ConfigError(
                f"notebook {path.stem} takes no parameter {key!r}{did_you_mean(key, declared)}; "
                f"it takes {', '.join(declared) or 'none'}"
            )


def parse_parameters(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs from the command line; values are read as JSON when they parse (numbers, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not key=value; write e.g. -p symbol=BTC/USDT")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def record(**values: Any) -> None:
    """Called from a notebook: add values (data fingerprints, run ids...) to the report's manifest."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    p = Path(path)
    old = json.loads(p.read_text()) if p.exists() else {}
    old.update({k: v for k, v in values.items()})
    p.write_text(json.dumps(old, default=str))


def setup_notebook() -> None:
    """Called at the top of a template: plotly charts that work in JupyterLab and in the offline HTML."""
    import plotly.io as pio
    from plotly.io.base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        """plotly's "notebook" renderer without the MathJax loader it puts in every chart (from a CDN)."""

        def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, str]:
            html = pio.to_html(
                fig_dict,
                config=self.config,
                auto_play=self.auto_play,
                include_plotlyjs=False,  # inlined once, by activate(), before the first chart
                include_mathjax=False,
                post_script=self.post_script,
                full_html=False,
                animation_opts=self.animation_opts,
                default_width="100%",
                default_height=525,
                validate=False,
            )
            return {"text/html": html}

    pio.renderers[_OFFLINE_RENDERER] = OfflineNotebookRenderer()
    pio.renderers.default = f"plotly_mimetype+{_OFFLINE_RENDERER}"


def show_table(frame: Any, max_rows: int | None = 50) -> Any:
    """A table for a report page: values formatted as people read them (metrics as percentages or
    ratios, prices to 6 significant digits, times to the minute), no pandas index, and a page-wide
    box that scrolls sideways instead of running off the page."""
    import numpy as np
    import pandas as pd

    from workbench.backtest.metrics import METRIC_KEYS, format_metric

    df = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    df = df.head(max_rows) if max_rows is not None else df

    def cell(col: str, v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if col in METRIC_KEYS:
            return format_metric(col, v)
        if isinstance(v, pd.Timestamp):
            return f"{v:%Y-%m-%d %H:%M}"
        if isinstance(v, float | np.floating):
            return f"{v:,.6g}"
        return str(v)

    return ReportTable(pd.DataFrame({c: [cell(str(c), v) for v in df[c]] for c in df.columns},
                                    columns=df.columns))


@dataclass(frozen=True)
class ReportTable:
    """A formatted table as a notebook shows it: HTML without the index, text the same way."""

    frame: Any

    def _repr_html_(self) -> str:
        return str(
            self.frame.style.hide(axis="index")
            .set_table_attributes('style="display:block; max-width:100%; overflow-x:auto; font-size:0.85em"')
            .set_properties(**{"text-align": "right", "white-space": "nowrap"})
            .to_html()
        )

    def __repr__(self) -> str:
        return str(self.frame.to_string(index=False))


def _writable(root: Path) -> None:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"report folder {root} is not writable ({probe} is not a writable folder); "
            "choose another with --out"
        )


def run_report(
    notebook: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    out: str | Path = "reports",
    name: str | None = None,
    html: bool = True,
    show_code: bool = False,
    timeout: float | None = 600,
) -> ReportResult:
    """Execute a notebook template with papermill and write the notebook, the HTML and the manifest.

    Raises `ReportFailed` (after writing a failed manifest) when a cell raises.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = find_notebook(notebook)
    params = dict(parameters or {})
    check_parameters(path, params)
    root = Path(out)
    _writable(root)
    name = name or path.stem
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%fZ")
    folder = root / name / stamp
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    os.chmod(work, file_mode(directory=True))  # mkdtemp makes 0700: the report folder gets the umask's
    rec = work / "record.json"
    executed = work / f"{name}.ipynb"
    manifest: dict[str, Any] = {
        "notebook": str(path),
        "name": name,
        "parameters": params,
        "code_version": code_version(),
        "started": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    t0 = time.perf_counter()
    previous = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = str(rec)
    error: PapermillExecutionError | None = None
    try:
        papermill.execute_notebook(
            str(path),
            str(executed),
            parameters=params,
            progress_bar=False,
            kernel_name="python3",
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # quiet: its loopback TCP warning
            cwd=str(Path.cwd()),
            execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        error = exc
    finally:
        if previous is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = previous
    manifest["duration_s"] = round(time.perf_counter() - t0, 3)
    manifest["finished"] = pd.Timestamp.now(tz="UTC").isoformat()
    manifest["recorded"] = json.loads(rec.read_text()) if rec.exists() else {}
    rec.unlink(missing_ok=True)
    if error is not None:
        manifest["status"] = "failed"
        first = next((ln for ln in str(error.source or "").splitlines() if ln.strip()), "")
        manifest["error"] = {
            "cell": error.cell_index,  # index in the executed notebook (papermill's parameters cell included)
            "execution_count": error.exec_count,
            "source": first,
            "ename": error.ename,
            "evalue": error.evalue,
        }
    else:
        manifest["status"] = "ok"
    html_path = None
    if html and executed.exists():
        html_path = work / f"{name}.html"
        _to_html(executed, html_path, show_code=show_code, title=f"{name} ({stamp})")
    manifest["files"] = {"notebook": executed.name, "html": html_path.name if html_path else None}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work), str(folder))  # one rename: the folder appears complete or not at all
    result = ReportResult(
        folder, folder / executed.name, folder / html_path.name if html_path else None, manifest
    )
    if error is not None:
        err = manifest["error"]
        raise ReportFailed(
            f"report {name} failed in cell {err['cell']} ({err['source'][:60]!r}) with {error.ename}: "
            f"{str(error.evalue).splitlines()[0] if error.evalue else ''}; see {folder / 'manifest.json'}"
        )
    return result


def _to_html(executed: Path, out: Path, *, show_code: bool, title: str) -> None:
    """Render the executed notebook as one self-contained HTML page that loads nothing from the network."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({_OFFLINE_TEMPLATE: _OFFLINE_TEMPLATE_SOURCE})],
        template_file=_OFFLINE_TEMPLATE,
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    out.write_text(body)
