"""`workbench strategies`: the signal strategies (built-ins and ./research) and the weight strategies,
their parameters and ranges, and the allocators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from workbench.cli.common import out
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.strategies.base import Param, ParamSpace


def strategies_cmd(
    spec: Annotated[str | None, typer.Argument(
        help="Show one strategy (or a composite spec like regime(macd)) in detail.")] = None,
) -> None:
    """List the strategies: signal strategies (built-ins and ./research) and weight strategies, with
    their parameters, defaults and ranges."""
    from workbench.backtest.allocators import METHODS
    from workbench.backtest.weight_strategies import find_weight_strategy, weight_strategies
    from workbench.strategies.registry import get_strategy, list_strategies

    weight = weight_strategies()  # the built-ins and `allocate`
    if spec is not None:
        if spec.strip().split("+", 1)[0] in weight:
            w = find_weight_strategy(spec)
            _detail(w.name, "weight strategy: `workbench portfolio --strategy`, `workbench sweep`, "
                    "`workbench optimize walk-forward`", w.description, w.space)
            return
        strat = get_strategy(spec)
        _detail(strat.name, strat.source, strat.description, strat.space)
        return
    table = Table(title="signal strategies (`workbench backtest --strategy NAME`)", show_lines=True,
                  title_justify="left")
    for name in ("strategy", "parameters: default [range step]", "constraints", "description"):
        table.add_column(escape(name))
    for name, strat in sorted(list_strategies().items()):
        params = "\n".join(f"{p.name}={p.default} {_param_range(p)}" for p in strat.space.params)
        constraints = "\n".join(c.expr for c in strat.space.constraints)
        label = name if strat.source == "builtin" else f"{name} ({strat.source})"
        table.add_row(*map(escape, (label, params, constraints, strat.description)))
    out.print(table)
    out.print("composites: regime(<strategy>) gates entries by a market regime; vote(<a>,<b>,...) "
              "is long while most components are; ml_model(<model>[@<version>]) trades a registered model "
              "by pure inference; ml_refit(<model>[@<version>]) refits its recipe walk-forward", markup=False)
    table = Table(title="weight strategies: target weights across the symbols as one book (`workbench "
                  "portfolio --strategy NAME`; sweep and optimize take them too)", show_lines=True,
                  title_justify="left")
    for name in ("strategy", "parameters: default [range step]", "description"):
        table.add_column(escape(name))
    for w in weight.values():
        params = "\n".join(f"{p.name}={p.default} {_param_range(p)}" for p in w.space.params)
        table.add_row(*map(escape, (w.name, params, w.description)))
    out.print(table)
    out.print(f"allocators (`workbench portfolio --allocator METHOD`): {', '.join(METHODS)}; a weight "
              "strategy picks and an allocator sizes its picks as <strategy>+<method>, e.g. "
              "xs_momentum+risk_parity", markup=False)


def _detail(name: str, source: str, description: str, space: ParamSpace) -> None:
    """One strategy's parameters: kind, default, range, grid size and meaning, then its constraints."""
    out.print(f"[bold]{escape(name)}[/] ({escape(source)}): {escape(description)}")
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "kind", "default", "range / choices", "grid", "meaning"):
        table.add_column(col, justify="right" if col == "grid" else "left")
    for p in space.params:
        try:
            size = f"{len(p.grid()):,}"
        except WorkbenchError:
            size = "give values"
        table.add_row(*map(escape, (p.name, p.kind, str(p.default), _param_range(p), size, p.doc)))
    out.print(table)
    for c in space.constraints:
        out.print(f"constraint: {c.expr}", markup=False)


def _param_range(p: Param) -> str:
    def num(v: float | None) -> str:
        return "" if v is None else (str(int(v)) if float(v).is_integer() else f"{v:g}")

    if p.kind in ("int", "float"):
        step = f" step {num(p.step)}" if p.step else ""
        return f"[{num(p.low)}..{num(p.high)}{step}]"
    if p.kind == "choice":
        return "{" + "|".join(map(str, p.choices)) + "}"
    return "{true|false}"
