"""What every command group of the CLI shares: the consoles, the global state (--data-dir, --debug),
the lake it names, progress bars and the table/number formatting of the terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from workbench.data.lake import Lake

# piped output (CI logs, `make demo | tee`) gets a readable width instead of rich's 80 columns
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class _State:
    """What the root options (--data-dir, --debug) set for every command of this process."""

    data_dir: Path | None = None
    debug: bool = False
    argv: list[str] = []  # noqa: RUF012 - the command line being run (named in crash logs)


def _lake() -> Lake:
    return Lake(_State.data_dir)


def print_frame(df: pd.DataFrame, title: str | None = None) -> None:
    """Render a DataFrame as a rich table."""
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else
                         "left")
    for row in df.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    out.print(table)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1 or v == 0 else f"{v:.4g}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d %H:%M")
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return f"{v:,}" if isinstance(v, int) else str(v)


@contextmanager
def _progress(description: str, *, hide_on_error: bool = False
              ) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr with elapsed time and ETA; `update(label, n, total)` advances the bar
    of `label` by n."""
    bars: dict[str, TaskID] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
                  transient=False) as prog:
        def update(label: str, n: int, total: int) -> None:
            if label not in bars:
                bars[label] = prog.add_task(f"{description} {label}", total=total or None)
            prog.advance(bars[label], n)

        try:
            yield update
        except BaseException:
            if hide_on_error:  # the error line alone says what happened
                prog.live.transient = True
            raise



def _fmt_params(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _duration(seconds: float) -> str:
    """An estimate for people: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _span(inputs: Mapping[str, Any]) -> str:
    start, end = pd.Timestamp(inputs["start"]), pd.Timestamp(inputs["end"])
    synthetic = " [yellow]SYNTHETIC data[/]" if "synthetic" in inputs.get("sources", []) else ""
    return (f"{inputs['timeframe']} bars {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
            f"({inputs['bars']:,} bars, {inputs['calendar']}){synthetic}")


def _kv_table(rows: list[tuple[str, str]], title: str | None = None, head: tuple[str, str] | None = None
              ) -> Table:
    table = Table(title=title, show_header=head is not None, title_justify="left")
    table.add_column(head[0] if head else "", style="bold")
    table.add_column(head[1] if head else "", justify="right" if head else "left")
    for k, v in rows:
        table.add_row(escape(k), escape(v))
    return table


