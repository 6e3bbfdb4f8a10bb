"""The Research page: walk-forward runs with their diagnostics, promoted artifacts with their gate verdicts
and history, saved sweeps' heatmaps, registered models and their drift, the lake's coverage and quality,
and links to the rendered reports.

Each section reads its own source through the package (`run_index`, `Registry`, `list_sweeps`,
`ModelRegistry`, `Lake`, `list_reports`): one that is missing or damaged says so in one line (what is
missing and the command that fills it) and the others render. Nothing is read until the page is first
shown, then again on "Reload"; what is heavy (a run's figures, a sweep's table, a model's drift, a
quality check) is read only when the viewer picks it. A served page reads off the event loop, so the
Live page keeps refreshing meanwhile.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from workbench.dashboard.controls import TOKEN_NEEDED, one_line
from workbench.dashboard.live import table
from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

CHART_HEIGHT = 320
PICK = "(pick one)"
RUN_COLUMNS = {"run_id": "run", "strategy": "strategy", "symbols": "symbols", "folds": "folds",
               "trials": "trials", "oos_sharpe": "OOS Sharpe", "deflated_sharpe": "DSR", "pbo": "PBO",
               "sharpe_p_value": "p-value", "walk_forward_efficiency": "WFE",
               "oos_total_return": "OOS return", "oos_max_drawdown": "max drawdown", "oos_trades": "trades",
               "written": "written (UTC)"}
FOLD_COLUMNS = {"fold": "fold", "test_start": "test from", "test_end": "test to", "params": "params",
                "is_sharpe": "IS Sharpe", "oos_sharpe": "OOS Sharpe", "oos_total_return": "OOS return",
                "oos_n_trades": "trades", "n_feasible": "feasible trials", "pbo": "PBO"}
ARTIFACT_COLUMNS = {"name": "name", "version": "version", "current": "current", "strategy": "strategy",
                    "symbols": "symbols", "timeframe": "tf", "gates": "gates passed", "forced": "forced",
                    "oos_sharpe": "OOS Sharpe", "deflated_sharpe": "DSR", "pbo": "PBO",
                    "created_at": "created (UTC)", "run_id": "run"}
GATE_COLUMNS = {"gate": "gate", "value": "value", "rule": "rule", "passed": "passed", "detail": "detail"}
HISTORY_COLUMNS = {"time": "time (UTC)", "action": "action", "version": "version", "previous": "from",
                   "run_id": "run", "forced": "forced", "reason": "reason"}
SWEEP_COLUMNS = {"path": "file", "strategy": "strategy", "symbols": "symbols", "timeframe": "tf",
                 "combinations": "combinations", "rows": "rows", "written": "written (UTC)"}
MODEL_COLUMNS = {"model": "model", "versions": "versions", "latest": "latest", "champion": "champion",
                 "challenger": "challenger"}
MODEL_HISTORY_COLUMNS = {"version": "version", "aliases": "aliases", "created": "created (UTC)",
                         "model": "estimator", "cv_auc": "CV AUC", "cv_accuracy": "CV accuracy",
                         "trained_until": "trained until", "alias_moves": "alias moves"}
DRIFT_COLUMNS = {"column": "column", "psi": "PSI", "ks": "KS", "status": "status"}
COVERAGE_COLUMNS = {"source": "source", "symbol": "symbol", "timeframe": "tf", "first": "first (UTC)",
                    "last": "last (UTC)", "rows": "rows", "missing_bars": "missing bars", "gaps": "gaps",
                    "mb": "MB"}
QUALITY_COLUMNS = {"series": "series", "rows": "bars", "issue": "issue", "count": "count",
                   "action": "action", "first": "first at"}
FLAGS = ("current", "forced", "passed")  # shown as "yes" or nothing; other booleans as True/False
TIME_TEXT = ("created_at", "time", "test_start", "test_end", "trained_until")
NOT_NUMERIC = ("fold", "version", "folds", "trials", "oos_trades", "rows", "gaps", "missing_bars",
               "combinations", "versions", "latest", "count", "oos_n_trades", "n_feasible", "previous")


# ------------------------------------------------------------------------------------ shared pieces
@dataclass(frozen=True)
class Outcome:
    """What a read gave: its value, or the one line saying why there is none."""

    value: Any = None
    problem: str | None = None


def said(exc: BaseException) -> str:
    """An error as one line: a WorkbenchError's message whole (its fix comes last), anything else as the
    Controls page shows it (type and the start of its text)."""
    if isinstance(exc, WorkbenchError):
        return " ".join(str(exc).split())[:1000]
    return one_line(exc)


def attempt(read: Callable[[], Any], what: str) -> Outcome:
    """Run `read`; any failure becomes one line (logged with its traceback at debug level only)."""
    try:
        return Outcome(read())
    except Exception as exc:  # a damaged source is one line on the page, never a traceback
        # a missing or damaged source says what to do (a WorkbenchError): expected, not a fault of the page
        log.log(logging.INFO if isinstance(exc, WorkbenchError) else logging.WARNING, "dashboard: %s: %s",
                what, said(exc))
        log.debug("dashboard: reading %s failed", what, exc_info=True)
        return Outcome(problem=f"{what}: {said(exc)}")


def _fmt(key: str, value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if key in TIME_TEXT and isinstance(value, str):
        return value[:16].replace("T", " ")  # an ISO time as the registry writes it, to the minute
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "") if key in FLAGS else str(bool(value))
    if isinstance(value, float) and key not in NOT_NUMERIC:
        return f"{value:.4g}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def display(rows: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """The chosen columns of `rows`, renamed and as short readable text (what a table shows)."""
    keep = [c for c in columns if c in rows.columns]
    out = pd.DataFrame({columns[c]: [_fmt(c, v) for v in rows[c].tolist()] for c in keep},
                       columns=[columns[c] for c in keep])
    return out.reset_index(drop=True)


def _number(value: Any, spec: str = ".3f") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(v) else format(v, spec)


def _line(text: str, kind: str = "note") -> str:
    colour = "#b00020" if kind == "problem" else "#555"
    return (f"<div class='wb-{kind}' style='color:{colour};overflow-wrap:anywhere'>"
            f"{html.escape(' '.join(str(text).split()))}</div>")


def _text(text: str, kind: str = "note") -> pn.pane.HTML:
    return pn.pane.HTML(_line(text, kind), sizing_mode="stretch_width")


def _chart(fig: Any, height: int = CHART_HEIGHT) -> pn.pane.Plotly:
    fig.update_layout(height=height, autosize=True)
    fig.update_layout(margin={"l": 50, "r": 10})
    return pn.pane.Plotly(fig, sizing_mode="stretch_width", height=height,
                          config={"displaylogo": False, "responsive": True})


def _filled(rows: pd.DataFrame, name: str, height: int) -> pn.widgets.Tabulator:
    """A new read-only table (see `live.table`) showing `rows`, no taller than they need (at most
    `height`: more rows scroll inside it)."""
    widget = table({str(c): str(c) for c in rows.columns}, height=_height(len(rows), height), name=name)
    widget.value = rows
    return widget


def _height(rows: int, most: int) -> int:
    return min(most, 48 + 31 * max(rows, 1))  # the header and each row as Tabulator's simple theme draws them


def _select(label: str, name: str) -> pn.widgets.Select:
    return pn.widgets.Select(label=label, options=[PICK], value=PICK, sizing_mode="stretch_width",
                             css_classes=[f"wb-{name}-pick"])


class Section:
    """One card of the page: a line saying what it found (or why it found nothing) and its body."""

    key = ""
    title = ""

    def __init__(self, page: ResearchPage) -> None:
        self.page = page
        self.note = pn.pane.HTML(_line("not read yet"), sizing_mode="stretch_width",
                                 css_classes=[f"wb-{self.key}-note"])
        self.body = pn.Column(sizing_mode="stretch_width")  # filled afresh by each read that finds something
        self.card = pn.layout.Card(self.note, self.body, title=self.title, collapsible=True,
                                   sizing_mode="stretch_width", css_classes=["wb-section", f"wb-{self.key}"])

    def read(self) -> Any:
        """Read the source (off the event loop when served: no widget is touched here)."""
        raise NotImplementedError

    def show(self, value: Any) -> None:
        """Show what `read` gave."""
        raise NotImplementedError

    def load(self) -> None:
        """Read the source and show it, or the one line saying why not."""
        self.page.work(self.read, self.apply, self.title.lower())

    def apply(self, outcome: Outcome) -> None:
        if outcome.problem is not None:
            self.say(outcome.problem, problem=True)
            return
        try:
            self.show(outcome.value)
        except Exception as exc:  # showing failed (a source of a shape nobody expected): still one line
            log.warning("dashboard: showing %s failed: %s", self.key, one_line(exc))
            log.debug("dashboard: why", exc_info=True)
            self.say(f"could not show the {self.title.lower()}: {one_line(exc)}", problem=True)

    @property
    def shown(self) -> bool:
        """Whether the section shows content (not only its line)."""
        return bool(self.body.objects)

    def say(self, text: str, *, problem: bool = False, lines: list[str] | None = None,
            body: list[Any] | None = None) -> None:
        """The section's line (and a line per damaged item), and what it shows under it (`body`; none:
        nothing). Tables are built afresh for each read: one filled while hidden may never draw its rows."""
        extra = "".join(_line(x, "problem") for x in lines or [])
        self.note.object = _line(text, "problem" if problem else "note") + extra
        self.body.objects = list(body or [])


class PickSection(Section):
    """A section that lists items and shows the detail of the one picked (`pick_label`). Each pick is
    numbered, so the detail of an earlier pick that finishes late is dropped."""

    pick_label = ""

    def __init__(self, page: ResearchPage) -> None:
        super().__init__(page)
        self.pick = _select(self.pick_label, self.key.removesuffix("s"))
        self.detail = pn.Column(sizing_mode="stretch_width")
        self.pick.param.watch(self._picked, "value")
        self._seq = 0

    def _picked(self, event: Any) -> None:
        self._seq += 1
        value = str(event.new)
        self.forget()
        if value == PICK:
            self.detail.objects = []
            return
        self.picked(self._seq, value)

    def forget(self) -> None:
        """Drop what the previous pick left (before the new one is read)."""

    def picked(self, seq: int, value: str) -> None:
        """Read and show the detail of `value`, pick number `seq`."""
        raise NotImplementedError

    def current(self, seq: int, outcome: Outcome, box: pn.Column | None = None) -> bool:
        """Whether the read of pick `seq` is still the one wanted and found something; a read that failed
        says why in `box` (default: the detail)."""
        if seq != self._seq:
            return False  # another item was picked meanwhile
        if outcome.problem is not None:
            (box if box is not None else self.detail).objects = [_text(outcome.problem, "problem")]
            return False
        return True


# ------------------------------------------------------------------------------------ the sections
class RunsSection(PickSection):
    """Walk-forward runs, newest first, and the diagnostics of the one picked."""

    key, title = "runs", "Walk-forward runs"
    pick_label = "Run (its diagnostics)"

    def read(self) -> Any:
        from workbench.optimize.records import run_index

        return run_index(self.page.data / "runs")

    def show(self, value: Any) -> None:
        runs, damaged = value.runs, list(value.damaged.values())
        if not len(runs):
            self.say("no walk-forward runs yet: run `workbench optimize walk-forward --strategy sma_cross "
                     "--symbols BTC/USDT`", lines=damaged)
            return
        runs_table = _filled(display(runs, RUN_COLUMNS), "runs-table", 220)
        ids = [str(r) for r in runs["run_id"]]
        self.pick.options = [PICK, *ids]
        if self.pick.value not in ids:
            self.pick.value = PICK
        self.say(f"{len(runs)} run(s) in {self.page.data / 'runs'}, newest first", lines=damaged,
                 body=[runs_table, self.pick, self.detail])

    def picked(self, seq: int, run_id: str) -> None:
        self.detail.objects = [_text(f"reading {run_id} ...")]
        self.page.work(lambda: self._read_run(run_id), lambda o: self._show_run(seq, run_id, o),
                       f"run {run_id}")

    def _read_run(self, run_id: str) -> dict[str, Any]:
        from workbench.optimize.records import load_run

        result = load_run(run_id, self.page.data / "runs")
        return {"result": result, "figures": [result.figure(), result.scatter_figure(),
                                              result.stability_figure()]}

    def _show_run(self, seq: int, run_id: str, outcome: Outcome) -> None:
        if not self.current(seq, outcome):
            return
        result, figures = outcome.value["result"], outcome.value["figures"]
        folds = result.folds.copy()
        params = [c for c in folds.columns if c.startswith("param_")]
        folds["params"] = [", ".join(f"{p.removeprefix('param_')}={row[p]}" for p in params)
                           for _, row in folds[params].iterrows()] if params else ""
        equity, scatter, stability = figures
        self.detail.objects = [
            pn.pane.HTML(_run_headline(result), sizing_mode="stretch_width"),
            _chart(equity, 360),
            pn.pane.HTML("<b>Folds</b>"), _filled(display(folds, FOLD_COLUMNS), "folds", 240),
            _chart(scatter), _chart(stability, max(CHART_HEIGHT, 200 * max(1, len(params)))),
        ]


def _run_headline(result: Any) -> str:
    s, m, d = result.settings, result.summary(), result.diagnostics
    data = s.get("data") or {}
    span = f"{str(data.get('start', ''))[:10]} .. {str(data.get('end', ''))[:10]}"
    sharpe = m.get("oos_sharpe")
    return (
        f"<div class='wb-run' data-run='{html.escape(result.run_id)}' style='line-height:1.7'>"
        f"<b>{html.escape(str(s.get('strategy')))}</b> on {html.escape(', '.join(s.get('symbols', [])))} "
        f"{html.escape(str(s.get('timeframe', '')))} &middot; {m.get('folds')} folds, "
        f"{m.get('trials')} trials "
        f"&middot; {html.escape(span)}<br>"
        f"OOS Sharpe <b class='wb-run-sharpe' data-value='{sharpe!r}'>{_number(sharpe)}</b>"
        f" &middot; return <b>{_number(m.get('oos_total_return'), '+.2%')}</b>"
        f" (buy and hold {_number(m.get('benchmark_return'), '+.2%')})"
        f" &middot; max drawdown <b>{_number(m.get('oos_max_drawdown'), '.2%')}</b>"
        f" &middot; {m.get('oos_trades')} trades<br>"
        f"deflated Sharpe <b class='wb-run-dsr'>{_number(m.get('deflated_sharpe'))}</b>"
        f" &middot; PBO <b class='wb-run-pbo'>{_number(m.get('pbo'))}</b>"
        f" &middot; Sharpe p-value <b>{_number(m.get('sharpe_p_value'))}</b>"
        f" &middot; walk-forward efficiency <b>{_number(m.get('walk_forward_efficiency'), '.2f')}</b>"
        f" &middot; bootstrap P(loss) <b>{_number(d.bootstrap_p_loss, '.2f')}</b></div>"
    )


class ArtifactsSection(PickSection):
    """Promoted versions with their gate verdicts, and the promotions and rollbacks of the one picked."""

    key, title = "artifacts", "Promoted artifacts"
    pick_label = "Artifact (its verdicts and history)"

    def _registry(self) -> Any:
        from workbench.promote.registry import Registry

        return Registry(self.page.data / "registry")

    def read(self) -> Any:
        return self._registry().list()

    def show(self, value: Any) -> None:
        listed: pd.DataFrame = value
        if not len(listed):
            self.say("no promoted artifacts yet: promote a walk-forward run with "
                     "`workbench promote <run-id>`")
            return
        bad = [f"artifact {r['name']}@v{r['version']} is unreadable: restore it or promote its run again"
               for _, r in listed.iterrows() if r["strategy"] == "(unreadable)"]
        ordered = listed.sort_values(["current", "created_at"], ascending=[False, False], na_position="last")
        listing = _filled(display(ordered, ARTIFACT_COLUMNS), "artifacts-table", 200)
        refs = [f"{r['name']}@v{r['version']}" for _, r in ordered.iterrows()
                if r["strategy"] != "(unreadable)"]
        self.pick.options = [PICK, *refs]
        if self.pick.value not in refs:
            self.pick.value = PICK
        self.say(f"{len(listed)} version(s) of {listed['name'].nunique()} name(s) in "
                 f"{self.page.data / 'registry'}; current versions first", lines=bad,
                 body=[listing, self.pick, self.detail])

    def picked(self, seq: int, ref: str) -> None:
        self.page.work(lambda: self._read_artifact(ref), lambda o: self._show_artifact(seq, o),
                       f"artifact {ref}")

    def _read_artifact(self, ref: str) -> dict[str, Any]:
        reg = self._registry()
        artifact = reg.get(ref)
        return {"artifact": artifact, "history": reg.history(artifact.name)}

    def _show_artifact(self, seq: int, outcome: Outcome) -> None:
        if not self.current(seq, outcome):
            return
        a, history = outcome.value["artifact"], outcome.value["history"]
        failed = a.failed_gates
        verdict = ("all gates passed" if not failed else f"failed: {', '.join(failed)}")
        forced = f"; forced: {a.force_reason}" if a.forced else ""
        head = (f"<div class='wb-artifact' data-ref='{html.escape(a.ref)}' "
                f"data-passed='{str(a.passed).lower()}'>"
                f"<b>{html.escape(a.ref)}</b>: {html.escape(a.strategy)} "
                f"{html.escape(', '.join(f'{k}={v}' for k, v in a.params.items()))} on "
                f"{html.escape(', '.join(a.symbols))} {html.escape(a.timeframe)}, from run "
                f"{html.escape(a.run_id)}<br><span class='wb-verdict' style='color:"
                f"{'#1b5e20' if not failed else '#b00020'}'>{html.escape(verdict + forced)}</span></div>")
        gates = _filled(display(a.gates_frame(), GATE_COLUMNS), "gates", 300)
        hist = _filled(display(pd.DataFrame(history[::-1]), HISTORY_COLUMNS), "artifact-history", 200)
        self.detail.objects = [pn.pane.HTML(head, sizing_mode="stretch_width"), pn.pane.HTML("<b>Gates</b>"),
                               gates, pn.pane.HTML(f"<b>History of {html.escape(a.name)}</b> (newest first)"),
                               hist]


class SweepsSection(PickSection):
    """Saved sweep tables under the reports folder; the heatmap of the one picked over two parameters."""

    key, title = "sweeps", "Sweeps"
    pick_label = "Sweep (its heatmap)"

    def __init__(self, page: ResearchPage) -> None:
        super().__init__(page)
        self.x, self.y, self.metric = (
            pn.widgets.Select(label=n, options=[], sizing_mode="stretch_width", css_classes=[f"wb-sweep-{n}"])
            for n in ("x", "y", "metric"))
        self.axes = pn.Row(self.x, self.y, self.metric, sizing_mode="stretch_width", visible=False)
        for w in (self.x, self.y, self.metric):
            w.param.watch(self._redraw, "value")
        self._result: Any = None
        self._drawing = False

    def read(self) -> Any:
        from workbench.backtest.sweep import list_sweeps

        return list_sweeps(self.page.reports)

    def show(self, value: Any) -> None:
        sweeps, damaged = value.sweeps, list(value.damaged.values())
        if not len(sweeps):
            self.say(f"no saved sweeps under {self.page.reports}: run `workbench sweep --strategy sma_cross "
                     "--symbols BTC/USDT --grid fast=5:50:5,slow=20:200:20 --out reports/sweep.parquet`",
                     lines=damaged)
            return
        listing = _filled(display(sweeps, SWEEP_COLUMNS), "sweeps-table", 160)
        paths = [str(p) for p in sweeps["path"]]
        self.pick.options = [PICK, *paths]
        if self.pick.value not in paths:
            self.pick.value = PICK
        self.say(f"{len(sweeps)} sweep table(s) under {self.page.reports}, newest first", lines=damaged,
                 body=[listing, self.pick, self.axes, self.detail])

    def forget(self) -> None:
        self._result = None
        self.axes.visible = False

    def picked(self, seq: int, path: str) -> None:
        self.page.work(lambda: self._read_sweep(path), lambda o: self._show_sweep(seq, o), f"sweep {path}")

    def _read_sweep(self, path: str) -> Any:
        from workbench.backtest.sweep import load_sweep

        return load_sweep(self.page.reports / path)

    def _show_sweep(self, seq: int, outcome: Outcome) -> None:
        if not self.current(seq, outcome):
            return
        result = self._result = outcome.value
        varying = [p for p in result.params if result.table[p].nunique() > 1]
        metrics = [c for c in result.table.columns if c not in (*result.params, "symbol")
                   and pd.api.types.is_numeric_dtype(result.table[c])]
        self._drawing = True
        try:
            self.x.options, self.y.options, self.metric.options = varying, varying, metrics
            if len(varying) >= 2:
                self.x.value, self.y.value = varying[0], varying[1]
            self.metric.value = "sharpe" if "sharpe" in metrics else (metrics[0] if metrics else None)
        finally:
            self._drawing = False
        self.axes.visible = len(varying) >= 2
        self._redraw()

    def _redraw(self, *_: Any) -> None:
        result = self._result
        if result is None or self._drawing:
            return
        metric = str(self.metric.value or "sharpe")
        shown = {c: c for c in dict.fromkeys([*result.params, "symbol", metric, "sharpe", "total_return",
                                              "max_drawdown", "n_trades"])}
        try:
            best = display(result.top(10, by=metric), shown)
        except Exception as exc:  # a metric the table lacks: the top table stays empty
            best = display(result.table.iloc[0:0], shown)
            log.debug("dashboard: ranking a sweep failed: %s", one_line(exc))
        top = _filled(best, "sweep-top", 360)
        varying = [p for p in result.params if result.table[p].nunique() > 1]
        if len(varying) < 2:
            what = f"only {varying[0]}" if varying else "no parameter"
            why = f"this sweep varies {what}: a heatmap needs two varying parameters; its best rows:"
            self.detail.objects = [_text(why), top]
            return
        if self.x.value == self.y.value:
            self.detail.objects = [_text("pick two different parameters for x and y", "problem"), top]
            return
        try:
            fig = result.heatmap(x=self.x.value, y=self.y.value, metric=metric)
        except Exception as exc:  # e.g. a metric with no numeric value: one line
            self.detail.objects = [_text(said(exc), "problem"), top]
            return
        fig.update_layout(title={"text": f"{result.strategy}: max({metric}) by {self.x.value} and "
                                         f"{self.y.value}"})
        self.detail.objects = [_chart(fig, 420), pn.pane.HTML(f"<b>Best 10 by {html.escape(metric)}</b>"),
                               top]


class ModelsSection(PickSection):
    """Registered models (MLflow), and the versions and drift of the one picked."""

    key, title = "models", "Models"
    pick_label = "Model (its versions and the champion's drift)"

    def __init__(self, page: ResearchPage) -> None:
        super().__init__(page)
        self._registry: Any = None
        self._drift_box = pn.Column(sizing_mode="stretch_width")

    def read(self) -> Any:
        from workbench.config import redact_url
        from workbench.models.registry import ModelRegistry

        registry = ModelRegistry.existing(self.page.data)
        return registry, registry.models(), redact_url(registry.uri)

    def show(self, value: Any) -> None:
        self._registry, models, where = value
        if not len(models):
            self.say(f"no registered model yet in {where}: train one with `workbench model train "
                     "<train.yaml>` (e.g. pipelines/models/demo_gbm.yaml)")
            return
        listing = _filled(display(models, MODEL_COLUMNS), "models-table", 140)
        names = [str(n) for n in models["model"]]
        self.pick.options = [PICK, *names]
        if self.pick.value not in names:
            self.pick.value = PICK
        self.say(f"{len(models)} registered model(s) in {where}", body=[listing, self.pick, self.detail])

    def picked(self, seq: int, name: str) -> None:
        if self._registry is None:
            self.detail.objects = []
            return
        registry = self._registry
        self.detail.objects = [_text(f"reading {name} and its drift ...")]
        self.page.work(lambda: registry.history(name), lambda o: self._show_history(seq, name, o),
                       f"versions of {name}", then=lambda: self.page.work(
                           lambda: self._drift(registry, name), lambda o: self._show_drift(seq, o),
                           f"drift of {name}'s champion"))

    def _drift(self, registry: Any, name: str) -> Any:
        from workbench.data.lake import Lake
        from workbench.models.drift import model_drift

        return model_drift(Lake(self.page.data), registry, name, "champion", log=False)

    def _show_history(self, seq: int, name: str, outcome: Outcome) -> None:
        if seq != self._seq:
            return
        parts: list[Any] = []
        if outcome.problem is not None:
            parts.append(_text(outcome.problem, "problem"))
        else:
            hist = _filled(display(outcome.value, MODEL_HISTORY_COLUMNS), "model-history", 200)
            parts += [pn.pane.HTML(f"<b>Versions of {html.escape(name)}</b> (newest first)"), hist]
        self._drift_box = pn.Column(_text("computing the champion's drift ..."), sizing_mode="stretch_width")
        self.detail.objects = [*parts, self._drift_box]

    def _show_drift(self, seq: int, outcome: Outcome) -> None:
        if not self.current(seq, outcome, self._drift_box):
            return
        from workbench.models.plots import plot_drift

        report = outcome.value
        drift = _filled(display(report.table, DRIFT_COLUMNS), "drift", 260)
        self._drift_box.objects = [
            pn.pane.HTML(f"<div class='wb-drift' data-drifting='{len(report.drifting)}'>"
                         f"{html.escape(report.summary())}</div>", sizing_mode="stretch_width"),
            _chart(plot_drift(report)), drift]


class LakeSection(Section):
    """The lake's series with their coverage, damaged files, and the quality checks on request."""

    key, title = "lake", "Lake coverage and quality"

    def __init__(self, page: ResearchPage) -> None:
        super().__init__(page)
        self.check = pn.widgets.Button(label="Check quality (reads every bar)", sizing_mode="stretch_width",
                                       css_classes=["wb-quality-check"])
        self.quality = pn.Column(sizing_mode="stretch_width")
        self.check.on_click(self._check)

    def read(self) -> Any:
        from workbench.data.lake import Lake

        lake = Lake(self.page.data)
        return lake.coverage_frame(), [str(e) for e in lake.damaged().values()]

    def show(self, value: Any) -> None:
        coverage, damaged = value
        if not len(coverage):
            self.say(f"the lake in {self.page.data} is empty: fill it with `workbench data demo` or "
                     "`workbench data sync`", lines=damaged)
            return
        listing = _filled(display(coverage, COVERAGE_COLUMNS), "coverage", 220)
        gaps = int(coverage["gaps"].sum())
        self.say(f"{len(coverage)} series, {int(coverage['rows'].sum()):,} bars, {gaps} gap(s) in "
                 f"{self.page.data / 'lake'}", lines=damaged, body=[listing, self.check, self.quality])

    def _check(self, _event: Any = None) -> None:
        self.quality.objects = [_text("checking every stored bar ...")]
        self.page.work(self._read_quality, self._show_quality, "quality check")

    def _read_quality(self) -> pd.DataFrame:
        from workbench.data.lake import Lake
        from workbench.data.quality import quality_frame

        return quality_frame(Lake(self.page.data).check())

    def _show_quality(self, outcome: Outcome) -> None:
        if outcome.problem is not None:
            self.quality.objects = [_text(outcome.problem, "problem")]
            return
        frame: pd.DataFrame = outcome.value
        found = frame[frame["issue"] != "none"]
        result = _filled(display(frame, QUALITY_COLUMNS), "quality", 260)
        checked = (f"{frame['series'].nunique()} series checked: "
                   + (f"{found['series'].nunique()} with issues" if len(found) else "no issues"))
        self.quality.objects = [_text(checked), result]


class ReportsSection(Section):
    """Rendered HTML reports, newest first, each a link that opens it (served by the dashboard)."""

    key, title = "reports", "Reports"

    def __init__(self, page: ResearchPage) -> None:
        super().__init__(page)
        self.links = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-report-links"])

    def read(self) -> Any:
        from workbench.reports.catalog import list_reports

        return list_reports(self.page.reports)

    def show(self, value: Any) -> None:
        reports: pd.DataFrame = value
        if not len(reports):
            self.say(f"no rendered reports under {self.page.reports}: run `workbench report run "
                     "research_report` or `workbench demo`")
            return
        link = self.page.report_link
        items = []
        for _, r in reports.iterrows():
            path, title = str(r["path"]), str(r["title"])
            name = html.escape(title if title != Path(path).stem else path)
            url = link(path) if link is not None else None
            anchor = (f"<a class='wb-report-link' data-path='{html.escape(path)}' href='{html.escape(url)}' "
                      f"target='_blank' rel='noopener'>{name}</a>") if url else (
                f"<code class='wb-report-path'>{html.escape(path)}</code>")
            status = f" &middot; <b>{html.escape(str(r['status']))}</b>" if r["status"] else ""
            items.append(f"<li style='margin-bottom:4px;overflow-wrap:anywhere'>{anchor}<br><small>"
                         f"{html.escape(path)}{status} &middot; {_fmt('written', r['written'])} UTC &middot; "
                         f"{r['kb']:,.0f} kB</small></li>")
        self.links.object = ("<div style='max-height:420px;overflow:auto'><ul style='padding-left:18px;"
                             f"margin:0'>{''.join(items)}</ul></div>")
        where = "" if link is not None else " (open them from JupyterLab's file browser)"
        self.say(f"{len(reports)} report(s) under {self.page.reports}, newest first{where}",
                 body=[self.links])


# ------------------------------------------------------------------------------------ the page
class ResearchPage:
    """Every research section over one data folder and one reports folder, for one viewer.

    `allowed`: the viewer carried the token (otherwise nothing is read or shown); `background`: read in a
    worker thread and show on the event loop (a served page), else read at once (a notebook);
    `report_link`: the address of a report by its path relative to `reports` (None: show the path).
    """

    def __init__(self, data: Path, reports: Path, *, allowed: bool = True, background: bool = False,
                 report_link: Callable[[str], str] | None = None) -> None:
        self.data, self.reports = Path(data), Path(reports)
        self.allowed, self.background, self.report_link = allowed, background, report_link
        self.loaded = False
        self.runs, self.artifacts = RunsSection(self), ArtifactsSection(self)
        self.sweeps, self.models = SweepsSection(self), ModelsSection(self)
        self.lake, self.reports_section = LakeSection(self), ReportsSection(self)
        self.sections: list[Section] = [self.runs, self.artifacts, self.sweeps, self.models, self.lake,
                                        self.reports_section]
        self.reload = pn.widgets.Button(label="Reload", width=90, css_classes=["wb-reload"],
                                        disabled=not allowed)
        self.reload.on_click(lambda _e: self.load())
        self.read_at = pn.pane.HTML(_line("not read yet"), sizing_mode="stretch_width",
                                    css_classes=["wb-research-read"])
        if not allowed:
            alert = pn.pane.Alert(TOKEN_NEEDED, alert_type="warning", sizing_mode="stretch_width",
                                  css_classes=["wb-token-needed"])
            self.layout = pn.Column(alert, sizing_mode="stretch_width", css_classes=["wb-research-token"])
            return
        self.layout = pn.Column(pn.Row(self.read_at, self.reload, sizing_mode="stretch_width"),
                                *[s.card for s in self.sections], sizing_mode="stretch_width",
                                css_classes=["wb-research"])

    def shown(self) -> None:
        """The page came into view: read everything the first time."""
        if not self.loaded:
            self.load()

    def load(self) -> None:
        """(Re)read every section's source; each shows what it found or one line saying why not."""
        if not self.allowed:
            return
        self.loaded = True
        read = time.strftime("%H:%M:%S", time.gmtime())
        self.read_at.object = _line(f"data {self.data} · reports {self.reports} · read {read} UTC")
        # quick sources first: the models' store (MLflow) is the slowest to open
        for section in (self.reports_section, self.runs, self.artifacts, self.sweeps, self.lake, self.models):
            section.load()

    def work(self, read: Callable[[], Any], show: Callable[[Outcome], None], what: str,
             then: Callable[[], None] | None = None) -> None:
        """`read` (any failure one line, as `attempt`), then `show` what it gave, then `then`; a served page
        reads in a worker thread so its event loop stays free."""
        if not self.background:
            show(attempt(read, what))
            if then is not None:
                then()
            return

        async def job() -> None:
            outcome = await asyncio.to_thread(attempt, read, what)
            show(outcome)
            if then is not None:
                then()

        pn.state.execute(job)
