"""A collector running in a thread of the test (or benchmark), stopped as SIGTERM would stop it."""

from __future__ import annotations

import asyncio
import threading

from workbench.data.collector import Collector, CollectorStatus


class Running:
    """`collector.run` in a thread from construction until `stop()`, which returns its last status
    (and raises what the run raised)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            threading.Thread(target=lambda: (self._stop.wait(), loop.call_soon_threadsafe(stop.set)),
                             daemon=True).start()
            await self.collector.run(stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 30.0) -> CollectorStatus:
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the collector did not stop"
        if self.error:
            raise self.error
        return self.collector.status
