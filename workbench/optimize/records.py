"""Run records: a finished walk-forward run on disk, read back by run id (promotion, reports).

Layout of ``data/runs/<run_id>/``: ``record.json`` (settings, inputs, diagnostics, timings, status),
``folds.parquet``, ``trials.parquet``, ``oos.parquet`` (equity and buy-and-hold), ``trades.parquet``,
``importances.parquet`` and ``stability.parquet``. A record is written to a temporary folder and
renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.config import data_dir
from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.files import fsync_dir, fsync_file

if TYPE_CHECKING:
    from workbench.optimize.walkforward import WalkForwardResult

_TABLES = ("folds", "trials", "trades", "importances", "stability")


def runs_dir(root: Any = None) -> Path:
    """Where run records live: ``<data dir>/runs``."""
    return Path(root) if root is not None else data_dir() / "runs"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return math.nan if value is None else value


def _table(df: pd.DataFrame, as_json: tuple[str, ...] = ()) -> pd.DataFrame:
    """Object columns holding lists or mixed types become JSON text, so Parquet can store them; the
    `as_json` ones always do (their reader decodes a column of text as JSON: the modes of choice
    parameters, plain strings, must be JSON too)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype != object:
            continue
        kinds = {type(v) for v in out[c] if v is not None}
        if len(kinds) > 1 or kinds & {list, dict} or c in as_json:
            out[c] = out[c].map(lambda v: json.dumps(_jsonable(v)))
    return out


def _from_json(value: str) -> Any:
    """A stability cell written as JSON; a record written before the modes of choice parameters were
    always JSON holds them as plain text, kept as it is."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def save_run(result: WalkForwardResult, root: Any = None) -> Path:
    """Write `result` under ``runs_dir(root)/<run_id>`` atomically, replacing an older record."""
    base = runs_dir(root)
    final = base / result.run_id
    tmp = base / f".{result.run_id}.tmp-{os.getpid()}"
    try:
        base.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        record = {"run_id": result.run_id, "kind": "walk_forward", "status": "complete",
                  "settings": result.settings, "inputs": result.inputs,
                  "diagnostics": result.diagnostics.to_dict(),
                  "summary": result.summary(), "timings": result.timings}
        (tmp / "record.json").write_text(json.dumps(_jsonable(record), indent=1, default=str))
        for name, df in (("folds", result.folds), ("trials", result.trials), ("trades", result.oos_trades),
                         ("importances", result.importances.reset_index()), ("stability", result.stability)):
            _table(df, ("values", "mode") if name == "stability" else ()).to_parquet(
                tmp / f"{name}.parquet", index=False)
        pd.DataFrame({"equity": result.oos_equity, "benchmark": result.oos_benchmark}).rename_axis(
            "ts").to_parquet(tmp / "oos.parquet")
        for written in tmp.iterdir():  # durable before the rename makes the record visible
            fsync_file(written)
        fsync_dir(tmp)
        old = None
        if final.exists():
            old = base / f".{result.run_id}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(base)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"cannot write run record {final}: {exc.strerror}; "
                          "check that the data folder is writable") from None
    return final


@dataclass(frozen=True)
class RunIndex:
    """The saved runs (`runs`, one row each, as `list_runs` gives them) and the records that could not be
    read (`damaged`: run id -> one line saying what is wrong and how to fix it)."""

    runs: pd.DataFrame
    damaged: dict[str, str]


def run_index(root: Any = None) -> RunIndex:
    """Every saved run's headline figures, newest first, and a line for each record that is damaged, so a
    listing (the CLI, a dashboard) can say which record is broken instead of silently leaving it out."""
    base = runs_dir(root)
    rows, damaged = [], {}
    for d in sorted(base.glob("*/record.json")) if base.exists() else []:
        run_id = d.parent.name
        try:
            rec = json.loads(d.read_text())
            settings = rec["settings"]
            summary = dict(rec.get("summary") or {})
            rows.append({**summary, "run_id": summary.get("run_id", run_id),
                         "symbols": ",".join(str(s) for s in settings["symbols"]),
                         "written": pd.Timestamp(d.stat().st_mtime, unit="s", tz="UTC").floor("s")})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            why = "is not JSON" if isinstance(exc, ValueError) else (
                f"lacks {exc}" if isinstance(exc, KeyError) else f"is unreadable ({type(exc).__name__})")
            damaged[run_id] = (f"run record {run_id} {why}: re-run its walk-forward to rewrite it, or delete "
                               f"it with `workbench optimize rm {run_id}`")
    runs = pd.DataFrame(rows)
    if len(runs):
        runs = runs.sort_values("written", ascending=False, kind="stable").reset_index(drop=True)
    return RunIndex(runs, damaged)


def list_runs(root: Any = None) -> pd.DataFrame:
    """One row per saved run: id, strategy, symbols, headline figures, when it was written (damaged
    records are left out: `run_index` names them)."""
    index = run_index(root)
    runs = index.runs
    if len(runs):
        runs = runs.sort_values("run_id", kind="stable").reset_index(drop=True)  # the order it always had
    return runs


def load_run(run_id: str, root: Any = None) -> WalkForwardResult:
    """Read a saved run record back into a `WalkForwardResult` (figures work, nothing recomputed)."""
    from workbench.optimize.walkforward import Diagnostics, WalkForwardResult

    base = runs_dir(root)
    folder = base / run_id
    if not (folder / "record.json").exists():
        known = [p.parent.name for p in base.glob("*/record.json")] if base.exists() else []
        raise ConfigError(f"no walk-forward run {run_id!r} in {base}{did_you_mean(run_id, known)}; "
                          "list them with `workbench optimize runs`")
    try:
        rec = json.loads((folder / "record.json").read_text())
        tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in _TABLES}
        oos = pd.read_parquet(folder / "oos.parquet")
    except (OSError, ValueError) as exc:
        raise DataError(f"run record {folder} is unreadable ({exc}); re-run the walk-forward to rewrite it") \
            from None
    stability = tables["stability"]
    for c in ("values", "mode"):
        if c in stability and stability[c].map(lambda v: isinstance(v, str)).all():
            stability[c] = stability[c].map(_from_json)
    imp = tables["importances"]
    return WalkForwardResult(run_id=rec["run_id"], settings=rec["settings"], inputs=rec["inputs"],
                             folds=tables["folds"], trials=tables["trials"], oos_equity=oos["equity"],
                             oos_benchmark=oos["benchmark"], oos_trades=tables["trades"],
                             diagnostics=Diagnostics.from_dict(_restore(rec["diagnostics"])),
                             importances=imp.set_index("fold") if "fold" in imp else imp,
                             stability=stability, timings=rec.get("timings", {}))
