"""Promotion gates: the thresholds a walk-forward run must meet before its strategy is promoted.

A `GateSet` is read from YAML (``pipelines/promotion.yaml`` ships the defaults, which equal
`DEFAULT_GATES`)::

    gates:
      oos_sharpe: {min: 0.5}          # the value must be >= 0.5
      pbo: {max: 0.5}                 # the value must be <= 0.5
      lookahead: {required: true}     # a pass/fail check that must pass

The file is the whole set: a gate it leaves out is not checked. Every gate name must be one of
`KNOWN_GATES`, numeric gates take ``min`` or ``max`` with a number, checks take ``required`` with
true or false (false records the check without enforcing it). Anything else is a `ConfigError` naming
the file, the key and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from workbench.config import ConfigModel, ConfigProblem, load_yaml, validate
from workbench.errors import ConfigError, did_you_mean


class GateOp(StrEnum):
    """How a gate compares the run's value with its threshold."""

    MIN = "min"  # value >= threshold
    MAX = "max"  # value <= threshold
    REQUIRED = "required"  # a pass/fail check; threshold true enforces it, false only records it


class GateKind(StrEnum):
    """What a gate measures: a number (min/max thresholds) or a pass/fail check (required)."""

    NUMBER = "number"
    CHECK = "check"


@dataclass(frozen=True, kw_only=True)
class GateInfo:
    """A gate the evidence knows how to measure."""

    name: str
    kind: GateKind
    description: str
    scope: str = "run"  # what the gate judges: a walk-forward "run", or a retrained "model"


_KNOWN = (
    GateInfo(name="oos_sharpe", kind=GateKind.NUMBER,
             description="annualised Sharpe ratio of the stitched out-of-sample equity"),
    GateInfo(name="deflated_sharpe", kind=GateKind.NUMBER,
             description="deflated Sharpe ratio: probability the true Sharpe > 0 after the run's trials"),
    GateInfo(name="sharpe_p_value", kind=GateKind.NUMBER,
             description="p-value of the one-sided test that the out-of-sample Sharpe is <= 0"),
    GateInfo(name="psr", kind=GateKind.NUMBER,
             description="probabilistic Sharpe ratio of the out-of-sample returns (1 - p-value)"),
    GateInfo(name="pbo", kind=GateKind.NUMBER,
             description="probability of backtest overfitting (CSCV), mean of the folds"),
    GateInfo(name="oos_trades", kind=GateKind.NUMBER,
             description="closed out-of-sample trades"),
    GateInfo(name="oos_max_drawdown", kind=GateKind.NUMBER,
             description="out-of-sample max drawdown as a positive fraction"),
    GateInfo(name="oos_total_return", kind=GateKind.NUMBER,
             description="out-of-sample total return"),
    GateInfo(name="excess_return", kind=GateKind.NUMBER,
             description="out-of-sample total return minus buy-and-hold's over the same windows"),
    GateInfo(name="walk_forward_efficiency", kind=GateKind.NUMBER,
             description="mean out-of-sample annual return / mean in-sample annual return"),
    GateInfo(name="bootstrap_p_loss", kind=GateKind.NUMBER,
             description="share of bootstrapped out-of-sample trade sequences that lose money"),
    GateInfo(name="lookahead", kind=GateKind.CHECK,
             description="signals unchanged when the bars after a cut are removed or replaced"),
    GateInfo(name="data_fingerprint", kind=GateKind.CHECK,
             description="the lake still holds exactly the bars the run saw"),
    GateInfo(name="model_oos", kind=GateKind.CHECK,
             description="every traded model was trained on bars ending before the first out-of-sample bar"),
    # model gates (`workbench model retrain`): a challenger against the champion on the same purged folds
    GateInfo(name="cv_auc", kind=GateKind.NUMBER, scope="model",
             description="the challenger's purged-CV AUC, mean of the folds"),
    GateInfo(name="cv_auc_worst", kind=GateKind.NUMBER, scope="model",
             description="the challenger's worst fold AUC"),
    GateInfo(name="auc_gain", kind=GateKind.NUMBER, scope="model",
             description="challenger AUC minus the champion's recipe's, on the same purged folds"),
    GateInfo(name="log_loss_gain", kind=GateKind.NUMBER, scope="model",
             description="champion's log loss minus the challenger's on the same folds (> 0: better)"),
)
KNOWN_GATES: dict[str, GateInfo] = {g.name: g for g in _KNOWN}
_GATE_KEYS = (*(op.value for op in GateOp), "description")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One gate applied to one run: the value found, whether it passed, and why."""

    name: str
    op: GateOp
    threshold: float | bool
    value: float | bool | None
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a NaN value becomes None)."""
        value: float | bool | str | None = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return {"name": self.name, "op": self.op.value, "threshold": self.threshold, "value": value,
                "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        value = d.get("value")
        if value in ("inf", "-inf"):
            value = float(value)
        return cls(name=d["name"], op=GateOp(d["op"]), threshold=d["threshold"], value=value,
                   passed=bool(d["passed"]), detail=d.get("detail", ""))

    def failure(self) -> str:
        """``name=value (min 0.5)``: what a refusal message says about a failed gate."""
        return f"{self.name}={format_value(self.value)} ({self.op.value} {format_value(self.threshold)})"


def format_value(value: Any) -> str:
    """A gate value or threshold for people: 4 significant digits, yes/no for checks, n/a for none."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


@dataclass(frozen=True, kw_only=True)
class Gate:
    """One promotion gate: a known measure, how it is compared (`op`), and the threshold."""

    name: str
    op: GateOp
    threshold: float | bool
    description: str = ""

    def __post_init__(self) -> None:
        info = KNOWN_GATES.get(self.name)
        if info is None:
            raise ConfigError(f"unknown promotion gate {self.name!r}{did_you_mean(self.name, KNOWN_GATES)}; "
                              f"known gates: {', '.join(KNOWN_GATES)}")
        try:
            object.__setattr__(self, "op", GateOp(self.op))
        except ValueError:
            raise ConfigError(f"gate {self.name}: unknown op {self.op!r}; use min, max or required") from None
        if info.kind is GateKind.CHECK:
            if self.op is not GateOp.REQUIRED or not isinstance(self.threshold, bool):
                raise ConfigError(f"gate {self.name} is a pass/fail check; write {self.name}: "
                                  "{required: true}")
        else:
            if self.op is GateOp.REQUIRED:
                raise ConfigError(f"gate {self.name} is a number; give it a min or a max, e.g. "
                                  f"{self.name}: {{min: 0.5}}")
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise ConfigError(f"gate {self.name}: threshold {t!r} must be a finite number")
        if not self.description:
            object.__setattr__(self, "description", info.description)

    def check(self, value: Any) -> tuple[bool, str]:
        """Whether `value` passes, and a short reason (a missing or NaN value never passes)."""
        if self.op is GateOp.REQUIRED:
            if not self.threshold:
                return True, "recorded, not enforced (required: false)"
            reason = "passed" if value is True else "failed" if value is False else "not measured"
            return value is True, reason
        if value is None or isinstance(value, bool):
            return False, "not measured"
        v = float(value)
        if math.isnan(v):
            return False, "undefined in the run (n/a)"
        t = float(self.threshold)
        ok = v >= t if self.op is GateOp.MIN else v <= t
        sign = (">=" if ok else "<") if self.op is GateOp.MIN else ("<=" if ok else ">")
        return ok, f"{format_value(value)} {sign} {format_value(self.threshold)}"

    def verdict(self, value: Any, detail: str | None = None) -> Verdict:
        """This gate applied to `value`; `detail` (from the evidence) replaces the default reason."""
        passed, reason = self.check(value)
        if detail and not (self.op is GateOp.REQUIRED and not self.threshold):
            reason = detail
        return Verdict(name=self.name, op=self.op, threshold=self.threshold, value=value, passed=passed,
                       detail=reason)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op.value, "threshold": self.threshold,
                "description": self.description}


DEFAULT_MODEL_GATES: tuple[Gate, ...] = (
    Gate(name="cv_auc", op=GateOp.MIN, threshold=0.52),
    Gate(name="auc_gain", op=GateOp.MIN, threshold=0.0),
    Gate(name="log_loss_gain", op=GateOp.MIN, threshold=0.0),
)

DEFAULT_GATES: tuple[Gate, ...] = (
    Gate(name="oos_sharpe", op=GateOp.MIN, threshold=0.5),
    Gate(name="deflated_sharpe", op=GateOp.MIN, threshold=0.5),
    Gate(name="sharpe_p_value", op=GateOp.MAX, threshold=0.1),
    Gate(name="pbo", op=GateOp.MAX, threshold=0.5),
    Gate(name="oos_trades", op=GateOp.MIN, threshold=10),
    Gate(name="oos_max_drawdown", op=GateOp.MAX, threshold=0.30),
    Gate(name="walk_forward_efficiency", op=GateOp.MIN, threshold=0.5),
    Gate(name="lookahead", op=GateOp.REQUIRED, threshold=True),
    Gate(name="data_fingerprint", op=GateOp.REQUIRED, threshold=True),
    Gate(name="model_oos", op=GateOp.REQUIRED, threshold=True),
)


@dataclass(frozen=True, kw_only=True)
class GateSet:
    """The gates of one promotion policy, and where they were read from (path, sha256 of the text)."""

    gates: tuple[Gate, ...]
    path: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        names = [g.name for g in self.gates]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"gate(s) {dup} given more than once; keep one threshold per gate")
        if self.sha256 is None:
            canon = json.dumps([g.to_dict() for g in self.gates], sort_keys=True)
            object.__setattr__(self, "sha256", hashlib.sha256(canon.encode()).hexdigest())

    @classmethod
    def default(cls) -> GateSet:
        """The built-in gates (equal to the shipped ``pipelines/promotion.yaml``)."""
        return cls(gates=DEFAULT_GATES)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GateSet:
        """Read and strictly validate a gates file; any problem is one ConfigError line with its line."""
        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError(f"gates file {p} does not exist; pass an existing YAML file "
                              "(e.g. pipelines/promotion.yaml)")
        doc = load_yaml(p)
        return cls.from_mapping(doc, where=str(p), sha256=hashlib.sha256(doc.text.encode()).hexdigest(),
                                path=str(p.resolve()))

    @classmethod
    def from_mapping(cls, data: Any, *, where: str = "gates", sha256: str | None = None,
                     path: str | None = None) -> GateSet:
        """Build from the parsed YAML structure ``{"gates": {name: {op: threshold}}}`` (or a `load_yaml`
        file, whose lines the messages then name)."""
        gates = validate(_GatesFile, data, where=where).to_gates()
        return cls(gates=gates, path=path, sha256=sha256)

    def of_scope(self, scope: str) -> GateSet:
        """This set, refused if a gate judges something else (a model gate in a run's file)."""
        for g in self.gates:
            own = KNOWN_GATES[g.name].scope
            if own != scope:
                where = self.path or "the gates"
                noun = {"model": "retrained model", "run": "walk-forward run"}
                fix = ("put it in a model gates file (pipelines/model_gates.yaml)" if own == "model"
                       else "put it in a promotion gates file (pipelines/promotion.yaml)")
                raise ConfigError(f"{where}: gate {g.name} judges a {noun[own]}, not a {noun[scope]}; {fix}")
        return self

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gates]

    def __iter__(self) -> Iterator[Gate]:
        return iter(self.gates)

    def __len__(self) -> int:
        return len(self.gates)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def evaluate(self, values: Mapping[str, Any], details: Mapping[str, str] | None = None) -> list[Verdict]:
        """Every gate applied to the measured `values` (a missing value fails its gate)."""
        details = details or {}
        return [g.verdict(values.get(g.name), details.get(g.name)) for g in self.gates]

    def describe(self) -> dict[str, Any]:
        """Where the gates came from, for the artifact: path (None for the built-ins) and sha256."""
        return {"path": self.path, "sha256": self.sha256, "builtin": self.path is None}

    def to_yaml(self) -> str:
        """The set as a gates file (what ``pipelines/promotion.yaml`` holds, without comments)."""
        lines = ["gates:"]
        for g in self.gates:
            t = ("true" if g.threshold else "false") if isinstance(g.threshold, bool) else repr(g.threshold)
            lines.append(f"  {g.name}: {{{g.op.value}: {t}}}")
        return "\n".join(lines) + "\n"


def load_gates(source: str | Path | GateSet | None = None, *, scope: str = "run") -> GateSet:
    """A GateSet from a YAML path, an existing GateSet, or None for the built-in defaults; `scope` is
    what it judges ("run": a walk-forward run, "model": a retrained model), and every gate must suit it."""
    if source is None:
        return GateSet(gates=DEFAULT_MODEL_GATES) if scope == "model" else GateSet.default()
    if isinstance(source, GateSet):
        return source.of_scope(scope)
    return GateSet.from_yaml(source).of_scope(scope)


class _GateSpec(ConfigModel):
    """One gate's entry: exactly one op (min, max or required) and an optional description."""

    key_noun: ClassVar[str] = "op"
    min: Any = None
    max: Any = None
    required: Any = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ConfigProblem(f"{{key}} must be a mapping like 'min: 0.5' or 'required: true', "
                                f"got {data!r}")
        return data


class _GatesFile(ConfigModel):
    """A gates file: only ``gates:``, mapping known gate names to their op and threshold."""

    key_noun: ClassVar[str] = "top-level key"
    gates: dict[str, _GateSpec] | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ConfigProblem(_TOP)
        if "gates" in data and not isinstance(data["gates"], Mapping):
            raise ConfigProblem(_EMPTY, "gates")
        return data

    @field_validator("gates", mode="before")
    @classmethod
    def _names(cls, entries: Any) -> Any:
        if not entries:
            raise ConfigProblem(_EMPTY)
        for name in entries:
            if str(name) not in KNOWN_GATES:
                raise ConfigProblem(f"{{key}} is not a known gate{did_you_mean(str(name), KNOWN_GATES)}; "
                                    f"use one of {', '.join(KNOWN_GATES)}", str(name))
            if not isinstance(entries[name], Mapping):
                raise ConfigProblem(f"{{key}} must be a mapping like '{_example(str(name))}', "
                                    f"got {entries[name]!r}", str(name))
        return entries

    @model_validator(mode="after")
    def _ops(self) -> _GatesFile:
        if self.gates is None:
            raise ConfigProblem(_TOP)
        for name, spec in self.gates.items():
            _gate(name, spec)
        return self

    def to_gates(self) -> tuple[Gate, ...]:
        """The validated entries as Gates, in file order."""
        return tuple(_gate(name, spec) for name, spec in (self.gates or {}).items())


_TOP = "expected a top-level 'gates:' mapping, e.g. 'gates: {oos_sharpe: {min: 0.5}}'"
_EMPTY = "must map gate names to thresholds, e.g. 'oos_sharpe: {min: 0.5}'; list at least one gate"


def _example(name: str) -> str:
    check = KNOWN_GATES[name].kind is GateKind.CHECK
    return f"{name}: {{required: true}}" if check else f"{name}: {{min: 0.5}}"


def _gate(name: str, spec: _GateSpec) -> Gate:
    """A Gate from its validated entry; an op that does not suit the gate's kind is a ConfigProblem."""
    info, example = KNOWN_GATES[name], _example(name)
    ops = [op for op in GateOp if getattr(spec, op.value) is not None]
    if len(ops) != 1:
        raise ConfigProblem(f"{{key}} needs exactly one of min, max or required, got "
                            f"{[o.value for o in ops] or 'none'}; write '{example}'", "gates", name)
    op = ops[0]
    raw = getattr(spec, op.value)
    at = ("gates", name, op.value)
    description = spec.description or ""
    if info.kind is GateKind.CHECK:
        if op is not GateOp.REQUIRED:
            raise ConfigProblem(f"{{key}} is a pass/fail check, not a number; write '{example}'", *at[:2])
        if not isinstance(raw, bool):
            raise ConfigProblem(f"{{key}}={raw!r} must be true or false", *at)
        return Gate(name=name, op=op, threshold=raw, description=description)
    if op is GateOp.REQUIRED:
        raise ConfigProblem(f"{{key}} is a number; give it a min or a max, e.g. '{example}'", *at[:2])
    threshold = _number(raw)
    if threshold is None:
        raise ConfigProblem(f"{{key}}={raw!r} is not a finite number; write e.g. "
                            f"'{name}: {{{op.value}: 0.5}}'", *at)
    return Gate(name=name, op=op, threshold=threshold, description=description)


def _number(raw: Any) -> float | int | None:
    """A finite threshold; YAML 1.1 reads ``1e-3`` as text, so numeric text is accepted too."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and _NUMBER.match(raw.strip()):
        raw = float(raw)
    if isinstance(raw, int | float) and math.isfinite(raw):
        return raw
    return None
