"""The strategy contract: a name, a parameter space, and one vectorized signal function.

A strategy never loops over bars. Its function receives the bars (a frame indexed by bar open
time with ``open high low close volume``) and a dict of validated parameters, and returns
`Signals` computed from each bar's close: the backtest decides when they can be acted on.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any, cast

import numba
import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError, did_you_mean

ParamValue = int | float | str | bool


class ParamKind(StrEnum):
    """What values a `Param` takes (a StrEnum: `ParamKind.INT == "int"`, as strategy files write it)."""

    INT = "int"
    FLOAT = "float"
    CHOICE = "choice"
    BOOL = "bool"


@dataclass(frozen=True)
class Param:
    """One tunable parameter: integer, float, categorical or boolean, with its range and default.

    `step` defines the grid a sweep walks (ints default to 1; floats need it for grids); Optuna
    draws from the same grid (low, low + step, ... up to high), or from the whole range for a float
    without a step; `log` asks Optuna for a log-uniform draw (then the step is not used).
    """

    name: str
    kind: ParamKind  # a plain "int", "float", "choice" or "bool" is turned into its ParamKind
    default: ParamValue
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[ParamValue, ...] = ()
    log: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ParamKind(self.kind))
        except ValueError:
            hint = did_you_mean(str(self.kind), [k.value for k in ParamKind])
            raise ConfigError(f"parameter {self.name!r}: unknown kind {self.kind!r}{hint}; use int, "
                              "float, choice or bool") from None
        if self.kind in (ParamKind.INT, ParamKind.FLOAT) and (self.low is None or self.high is None
                                              or self.low > self.high):
            raise ConfigError(f"parameter {self.name!r}: give low <= high")
        if self.kind is ParamKind.CHOICE and not self.choices:
            raise ConfigError(f"parameter {self.name!r}: a choice parameter needs choices")

    @property
    def bounds(self) -> tuple[float, float]:
        """low and high of an int or float parameter (`__post_init__` made sure both are given)."""
        assert self.low is not None and self.high is not None
        return self.low, self.high

    def coerce(self, value: Any) -> ParamValue:
        """Convert a value (possibly a CLI string) to this parameter's type and check its range."""
        try:
            if self.kind is ParamKind.INT:
                if isinstance(value, str):
                    value = float(value)
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                out: ParamValue = int(value)
            elif self.kind is ParamKind.FLOAT:
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
                if self.step is not None:  # Optuna stores low + k * step unrounded (0.7500000000000001)
                    out = round(out, 12)
            elif self.kind is ParamKind.BOOL:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    out = value.lower() in ("true", "1", "yes")
                else:
                    out = bool(value)
            else:
                matches = [c for c in self.choices if str(c) == str(value)]
                if not matches:
                    hint = did_you_mean(str(value), map(str, self.choices))
                    raise ConfigError(f"parameter {self.name}={value!r} is not one of "
                                      f"{list(self.choices)}{hint}")
                out = matches[0]
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {self.name}={value!r} is not a valid {self.kind}; "
                              f"give a {self.kind} like {self.default!r}") from None
        numeric = cast(float, out)  # only read for an int or float parameter, where it is one
        if self.kind in (ParamKind.INT, ParamKind.FLOAT) and not (
                self.bounds[0] <= numeric <= self.bounds[1]):
            raise ConfigError(f"parameter {self.name}={out} is outside its range "
                              f"[{_fmt(self.low)}, {_fmt(self.high)}]; pick a value inside it")
        return out

    def grid(self) -> list[ParamValue]:
        """The values a grid sweep walks by default."""
        if self.kind is ParamKind.BOOL:
            return [False, True]
        if self.kind is ParamKind.CHOICE:
            return list(self.choices)
        if self.kind is ParamKind.INT:
            step = int(self.step or 1)
            low, high = self.bounds
            return list(range(int(low), int(high) + 1, step))
        if self.step is None:
            raise ConfigError(f"parameter {self.name!r} is a float without a step; give its values "
                              f"explicitly, e.g. {self.name}={self.low}:{self.high}:<step>")
        low, high = self.bounds
        n = math.floor((high - low) / self.step + 1e-9) + 1
        return [round(low + k * self.step, 12) for k in range(n)]

    def suggest(self, trial: Any) -> ParamValue:
        """Draw this parameter from an Optuna trial."""
        if self.kind is ParamKind.INT:
            step = int(self.step or 1) if not self.log else 1
            low, high = self.bounds
            top = int(low) + (int(high) - int(low)) // step * step
            return trial.suggest_int(self.name, int(low), top, step=step, log=self.log)
        if self.kind is ParamKind.FLOAT:
            if self.step is None or self.log:
                return trial.suggest_float(self.name, self.low, self.high, log=self.log)
            last = self.grid()[-1]  # the last step inside the range: Optuna warns if high is off the grid
            return round(trial.suggest_float(self.name, self.low, last, step=self.step), 12)
        if self.kind is ParamKind.BOOL:
            return trial.suggest_categorical(self.name, [False, True])
        return trial.suggest_categorical(self.name, list(self.choices))


def _fmt(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


def int_param(name: str, default: int, low: int, high: int, step: int = 1, doc: str = "",
              log: bool = False) -> Param:
    """An integer parameter (window lengths and the like)."""
    return Param(name, ParamKind.INT, default, low, high, step, log=log, doc=doc)


def float_param(name: str, default: float, low: float, high: float, step: float | None = None,
                doc: str = "", log: bool = False) -> Param:
    """A float parameter; `step` gives its grid for sweeps."""
    return Param(name, ParamKind.FLOAT, default, low, high, step, log=log, doc=doc)


def choice_param(name: str, default: ParamValue, choices: Sequence[ParamValue], doc: str = "") -> Param:
    """A categorical parameter."""
    return Param(name, ParamKind.CHOICE, default, choices=tuple(choices), doc=doc)


def bool_param(name: str, default: bool, doc: str = "") -> Param:
    """A boolean switch."""
    return Param(name, ParamKind.BOOL, default, doc=doc)


_OPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Constraint:
    """A relation between parameters written as text, e.g. ``"fast < slow"`` or ``"fast * 2 <= slow"``.

    Text (not a lambda) so that it can be printed in errors, stored in results, and used by the
    grid (to skip combinations) and by Optuna (to prune infeasible trials) alike.
    """

    expr: str

    def __post_init__(self) -> None:
        # parsed now, so that a malformed expression fails where it is written
        self._tree  # noqa: B018

    @cached_property
    def _tree(self) -> ast.expr:
        try:
            return ast.parse(self.expr, mode="eval").body
        except SyntaxError:
            raise ConfigError(f"constraint {self.expr!r} is not an expression like 'fast < slow'") from None

    @property
    def names(self) -> set[str]:
        """Parameter names the constraint mentions."""
        return {n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)}

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Evaluate the constraint on a parameter dict."""
        return bool(self._eval(self._tree, values))

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, values)
                if type(op) not in _OPS or not _OPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            results = (self._eval(v, values) for v in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            return _BIN[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ConfigError(f"constraint {self.expr!r} names unknown parameter {node.id!r}")
            return values[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        raise ConfigError(f"constraint {self.expr!r}: only comparisons, and/or and + - * / are allowed")


@dataclass(frozen=True)
class ParamSpace:
    """The parameters of a strategy and the constraints between them."""

    params: tuple[Param, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def of(cls, *params: Param, constraints: Sequence[str] = ()) -> ParamSpace:
        """Build a space from parameters and constraint strings."""
        space = cls(tuple(params), tuple(Constraint(c) for c in constraints))
        names = space.names
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate parameter names in {names}")
        for c in space.constraints:
            unknown = c.names - set(names)
            if unknown:
                raise ConfigError(f"constraint {c.expr!r} names unknown parameter(s) {sorted(unknown)}")
        return space

    @property
    def names(self) -> list[str]:
        """Parameter names in declaration order."""
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError(f"unknown parameter {name!r}{did_you_mean(name, self.names)}; "
                          f"this strategy takes {', '.join(self.names) or 'no parameters'}")

    def defaults(self) -> dict[str, ParamValue]:
        """Every parameter at its default."""
        return {p.name: p.default for p in self.params}

    def feasible(self, values: Mapping[str, Any]) -> bool:
        """Whether a full parameter dict satisfies every constraint."""
        return all(c.holds(values) for c in self.constraints)

    def validate(self, values: Mapping[str, Any] | None = None, strategy: str = "strategy") -> dict:
        """Fill defaults, coerce types, check ranges and constraints; one clear error otherwise."""
        out = self.defaults()
        for key, value in (values or {}).items():
            out[key] = self[key].coerce(value)
        for c in self.constraints:
            if not c.holds(out):
                shown = ", ".join(f"{n}={out[n]}" for n in sorted(c.names))
                raise ConfigError(f"{strategy}: parameters {shown} break the constraint '{c.expr}'; "
                                  "choose values that satisfy it")
        return out

    def axes(self, overrides: Mapping[str, Sequence[Any]] | None = None,
             fixed: Mapping[str, Any] | None = None, *, walk_all: bool = True) -> list[list[ParamValue]]:
        """The values each parameter takes in a grid: `overrides` lists some, `fixed` pins some, and
        the rest walk their own grid (`walk_all`) or stay at their default (so a sweep grows only
        along the parameters asked for)."""
        overrides = dict(overrides or {})
        fixed = dict(fixed or {})
        for key in [*overrides, *fixed]:
            _ = self[key]  # raises on unknown names
        axes = []
        for p in self.params:
            if p.name in fixed:
                axes.append([p.coerce(fixed[p.name])])
            elif p.name in overrides:
                axes.append([p.coerce(v) for v in overrides[p.name]])
            elif walk_all:
                axes.append(p.grid())
            else:
                axes.append([p.default])
        return axes

    def grid_size(self, overrides: Mapping[str, Sequence[Any]] | None = None,
                  fixed: Mapping[str, Any] | None = None, *, walk_all: bool = True) -> int:
        """How many combinations `grid` walks before constraints skip any, without building them."""
        return math.prod(len(a) for a in self.axes(overrides, fixed, walk_all=walk_all))

    def grid(self, overrides: Mapping[str, Sequence[Any]] | None = None,
             fixed: Mapping[str, Any] | None = None, *, walk_all: bool = True) -> list[dict[str, ParamValue]]:
        """Every feasible combination: each parameter's own grid unless `overrides` lists values.

        Parameters in `fixed` stay at one value; with `walk_all=False` so do the ones not named in
        `overrides` (at their default). Combinations that break a constraint are skipped.
        """
        axes = self.axes(overrides, fixed, walk_all=walk_all)
        combos = []
        for values in itertools.product(*axes):
            d = dict(zip(self.names, values, strict=True))
            if self.feasible(d):
                combos.append(d)
        return combos

    def first_look(self, axes: int = 2, values: int = 5) -> dict[str, list[ParamValue]]:
        """A small sweep grid for a first look (a report's heatmap): the first `axes` numeric
        parameters with a grid, each at up to `values` points spread over it; the rest at defaults."""
        out: dict[str, list[ParamValue]] = {}
        varying = 0
        for p in self.params:
            on_grid = p.kind is ParamKind.INT or (p.kind is ParamKind.FLOAT and p.step is not None)
            own = p.grid() if on_grid else []
            if varying < axes and len(own) > 1:
                n = min(values, len(own))
                out[p.name] = list(dict.fromkeys(own[round(i * (len(own) - 1) / (n - 1))] for i in range(n)))
                varying += 1
            else:
                out[p.name] = [p.default]
        return out

    def suggest(self, trial: Any) -> dict[str, ParamValue]:
        """Draw a parameter dict from an Optuna trial; infeasible draws raise ``optuna.TrialPruned``."""
        values = {p.name: p.suggest(trial) for p in self.params}
        if not self.feasible(values):
            import optuna

            raise optuna.TrialPruned(f"constraints {[c.expr for c in self.constraints]} not met")
        return values

    def prefixed(self, prefix: str) -> ParamSpace:
        """The same space with every name as ``prefix.name`` (for composite strategies)."""
        params = tuple(Param(**{**p.__dict__, "name": f"{prefix}.{p.name}"}) for p in self.params)
        constraints = []
        for c in self.constraints:
            tree = ast.parse(c.expr, mode="eval")
            for node in ast.walk(tree):
                if isinstance(node, ast.Name):
                    node.id = f"{prefix}.{node.id}"
            constraints.append(_DottedConstraint(ast.unparse(tree), prefix, c))
        return ParamSpace(params, tuple(constraints))


@dataclass(frozen=True)
class _DottedConstraint(Constraint):
    """A constraint of a component strategy, evaluated on its prefixed parameters."""

    prefix: str = ""
    inner: Constraint | None = None

    def __post_init__(self) -> None:  # the dotted text is for display only: never parsed
        pass

    @property
    def _component(self) -> Constraint:
        assert self.inner is not None  # `ParamSpace.prefixed` always gives the component's constraint
        return self.inner

    @property
    def names(self) -> set[str]:
        return {f"{self.prefix}.{n}" for n in self._component.names}

    def holds(self, values: Mapping[str, Any]) -> bool:
        return self._component.holds(unprefix(values, self.prefix))


def unprefix(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The parameters of one component of a composite strategy, without their prefix."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in values.items() if k.startswith(head)}


@dataclass
class Signals:
    """What a strategy says at each bar's close.

    Boolean entries/exits per bar (arrays or Series aligned to the bars); optional stop levels as
    fractions of the entry price (0.02 = 2 %), either a scalar or one value per bar (the value on
    the signal bar of an entry applies to that trade). NaN means no stop.
    """

    long_entries: Any
    long_exits: Any = None
    short_entries: Any = None
    short_exits: Any = None
    stop_loss: Any = None
    take_profit: Any = None
    trailing_stop: Any = None
    # the entry's size as a share of what the sizing rule gives, in [0, 1] (a bet size from a model's
    # probability, say); per bar or one value; 0 or NaN on an entry bar refuses that entry
    size: Any = None
    # the entry's order (SEMANTICS.md "Entry orders"): "market" (default), "limit", "stop" or
    # "stop_limit", per bar or one for all; absolute limit and stop prices per bar; the bars an order
    # rests (its time in force, >= 1)
    order_type: Any = None
    limit_price: Any = None
    stop_price: Any = None
    time_in_force: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def has_shorts(self) -> bool:
        """Whether the strategy emits short signals at all."""
        return self.short_entries is not None

    def arrays(self, n: int, name: str = "strategy", compact: bool = False) -> dict[str, np.ndarray]:
        """All eight fields as numpy arrays of length n (bool for signals, float for stops and size).

        With `compact`, a stop or size given as a scalar (or not at all) comes back as a 1-element
        array that the backtest kernel broadcasts, instead of n copies of one number.
        """
        out: dict[str, np.ndarray] = {}
        for key in ("long_entries", "long_exits", "short_entries", "short_exits"):
            out[key] = _as_bool(getattr(self, key), n, f"{name}.{key}")
        for key in ("stop_loss", "take_profit", "trailing_stop"):
            out[key] = _as_float(getattr(self, key), n, f"{name}.{key}", compact)
        out["size"] = _as_size(self.size, n, f"{name}.size", compact)
        out["order_type"] = _as_order_type(self.order_type, n, f"{name}.order_type", compact)
        for key in ("limit_price", "stop_price"):
            out[key] = _as_price(getattr(self, key), n, f"{name}.{key}", compact)
        out["time_in_force"] = _as_tif(self.time_in_force, n, f"{name}.time_in_force", compact)
        return out


@lru_cache(maxsize=16)
def no_signals(shape: int | tuple[int, ...]) -> np.ndarray:
    """A read-only all-False array, shared: a side a strategy leaves out costs no fresh memory (a fresh
    zeroed array page-faults on its first read, which on a year of minute bars took a sweep's
    combination 0.16 ms per array)."""
    out = np.zeros(shape, dtype=bool)
    out.flags.writeable = False
    return out


def _as_bool(value: Any, n: int, what: str) -> np.ndarray:
    if value is None:
        return no_signals(n)
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value)
    if arr.ndim == 0:
        return np.full(n, bool(arr))
    if arr.shape != (n,):
        raise DataError(f"{what} has shape {arr.shape}, expected ({n},): return one value per bar")
    if arr.dtype != bool:
        arr = np.nan_to_num(arr.astype(float), nan=0.0) != 0
    return arr


def _per_bar(value: Any, n: int, what: str, compact: bool, default: float) -> np.ndarray:
    """A float field of `Signals` as an array: n values (one per bar), or a single one when it is
    given as one number (or not at all: `default`) and `compact`."""
    if value is None:
        return np.full(1 if compact else n, default)
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value, dtype=float)
    if arr.ndim == 0:
        return np.full(1 if compact else n, float(arr))
    if arr.shape != (n,):
        raise DataError(f"{what} has shape {arr.shape}, expected ({n},): return one value per bar")
    return arr


def _as_float(value: Any, n: int, what: str, compact: bool = False) -> np.ndarray:
    arr = _per_bar(value, n, what, compact, np.nan)
    if np.any(arr[np.isfinite(arr)] < 0):
        if value is not None and np.ndim(value) == 0:
            raise DataError(f"{what} is a negative stop distance; give a fraction like 0.02 for 2 %")
        raise DataError(f"{what} has negative stop distances; give fractions like 0.02 for 2 %")
    return arr


def _as_size(value: Any, n: int, what: str, compact: bool = False) -> np.ndarray:
    arr = _per_bar(value, n, what, compact, 1.0)
    if np.any((arr[np.isfinite(arr)] < 0) | (arr[np.isfinite(arr)] > 1)) or np.isinf(arr).any():
        raise DataError(f"{what} must lie in [0, 1] (a share of the sizing rule's size; NaN or 0 refuses "
                        "the entry)")
    return arr


ORDER_TYPES = ("market", "limit", "stop", "stop_limit")  # their codes are their positions (the kernel's)


def _as_order_type(value: Any, n: int, what: str, compact: bool = False) -> np.ndarray:
    if value is None:
        return np.zeros(1 if compact else n)
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value)
    if arr.ndim == 0:
        arr = np.full(1 if compact else n, arr.item())
    elif arr.shape != (n,):
        raise DataError(f"{what} has shape {arr.shape}, expected ({n},): return one value per bar")
    if arr.dtype.kind in "fiu":
        codes = arr.astype(float)
        if not np.isin(codes, np.arange(len(ORDER_TYPES))).all():
            raise DataError(f"{what} codes must be 0..3 ({', '.join(ORDER_TYPES)})")
        return codes
    names = arr.astype(str)
    unknown = sorted(set(names.tolist()) - set(ORDER_TYPES))
    if unknown:
        raise DataError(f"{what}: unknown order type {unknown[0]!r}{did_you_mean(unknown[0], ORDER_TYPES)}; "
                        f"use {', '.join(ORDER_TYPES)}")
    lookup = {t: float(k) for k, t in enumerate(ORDER_TYPES)}
    return np.array([lookup[t] for t in names.tolist()]) if len(names) > 1 else np.array([lookup[names[0]]])


def _as_price(value: Any, n: int, what: str, compact: bool = False) -> np.ndarray:
    arr = _per_bar(value, n, what, compact, np.nan)
    if _bad_price_nb(arr):  # (NaN is no price on that bar)
        raise DataError(f"{what} must be a positive price (NaN where there is none)")
    return arr


@numba.njit(cache=True, nogil=True)
def _bad_price_nb(arr: np.ndarray) -> bool:
    """Whether any value is zero, negative or infinite, in one pass (a sweep checks every combination's
    per-bar prices)."""
    bad = 0
    for i in range(arr.shape[0]):
        x = arr[i]
        bad += (x <= 0.0) | (x == np.inf)  # (counted, not branched: the loop vectorises)
    return bad > 0


def _as_tif(value: Any, n: int, what: str, compact: bool = False) -> np.ndarray:
    arr = _per_bar(value, n, what, compact, 1.0)
    if not (np.isfinite(arr) & (arr >= 1) & (arr == np.floor(arr))).all():
        raise DataError(f"{what} must be a whole number of bars, at least 1 (a time in force of 0 bars "
                        "never rests)")
    return arr


SignalFn = Callable[[pd.DataFrame, dict], Signals]


@dataclass(frozen=True)
class Strategy:
    """A named strategy: its parameter space, its signal function, and how many bars it needs.

    `warmup(params)` returns the number of bars its indicators need before the first signal
    (used to refuse data that is too short); `components` lists the strategies a composite one
    is built from; `pins` what a promotion artifact must record to trade exactly this strategy again.
    """

    name: str
    space: ParamSpace
    fn: SignalFn
    warmup: Callable[[Mapping[str, Any]], int] = lambda p: 1
    description: str = ""
    components: tuple[Strategy, ...] = ()
    source: str = "builtin"
    # what a promotion pins beside the name and parameters (a model strategy: its version, run and
    # feature set), checked again when the artifact is traded
    pins: Mapping[str, Any] = field(default_factory=dict)

    def params(self, values: Mapping[str, Any] | None = None) -> dict[str, ParamValue]:
        """Validated parameters: defaults filled in, types coerced, ranges and constraints checked."""
        return self.space.validate(values, self.name)

    def signals(self, bars: pd.DataFrame, params: Mapping[str, Any] | None = None,
                validate: bool = True) -> Signals:
        """Run the signal function on checked bars and validated parameters."""
        p = self.params(params) if validate else dict(params or {})
        if validate:
            check_signal_bars(bars, self.warmup(p), self.name, p)
        sig = self.fn(bars, p)
        if not isinstance(sig, Signals):
            raise ConfigError(f"strategy {self.name!r} returned {type(sig).__name__}, not Signals")
        return sig


def check_signal_bars(bars: pd.DataFrame, warmup: int, name: str = "strategy",
                      params: Mapping[str, Any] | None = None) -> None:
    """Refuse bars a strategy cannot use: missing columns, NaNs, or fewer rows than its windows."""
    missing = [c for c in ("open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise DataError(f"bars lack column(s) {missing}; pass a bar frame with open/high/low/close")
    # numpy, not DataFrame.isna: this runs on every paper tick for every symbol
    nan = np.zeros(len(bars), dtype=bool)
    for c in ("open", "high", "low", "close"):
        nan |= np.isnan(bars[c].to_numpy(dtype=np.float64))
    if nan.any():
        bad = bars.index[int(np.argmax(nan))]
        raise DataError(f"bars contain NaN prices (first at {bad}); drop or fill them before "
                        "backtesting (e.g. Lake.read_bars returns none)")
    if len(bars) < warmup + 2:
        shown = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
        raise DataError(f"{name}({shown}) needs at least {warmup + 2} bars, got {len(bars)}; "
                        "read a longer range or use shorter windows")


def pins_of(strategy: Strategy) -> dict[str, Any]:
    """What a promotion pins of `strategy` and the strategies it is built from (the models it
    trades, each with version, run and feature set); empty for a strategy that trades no model."""
    models: list[Any] = []
    stack = [strategy]
    while stack:
        s = stack.pop(0)
        models.extend(m for m in s.pins.get("models", []) if m not in models)
        stack.extend(s.components)
    return {"models": models} if models else {}


_PINNED = ("name", "version", "run_id", "feature_set_key")


def check_pins(strategy: Strategy, pinned: Mapping[str, Any], what: str) -> None:
    """Refuse to trade `strategy` for `what` (an artifact) if the models it would load now are not
    the ones the artifact pinned: another store, or a version whose feature set differs."""
    live = {m["name"]: m for m in pins_of(strategy).get("models", [])}
    for want in pinned.get("models", []):
        got = live.get(want["name"])
        diff = [k for k in _PINNED if got is None or str(got.get(k)) != str(want.get(k))]
        if diff:
            found = ("no such model" if got is None else
                     ", ".join(f"{k} {got.get(k)}" for k in diff))
            raise ConfigError(f"{what} pins model {want['name']} version {want['version']} (feature set "
                              f"{str(want.get('feature_set_key'))[:19]}, run {str(want.get('run_id'))[:8]}) "
                              f"but the model store has {found}: point WORKBENCH_MLFLOW_URI (or the data "
                              "folder) at the store it was promoted from, or promote again")
