"""`workbench collect`: record live trades, quotes and books into the lake; `collect status`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from workbench.cli.common import _lake, out, print_frame
from workbench.errors import ConfigError

collect_app = typer.Typer(help="Record live trades, quotes and order books into the lake's tick tables.")


@collect_app.callback(invoke_without_command=True)
def collect_cmd(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(help="alpaca or ccxt:<exchange>.")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated, e.g. BTC/USD,ETH/USD.")] = None,
    streams: Annotated[str | None, typer.Option(help="Comma-separated: trades, quotes, book [default: "
                                                "trades].")] = None,
    config: Annotated[Path | None, typer.Option(help="A collect.yaml (instead of the flags).")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: run until "
                                                   "Ctrl-C or SIGTERM).")] = None,
    book_depth: Annotated[int | None, typer.Option(help="Levels per side of stored books [default: 10].")
                          ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")
                            ] = None,
) -> Any:
    """Collect until stopped; a restart resumes and refills the downtime from REST."""
    if ctx.invoked_subcommand is not None:
        given = [n for n, v in (("--source", source), ("--symbols", symbols), ("--streams", streams),
                                ("--config", config), ("--duration", duration),
                                ("--book-depth", book_depth), ("--metrics-port", metrics_port))
                 if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} have no effect on `collect {ctx.invoked_subcommand}`: "
                              "drop them")
        return None
    from workbench.config import split_list
    from workbench.data.collector import CollectSettings, collect, load_collect_config

    flags = {k: v for k, v in (("source", source), ("symbols", symbols), ("streams", streams),
                               ("book_depth", book_depth), ("metrics_port", metrics_port)) if v is not None}
    if config is not None:
        if {"source", "symbols", "streams", "book_depth"} & set(flags):
            named = ", ".join("--" + k.replace("_", "-") for k in flags)
            raise ConfigError(f"--config {config} and {named} both say what to collect: use one or the other")
        settings = load_collect_config(config)
        if metrics_port is not None:
            settings = settings.model_copy(update={"metrics_port": metrics_port})
    else:
        if source is None or symbols is None:
            raise ConfigError("say what to collect: --source and --symbols (or --config collect.yaml)")
        settings = CollectSettings.from_options(source=source, symbols=split_list(symbols),
                                                streams=split_list(streams or "trades"),
                                                book_depth=book_depth, metrics_port=metrics_port)
    lake = _lake()
    lake.check_writable()
    started = time.monotonic()
    status = collect(lake, settings, duration=duration)
    took = time.monotonic() - started
    rows = ", ".join(f"{n:,} {k}" for k, n in sorted(status.messages.items())) or "nothing"
    out.print(f"collected {rows} from {status.source} in {took:.1f} s into {lake.root} "
              f"({status.reconnects} reconnects, {status.backfilled:,} trades refilled, {status.gaps} gaps"
              f", {status.duplicates:,} duplicates dropped)")
    return status


@collect_app.command("status")
def collect_status() -> None:
    """Every collector that wrote into this lake: running or not, rows, reconnects, gaps, latency."""
    from workbench.data.collector import read_status

    rows = read_status(_lake())
    if not rows:
        out.print("no collector has written into this lake: start one with `workbench collect`")
        return
    now = time.time()
    frame = pd.DataFrame([{
        "source": r["source"], "state": "running" if r["running"] else "stopped",
        "symbols": ",".join(r["symbols"]), "streams": ",".join(r["streams"]),
        "rows": sum(r.get("messages", {}).values()),
        "last message": f"{now - r['last_message']:.1f} s ago" if r.get("last_message") else "never",
        "reconnects": r.get("reconnects", 0), "gaps": r.get("gaps", 0),
        "refilled": r.get("backfilled", 0), "durable p99 ms": round(r.get("durable_p99_ms", 0.0), 1),
        "last error": r.get("last_error", ""),
    } for r in rows])
    print_frame(frame, title="collectors")
