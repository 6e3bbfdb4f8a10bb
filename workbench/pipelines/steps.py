"""The job kinds a pipeline step can be: each checks its options when the file is read and returns
outputs that later steps can refer to.

sync, sweep and walk_forward take exactly the options of their command (`workbench data sync`,
`workbench sweep`, `workbench optimize walk-forward`) and run that same code, so a pipeline behaves
like the command a researcher would type.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import unknown_key
from workbench.errors import ConfigError


@dataclass(frozen=True)
class RunContext:
    """What a step may need besides its options."""

    reports: Path


@dataclass(frozen=True)
class Kind:
    """A job kind: its option names (required ones first), what it returns, and how it runs."""

    name: str
    check: Callable[[dict[str, Any], str], None]
    run: Callable[[dict[str, Any], RunContext], dict[str, Any]]
    outputs: tuple[str, ...]
    help: str


# ---------------------------------------------------------------------- options of a CLI command
@functools.cache
def _command_options(func: Callable[..., Any]) -> dict[str, tuple[str, Any, bool]]:
    """Option name (as on the command line, with _ for -) → (parameter name, type, required)."""
    import typer.models

    hints = typing.get_type_hints(func, include_extras=True)
    out: dict[str, tuple[str, Any, bool]] = {}
    for pname, param in inspect.signature(func).parameters.items():
        hint = hints.get(pname)
        key = pname
        base = hint
        if typing.get_origin(hint) is typing.Annotated:
            base, *meta = typing.get_args(hint)
            for m in meta:
                if not isinstance(m, typer.models.ParameterInfo):
                    continue
                # in Annotated style typer takes a first positional "--name" (stored as default) as a decl
                decls = [m.default, *(m.param_decls or ())]
                longs = [d for d in decls if isinstance(d, str) and d.startswith("--")]
                if longs:
                    key = longs[0][2:].replace("-", "_")
        out[key] = (pname, base, param.default is inspect.Parameter.empty)
    return out


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
    func_name: str, options: dict[str, Any], where: str, refs_ok: bool = True
) -> dict[str, Any]:
    """Check option names and required options against the command; return them coerced."""
    from workbench.pipelines.spec import REF

    spec = _command_options(_command(func_name))
    _check_keys(options, tuple(spec), tuple(k for k, (_, _, req) in spec.items() if req), where)
    out = {}
    for key, value in options.items():
        if refs_ok and isinstance(value, str) and REF.search(value):
            out[key] = value  # resolved at run time, coerced then
            continue
        out[key] = _coerce(value, spec[key][1], key, where)
    return out


COMMANDS = {"sync": "data_sync", "sweep": "sweep_cmd", "walk_forward": "walk_forward_cmd"}


def _command(func_name: str) -> Callable[..., Any]:
    import workbench.cli as cli

    return getattr(cli, func_name)


def _call_command(func_name: str, options: dict[str, Any], where: str) -> Any:
    spec = _command_options(_command(func_name))
    values = _check_command(func_name, options, where, refs_ok=False)
    return _command(func_name)(**{spec[k][0]: v for k, v in values.items()})


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
            from workbench.cli import parse_fixed, parse_grid
            from workbench.strategies.registry import get_strategy

            strategy = get_strategy(name)
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
    _check_registry(_check_command("data_sync", o, where), where)


def _run_sync(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    results = _call_command("data_sync", o, "sync") or []
    return {"rows_added": int(sum(r.rows_added for r in results)), "symbols": [r.key.symbol for r in results]}


def _check_sweep(o: dict[str, Any], where: str) -> None:
    _check_registry(_check_command("sweep_cmd", o, where), where)


def _run_sweep(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    result = _call_command("sweep_cmd", o, "sweep")
    return {"table": str(o.get("out")), "runs": len(result.table)}


def _check_walk_forward(o: dict[str, Any], where: str) -> None:
    _check_registry(_check_command("walk_forward_cmd", o, where), where)


def _run_walk_forward(o: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    result = _call_command("walk_forward_cmd", o, "walk_forward")
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
            "paper",
            _check_paper,
            _run_paper,
            ("journal", "orders", "ticks"),
            "tick a paper-trading session now (config, ticks)",
        ),
    )
}
