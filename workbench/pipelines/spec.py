"""Pipeline files: declarative jobs in ``pipelines/*.yaml`` with parameters and a cron schedule.

A pipeline is a list of steps, each one job kind (sync, report, sweep, walk_forward, promote, paper)
with its options. Option values may refer to the pipeline's parameters (``${symbols}``), to what an
earlier step produced (``${walk_forward.run_id}``) and to the run's time (``${scheduled_for}``,
``${date}``). Everything is checked when the file is read, so a typo fails before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from workbench.alerts import UrlsSection
from workbench.config import ConfigModel, ConfigProblem, load_yaml, read_yaml, unknown_key, validate
from workbench.errors import ConfigError, WorkbenchError, did_you_mean

BUILTINS = ("scheduled_for", "date")
REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Step:
    """One job of a pipeline: its kind, its id (for references) and its options (references unresolved)."""

    id: str
    kind: str
    options: dict[str, Any]


@dataclass
class Pipeline:
    """A parsed pipeline file."""

    name: str
    path: Path
    schedule: str | None
    steps: list[Step]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    timeout: float | None = None
    alerts: UrlsSection | None = None  # a failed run alerts; the next good run sends the recovery

    def with_params(self, overrides: Mapping[str, Any]) -> Pipeline:
        """The same pipeline with some parameters overridden (only declared ones)."""
        for key in overrides:
            if key not in self.params:
                raise ConfigError(
                    f"pipeline {self.name} has no parameter {key!r}{did_you_mean(key, self.params)}; "
                    f"it takes {', '.join(self.params) or 'none'}"
                )
        return Pipeline(
            self.name,
            self.path,
            self.schedule,
            self.steps,
            {**self.params, **overrides},
            self.description,
            self.timeout,
            self.alerts,
        )


def pipelines_dir() -> Path:
    """Where pipelines live: ./pipelines (or $WORKBENCH_PIPELINES_DIR)."""
    return Path(os.environ.get("WORKBENCH_PIPELINES_DIR") or "pipelines").resolve()


def _is_pipeline(path: Path) -> bool:
    try:
        raw = read_yaml(path)
    except WorkbenchError:
        return True  # a broken file is reported when it is read, not hidden
    return isinstance(raw, Mapping) and "steps" in raw


def pipeline_files(folder: str | Path | None = None) -> list[Path]:
    """The pipeline files of a folder (YAML files with ``steps:``; the paper and gate configs are not)."""
    d = Path(folder) if folder is not None else pipelines_dir()
    if not d.is_dir():
        return []
    files = sorted([*d.glob("*.yaml"), *d.glob("*.yml")])
    return [f for f in files if _is_pipeline(f)]


def find_pipeline(name: str | Path, folder: str | Path | None = None) -> Path:
    """A pipeline by path, or by name in the pipelines folder (``nightly_data``)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p.resolve()
    d = Path(folder) if folder is not None else pipelines_dir()
    for suffix in (".yaml", ".yml"):
        candidate = d / f"{p.stem if p.suffix in ('.yaml', '.yml') else p.name}{suffix}"
        if candidate.is_file():
            return candidate.resolve()
    known = [f.stem for f in pipeline_files(d)]
    raise ConfigError(
        f"unknown pipeline {str(name)!r}{did_you_mean(p.stem, known)}; "
        f"available in {d}: {', '.join(known) or 'none'}"
    )


def parse_cron(expr: str, where: str = "schedule") -> Any:
    """An APScheduler CronTrigger (UTC) from a 5-field crontab line; one clear error when malformed."""
    from apscheduler.triggers.cron import CronTrigger

    text = str(expr).strip()
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(
            f"{where} {text!r} is not a cron expression: it needs 5 fields (minute hour day month weekday), "
            f"got {len(fields)}; e.g. '15 2 * * *' for 02:15 UTC daily"
        )
    try:
        minute, hour, day, month, weekday = fields
        days = _weekdays(weekday)
        if day != "*" and weekday != "*":  # cron fires on either (APScheduler alone would need both)
            from apscheduler.triggers.combining import OrTrigger

            return OrTrigger(
                [
                    CronTrigger(minute=minute, hour=hour, day=day, month=month, timezone="UTC"),
                    CronTrigger(minute=minute, hour=hour, month=month, day_of_week=days, timezone="UTC"),
                ]
            )
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=days, timezone="UTC")
    except ValueError as exc:
        raise ConfigError(
            f"{where} {text!r} is not a valid cron expression ({exc}); "
            "fields are minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-6 or mon-sun"
        ) from None


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekdays(field: str) -> str:
    """Cron's weekday numbers (0 and 7 are Sunday) as names: APScheduler counts 0 as Monday."""
    parts = []
    for part in field.split(","):
        rng, _, step = part.partition("/")
        by = int(step) if step.isdigit() else None
        if step and by is None:
            raise ValueError(f"weekday step {step!r} is not a number")
        if rng == "*":
            days = list(range(0, 7, by or 1)) if by else None
        elif re.fullmatch(r"\d+(-\d+)?", rng):
            a, _, b = rng.partition("-")
            lo, hi = int(a), int(b or a)
            if hi > 7 or lo > hi:
                raise ValueError(f"weekday {rng!r} is out of range (0-7, Sunday is 0 or 7)")
            days = list(range(lo, hi + 1, by or 1)) if b or by else [lo]
        else:
            parts.append(part)  # names (mon-fri) mean the same to both
            continue
        parts.append("*" if days is None else ",".join(dict.fromkeys(_DAYS[d] for d in days)))
    return ",".join(parts)


class _PipelineFile(ConfigModel):
    """A pipeline file as written; the steps' kinds and options are checked by `_step` (they depend on
    the kind and on the steps before)."""

    schedule: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = None
    steps: list[Any] = Field(default=None, validate_default=True)
    description: str | None = None
    alerts: UrlsSection | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _cron(cls, v: Any) -> Any:
        if v is not None:
            try:
                parse_cron(str(v), "{key}")
            except ConfigError as exc:
                raise ConfigProblem(str(exc)) from None
            return str(v)
        return v

    @field_validator("params", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        from workbench.pipelines.steps import KINDS

        v = {} if v is None else v
        if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
            raise ConfigProblem("must be a mapping of names to values")
        for k in v:
            if k in BUILTINS or k in KINDS:
                raise ConfigProblem(f"parameter {k!r} shadows a built-in name; rename it", k)
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v <= 0):
            raise ConfigProblem(f"{{key}} must be a positive number of seconds, got {v!r}")
        return v

    @field_validator("steps", mode="before")
    @classmethod
    def _some(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ConfigProblem("{key} must be a non-empty list, e.g. - report: {notebook: data_lake}")
        return v

    @field_validator("description", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return v if v is None else str(v)


def load_pipeline(source: str | Path, folder: str | Path | None = None) -> Pipeline:
    """Read and check a pipeline (by name or path): schedule, parameters, steps, options, references."""
    path = find_pipeline(source, folder)
    where = str(path)
    doc = load_yaml(path, {"schedule": " (quote a cron expression: schedule: '0 2 * * *')"})
    raw = doc.data
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping (schedule, params, steps) at the top level")
    if "steps" not in raw:
        raise ConfigError(
            f"{where} is not a pipeline (it has no steps:); paper configs run with `workbench paper run`, "
            "gate files with `workbench promote --gates`"
        )
    name = path.stem
    if not NAME.fullmatch(name):
        raise ConfigError(f"{where}: a pipeline's file name may hold only letters, digits, '.', '_' and '-'")
    f = validate(_PipelineFile, doc)
    steps: list[Step] = []
    for i, item in enumerate(f.steps, 1):
        steps.append(_step(item, i, f"{doc.at('steps', i - 1)}: step {i}", f.params, steps))
    return Pipeline(
        name=name,
        path=path,
        schedule=f.schedule,
        steps=steps,
        params=dict(f.params),
        description=f.description or "",
        timeout=f.timeout,
        alerts=f.alerts,
    )


def _step(item: Any, i: int, at: str, params: Mapping[str, Any], before: list[Step]) -> Step:
    """Step `i` checked: one known kind, a unique id, options its kind takes, references that resolve."""
    from workbench.pipelines.steps import KINDS

    if not isinstance(item, Mapping):
        raise ConfigError(f"{at} must be a mapping like '- report: {{notebook: data_lake}}'")
    kinds = [k for k in item if k != "id"]
    if len(kinds) != 1:
        raise ConfigError(f"{at} must name exactly one job kind ({', '.join(KINDS)}), got {kinds or 'none'}")
    kind = str(kinds[0])
    if kind not in KINDS:
        raise ConfigError(f"{at}: {unknown_key(kind, KINDS, 'job kind')}")
    sid = str(item.get("id") or kind)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sid):
        raise ConfigError(f"{at}: id {sid!r} must be a name (letters, digits, _)")
    if any(s.id == sid for s in before):
        raise ConfigError(f"{at}: a second step with id {sid!r}; give one an `id:`")
    options = item[kind] or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{at} ({kind}): options must be a mapping, got {options!r}")
    known = {s.id: s.kind for s in before}
    for ref, attr in _refs(options):
        if attr is None:
            if ref not in params and ref not in BUILTINS:
                raise ConfigError(
                    f"{at} ({kind}): ${{{ref}}} is not a parameter{did_you_mean(ref, [*params, *BUILTINS])}; "
                    f"declare it under params: (declared: {', '.join(params) or 'none'})"
                )
        elif ref not in known:
            raise ConfigError(
                f"{at} ({kind}): ${{{ref}.{attr}}} refers to no earlier step{did_you_mean(ref, known)}; "
                f"earlier steps: {', '.join(known) or 'none'}"
            )
        else:
            outputs = KINDS[known[ref]].outputs
            if attr not in outputs:
                raise ConfigError(
                    f"{at} ({kind}): step {ref} ({known[ref]}) has no output {attr!r}"
                    f"{did_you_mean(attr, outputs)}; it gives {', '.join(outputs)}"
                )
    KINDS[kind].check(dict(declared(options, params)), f"{at} ({kind})")
    return Step(id=sid, kind=kind, options=dict(options))


def declared(value: Any, params: Mapping[str, Any]) -> Any:
    """Options with references to parameters replaced by their declared values (what a run without
    overrides sees), so those are checked when the file is read; other references stay."""
    scope = {k: v for k, v in params.items() if v is not None}

    def sub(m: re.Match[str]) -> str:
        return str(scope[m.group(1)]) if m.group(2) is None and m.group(1) in scope else m.group(0)

    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole and whole.group(2) is None and whole.group(1) in scope:
            return scope[whole.group(1)]
        return REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: declared(v, params) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [declared(v, params) for v in value]
    return value


def load_pipelines(folder: str | Path | None = None) -> tuple[list[Pipeline], dict[Path, str]]:
    """Every pipeline of a folder that reads and checks, and the error of each one that does not:
    one malformed file must not stop the listing or the scheduling of the others."""
    good: list[Pipeline] = []
    bad: dict[Path, str] = {}
    for f in pipeline_files(folder):
        try:
            good.append(load_pipeline(f))
        except WorkbenchError as exc:
            bad[f] = str(exc)
    return good, bad


def _default(kind: str, option: str) -> Any:
    """The default of a command option a step left out (sync: 1m bars, sweep: 1h...)."""
    import inspect

    from workbench.pipelines.steps import COMMANDS, _command

    if kind not in COMMANDS:
        return None
    param = inspect.signature(_command(COMMANDS[kind])).parameters.get(option)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def check_data(pipeline: Pipeline, lake: Any) -> None:
    """The symbols and timeframes the steps read, against the lake or an earlier sync step of the
    pipeline; raise a DataError naming the step, the series and how to get it."""
    from workbench.data.timeframe import Timeframe
    from workbench.errors import DataError

    synced: list[tuple[str | None, str, Any]] = []  # (source or None for the default, symbol, Timeframe)
    keys = lake.series()
    for step in pipeline.steps:
        o = declared(step.options, pipeline.params)
        if step.kind == "report":
            o = dict(o.get("parameters") or {})
            if "symbols" not in o and "symbol" in o:
                o["symbols"] = o["symbol"]
        symbols, tf, source = o.get("symbols"), o.get("timeframe") or _default(step.kind, "timeframe"), \
            o.get("source")
        if isinstance(symbols, list):
            symbols = ",".join(map(str, symbols))
        known = [isinstance(v, str) and not REF.search(v) for v in (symbols, tf)]
        if not all(known) or (source is not None and (not isinstance(source, str) or REF.search(source))):
            continue  # decided at run time (a step output or the run's date)
        timeframe = Timeframe.parse(tf)
        syms = [x.strip() for x in symbols.split(",") if x.strip()]
        if step.kind == "sync":
            synced.extend((source, x, timeframe) for x in syms)
            continue
        if step.kind not in ("sweep", "walk_forward", "report"):
            continue
        for sym in syms:
            if any(x == sym and (source is None or src == source) and t.divides(timeframe)
                   for src, x, t in synced):
                continue
            sources = [source] if source else sorted({k.source for k in keys if k.symbol == sym})
            if any(lake.stored_timeframe(src, sym, timeframe) is not None for src in sources):
                continue
            held = sorted({k.symbol for k in keys if source is None or k.source == source})
            raise DataError(
                f"{pipeline.path}: step {step.id} ({step.kind}): the lake holds no {timeframe.name} "
                f"bars of {sym}{f' from {source}' if source else ''}{did_you_mean(sym, held)}; sync them "
                f"first (`workbench data sync --source {source or '<source>'} --symbols {sym} "
                f"--timeframe {timeframe.name}`) or add a sync step before this one"
            )


def _refs(value: Any) -> list[tuple[str, str | None]]:
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in REF.finditer(value)]
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in _refs(v)]
    return []


def resolve(value: Any, scope: Mapping[str, Any]) -> Any:
    """Substitute references: a value that is one reference keeps its type, others become text."""
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), whole.group(2), scope)
        return REF.sub(lambda m: str(_lookup(m.group(1), m.group(2), scope)), value)
    if isinstance(value, Mapping):
        return {k: resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, scope) for v in value]
    return value


def _lookup(ref: str, attr: str | None, scope: Mapping[str, Any]) -> Any:
    value = scope[ref]
    return value if attr is None else value[attr]
