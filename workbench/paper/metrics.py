"""Prometheus metrics of a paper runner (equity, P&L, orders, rejections, fills, tick latency, staleness).

Served with the standard client library on 127.0.0.1 by default; each runner has its own registry
so tests and several runners in one process do not collide.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class RunnerMetrics:
    """The runner's gauges and counters, labelled by strategy (artifact)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.g_equity = Gauge(
            "workbench_paper_equity", "Strategy equity (cash + positions).", ["artifact"], registry=r
        )
        self.g_pnl = Gauge("workbench_paper_pnl", "Equity minus starting capital.", ["artifact"], registry=r)
        self.c_orders = Counter(
            "workbench_paper_orders", "Orders sent to the broker.", ["artifact"], registry=r
        )
        self.c_rejections = Counter(
            "workbench_paper_rejections", "Orders the broker refused.", ["artifact"], registry=r
        )
        self.c_fills = Counter(
            "workbench_paper_fills", "Fills booked in the journal.", ["artifact"], registry=r
        )
        self.h_latency = Histogram(
            "workbench_paper_tick_latency_seconds",
            "Decision latency of a tick.",
            ["artifact"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.g_staleness = Gauge(
            "workbench_paper_data_staleness_seconds",
            "Time since the last bar the strategy saw closed.",
            ["artifact"],
            registry=r,
        )
        self.g_last_tick = Gauge(
            "workbench_paper_last_tick_timestamp_seconds",
            "Clock time of the last tick.",
            ["artifact"],
            registry=r,
        )
        self.c_errors = Counter(
            "workbench_paper_tick_errors", "Ticks that ended in an error.", ["artifact"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Start the HTTP endpoint (``/metrics``); returns the server."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def tick(self, artifact: str, result: Any, now: pd.Timestamp, bar_close: pd.Timestamp) -> None:
        """Record a finished tick."""
        self.h_latency.labels(artifact).observe(result.latency_ms / 1000)
        self.g_last_tick.labels(artifact).set(pd.Timestamp(now).timestamp())
        self.g_staleness.labels(artifact).set(max((pd.Timestamp(now) - bar_close).total_seconds(), 0.0))
        if result.status == "error":
            self.c_errors.labels(artifact).inc()

    def staleness(self, artifact: str, seconds: float) -> None:
        """Record how old the newest bar is."""
        self.g_staleness.labels(artifact).set(max(seconds, 0.0))

    def equity(self, artifact: str, equity: float, pnl: float) -> None:
        """Record equity and P&L after a tick."""
        self.g_equity.labels(artifact).set(equity)
        self.g_pnl.labels(artifact).set(pnl)

    def order(self, artifact: str) -> None:
        """Count an order sent."""
        self.c_orders.labels(artifact).inc()

    def rejected(self, artifact: str) -> None:
        """Count a refused order."""
        self.c_rejections.labels(artifact).inc()

    def fill(self, artifact: str, fill: dict[str, Any]) -> None:
        """Count a booked fill."""
        self.c_fills.labels(artifact).inc()
