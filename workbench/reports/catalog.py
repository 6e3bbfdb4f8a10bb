"""The rendered reports on disk: every HTML page under the reports folder, newest first.

Papermill reports (``reports/<name>/<stamp>/<name>.html`` beside a ``manifest.json``) carry their status
and parameters; charts written by the command line (``--html``) are single self-contained pages. A
notebook or the dashboard lists them with `list_reports` and opens them by their relative path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

REPORT_COLUMNS = ["path", "title", "kind", "status", "written", "kb"]
_TITLE = re.compile(rb"<title>([^<]{1,200})</title>", re.IGNORECASE)
_HEAD_BYTES = 4096


def reports_dir(override: str | Path | None = None) -> Path:
    """Where reports are written: `override`, else ``./reports`` (as `workbench report run` and `workbench
    demo` write them)."""
    return Path(override if override is not None else "reports").expanduser().resolve()


def _title(path: Path) -> str:
    """The page's ``<title>`` when its head names one (papermill reports do), else the file's name."""
    try:
        with open(path, "rb") as fh:
            m = _TITLE.search(fh.read(_HEAD_BYTES))
    except OSError:
        return path.stem
    return m.group(1).decode("utf-8", "replace").strip() if m else path.stem


def _status(folder: Path) -> str:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return ""
    try:
        return str(json.loads(manifest.read_text()).get("status", ""))
    except (OSError, ValueError, AttributeError):
        return "manifest unreadable"


def list_reports(root: str | Path | None = None) -> pd.DataFrame:
    """One row per HTML page under `root` (default ``./reports``): its path relative to `root` (POSIX),
    title, kind (its first folder), the papermill status when a manifest is beside it, when it was written
    and its size; newest first. Work folders of reports still running (``.name-*``) are left out."""
    base = reports_dir(root)
    rows = []
    for f in base.rglob("*.html") if base.is_dir() else []:
        rel = f.relative_to(base)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            st = f.stat()
        except OSError:
            continue
        rows.append({"path": rel.as_posix(), "title": _title(f),
                     "kind": rel.parts[0] if len(rel.parts) > 1 else "",
                     "status": _status(f.parent),
                     "written": pd.Timestamp(st.st_mtime, unit="s", tz="UTC").floor("s"),
                     "kb": round(st.st_size / 1024, 1)})
    table = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    table = table.sort_values(["written", "path"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def report_file(relative: str, root: str | Path | None = None) -> Path | None:
    """The HTML page `relative` (as `list_reports` names it) inside `root`, or None when it is not one:
    a path that leaves the folder, a hidden part, or anything but an existing ``.html`` file."""
    base = reports_dir(root)
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    path = base.joinpath(*parts)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(base) or resolved.suffix.lower() not in (".html", ".htm") \
            or not resolved.is_file():
        return None
    return resolved
