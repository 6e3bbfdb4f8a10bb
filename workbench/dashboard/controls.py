"""The Controls page: halt or resume all strategies, one, or one of its symbols, with a written reason; and
a form that drafts a paper config from promoted artifacts (`workbench.paper.service.draft_config`: shown
as YAML, validated by the loader `paper run` uses, saved on request).

What is journaled is exactly what `workbench paper halt/resume` journals (`workbench.paper.halts`), with
``source="dashboard"`` and the client's address in the reason. A page opened without the token (when
one is configured) shows why its controls are disabled, and a request that reaches the server anyway is
refused there too.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from workbench.dashboard.live import HALT_COLUMNS, frame, table
from workbench.errors import WorkbenchError
from workbench.paper.halts import halt, resume
from workbench.paper.journal import Journal
from workbench.paper.live import LiveState
from workbench.paper.service import BROKERS, draft_config, save_config

log = logging.getLogger(__name__)

ALL = "all strategies"
WHOLE = "the whole strategy"
TOKEN_NEEDED = ("a token is needed: open this page with ?token=... added to its address (the value of "
                "the variable the dashboard was started with, --token-env); the controls stay disabled until "
                "then")
SOURCE = "dashboard"


def one_line(exc: BaseException) -> str:
    """An error as the page shows it: a WorkbenchError's own message, anything else named by its type."""
    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {text}"


class ControlsPage:
    """Halt and resume controls over one journal, for one page (`allowed`: it carried the token; `origin`:
    the client address journaled with each action)."""

    def __init__(self, journal: Path, *, allowed: bool, origin: str,
                 on_change: Callable[[], None] | None = None, data: str | Path | None = None) -> None:
        self.journal = journal
        self.allowed = allowed
        self.origin = origin
        self.on_change = on_change  # called after a halt or resume is journaled (the page re-reads)
        self._symbols: dict[str, list[str]] = {}
        self._halts_seen: list[int] | None = None
        self.strategy = pn.widgets.Select(label="Strategy", options=[ALL], value=ALL,
                                          sizing_mode="stretch_width", disabled=not allowed,
                                          css_classes=["wb-strategy"])
        self.symbol = pn.widgets.Select(label="Symbol", options=[WHOLE], value=WHOLE,
                                        sizing_mode="stretch_width", disabled=True, css_classes=["wb-symbol"])
        self.reason = pn.widgets.TextInput(label="Reason (required, journaled)", placeholder="why",
                                           sizing_mode="stretch_width", disabled=not allowed,
                                           css_classes=["wb-reason"])
        self.halt_button = pn.widgets.Button(label="Halt entries", color="danger", disabled=not allowed,
                                             sizing_mode="stretch_width", css_classes=["wb-halt"])
        self.resume_button = pn.widgets.Button(label="Resume", color="primary", disabled=not allowed,
                                               sizing_mode="stretch_width", css_classes=["wb-resume"])
        self.message = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-message"])
        self.halts = table(HALT_COLUMNS, height=200, name="control-halts")
        self.no_halts = pn.pane.HTML("<small>none</small>", sizing_mode="stretch_width")
        self.strategy.param.watch(self._pick_strategy, "value")
        self.halt_button.on_click(self._halt)
        self.resume_button.on_click(self._resume)
        notice = [] if allowed else [
            pn.pane.Alert(TOKEN_NEEDED, alert_type="warning", sizing_mode="stretch_width",
                          css_classes=["wb-token-needed"])]
        from workbench.config import data_dir
        from workbench.promote.registry import Registry

        root = data_dir(data)  # the data folder the drafts read artifacts from and are saved into
        self.draft = ConfigForm(allowed=allowed, origin=origin, registry=Registry(root / "registry"),
                                folder=root / "paper" / "configs")
        self.layout = pn.Column(
            *notice,
            pn.pane.HTML("Halts stop new entries; exits still run. Resuming a strategy lifts its own and its "
                         "symbols' halts, whatever set them (by hand, the kill switch, a circuit breaker, a "
                         "reconciliation difference).", sizing_mode="stretch_width"),
            self.strategy, self.symbol, self.reason,
            pn.Row(self.halt_button, self.resume_button, sizing_mode="stretch_width"),
            self.message,
            pn.pane.HTML("<b>Halts in force</b>"), self.no_halts, self.halts,
            pn.pane.HTML("<hr><b>A paper config from promoted artifacts</b>"),
            self.draft.layout,
            sizing_mode="stretch_width",
        )

    def update(self, state: LiveState) -> None:
        """Offer the strategies and symbols the journal has, and show the halts in force."""
        symbols = {name: list(spec.get("symbols", [])) for name, spec in state.specs.items()}
        if symbols != self._symbols:
            self._symbols = symbols
            self.strategy.options = [ALL, *sorted(symbols)]
            self._pick_strategy()
        ids = [h["id"] for h in state.halts]
        if ids != self._halts_seen:
            self._halts_seen = ids
            self.halts.value = frame(state.halts, HALT_COLUMNS)
            self.halts.visible, self.no_halts.visible = bool(ids), not ids

    def _pick_strategy(self, *_: object) -> None:
        chosen = self.strategy.value
        self.symbol.options = [WHOLE, *self._symbols.get(chosen, [])]
        self.symbol.value = WHOLE
        self.symbol.disabled = not self.allowed or chosen == ALL

    def _halt(self, _event: object) -> None:
        self.act("halt")

    def _resume(self, _event: object) -> None:
        self.act("resume")

    def act(self, action: str) -> bool:
        """Halt or resume what the page names; True when journaled. Every outcome is one line on the page."""
        if not self.allowed:
            log.warning("dashboard: a %s from %s was refused: the page carried no valid token", action,
                        self.origin)
            self._say("refused: " + TOKEN_NEEDED, ok=False)
            return False
        strategy = None if self.strategy.value == ALL else str(self.strategy.value)
        symbol = None if strategy is None or self.symbol.value == WHOLE else str(self.symbol.value)
        reason = str(self.reason.value_input or self.reason.value or "")
        try:
            with Journal(self.journal) as j:
                if action == "halt":
                    scope = halt(j, reason, strategy=strategy, symbol=symbol, source=SOURCE,
                                 origin=self.origin)
                    said = f"halted {scope}: {' '.join(reason.split())}"
                else:
                    n = resume(j, reason, strategy=strategy, symbol=symbol, source=SOURCE, origin=self.origin)
                    what = strategy if symbol is None else f"{strategy}:{symbol}"
                    said = f"lifted {n} halt(s)" + (f" of {what}" if strategy else "")
        except WorkbenchError as exc:
            self._say(str(exc), ok=False)
            return False
        except Exception as exc:  # e.g. the journal locked for longer than its timeout: one line, no trace
            log.warning("dashboard: a %s from %s failed: %s", action, self.origin, one_line(exc))
            log.debug("dashboard: why", exc_info=True)
            self._say(f"the {action} was not journaled ({one_line(exc)}); try again", ok=False)
            return False
        log.info("dashboard: %s from %s", said, self.origin)
        self.reason.value = ""
        self._say(said, ok=True)
        if self.on_change is not None:
            self.on_change()
        return True

    def _say(self, text: str, *, ok: bool) -> None:
        colour = "#1b5e20" if ok else "#b00020"
        self.message.object = (f"<div class='wb-result' data-ok='{str(ok).lower()}' style='color:{colour}'>"
                               f"{html.escape(' '.join(text.split()))}</div>")


def _result(text: str, *, ok: bool) -> str:
    colour = "#1b5e20" if ok else "#b00020"
    return (f"<div class='wb-draft-result' data-ok='{str(ok).lower()}' style='color:{colour}'>"
            f"{html.escape(' '.join(text.split()))}</div>")


class ConfigForm:
    """Drafts a paper config from artifacts of the registry: Build shows its YAML (validated by the loader
    of `paper run`, the artifacts read and checked as a session would), Save writes it under the data
    folder (``paper/configs/<name>.yaml``) and says the command that runs it. Needs the token, as every
    control does."""

    def __init__(self, *, allowed: bool, origin: str, registry: Any = None,
                 folder: str | Path | None = None) -> None:
        self.allowed, self.origin, self.registry, self.folder = allowed, origin, registry, folder
        self.text: str | None = None
        off = not allowed

        def field(widget: Any, label: str, css: str, **kw: Any) -> Any:
            return widget(label=label, sizing_mode="stretch_width", disabled=off, css_classes=[css], **kw)

        self.artifacts = field(pn.widgets.MultiChoice, "Artifacts (registry refs)", "wb-draft-artifacts",
                               options=[])
        self.name = field(pn.widgets.TextInput, "Session name", "wb-draft-name",
                          placeholder="letters, digits, . _ -")
        self.broker = field(pn.widgets.Select, "Broker", "wb-draft-broker", options=list(BROKERS),
                            value="sim")
        self.cash = field(pn.widgets.FloatInput, "Cash (sim broker)", "wb-draft-cash", value=100_000.0,
                          start=0.0)
        self.clock_start = field(pn.widgets.TextInput, "Replay clock start (optional)",
                                 "wb-draft-clock-start", placeholder="2025-12-01")
        self.clock_speed = field(pn.widgets.FloatInput, "Replay speed, market s per wall s (optional)",
                                 "wb-draft-clock-speed", value=None)
        self.build_button = pn.widgets.Button(label="Build", color="primary", disabled=off,
                                              sizing_mode="stretch_width", css_classes=["wb-draft-build"])
        self.save_button = pn.widgets.Button(label="Save", color="success", disabled=True,
                                             sizing_mode="stretch_width", css_classes=["wb-draft-save"])
        self.message = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-draft-message"])
        self.yaml = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-draft-yaml"])
        self.build_button.on_click(self._on_build)
        self.save_button.on_click(self._on_save)
        for w in (self.artifacts, self.name, self.broker, self.cash, self.clock_start, self.clock_speed):
            w.param.watch(self._changed, "value")
        self.layout = pn.Column(
            pn.pane.HTML("Pick promoted artifacts and a broker; Build shows the config as YAML, checked by "
                         "the loader `workbench paper run` uses. Risk limits start from those of "
                         "<code>pipelines/paper.yaml</code>; API keys never go in a config.",
                         sizing_mode="stretch_width"),
            self.artifacts, self.name, self.broker, self.cash, self.clock_start, self.clock_speed,
            pn.Row(self.build_button, self.save_button, sizing_mode="stretch_width"),
            self.message, self.yaml, sizing_mode="stretch_width")
        if allowed:
            self.reload()

    def reload(self) -> None:
        """Offer the registry's artifacts: each name (its current version) and every name@version."""
        from workbench.promote.registry import Registry

        try:
            reg = self.registry if self.registry is not None else Registry()
            table = reg.list()
        except Exception as exc:  # a damaged registry: one line, the halt controls still work
            self.message.object = _result(f"cannot read the registry ({one_line(exc)})", ok=False)
            return
        refs = [str(n) for n in dict.fromkeys(table.loc[table["current"], "name"])]
        refs += [f"{n}@{v}" for n, v in zip(table["name"], table["version"], strict=True)]
        self.artifacts.options = refs
        if not refs:
            self.message.object = _result("the registry holds no artifact yet: promote a walk-forward run "
                                          "with `workbench promote RUN_ID`", ok=False)

    def _on_build(self, _event: object) -> None:
        self.build()

    def _on_save(self, _event: object) -> None:
        self.save()

    def _changed(self, *_: object) -> None:
        self.text = None  # a draft shown no longer matches the form: build again before saving
        self.save_button.disabled = True

    def build(self) -> bool:
        """Draft and check the config the form describes; True when it is valid (then Save is offered)."""
        if not self.allowed:
            self.message.object = _result("refused: " + TOKEN_NEEDED, ok=False)
            return False
        name = str(self.name.value_input or self.name.value or "").strip()
        start = str(self.clock_start.value_input or self.clock_start.value or "").strip() or None
        try:
            if not name:
                raise WorkbenchError("give the session a name (its journal goes to <data>/paper/<name>/)")
            text, _config = draft_config(
                name=name, artifacts=list(self.artifacts.value), broker=str(self.broker.value),
                cash=self.cash.value if self.broker.value == "sim" and self.cash.value else None,
                clock_start=start, clock_speed=self.clock_speed.value, registry=self.registry)
        except WorkbenchError as exc:
            self.message.object = _result(str(exc), ok=False)
            self.yaml.object = ""
            self.text = None
            self.save_button.disabled = True
            return False
        except Exception as exc:  # never a traceback on the page
            log.warning("dashboard: drafting a config failed: %s", one_line(exc))
            log.debug("dashboard: why", exc_info=True)
            self.message.object = _result(f"the config could not be drafted ({one_line(exc)})", ok=False)
            return False
        self.text = text
        self.yaml.object = f"<pre style='white-space:pre-wrap;word-break:break-all'>{html.escape(text)}</pre>"
        self.message.object = _result("valid: the loader of `workbench paper run` accepts it", ok=True)
        self.save_button.disabled = False
        return True

    def save(self) -> Path | None:
        """Write the built draft (never over an existing file); the page says where and how to run it."""
        if not self.allowed:
            self.message.object = _result("refused: " + TOKEN_NEEDED, ok=False)
            return None
        if self.text is None:
            self.message.object = _result("build the config first", ok=False)
            return None
        name = str(self.name.value_input or self.name.value or "").strip()
        try:
            path = save_config(self.text, name, self.folder)
        except WorkbenchError as exc:
            self.message.object = _result(str(exc), ok=False)
            return None
        log.info("dashboard: paper config %s saved from %s", path, self.origin)
        self.message.object = _result(f"saved {path}; run it with: workbench paper run {path}", ok=True)
        self.save_button.disabled = True
        return path
