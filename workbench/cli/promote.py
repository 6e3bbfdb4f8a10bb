"""`workbench promote`: judge a run against the gates and version it; list, show, diff and roll back.

``workbench promote <run-id>`` and ``workbench promote ls`` share one group: a first word that is not a
subcommand is taken as a run id for the hidden ``run`` command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from workbench.errors import PromotionRejected


class _RunByDefault(TyperGroup):
    """A group whose unknown first word (a run id) or leading option runs the hidden `run` command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "run", self.commands["run"], args
        return super().resolve_command(ctx, args)


promote_app = typer.Typer(
    cls=_RunByDefault, no_args_is_help=True,
    help="Promote a walk-forward run that passes the gates to a versioned strategy artifact.\n\n"
    "workbench promote RUN_ID [--gates FILE] [--name NAME] [--force --reason TEXT] [--dry-run]\n\n"
    "then: ls, show REF, diff REF_A REF_B, rollback NAME [--to N] --reason TEXT; book --members A,B --name N "
    "combines promoted artifacts into one.")

GatesOpt = Annotated[Path | None, typer.Option(
    "--gates", help="Gates YAML file (default: the built-in gates, as in pipelines/promotion.yaml).")]
RefArg = Annotated[str, typer.Argument(help="name (current version), name@3, or a path to a .json artifact.")]


def _registry() -> Any:
    from workbench.cli.common import _State
    from workbench.config import data_dir
    from workbench.promote.registry import Registry

    return Registry(data_dir(_State.data_dir) / "registry")


def _verdict_table(verdicts: list[Any], title: str) -> Table:
    from workbench.promote.gates import format_value

    table = Table(title=title, title_justify="left")
    for c in ("gate", "value", "rule", "result", "detail"):
        table.add_column(c, justify="right" if c == "value" else "left")
    for v in verdicts:
        table.add_row(escape(v.name), format_value(v.value), f"{v.op.value} {format_value(v.threshold)}",
                      "[green]pass[/]" if v.passed else "[bold red]FAIL[/]", escape(v.detail))
    return table


@promote_app.command("run", hidden=True)
def promote_run_cmd(
    run_id: Annotated[str, typer.Argument(help="Walk-forward run id (see `workbench optimize runs`).")],
    gates: GatesOpt = None,
    name: Annotated[str | None, typer.Option(
        help="Artifact name (default <strategy>-<symbols>-<timeframe>).")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if gates fail (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why: required with --force, kept in the history.")
                      ] = None,
    dry_run: Annotated[bool, typer.Option(help="Evaluate the gates only; exit 1 if any fails.")] = False,
) -> None:
    """Judge a walk-forward run against the gates; store it as the next version when it passes."""
    from workbench.cli.common import _lake, out
    from workbench.promote.promotion import promote

    lake = _lake()
    try:
        res = promote(run_id, gates=gates, name=name, force=force, reason=reason, lake=lake,
                      registry=_registry(), runs_root=lake.root / "runs", dry_run=dry_run)
    except PromotionRejected as exc:
        verdicts = getattr(exc, "verdicts", None)
        if verdicts:
            out.print(_verdict_table(verdicts, f"promotion gates for {run_id}: refused"))
        raise
    failed = res.failed
    title = f"promotion gates for {run_id}: " + ("all passed" if not failed else
                                                 f"{len(failed)} failed" + (", forced" if force else ""))
    out.print(_verdict_table(res.verdicts, title))
    if res.artifact is None:  # dry run
        if failed:
            raise typer.Exit(1)
        return
    a = res.artifact
    if res.already_current:
        out.print(f"{a.ref} is already current for this run, parameters and verdicts; nothing written",
                  markup=False, highlight=False)
    else:
        forced = f" (FORCED: {a.force_reason})" if a.forced and failed else ""
        out.print(f"promoted {a.ref}{forced}: {a.strategy} {_params(a.params)} from fold {a.params_fold}",
                  markup=False, highlight=False)
    out.print(f"artifact: {a.path}", markup=False, highlight=False)


@promote_app.command("book")
def promote_book_cmd(
    members: Annotated[str, typer.Option(
        help="Artifacts to combine, comma-separated (name or name@vN), at least two.")],
    name: Annotated[str, typer.Option(help="The book's artifact name.")],
    allocator: Annotated[str, typer.Option(
        help="How the capital is split: equal, inverse_vol, risk_parity, hrp, mean_variance, "
             "max_diversification or kelly (fitted on the members' out-of-sample returns).")] = "inverse_vol",
    window: Annotated[int, typer.Option(help="Trailing out-of-sample bars the allocator fits on.")] = 500,
    gross: Annotated[float, typer.Option(help="Share of the capital the members trade (rest: cash).")] = 1.0,
    max_weight: Annotated[float | None, typer.Option(help="Largest share of one member.")] = None,
    capital: Annotated[float, typer.Option(help="The book's capital.")] = 100_000.0,
    reason: Annotated[str | None, typer.Option(help="Why, kept in the history.")] = None,
) -> None:
    """Combine promoted artifacts into one book (an allocator over their out-of-sample returns), backtest
    it and store it as the next version of NAME; the paper runner trades it as its members."""
    from workbench.backtest.allocators import Allocator
    from workbench.cli.common import _lake, out
    from workbench.promote.book import combine

    refs = [r.strip() for r in members.split(",") if r.strip()]
    alloc = Allocator(method=allocator, window=window, gross=gross, max_weight=max_weight)
    lake = _lake()
    res = combine(refs, alloc, name=name, capital=capital, registry=_registry(), runs_root=lake.root / "runs",
                  lake=lake, reason=reason)
    table = Table(title=f"book {name}: {allocator} over {len(res.oos_returns)} out-of-sample bars",
                  title_justify="left")
    for c in ("member", "share", "capital"):
        table.add_column(c, justify="left" if c == "member" else "right")
    for ref, share in res.shares.items():
        table.add_row(escape(str(ref)), f"{share:.2%}", f"{share * capital:,.2f}")
    out.print(table)
    m, o = res.metrics, res.oos_metrics
    span = f"{res.equity.index[0]:%Y-%m-%d}..{res.equity.index[-1]:%Y-%m-%d}"
    out.print(f"out of sample: return {o['total_return']:.2%}, Sharpe {o['sharpe']:.2f}, max drawdown "
              f"{o['max_drawdown']:.2%}; backtest {span}: return {m['total_return']:.2%}, Sharpe "
              f"{m['sharpe']:.2f}", highlight=False)
    a = res.artifact
    assert a is not None
    verb = "promoted" if res.promoted else "already current (same members and shares), nothing written:"
    out.print(f"{verb} {a.ref}: trade it with `workbench paper replay {a.ref}` or a paper config",
              markup=False, highlight=False)


def _params(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


@promote_app.command("ls")
def promote_ls_cmd() -> None:
    """List every promoted version (current ones marked)."""
    from workbench.cli.common import out, print_frame

    reg = _registry()
    table = reg.list()
    if table.empty:
        out.print(f"nothing promoted yet in {reg.root}: run `workbench promote <run-id>`", markup=False)
        return
    import pandas as pd

    table = table.assign(current=table["current"].map({True: "*", False: ""}),
                         forced=table["forced"].map({True: "forced", False: ""}),
                         created_at=pd.to_datetime(table["created_at"], utc=True, errors="coerce"))
    cols = ["name", "version", "current", "strategy", "run_id", "created_at", "forced", "gates",
            "oos_sharpe", "deflated_sharpe", "pbo"]
    print_frame(table[cols], title=f"registry {reg.root}")


@promote_app.command("show")
def promote_show_cmd(ref: RefArg) -> None:
    """Print an artifact: parameters, market, costs, gates, evidence, history."""
    from workbench.cli.common import _kv_table, out, print_frame
    from workbench.promote.gates import format_value

    reg = _registry()
    a = reg.get(ref)
    current = None
    if a.path is not None and a.path.parent.parent == reg.root:
        current = reg.current(a.name)
    d = a.data
    if a.members:  # a book: its members and their shares, its out-of-sample record
        _show_book(a, current)
        return
    rows = [("artifact", f"{a.ref}{' (current)' if current == a.version else ''}"),
            ("strategy", a.strategy), ("params", _params(a.params)),
            ("params from", f"fold {a.params_fold} (the most recent train window)"),
            ("symbols", ", ".join(a.symbols)), ("timeframe", f"{a.timeframe} ({a.calendar}, "
                                                              f"{a.periods_per_year:g} bars/year)"),
            ("data", f"{d.get('source')} {d.get('start')} .. {d.get('end')} (exclusive), "
                     f"{d.get('bars')} bars"),
            ("fingerprint", str(d.get("fingerprint"))),
            ("costs", _params(a.costs)), ("fill", a.fill), ("sizing", _params(a.sizing)),
            ("direction", a.direction), ("cash / max exposure", f"{a.init_cash:,.0f} / {a.max_exposure:g}"),
            ("lookback", f"{a.lookback} bars"), ("run", a.run_id),
            ("code version", f"{a.code_version} (run: {a.run_code_version})"), ("created", a.created_at),
            ("gates file", f"{a.gates_file.get('path') or 'built-in defaults'} "
                           f"(sha256 {str(a.gates_file.get('sha256'))[:12]})"),
            ("forced", f"yes: {a.force_reason}" if a.forced else "no")]
    out.print(_kv_table(rows, title=a.ref))
    n_ok = len(a.gates) - len(a.failed_gates)
    out.print(_verdict_table(a.verdicts(), f"gates ({n_ok}/{len(a.gates)} passed)"))
    ev = a.evidence
    ev_rows = [(k, format_value(v)) for k, v in ev.get("values", {}).items()]
    out.print(_kv_table(ev_rows, title="evidence"))
    import pandas as pd

    folds = pd.DataFrame([{"fold": f["fold"], "test": f"{str(f.get('test_start'))[:10]} .. "
                           f"{str(f.get('test_end'))[:10]}",
                           "params": _params(f["params"]) if f.get("params") else "no feasible trial",
                           "IS sharpe": f.get("is_sharpe"), "OOS sharpe": f.get("oos_sharpe")}
                          for f in a.fold_params])
    if not folds.empty:
        print_frame(folds, title="chosen parameters per fold")
    if a.path is not None and a.path.parent.parent == reg.root:
        hist = pd.DataFrame([{"time": str(h.get("time", ""))[:19].replace("T", " "),
                              "action": h.get("action"),
                              "version": f"v{h['version']}" if h.get("version") else "",
                              "previous": f"v{h['previous']}" if h.get("previous") else "",
                              "run_id": h.get("run_id") or "", "forced": "forced" if h.get("forced") else "",
                              "reason": h.get("reason") or "", "user": h.get("user") or ""}
                             for h in reg.history(a.name)])
        if not hist.empty:
            print_frame(hist, title=f"history of {a.name}")


def _show_book(a: Any, current: int | None) -> None:
    """`promote show` of a book (`workbench.promote.book`)."""
    from workbench.cli.common import _kv_table, out
    from workbench.promote.gates import format_value

    alloc = a.params.get("allocator", {})
    rows = [("artifact", f"{a.ref}{' (current)' if current == a.version else ''}"),
            ("book of", ", ".join(m["ref"] for m in a.members)),
            ("allocator", f"{alloc.get('method')} over {a.data.get('oos_bars')} out-of-sample bars "
                          f"{str(a.data.get('oos_start'))[:10]} .. {str(a.data.get('oos_end'))[:10]}"),
            ("capital", f"{a.init_cash:,.0f}"), ("timeframe", a.timeframe),
            ("code version", a.code_version), ("created", a.created_at)]
    out.print(_kv_table(rows, title=a.ref))
    table = Table(title="members", title_justify="left")
    for c in ("member", "share", "capital", "gates passed"):
        table.add_column(c, justify="left" if c == "member" else "right")
    passed = a.evidence.get("members_passed", {})
    for m in a.members:
        table.add_row(escape(m["ref"]), f"{m['share']:.2%}", f"{m['share'] * a.init_cash:,.2f}",
                      "yes" if passed.get(m["ref"]) else "no (forced)")
    out.print(table)
    for key, title in (("oos_metrics", "out of sample (each member's OOS returns on its share)"),
                       ("backtest_metrics", "backtest (members on their shares, common span)")):
        figures = a.evidence.get(key, {})
        shown = [(k, format_value(figures.get(k))) for k in ("total_return", "sharpe", "max_drawdown",
                                                             "annual_volatility")]
        out.print(_kv_table(shown, title=title))


@promote_app.command("diff")
def promote_diff_cmd(ref_a: RefArg, ref_b: RefArg) -> None:
    """Fields that differ between two artifacts (parameters, gates, evidence, data...)."""
    from workbench.cli.common import out

    reg = _registry()
    a, b = reg.get(ref_a), reg.get(ref_b)
    rows = reg.diff(ref_a, ref_b)
    if not rows:
        out.print(f"{a.ref} and {b.ref} are identical", markup=False)
        return
    table = Table(title=f"{a.ref} vs {b.ref}: {len(rows)} difference(s)", title_justify="left")
    for c in ("field", a.ref, b.ref):
        table.add_column(escape(c))
    for key, va, vb in rows:
        table.add_row(escape(key), escape(_short(va)), escape(_short(vb)))
    out.print(table)


def _short(v: Any, width: int = 60) -> str:
    text = "" if v is None else v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= width else text[: width - 3] + "..."


@promote_app.command("rollback")
def promote_rollback_cmd(
    name: Annotated[str, typer.Argument(help="Artifact name (see `workbench promote ls`).")],
    reason: Annotated[str | None, typer.Option(help="Why (required; kept in the history).")] = None,
    to: Annotated[int | None, typer.Option("--to", help="Version to make current (default: the one "
                                           "below the current).")] = None,
) -> None:
    """Make an earlier (or any) version current again; the change and its reason are logged."""
    from workbench.cli.common import out

    reg = _registry()
    before = reg.current(name) if reg.versions(name) else None
    a = reg.rollback(name, to, reason=reason or "")
    out.print(f"{name}: current v{before} -> v{a.version} (run {a.run_id}, {a.strategy} "
              f"{_params(a.params)})", markup=False, highlight=False)
