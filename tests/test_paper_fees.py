"""The runner against venues that charge fees in the asset (issue 13, item 1): Alpaca's paper API fake
with its crypto fees, through the unmodified alpaca-py client. The journal must hold what the account
holds, exits must sell what is held, and an exit the venue refuses must not be re-sent blindly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from paper_helpers import BRACKETS, brackets_registered, build_lake, spec_for
from servers.alpaca import API_KEY, SECRET_KEY
from servers.alpaca_trading import ORDERS, AlpacaTradingFake
from servers.loopback import guard_loopback

from workbench.backtest.engine import Costs, load_bars
from workbench.paper.alpaca import AlpacaBroker
from workbench.paper.broker import OrderRequest, OrderType, Side
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner

pytestmark = pytest.mark.network

SYMBOL = "BTC/USD"
EXITS = ("exit", "slx", "tpx", "tslx")


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    guard_loopback(monkeypatch)
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "WORKBENCH_ALPACA_TRADING_URL",
                 "WORKBENCH_ALPACA_BASE_URL", "WORKBENCH_ALPACA_CRYPTO_TAKER_FEE",
                 "WORKBENCH_ALPACA_CRYPTO_MAKER_FEE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    monkeypatch.chdir(tmp_path)
    with brackets_registered():
        yield


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    # only the bars read below (synthetic bars do not depend on the range asked for)
    lake = build_lake(tmp_path_factory.mktemp("fees_lake"), symbols=("BTC/USDT",),
                      start=pd.Timestamp("2025-02-20", tz="UTC"), end=pd.Timestamp("2025-03-11", tz="UTC"))
    return load_bars(lake, ["BTC/USDT"], "1h", "2025-02-20", "2025-03-10")["BTC/USDT"]


class AlpacaRun:
    """A long-only bracket strategy on BTC/USD traded by the runner through AlpacaBroker on the fake."""

    def __init__(self, tmp: Path, bars: pd.DataFrame, fake: AlpacaTradingFake, symbol: str = SYMBOL,
                 **spec_kw: object) -> None:
        self.fake = fake
        self.bars = bars
        self.symbol = symbol
        self.feed = BarFeed((symbol,), "1h", frames={symbol: bars})
        costs = Costs(fees=0.0025, slippage=0.0, slippage_vol=0.0)
        spec_kw = {"direction": "long", "costs": costs, **spec_kw}
        spec = spec_for(BRACKETS.name, {"seed": 3}, symbols=(symbol,), **spec_kw)  # type: ignore[arg-type]
        self.spec = replace(spec, anchor=bars.index[0])
        self.broker = AlpacaBroker(base_url=fake.url, data_url=fake.url, timeout=2.0, retries=0,
                                   retry_wait=0.0)
        self.journal = Journal(tmp / "journal.sqlite")
        self.runner = Runner([self.spec], broker=self.broker, journal=self.journal,
                             feeds={self.spec.name: self.feed},
                             risk=RiskLimits(max_bar_move=None, stale_bars=None),
                             follow_timeout=2.0, poll=0.005)

    def run(self, times: pd.DatetimeIndex) -> None:
        for t in times:
            self.fake.set_price(self.symbol, float(self.bars["close"].asof(t)))
            self.runner.tick_one(self.spec, t)

    def exit_posts(self) -> list[str]:
        import json

        ids = [json.loads(r.body)["client_order_id"] for r in self.fake.requests("POST", ORDERS)]
        return [i for i in ids if i.rsplit("-", 1)[-1] in EXITS]

    def close(self) -> None:
        self.journal.close()
        self.broker.close()


@pytest.fixture
def fake() -> Iterator[AlpacaTradingFake]:
    with AlpacaTradingFake(cash=100_000.0) as f:
        yield f


def test_runner_round_trips_with_fees_in_the_asset(tmp_path: Path, bars: pd.DataFrame,
                                                    fake: AlpacaTradingFake) -> None:
    """Every entry books its fee in BTC, the journal always equals the account, every exit fills."""
    run = AlpacaRun(tmp_path, bars, fake)
    try:
        run.run(bars.index[10:210])
        j, name = run.journal, run.spec.name
        fills = j.fills_frame(name)
        legs = j.orders_frame(name).set_index("client_order_id")["leg"]
        entries = fills[fills["client_order_id"].map(legs) == "entry"]
        exits = fills[fills["client_order_id"].map(legs).isin(EXITS)]
        assert len(entries) >= 2 and len(exits) >= 2
        assert set(entries["fee_currency"]) == {"BTC"} and set(exits["fee_currency"]) == {"USD"}
        assert all(Decimal(f) == (Decimal(q) * Decimal("0.0025")).quantize(Decimal("1e-9"))
                   for q, f in zip(entries["qty"], entries["fee"], strict=True))
        assert j.active_halts() == []  # reconciliation never found a difference
        refused = j.orders_frame(name).query("status == 'rejected'")
        assert not refused["leg"].isin(EXITS).any(), refused[["leg", "reject_reason"]]
        held = run.broker.positions()
        book = j.ledger(name, run.spec.capital).positions
        assert {s: Decimal(repr(p.qty)) for s, p in held.items()} == book
        cash = float(j.ledger(name, run.spec.capital).cash)  # (Alpaca's average prices have 6 decimals)
        assert run.broker.account().cash == pytest.approx(cash, abs=1e-3)
    finally:
        run.close()


def test_refused_exit_is_journaled_alerted_and_not_resent_until_something_changes(
        tmp_path: Path, bars: pd.DataFrame, fake: AlpacaTradingFake) -> None:
    """A manual order locks the position: the runner's exit is refused once, journaled and alerted; later
    bars wait instead of re-sending it under new ids; once the lock is gone the exit goes out and fills."""
    run = AlpacaRun(tmp_path, bars, fake)
    try:
        times = bars.index[10:]
        k = 0
        while not run.journal.ledger(run.spec.name, run.spec.capital).positions:
            run.run(times[k:k + 1])
            k += 1
        held = run.broker.positions()[SYMBOL].qty
        lock = OrderRequest(client_order_id="manual-lock", symbol=SYMBOL, side=Side.SELL, qty=held,
                            type=OrderType.LIMIT, limit_price=10_000_000.0)
        run.broker.submit(lock)  # someone's order outside the runner holds the whole position
        while True:
            run.run(times[k:k + 1])
            k += 1
            if run.exit_posts():
                break
        for _ in range(40):  # later bars that want out keep waiting
            run.run(times[k:k + 1])
            k += 1
        j, name = run.journal, run.spec.name
        assert len(run.exit_posts()) == 1
        d = j.decisions_frame(name)
        refused = d[(d["action"] == "rejected") & d["reason"].str.contains("insufficient balance")]
        assert len(refused) == 1  # (the other refusal: Alpaca takes no stop orders for crypto)
        waiting = d[d["action"] == "exit_waiting"]
        assert len(waiting) >= 1 and waiting["reason"].str.contains("not re-sent").all()
        assert j.errors_frame()["message"].str.contains("refused").any()  # the alert
        assert run.journal.ledger(name, run.spec.capital).positions  # still open

        run.broker.cancel("manual-lock")  # the lock is gone: the next exit can succeed and is sent
        before = len(run.exit_posts())
        while len(run.exit_posts()) == before:
            run.run(times[k:k + 1])
            k += 1
        last = j.orders_frame(name).iloc[-1]
        assert last["leg"] in EXITS and last["status"] == "filled"
    finally:
        run.close()


def test_runner_takes_whole_shares_from_the_venue_s_asset_record(tmp_path: Path, bars: pd.DataFrame,
                                                                  fake: AlpacaTradingFake) -> None:
    """Issue 13 item 2: MSFT is not fractionable at the venue, so every entry is a whole number of
    shares, though the artifact names no lot; sizing reserves no fee (equities trade without one)."""
    fake.assets["MSFT"] = {"fractionable": False}
    px = bars * (400.0 / float(bars["close"].iloc[0]))
    px["volume"] = bars["volume"]
    run = AlpacaRun(tmp_path, px, fake, symbol="MSFT", costs=Costs(fees=0.0, slippage=0.0, slippage_vol=0.0),
                    capital=10_000.0)
    try:
        run.run(px.index[10:210])
        j, name = run.journal, run.spec.name
        fills = j.fills_frame(name)
        legs = j.orders_frame(name).set_index("client_order_id")["leg"]
        entries = fills[fills["client_order_id"].map(legs) == "entry"]
        assert len(entries) >= 2
        qty = entries["qty"].map(Decimal)
        assert all(q == q.to_integral_value() and q > 0 for q in qty), list(qty)
        # whole shares of what fraction x equity buys at the fill price: never more, less than one share short
        decisions = j.decisions_frame(name).query("kind == 'signal' and action == 'long'")
        assert len(decisions) == len(entries)
        for d, price in zip(decisions["detail"].map(json.loads), entries["price"].map(float), strict=True):
            target = d["fraction"] * d["equity"]
            assert d["qty"] * price <= target < (d["qty"] + 1) * price
        held = run.broker.positions()
        book = j.ledger(name, run.spec.capital).positions
        assert {s: Decimal(repr(p.qty)) for s, p in held.items()} == book
    finally:
        run.close()


def test_a_schema_1_journal_is_migrated_with_its_fees_in_cash(tmp_path: Path) -> None:
    """A journal written before fees had a currency (schema 1) opens, gains the column, and its
    fills' fees stay where they were booked: in cash."""
    import sqlite3

    from workbench.paper import journal as jmod

    v1 = jmod._SCHEMA.replace(", fee_currency TEXT)", ")")
    assert "fee_currency" not in v1
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.executescript(v1)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO fills (fill_id, client_order_id, artifact, symbol, side, qty, price, fee, bar, "
               "reason, recorded) VALUES ('f1', 'c1', 'a', 'BTC/USD', 'buy', '2', '100', '0.5', "
               "'2025-01-01T00:00:00+00:00', 'signal', 1.0)")
    db.commit()
    db.close()
    with Journal(path) as j:
        assert j.meta("schema_version") == str(jmod.SCHEMA_VERSION)
        ledger = j.ledger("a", 1000.0)
        assert ledger.positions == {"BTC/USD": Decimal("2")} and ledger.cash == Decimal("799.5")
        assert j.fills_frame("a")["fee_currency"].isna().all()
    with Journal(path) as j:  # opening again changes nothing
        assert j.ledger("a", 1000.0).cash == Decimal("799.5")
