"""The demo's tick-fills step: record a SIMULATED tape, backtest on its bars, report bar vs tick fills.

`workbench demo` calls `_demo_tickfills()` after its short live collection.
"""

from __future__ import annotations

from workbench.cli.common import _kv_table, _lake, out

REPORT = "tick_vs_bar_fills.html"


def _demo_tickfills() -> None:
    """Record 30 minutes of a SIMULATED venue through the collector on a virtual clock (a few
    seconds), backtest limit entries and market exits on 5s bars built from its trades, and fill
    every order again against the tape: the summary, and the report under reports/demo."""
    from workbench.backtest.tickfills import demo_tape
    from workbench.cli.demo import DEMO_REPORTS

    out.rule("tick fills: 30 min of a SIMULATED tape, dip_limit on its 5s bars, bar vs tick fills")
    res = demo_tape(_lake(), DEMO_REPORTS / REPORT)
    rec = res.recording
    rows = (f"{rec.rows.get('trades', 0):,} trades, {rec.rows.get('quotes', 0):,} quotes and "
            f"{rec.rows.get('book', 0):,} book rows")
    recorded = (f"recorded {rows} through the collector in {res.seconds['record']:.1f} s"
                if rec.recorded else "the lake holds this tape already")
    out.print(f"{rec.source} tape {rec.start:%Y-%m-%d %H:%M}..{rec.end:%H:%M} UTC: {recorded}; "
              f"{len(res.result.bars[rec.symbols[0]]):,} bars of {res.result.timeframe}, "
              f"{len(res.report):,} orders (fees 0.1 %, no slippage in the bar model)", highlight=False)
    out.print(_kv_table(res.summary.rows(), title="bar vs tick fills (back of the queue)",
                        head=("", "tick vs bar")))
    out.print(f"tick fills report: {res.path}", highlight=False)
