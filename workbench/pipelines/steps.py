"""The job kinds a pipeline step can be: each checks its options when the file is read and returns
outputs that later steps can refer to.

sync, sweep and walk_forward take exactly the options of their command (`workbench data sync`,
`workbench sweep`, `workbench optimize walk-forward`) and build the same job from them (`SyncJob`,
`SweepJob`, `WalkForwardJob`: the command line builds these too), so a pipeline behaves like the
command a researcher would type.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import unknown_key
from workbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What a step may need besides its options."""

    reports: Path
    data_root: Path | None = None  # the lake's root (None: $WORKBENCH_DATA_DIR or ./data)


@dataclass(frozen=True)
class Kind:
    """A job kind: its option names (required ones first), what it returns, and how it runs."""

    name: str
    check: Callable[[dict[str, Any], str], None]
    run: Callable[[dict[str, Any], RunContext], dict[str, Any]]
    outputs: tuple[str, ...]
    help: str


# ---------------------------------------------------------------------- options of a job
@functools.cache
def _command_options(func: Callable[..., Any]) -> dict[str, tuple[str, Any, bool]]:
    """Option name → (parameter name, type, required), read from a job's keyword-only `from_options`
    (its parameters carry the command's option names, with _ for -)."""
    hints = typing.get_type_hints(func)
    return {
        pname: (pname, hints.get(pname), param.default is inspect.Parameter.empty)
        for pname, param in inspect.signature(func).parameters.items()
    }


def _types(tp: Any) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    return tuple(a for a in args if a is not type(None)) if args else (tp,)


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """A YAML value as the command's parameter type: lists and mappings become the CLI's text forms."""
    if value is None:
        return None
    kinds = _types(tp)
    if bool in kinds:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if int in kinds or float in kinds:
        want = int if int in kinds else float
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        try:
            return want(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
    if Path in kinds:
        return Path(str(value))
    if isinstance(value, Mapping):  # grid: {fast: 5:50:5, slow: [20, 40]} → fast=5:50:5,slow=20|40
        return ",".join(
            f"{k}={'|'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()
        )
    if isinstance(value, list):  # symbols: [BTC/USDT, ETH/USDT] → BTC/USDT,ETH/USDT
        return ",".join(map(str, value))
    return str(value)


def _check_command(
    kind: str, options: dict[str, Any], where: str, refs_ok: bool = True
) -> dict[str, Any]:
    """Check option names and required options against the command; return them coerced."""
    from workbench.pipelines.spec import REF

    spec = _command_options(_command(COMMANDS[kind]))
    _check_keys(options, tuple(spec), tuple(k for k, (_, _, req) in spec.items() if req), where)
    out = {}
    for key, value in options.items():
        if refs_ok and isinstance(value, str) and REF.search(value):
            out[key] = value  # resolved at run time, coerced then
            continue
        out[key] = _coerce(value, spec[key][1], key, where)
    return out


# kind → the job its options build (the command line builds the same one): module:class
COMMANDS = {
    "sync": "workbench.data.options:SyncJob",
    "sweep": "workbench.backtest.options:SweepJob",
    "walk_forward": "workbench.optimize.options:WalkForwardJob",
}


def _command(job: str) -> Callable[..., Any]:
    """The `from_options` of a job named module:class: its keyword parameters are the command's options."""
    import importlib

    module, _, name = job.partition(":")
    return getattr(importlib.import_module(module), name).from_options


def _call_command(kind: str, options: dict[str, Any], where: str) -> Any:
    """The job built from the step's options (references resolved by now), checked as the command does."""
    spec = _command_options(_command(COMMANDS[kind]))
    values = _check_command(kind, options, where, refs_ok=False)
    return _command(COMMANDS[kind])(**{spec[k][0]: v for k, v in values.items()})


def _static(o: Mapping[str, Any], key: str) -> str | None:
    """An option's value when it is known now (text without references), else None."""
    from workbench.pipelines.spec import REF

    value = o.get(key)
    return value if isinstance(value, str) and value and not REF.search(value) else None


def _check_registry(o: Mapping[str, Any], where: str) -> None:
    """Strategy, its parameters (grid, fixed) and the timeframe checked now, not when the step runs."""
    from workbench.data.timeframe import Timeframe

    try:
        if (tf := _static(o, "timeframe")) is not None:
            Timeframe.parse(tf)
        if (name := _static(o, "strategy")) is not None:
            from workbench.backtest.weight_strategies import resolve_strategy
            from workbench.strategies.grid import parse_fixed, parse_grid

            strategy = resolve_strategy(name)  # a signal or a weight strategy (sweeps take both)
            if (grid := _static(o, "grid")) is not None:
                parse_grid(grid, strategy, "grid")
            if (fixed := _static(o, "fixed")) is not None:
                parse_fixed(fixed, strategy, "fixed")
            for key in ("grid", "params"):  # a report's parameters: {name: values}
                if isinstance(o.get(key), Mapping):
                    for pname in o[key]:
                        strategy.space[str(pname)]  # an unknown name raises with a did-you-mean
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------- kinds
def _check_sync(o: dict[str, Any], where: str) -> None:
    _check_registry(_check_command("sync", o, where), where)


def _run_sync(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from workbench.data.lake import Lake

    results = _call_command("sync", o, "sync").run(Lake(ctx.data_root)) or []
    for r in results:  # what `workbench data sync` prints under its table
        if r.report is not None and not r.report.ok:
            log.warning("%s", r.report)
    return {"rows_added": int(sum(r.rows_added for r in results)), "symbols": [r.key.symbol for r in results]}


def _check_sweep(o: dict[str, Any], where: str) -> None:
    _check_registry(_check_command("sweep", o, where), where)


def _run_sweep(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from workbench.data.lake import Lake

    job = _call_command("sweep", o, "sweep")
    result = job.run(job.load(Lake(ctx.data_root)))
    written = result.save(job.out)
    log.info("sweep: %d runs, wrote %s", len(result.table), written)
    if job.heatmap is not None:
        log.info("sweep: wrote heatmap %s", job.write_heatmap(result))
    return {"table": str(o.get("out")), "runs": len(result.table)}


def _check_walk_forward(o: dict[str, Any], where: str) -> None:
    _check_registry(_check_command("walk_forward", o, where), where)


def _run_walk_forward(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from workbench.data.lake import Lake

    job = _call_command("walk_forward", o, "walk_forward")
    result = job.run(job.load(Lake(ctx.data_root)))
    log.info("walk-forward: run %s", result.run_id)
    if job.html is not None:
        log.info("walk-forward: wrote chart %s", job.write_chart(result))
    return {"run_id": result.run_id, "oos_sharpe": float(result.summary()["oos_sharpe"])}


_PROMOTE = ("run", "gates", "name", "force", "reason", "required")


def _check_keys(
    o: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], where: str
) -> None:
    for key in o:
        if key not in allowed:
            raise ConfigError(f"{where}: {unknown_key(key, allowed, 'option')}")
    missing = [k for k in required if o.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: missing option(s) {', '.join(missing)}")


def _check_promote(o: dict[str, Any], where: str) -> None:
    _check_keys(o, _PROMOTE, ("run",), where)
    if o.get("force") and not o.get("reason"):
        raise ConfigError(f"{where}: force: true needs a reason: '...' (it is recorded in the artifact)")
    for flag in ("force", "required"):
        if flag in o and not isinstance(o[flag], bool):
            raise ConfigError(f"{where}: {flag} must be true or false, got {o[flag]!r}")


def _run_promote(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Promote a run; a refusal is a verdict (the step succeeds with promoted=false) unless required."""
    import logging

    from workbench.errors import PromotionRejected
    from workbench.promote.promotion import promote

    log = logging.getLogger(__name__)
    try:
        res = promote(
            str(o["run"]),
            gates=o.get("gates"),
            name=o.get("name"),
            force=bool(o.get("force")),
            reason=o.get("reason"),
        )
    except PromotionRejected as exc:
        if o.get("required"):
            raise
        failed = [v.name for v in getattr(exc, "verdicts", []) if not v.passed]
        log.warning("promotion refused: %s", exc)
        return {"promoted": False, "artifact": "", "status": "refused", "failed_gates": failed}
    assert res.artifact is not None
    return {
        "promoted": True,
        "artifact": res.artifact.ref,
        "status": "promoted" if res.promoted else "current",
        "failed_gates": [],
    }


_PAPER = ("config", "ticks")


def _check_paper(o: dict[str, Any], where: str) -> None:
    _check_keys(o, _PAPER, ("config",), where)
    ticks = o.get("ticks", 1)
    if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 1:
        raise ConfigError(f"{where}: ticks must be a whole number >= 1, got {ticks!r}")


def _run_paper(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Tick a paper session now (a cron-driven runner instead of the long-lived `paper run`)."""
    from workbench.paper.service import PaperSession, load_config

    session = PaperSession(load_config(o["config"]))
    try:
        results = [r for _ in range(int(o.get("ticks", 1))) for r in session.tick()]
    finally:
        session.close()
    return {
        "journal": str(session.root / "journal.sqlite"),
        "orders": sum(len(r.orders) for r in results),
        "ticks": len(results),
    }


_RETRAIN = ("spec", "gates", "start", "end", "required")


def _check_retrain(o: dict[str, Any], where: str) -> None:
    from workbench.pipelines.spec import REF

    _check_keys(o, _RETRAIN, ("spec",), where)
    if "required" in o and not isinstance(o["required"], bool):
        raise ConfigError(f"{where}: required must be true or false, got {o['required']!r}")
    try:
        if isinstance(o["spec"], str) and not REF.search(o["spec"]):
            from workbench.models.training import load_train_spec

            load_train_spec(o["spec"])
        if isinstance(o.get("gates"), str) and not REF.search(o["gates"]):
            from workbench.promote.gates import load_gates

            load_gates(o["gates"], scope="model")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _run_retrain(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Train a challenger and move the champion to it only if it passes the model gates; a refusal is a
    verdict (the step succeeds with promoted=false) unless required."""
    from workbench.data.lake import Lake
    from workbench.promote.models import retrain

    res = retrain(Lake(ctx.data_root), o["spec"], gates=o.get("gates"), start=o.get("start"),
                  end=o.get("end"))
    if o.get("required") and not res.promoted:
        raise ConfigError(f"model {res.name} version {res.version} {res.reason}")
    log.info("%s", res.summary())
    return {"model": res.name, "version": res.version, "champion": res.champion, "promoted": res.promoted,
            "reason": res.reason}


_DRIFT = ("model", "version", "since", "until", "fail_on")
_DRIFT_LEVELS = ("drift", "watch", "never")


def _check_drift(o: dict[str, Any], where: str) -> None:
    _check_keys(o, _DRIFT, ("model",), where)
    level = o.get("fail_on", "drift")
    if level not in _DRIFT_LEVELS:
        raise ConfigError(f"{where}: fail_on={level!r} must be one of {', '.join(_DRIFT_LEVELS)} (drift: "
                          "a PSI above 0.25 fails the step, watch: above 0.1, never: report only)")


def _run_drift(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """A registered model's drift (`workbench model drift`); the step fails at the `fail_on` level, so a
    pipeline with alerts tells someone (the failure names the drifting columns)."""
    from workbench.data.lake import Lake
    from workbench.models.drift import PSI_DRIFT, PSI_WATCH, model_drift
    from workbench.models.registry import ModelRegistry

    report = model_drift(Lake(ctx.data_root), ModelRegistry(data=ctx.data_root), str(o["model"]),
                         o.get("version", "champion"), since=o.get("since"), until=o.get("until"))
    log.info("%s", report.summary())
    level = o.get("fail_on", "drift")
    if level != "never":
        bound = PSI_DRIFT if level == "drift" else PSI_WATCH
        shifted = report.table.loc[report.table["psi"] > bound, "column"].tolist()
        if shifted:
            raise DataError(f"model {report.name} version {report.version} drifted: PSI above {bound} in "
                            f"{', '.join(shifted)}; see `workbench model drift {report.name}` and retrain "
                            "it (or raise fail_on)")
    return {"model": report.name, "version": report.version, "drifting": report.drifting,
            "summary": report.summary()}


_REPORT = ("notebook", "parameters", "name", "out", "show_code")


def _check_report(o: dict[str, Any], where: str) -> None:
    from workbench.pipelines.spec import REF
    from workbench.reports.runner import check_parameters, find_notebook

    _check_keys(o, _REPORT, ("notebook",), where)
    params = o.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: parameters must be a mapping of notebook parameters")
    if isinstance(o["notebook"], str) and not REF.search(o["notebook"]):
        try:
            check_parameters(find_notebook(o["notebook"]), dict(params))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    _check_registry(params, f"{where} parameters")


def _run_report(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from workbench.reports import run_report

    res = run_report(
        o["notebook"],
        dict(o.get("parameters") or {}),
        out=o.get("out") or ctx.reports,
        name=o.get("name"),
        show_code=bool(o.get("show_code", False)),
    )
    return {
        "html": str(res.html.resolve()) if res.html else "",
        "folder": str(res.folder.resolve()),
        "status": res.manifest.get("status"),
    }


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "sync",
            _check_sync,
            _run_sync,
            ("rows_added", "symbols"),
            "fetch bars into the lake (options of `workbench data sync`)",
        ),
        Kind(
            "report",
            _check_report,
            _run_report,
            ("html", "folder", "status"),
            "run a notebook template as a report (notebook, parameters, name, out, show_code)",
        ),
        Kind(
            "sweep",
            _check_sweep,
            _run_sweep,
            ("table", "runs"),
            "a parameter sweep (options of `workbench sweep`)",
        ),
        Kind(
            "walk_forward",
            _check_walk_forward,
            _run_walk_forward,
            ("run_id", "oos_sharpe"),
            "walk-forward optimisation (options of `workbench optimize walk-forward`)",
        ),
        Kind(
            "promote",
            _check_promote,
            _run_promote,
            ("promoted", "artifact", "status", "failed_gates"),
            "promote a walk-forward run through the gates (run, gates, name, force, reason, required)",
        ),
        Kind(
            "retrain",
            _check_retrain,
            _run_retrain,
            ("model", "version", "champion", "promoted", "reason"),
            "train a challenger model and make it champion if it passes the model gates "
            "(spec, gates, start, end, required)",
        ),
        Kind(
            "drift",
            _check_drift,
            _run_drift,
            ("model", "version", "drifting", "summary"),
            "a registered model's drift against its training window; fails at fail_on (model, version, "
            "since, until, fail_on: drift | watch | never)",
        ),
        Kind(
            "paper",
            _check_paper,
            _run_paper,
            ("journal", "orders", "ticks"),
            "tick a paper-trading session now (config, ticks)",
        ),
    )
}
