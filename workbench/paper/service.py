"""A paper-trading session from a YAML config: artifacts, broker, journal, risk, schedule, metrics.

``workbench paper run pipelines/paper.yaml`` builds a `PaperSession` and calls `run`, which ticks
on a schedule aligned to the bar closes (APScheduler cron triggers; an interval trigger for an
accelerated simulated clock). SIGTERM/SIGINT let the running tick finish, then the process exits.
State lives under ``<data dir>/paper/<name>/``: ``journal.sqlite`` and, for the sim broker,
``sim_broker.sqlite``.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AfterValidator, Field, field_validator, model_validator

from workbench.alerts import AlertsSection
from workbench.config import ConfigModel, ConfigProblem, Duration, data_dir, load_yaml, validate
from workbench.data.calendar import Calendar
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, WorkbenchError
from workbench.paper.broker import Broker, BrokerKind, OrderStatus
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.risk import RiskLimits, RiskSection
from workbench.paper.runner import Runner, StrategySpec, TickResult
from workbench.paper.watch import PaperWatch, WatchSettings

log = logging.getLogger(__name__)
STREAM_WAIT = 5.0  # seconds a streamed tick waits for trades past the bar close
STREAM_GRACE = 0.1  # seconds after the close a received trade proves the bar's trades are all in

BROKERS: tuple[str, ...] = tuple(k.value for k in BrokerKind)
_BrokerName = Literal["sim", "alpaca", "ccxt"]


@dataclass(frozen=True, kw_only=True)
class StrategyEntry:
    """One artifact to trade: a registry ref and optional capital / trailing window overrides."""

    artifact: str
    capital: float | None = None
    window: int | None = None


@dataclass(frozen=True, kw_only=True)
class PaperConfig:
    """A validated paper-trading config (``pipelines/paper.yaml`` maps onto it one to one)."""

    name: str
    broker: str = "sim"
    broker_options: dict[str, Any] = field(default_factory=dict)
    cash: Amount | None = None
    strategies: tuple[StrategyEntry, ...] = ()
    risk: RiskLimits = field(default_factory=RiskLimits)
    delay: float = 2.0
    clock_start: pd.Timestamp | None = None
    clock_speed: float | None = None
    sync: bool = True
    source: str | None = None
    stream: bool = False
    metrics_port: int | None = None
    follow_timeout: float = 30.0
    alerts: WatchSettings | None = None
    path: Path | None = None

    def root(self) -> Path:
        """Where this session's journal and broker state live."""
        return data_dir() / "paper" / self.name


def _positive(v: float) -> float:
    if not v > 0:
        raise ConfigProblem(f"{{key}}={v!r} must be a positive amount")
    return v


Amount = Annotated[float, AfterValidator(_positive)]


class _Broker(ConfigModel):
    kind: _BrokerName = "sim"
    cash: Amount | None = None
    options: dict[str, Any] | None = None

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if any(re.search(r"key|secret|token|password", str(k), re.I) for k in v or {}):
            raise ConfigProblem("must not hold credentials; put API keys in the environment or a .env file")
        return v


class _Strategy(ConfigModel):
    artifact: str
    capital: Amount | None = None
    window: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_ref(cls, data: Any) -> Any:
        return {"artifact": data} if isinstance(data, str) else data

    @field_validator("window")
    @classmethod
    def _bars(cls, v: int | None) -> int | None:
        if v is not None and v < 10:
            raise ConfigProblem(f"{{key}}={v!r} must be a whole number of bars >= 10")
        return v


class _Clock(ConfigModel):
    start: Any = None
    speed: Any = None

    @model_validator(mode="after")
    def _both(self) -> _Clock:
        if self.start is None and self.speed is None:
            return self  # an empty clock: real time
        speed = self.speed
        positive = isinstance(speed, int | float) and not isinstance(speed, bool) and speed > 0
        if self.start is None or not positive:
            raise ConfigProblem("{key} needs a start time and a positive speed (market seconds per "
                                "wall second), e.g. {start: 2025-06-01, speed: 3600}")
        try:
            pd.Timestamp(self.start)
        except (ValueError, TypeError):
            raise ConfigProblem(f"{{key}}={self.start!r} is not a time", "start") from None
        return self

    def start_time(self) -> pd.Timestamp | None:
        """The clock's start in UTC (a time without a zone is UTC), None for real time."""
        if self.start is None:
            return None
        start = pd.Timestamp(self.start)
        return start.tz_localize("UTC") if start.tzinfo is None else start


class _Schedule(ConfigModel):
    delay: Duration = 2.0
    clock: _Clock | None = None


class _Data(ConfigModel):
    sync: bool | None = None  # default: on, unless the bars are streamed
    source: str | None = None
    stream: bool = False  # bars built from a collector's recorded trades; ticks on their close

    @model_validator(mode="after")
    def _one_way(self) -> _Data:
        if self.stream and self.sync:
            raise ConfigProblem("{key}: sync has no effect when the bars are streamed (stream: true "
                                "takes them from `workbench collect`): drop sync")
        if self.stream and self.source is not None:
            raise ConfigProblem("{key}: source has no effect when the bars are streamed (they come from "
                                "the artifacts' source, as recorded by `workbench collect`): drop source")
        return self


class _Metrics(ConfigModel):
    port: int | None = None

    @field_validator("port")
    @classmethod
    def _tcp(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 65536:
            raise ConfigProblem(f"{{key}}={v!r} must be a TCP port number")
        return v


class _Alerts(AlertsSection):
    """``alerts:`` of a paper config: the shared section plus the paper's two thresholds."""

    drawdown: float | None = None
    rejections: int = 3

    def watch(self) -> WatchSettings:
        """The section with its URLs read (`AlertsSection.settings`) and its thresholds checked."""
        return WatchSettings(alerts=self.settings(), drawdown=self.drawdown, rejections=self.rejections)


class _PaperFile(ConfigModel):
    """A paper config file as written (``pipelines/paper.yaml``); `load_config` makes it a PaperConfig."""

    name: Any = None
    broker: _Broker = _Broker()
    strategies: list[_Strategy] = Field(default=None, validate_default=True)
    risk: RiskSection | None = None
    schedule: _Schedule = _Schedule()
    data: _Data = _Data()
    metrics: _Metrics = _Metrics()
    alerts: _Alerts | None = None
    follow_timeout: Duration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ConfigProblem("expected a mapping of settings at the top level")
        return data

    @field_validator("name")
    @classmethod
    def _a_name(cls, v: Any) -> Any:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", str(v)):
            raise ConfigProblem(f"{{key}} {str(v)!r} may hold only letters, digits, '.', '_' and '-'")
        return v

    @field_validator("strategies", mode="before")
    @classmethod
    def _some(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ConfigProblem("list at least one strategy, e.g. strategies: [{artifact: sma_cross}]")
        return v

    @field_validator("broker", "schedule", "data", "metrics", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v  # `metrics:` with nothing under it: the defaults


def load_config(path: str | Path) -> PaperConfig:
    """Read and validate a paper config; one clear error per problem, naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"paper config {p} does not exist; see pipelines/paper.yaml for an example")
    f = validate(_PaperFile, load_yaml(p))
    clock = f.schedule.clock or _Clock()
    if f.data.stream and clock.speed is not None:
        raise ConfigError(f"{p}: schedule.clock cannot run with data.stream: streamed bars are live; "
                          "drop the clock, or drop stream to replay stored bars")
    return PaperConfig(
        name=str(f.name or p.stem),
        broker=f.broker.kind,
        broker_options=dict(f.broker.options or {}),
        cash=f.broker.cash,
        strategies=tuple(StrategyEntry(artifact=e.artifact, capital=e.capital, window=e.window)
                         for e in f.strategies),
        risk=f.risk.limits() if f.risk is not None else RiskLimits(),
        delay=f.schedule.delay,
        clock_start=clock.start_time(),
        clock_speed=float(clock.speed) if clock.speed else None,
        sync=bool(f.data.sync if f.data.sync is not None else not f.data.stream),
        source=f.data.source,
        stream=f.data.stream,
        metrics_port=f.metrics.port,
        follow_timeout=f.follow_timeout,
        alerts=_alert_settings(f.alerts, p),
        path=p,
    )


def _alert_settings(section: _Alerts | None, path: Path) -> WatchSettings | None:
    """The alerts section with its URLs read; its problems name the config file."""
    if section is None:
        return None
    try:
        return section.watch()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def specs_from_artifact(
    artifact: Any, *, capital: float | None = None, window: int | None = None
) -> list[StrategySpec]:
    """The runner specs of an artifact: one portfolio, or one per symbol when it was optimised per symbol;
    a book's (`workbench.promote.book`): each member's, on its share of the book's capital, named
    ``<book>@vN/<member>@vM``."""
    members = list(getattr(artifact, "members", None) or [])
    if members:
        from workbench.promote.registry import Registry

        where = artifact.path.parent.parent if getattr(artifact, "path", None) else None
        registry = Registry(where)
        total = float(capital if capital is not None else artifact.init_cash)
        specs = []
        for m in members:
            if float(m["share"]) <= 0:  # (the allocator gave it nothing)
                continue
            member = registry.get(m["ref"])
            for spec in specs_from_artifact(member, capital=total * float(m["share"]), window=window):
                specs.append(replace(spec, name=f"{artifact.name}@v{artifact.version}/{spec.name}"))
        return specs
    base = StrategySpec.from_artifact(artifact, capital=capital, window=window)
    if getattr(artifact, "portfolio", True) or len(base.symbols) == 1:
        return [base]
    return [replace(base, name=f"{base.name}/{s}", symbols=(s,)) for s in base.symbols]


# the risk limits a drafted config starts from (those of pipelines/paper.yaml)
RISK_DEFAULTS: dict[str, float | int] = {"max_position": 1.0, "max_gross": 1.0, "daily_loss_limit": 0.05,
                                         "max_drawdown": 0.25, "max_bar_move": 0.25, "stale_bars": 3}


def session_specs(config: PaperConfig, artifacts: list[Any]) -> list[StrategySpec]:
    """The runner specs of a config's artifacts (loaded in its order), refused in one line when they
    cannot run in one session: timeframes that differ, or venues the sim broker cannot simulate at once."""
    specs: list[StrategySpec] = []
    for e, a in zip(config.strategies, artifacts, strict=True):
        specs.extend(specs_from_artifact(a, capital=e.capital, window=e.window))
    tfs = {s.timeframe for s in specs}
    if len(tfs) > 1:
        raise ConfigError(
            f"strategies of one paper config must share a timeframe, got {sorted(tfs)}; "
            "run one config per timeframe"
        )
    if config.broker == BrokerKind.SIM:
        fills = {s.fill for s in specs}
        costs = {s.costs for s in specs}
        if len(fills) > 1 or len(costs) > 1:
            raise ConfigError(
                "the sim broker simulates one venue: its strategies must share fill convention "
                "and costs; run them in separate configs"
            )
    return specs


def draft_config(*, name: str, artifacts: list[str], broker: str = "sim", cash: float | None = None,
                 capital: float | None = None, window: int | None = None, clock_start: str | None = None,
                 clock_speed: float | None = None, metrics_port: int | None = None,
                 risk: Mapping[str, Any] | None = None, registry: Any = None) -> tuple[str, PaperConfig]:
    """A paper config trading `artifacts` (registry refs) as YAML text, and what it loads to.

    The text goes through `load_config`, the loader of `paper run`, and its artifacts are read and
    checked as a session would (one timeframe; one venue for the sim broker), so a draft that comes
    back runs. Risk limits start from `RISK_DEFAULTS` (`risk` overrides them, None drops one); alerts
    are left for the user to add (their URLs live in the environment). Any problem is one
    `ConfigError` line.
    """
    import tempfile

    import yaml

    from workbench.promote.registry import load_artifact

    if not artifacts:
        raise ConfigError("pick at least one artifact to trade")
    broker_section: dict[str, Any] = {"kind": broker}
    if cash is not None:
        broker_section["cash"] = cash
    strategies: list[Any] = []
    for ref in artifacts:
        entry: dict[str, Any] = {"artifact": ref}
        if capital is not None:
            entry["capital"] = capital
        if window is not None:
            entry["window"] = window
        strategies.append(entry)
    limits = {k: v for k, v in {**RISK_DEFAULTS, **(risk or {})}.items() if v is not None}
    doc: dict[str, Any] = {"name": name, "broker": broker_section, "strategies": strategies,
                           "risk": limits, "schedule": {"delay": "2s"}}
    if clock_start or clock_speed:
        doc["schedule"]["clock"] = {"start": clock_start, "speed": clock_speed}
    if metrics_port is not None:
        doc["metrics"] = {"port": metrics_port}
    head = (f"# Paper trading of {', '.join(artifacts)}: `workbench paper run <this file>`.\n"
            "# Drafted by the dashboard; API keys never go here (the environment or a .env file).\n")
    text = head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name if re.fullmatch(r'[A-Za-z0-9_.-]+', name) else 'draft'}.yaml"
        path.write_text(text)
        try:
            config = load_config(path)
        except ConfigError as exc:
            said = str(exc).replace(f"{path}:", "line ").replace(str(path), "the config")
            raise ConfigError(said) from None
    config = PaperConfig(**{**config.__dict__, "path": None})
    found = [load_artifact(e.artifact, registry) for e in config.strategies]
    session_specs(config, found)
    return text, config


def save_config(text: str, name: str, folder: str | Path | None = None) -> Path:
    """Write a drafted config (`draft_config`) as ``<folder>/<name>.yaml`` (default: the data folder's
    ``paper/configs``), atomically, never over an existing file."""
    from workbench.files import atomic_write

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"config name {name!r} may hold only letters, digits, '.', '_' and '-'")
    where = Path(folder) if folder is not None else data_dir() / "paper" / "configs"
    path = where / f"{name}.yaml"
    if path.exists():
        raise ConfigError(f"{path} exists; choose another name, or delete that file first")
    try:
        where.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}; choose a writable data folder") from None


class PaperSession:
    """Everything one `paper run` needs, built from a config (also used by status/halt/resume)."""

    def __init__(
        self,
        config: PaperConfig,
        *,
        lake: Any = None,
        broker: Broker | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        from workbench.promote.registry import load_artifact

        self.config = config
        self.root = config.root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.root / "journal.sqlite")
        self._wall = wall
        self.artifacts = [load_artifact(e.artifact) for e in config.strategies]
        self.specs = session_specs(config, self.artifacts)
        self.tf = Timeframe.parse(self.specs[0].timeframe)
        self._check_clock()
        self.lake = lake
        if self.lake is None:
            from workbench.data.lake import Lake

            self.lake = Lake(data_dir())
        symbols = list(dict.fromkeys(s for spec in self.specs for s in spec.symbols))
        self.sources = {s.source for s in self.specs}
        if config.stream and len(self.sources) > 1:
            raise ConfigError(f"streamed bars come from one collector, but these artifacts trade "
                              f"{', '.join(sorted(map(str, self.sources)))}: run one config per source")
        now = self.now()
        longest = max(max(s.window or max(s.lookback, 500), s.lookback) for s in self.specs)
        start = self.tf.floor(now) - self.tf.delta * (longest + 10) * 3
        if self.config.sync:
            self.sync_data(now, symbols, start)
        source = next(iter(self.sources)) if len(self.sources) == 1 else None
        self.feed = BarFeed(symbols, self.tf.name, lake=self.lake, source=source, start=start)
        self.broker = broker or self._broker()
        from workbench.paper.metrics import RunnerMetrics

        self.metrics = RunnerMetrics()
        self.runner = Runner(
            self.specs,
            broker=self.broker,
            journal=self.journal,
            feeds={s.name: self.feed for s in self.specs},
            risk=config.risk,
            follow_timeout=config.follow_timeout,
            metrics=self.metrics,
        )
        self.watch: PaperWatch | None = None
        if config.alerts is not None:
            from workbench.alerts import Alerter

            alerter = Alerter(config.alerts.alerts, source=f"workbench paper {config.name}")
            self.watch = PaperWatch(self.journal, self.specs, alerter, settings=config.alerts,
                                    risk=config.risk, config=config.path)
        self._stop = threading.Event()

    # ------------------------------------------------------------------ clock
    def _check_clock(self) -> None:
        c = self.config
        if c.clock_speed is None:
            return
        stored = self.journal.meta("clock")
        assert c.clock_start is not None  # a simulated clock has both (as in `now`)
        mine = f"{c.clock_start.isoformat()}|{c.clock_speed!r}"
        if stored is None:
            self.journal.set_meta("clock", mine)
            self.journal.set_meta("clock_wall0", repr(self._wall()))
        elif stored != mine:
            raise ConfigError(
                f"journal {self.journal.path} runs a simulated clock {stored}, the config asks for "
                f"{mine}; keep the clock or use a new name"
            )

    def now(self) -> pd.Timestamp:
        """The session clock: wall time, or the accelerated simulated clock (which survives restarts)."""
        c = self.config
        if c.clock_speed is None:
            return pd.Timestamp.now(tz="UTC")
        wall0 = float(self.journal.meta("clock_wall0") or self._wall())
        assert c.clock_start is not None
        return c.clock_start + pd.Timedelta(seconds=(self._wall() - wall0) * c.clock_speed)

    # ------------------------------------------------------------------ parts
    def _broker(self) -> Broker:
        c = self.config
        kind = BrokerKind(c.broker)
        if kind is BrokerKind.SIM:
            from workbench.paper.sim import SimBroker

            spec = self.specs[0]
            cash = c.cash if c.cash is not None else sum(s.capital for s in self.specs)
            return SimBroker(
                self.root / "sim_broker.sqlite",
                feed=self.feed,
                costs=spec.costs,
                fill=spec.fill,
                cash=float(cash),
                clock=self.now,
                lots=spec.lots,
            )
        if kind is BrokerKind.ALPACA:
            from workbench.paper.alpaca import AlpacaBroker

            return AlpacaBroker(**c.broker_options)
        from workbench.paper.ccxt import CcxtBroker

        symbols = list(dict.fromkeys(s for spec in self.specs for s in spec.symbols))
        return CcxtBroker(**{"symbols": symbols, **c.broker_options})

    def sync_data(self, now: pd.Timestamp, symbols: list[str], start: pd.Timestamp | None = None) -> None:
        """Fetch the bars that closed since the lake's last one (incremental)."""
        from workbench.data.sources import get_source

        spec = self.config.source or (next(iter(self.sources)) if len(self.sources) == 1 else None)
        if spec is None or spec == "csv":
            return
        src = get_source(spec)
        for sym in symbols:
            base = self.lake.stored_timeframe(src.name, sym, self.tf) or self.tf
            end = base.floor(now)
            cov = self.lake.series_coverage(src.name, sym, base)
            if cov is not None and cov.last is not None and cov.last + base.delta >= end:
                continue  # the lake already holds every bar closed by now
            first = None if cov is not None and cov.first is not None else start
            try:
                self.lake.sync(src, [sym], base, first, end)
            except WorkbenchError as exc:
                self.journal.error(None, f"data sync of {sym} failed: {exc}")
                log.error("data sync of %s failed: %s", sym, exc)

    # ------------------------------------------------------------------ ticks
    def tick(self) -> list[TickResult]:
        """One scheduled tick: sync data, read new bars, run every strategy whose bar closed."""
        now = self.now()
        symbols = list(self.feed.symbols)
        if self.config.sync:
            self.sync_data(now, symbols)
        if self.config.stream:
            self._await_close(now, symbols)
        self.feed.refresh()
        results = self.runner.tick(now)
        if self.watch is not None:
            self.watch.check(results)  # (never raises: an alert problem does not stop trading)
        for r in results:
            if r.status in ("done", "error", "stale"):
                log.info(
                    "%s %s bar %s: %s %d order(s) %d fill(s) %.1f ms %s",
                    now.isoformat(),
                    r.artifact,
                    r.bar,
                    r.status,
                    len(r.orders),
                    r.fills,
                    r.latency_ms,
                    r.message,
                )
        return results

    def _await_close(self, now: pd.Timestamp, symbols: list[str]) -> None:
        """Streamed bars: wait until the collector has recorded a trade received STREAM_GRACE after
        the bar that closed by `now` (one connection delivers in order: every trade of the bar is
        in), at most STREAM_WAIT seconds (then the bars are what was recorded)."""
        from workbench.data.ticks import TickKind

        close = self.tf.floor(now)
        source = next(iter(self.sources))
        deadline = time.monotonic() + STREAM_WAIT
        passed = close.value + int(STREAM_GRACE * 1e9)
        while time.monotonic() < deadline and not self._stop.is_set():
            last = self.lake.ticks.latest_receipt(source, TickKind.TRADES)
            if last is not None and last >= passed:
                return
            time.sleep(0.01)
        log.warning("%s: no trade recorded %.1f s after the %s close: deciding on what was recorded",
                    source, STREAM_WAIT, close)

    def stop(self) -> None:
        """Ask `run` to return after the tick in progress."""
        self._stop.set()

    def run(
        self, *, max_ticks: int | None = None, on_tick: Callable[[list[TickResult]], None] | None = None
    ) -> int:
        """Tick on the schedule until stopped (SIGTERM/SIGINT or `stop`); returns the number of ticks."""
        from apscheduler.schedulers.background import BackgroundScheduler

        if self.config.metrics_port is not None:
            self.metrics_server = self.metrics.serve(self.config.metrics_port)
        count = 0
        lock = threading.Lock()

        def job() -> None:
            nonlocal count
            if self._stop.is_set():
                return
            with lock:
                try:
                    results = self.tick()
                except Exception as exc:  # a failing tick is journaled; the schedule goes on
                    self.journal_error(exc)
                    results = []
                count += 1
                if on_tick is not None:
                    on_tick(results)
                if max_ticks is not None and count >= max_ticks:
                    self._stop.set()

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread():
            for sig in previous:
                signal.signal(sig, lambda *_: self._stop.set())
        # an accelerated clock fires faster than slow ticks finish: skipped runs are expected there
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        sched = BackgroundScheduler(timezone="UTC")
        sched.add_job(job, self.trigger(), id="tick", max_instances=1, coalesce=True, misfire_grace_time=None)
        sched.start()
        job()  # catch up with the bar that closed last, without waiting for the next one
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            sched.shutdown(wait=True)
            with lock:  # let a tick in progress finish
                pass
            if threading.current_thread() is threading.main_thread():
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            server = getattr(self, "metrics_server", None)
            if server is not None:
                server.shutdown()
        return count

    def journal_error(self, exc: BaseException) -> None:
        """Record an unexpected tick failure."""
        msg = f"{type(exc).__name__}: {exc}"
        self.journal.error(None, msg)
        log.exception("tick failed")

    def trigger(self) -> Any:
        """The APScheduler trigger: each bar close (per the markets' calendar) plus the delay, or an
        interval on an accelerated clock."""
        from apscheduler.triggers.interval import IntervalTrigger

        c = self.config
        if c.clock_speed is not None:
            return IntervalTrigger(seconds=max(self.tf.seconds / c.clock_speed, 0.05))
        calendars = {s.calendar for s in self.specs}
        calendar = Calendar(calendars.pop() if len(calendars) == 1 else "24/7")
        return bar_close_trigger(calendar, self.tf, c.delay)

    def close(self) -> None:
        """Release the journal and the broker; alerts still queued get a few seconds to go out."""
        if self.watch is not None:
            self.watch.alerter.close(timeout=5.0)
        self.journal.close()
        self.broker.close()


def status(journal: Journal) -> dict[str, Any]:
    """The book: per strategy cash, equity, P&L, positions, last tick; halts, orders, errors."""
    from workbench.paper.runner import specs_in

    out: dict[str, Any] = {"strategies": []}
    for spec in specs_in(journal):
        ledger = journal.ledger(spec.name, spec.capital)
        last_equity = journal.last_equity(spec.name)
        equity = last_equity if last_equity is not None else spec.capital
        last = journal.last_tick(spec.name) or {}
        out["strategies"].append(
            {
                "name": spec.name,
                "capital": spec.capital,
                "cash": float(ledger.cash),
                "equity": equity,
                "pnl": equity - spec.capital,
                "positions": {s: float(q) for s, q in ledger.positions.items()},
                "last_bar": last.get("bar"),
                "last_status": last.get("status"),
                "latency_ms": last.get("latency_ms"),
            }
        )
    counts = journal.order_counts()
    out["orders"] = sum(counts.values())
    out["open_orders"] = sum(counts.get(s.value, 0) for s in OrderStatus if not s.done)
    out["rejected"] = counts.get(OrderStatus.REJECTED.value, 0)
    out["fills"] = journal.fill_count()
    out["halts"] = journal.active_halts()
    errs = journal.errors_frame(5)
    out["errors"] = [
        {"time": pd.Timestamp(t, unit="s", tz="UTC").isoformat(timespec="seconds"), "message": m}
        for t, m in zip(errs["time"], errs["message"], strict=True)
    ]
    return out


def bar_close_trigger(calendar: Calendar, tf: Timeframe, delay: float) -> Any:
    """An APScheduler trigger firing `delay` seconds after every bar close the calendar expects.

    24/7 markets close a bar every interval; exchange calendars only in sessions (no ticks at
    night, on weekends or holidays), so a tick always has a fresh bar to act on.
    """
    from apscheduler.triggers.base import BaseTrigger

    class BarCloseTrigger(BaseTrigger):
        __slots__ = ()

        def get_next_fire_time(self, previous_fire_time: Any, now: Any) -> Any:
            ref = pd.Timestamp(previous_fire_time if previous_fire_time is not None else now)
            ref = ref.tz_localize("UTC") if ref.tzinfo is None else ref.tz_convert("UTC")
            after = ref - tf.delta - pd.Timedelta(seconds=delay)
            opens = calendar.next_expected(after, tf)  # the first bar whose close + delay is after ref
            if opens is None:
                return None
            return (opens + tf.delta + pd.Timedelta(seconds=delay)).to_pydatetime()

        def __str__(self) -> str:
            return f"bar close ({calendar.code}, {tf.name}) + {delay:g}s"

    return BarCloseTrigger()
