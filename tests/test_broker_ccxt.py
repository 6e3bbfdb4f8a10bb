"""CcxtBroker against a fake of Binance spot's trading API: the unmodified ccxt client, real wire format.

The shared broker contract runs first (`TestCcxtContract`), then what is particular to a ccxt
sandbox: client-id idempotency where Binance would accept a reused id, duplicate answers, shorts,
exchange filters, secrets, settings. A guard fails any test that connects anywhere but loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from broker_contract import BrokerContract
from servers.binance_trading import API_KEY, SECRET, BinanceTradingServer
from servers.loopback import Response, guard_loopback

from workbench.data.sources.ccxt import BASE_URL_SETTING
from workbench.errors import BrokerUnavailable, ConfigError, CredentialsError, OrderRejected
from workbench.paper.broker import OrderRequest, OrderStatus, OrderType, Side, client_order_id
from workbench.paper.ccxt import API_KEY_SETTING, SECRET_SETTING, CcxtBroker
from workbench.paper.journal import Journal
from workbench.paper.replay import journal_trades

pytestmark = [pytest.mark.network, pytest.mark.filterwarnings("error::Warning:workbench")]

SYMBOL, PRICE0, QTY = "BTC/USDT", 60_000.0, 0.001
TIMEOUT, RECV_WINDOW = 0.25, 0.5  # seconds: the client's HTTP timeout, the signed-request window
SETTINGS = (BASE_URL_SETTING, API_KEY_SETTING, SECRET_SETTING, "BINANCE_API_KEY", "BINANCE_SECRET")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No traffic leaves the machine; no developer .env or environment variable leaks in."""
    guard_loopback(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(API_KEY_SETTING, API_KEY)
    monkeypatch.setenv(SECRET_SETTING, SECRET)


@pytest.fixture(scope="module")
def _fake() -> Iterator[BinanceTradingServer]:
    with BinanceTradingServer(late_seconds=TIMEOUT * 3) as srv:
        yield srv


@pytest.fixture
def fake(_fake: BinanceTradingServer) -> BinanceTradingServer:
    """The module's fake, reset: no orders, USDT 100000, default prices, no faults."""
    _fake.reset()
    return _fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _broker(fake: BinanceTradingServer, sleeps: list[float], **kw: object) -> CcxtBroker:
    options: dict[str, object] = dict(symbols=[SYMBOL], base_url=fake.url, timeout=TIMEOUT, retries=2,
                                      retry_wait=0.01, recv_window=RECV_WINDOW, sleep=sleeps.append)
    options.update(kw)
    broker = CcxtBroker("binance", **options)  # type: ignore[arg-type]
    broker.exchange.enableRateLimit = False  # ccxt's client-side throttle paces a real exchange, not a fake
    return broker


@pytest.fixture
def broker(fake: BinanceTradingServer, sleeps: list[float]) -> Iterator[CcxtBroker]:
    with _broker(fake, sleeps) as b:
        yield b  # type: ignore[misc]


@dataclass
class Harness:
    """The contract suite's harness protocol (see tests/broker_contract.py) over the fake."""

    broker: CcxtBroker
    server: BinanceTradingServer
    symbol: str = SYMBOL
    price0: float = PRICE0
    qty: float = QTY
    sleeps: list[float] = field(default_factory=list)

    def set_price(self, symbol: str, price: float) -> None:
        self.server.set_price(symbol, price)

    def fill_mode(self, mode: str) -> None:
        self.server.fill_mode = mode

    def complete_fills(self) -> None:
        self.server.complete_fills()

    def fault(self, kind: str, times: int = 1) -> bool:
        self.server.fault(kind, times)
        return True

    def created(self) -> int:
        return self.server.created


@pytest.fixture
def harness(fake: BinanceTradingServer, broker: CcxtBroker, sleeps: list[float]) -> Harness:
    return Harness(broker, fake, sleeps=sleeps)


class TestCcxtContract(BrokerContract):
    """The shared broker contract on the Binance spot sandbox fake."""


def _cid(leg: str = "entry", n: int = 0) -> str:
    return client_order_id("ccxt-test", SYMBOL, f"2026-02-01T00:{n:02d}:00+00:00", leg)


def _req(leg: str = "entry", n: int = 0, side: Side = Side.BUY, qty: float = QTY,
         **kw: object) -> OrderRequest:
    return OrderRequest(client_order_id=_cid(leg, n), symbol=SYMBOL, side=side, qty=qty,
                        **kw)  # type: ignore[arg-type]


def _form(body: bytes) -> dict[str, str]:
    return dict(p.split("=", 1) for p in body.decode().split("&"))


def _then_lookups_fail(fake: BinanceTradingServer, reply: Response, times: int = 50) -> Response:
    """From now on order lookups fail (5xx); `reply` answers the order being placed."""
    fake.fail_next("/api/v3/order", Response(503, "Service Unavailable.", {"Content-Type": "text/html"}),
                   times, method="GET")
    return reply


# ---------------------------------------------------------------------- wire format
def test_orders_go_out_in_binance_spot_wire_format(fake: BinanceTradingServer, broker: CcxtBroker) -> None:
    order = broker.submit(_req())
    assert (order.status, order.filled_qty, order.avg_fill_price) == (OrderStatus.FILLED, QTY, PRICE0)
    assert order.broker_order_id == str(fake.order(_cid()).order_id)  # type: ignore[union-attr]
    [post] = fake.order_posts()
    sent = _form(post.body)
    assert {k: sent[k] for k in ("symbol", "side", "type", "quantity", "newClientOrderId", "newOrderRespType",
                                 "recvWindow")} == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
        "newClientOrderId": _cid(), "newOrderRespType": "FULL", "recvWindow": str(int(RECV_WINDOW * 1000))}
    assert post.headers["x-mbx-apikey"] == API_KEY and "signature" in sent  # the fake verified it
    broker.submit(_req("sl", side=Side.SELL, type=OrderType.STOP, stop_price=50_000.0))
    broker.submit(_req("tp", side=Side.BUY, type=OrderType.LIMIT, limit_price=55_000.0))
    stop, limit = (_form(p.body) for p in fake.order_posts()[1:])
    assert (stop["type"], stop["stopPrice"], stop["quantity"]) == ("STOP_LOSS", "50000", "0.001")
    assert (limit["type"], limit["price"], limit["timeInForce"]) == ("LIMIT", "55000", "GTC")
    # sandbox mode, spot only: every request went to the fake's /api/v3 (no sapi, fapi, dapi)
    assert all(r.path.startswith("/api/v3/") for r in fake.requests)
    assert broker.exchange.isSandboxModeEnabled


def test_stop_limit_and_trailing_stop_rest_and_trigger(
    fake: BinanceTradingServer, broker: CcxtBroker
) -> None:
    broker.submit(_req(qty=0.003))
    trail = broker.submit(_req("tsl", side=Side.SELL, type=OrderType.TRAILING_STOP, trail_percent=0.02))
    assert _form(fake.order_posts()[-1].body)["trailingDelta"] == "200"  # basis points
    assert (trail.status, trail.type, trail.trail_percent) == (OrderStatus.NEW, OrderType.TRAILING_STOP, 0.02)
    stop = broker.submit(_req("sl", side=Side.SELL, type=OrderType.STOP, stop_price=54_000.0))
    take = broker.submit(_req("tp", side=Side.SELL, type=OrderType.LIMIT, limit_price=66_000.0))
    assert [o.status for o in (stop, take)] == [OrderStatus.NEW] * 2
    assert {o.client_order_id for o in broker.open_orders(SYMBOL)} == {_cid("tsl"), _cid("sl"), _cid("tp")}

    fake.set_price(SYMBOL, 70_000.0)  # the take-profit fills at its limit; the trail's high is 70000
    done = broker.get_order(_cid("tp"))
    assert done is not None and (done.status, done.avg_fill_price) == (OrderStatus.FILLED, 66_000.0)
    fake.set_price(SYMBOL, 68_700.0)  # 1.9 % below the high: the trailing stop holds
    assert broker.get_order(_cid("tsl")).status is OrderStatus.NEW  # type: ignore[union-attr]
    fake.set_price(SYMBOL, 68_500.0)  # 2.1 % below: it fires where the price crossed 2 % (68,600)
    fired = broker.get_order(_cid("tsl"))
    assert fired is not None and (fired.status, fired.avg_fill_price) == (OrderStatus.FILLED, 68_600.0)
    fake.set_price(SYMBOL, 53_000.0, gap=True)  # a jump through the stop: filled at the new price
    hit = broker.get_order(_cid("sl"))
    assert hit is not None and (hit.status, hit.type, hit.stop_price, hit.avg_fill_price) == (
        OrderStatus.FILLED, OrderType.STOP, 54_000.0, 53_000.0)
    assert broker.positions() == {} and broker.open_orders() == []

    # a stop-limit entry (STOP_LOSS_LIMIT): triggered at 55,000 it buys at most at 55,100
    entry = broker.submit(_req("entry", n=1, qty=0.002, type=OrderType.STOP_LIMIT, stop_price=55_000.0,
                               limit_price=55_100.0))
    form = _form(fake.order_posts()[-1].body)
    assert (form["type"], form["stopPrice"], form["price"], form["timeInForce"]) == (
        "STOP_LOSS_LIMIT", "55000", "55100", "GTC")
    assert (entry.status, entry.type, entry.stop_price, entry.limit_price) == (
        OrderStatus.NEW, OrderType.STOP_LIMIT, 55_000.0, 55_100.0)
    fake.set_price(SYMBOL, 55_300.0, gap=True)  # jumps past the limit: triggered, rests as a limit
    assert broker.get_order(_cid("entry", 1)).status is OrderStatus.NEW  # type: ignore[union-attr]
    fake.set_price(SYMBOL, 55_050.0)  # trades back down through 55,100: filled at its limit
    got = broker.get_order(_cid("entry", 1))
    assert got is not None and (got.status, got.avg_fill_price) == (OrderStatus.FILLED, 55_100.0)


# ---------------------------------------------------------------------- idempotency
def test_a_filled_order_is_not_placed_again_even_where_binance_would_accept_its_id(
    fake: BinanceTradingServer, broker: CcxtBroker, sleeps: list[float]
) -> None:
    first = broker.submit(_req())
    # Binance refuses a client id only while its order is open: the raw client would buy twice
    restarted = _broker(fake, sleeps)  # a new process: nothing in memory
    again = restarted.submit(_req())
    assert again.broker_order_id == first.broker_order_id and again.status is OrderStatus.FILLED
    assert fake.created == 1 and len(fake.order_posts()) == 1
    twin = restarted.exchange.create_order(SYMBOL, "market", "buy", QTY, None, {"newClientOrderId": _cid()})
    assert twin["id"] != first.broker_order_id and fake.created == 2  # what the lookup prevents


def test_duplicate_answer_resolves_to_the_one_order(
    fake: BinanceTradingServer, broker: CcxtBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fill_mode = "none"  # the order stays open, so Binance answers a resend with -2010
    stale = Response(400, {"code": -2013, "msg": "Order does not exist."})

    def late_and_not_yet_visible(reply: Response) -> Response:  # placed; the next lookup misses it
        fake.fail_next("/api/v3/order", stale, times=1, method="GET")
        return replace(reply, delay=TIMEOUT * 3)

    fake.fail_next("/api/v3/order", late_and_not_yet_visible, method="POST", after=True)
    with caplog.at_level(logging.INFO, logger="workbench.paper.ccxt"):
        order = broker.submit(_req())
    assert order.client_order_id == _cid() and order.status is OrderStatus.NEW
    assert order.broker_order_id == str(fake.order(_cid()).order_id)  # type: ignore[union-attr]
    assert fake.created == 1 and len(fake.order_posts()) == 2  # resent once, answered "Duplicate order sent."
    assert "duplicate" in caplog.text


def test_unknown_outcome_waits_out_the_recv_window_before_the_lookup(
    fake: BinanceTradingServer, broker: CcxtBroker, sleeps: list[float]
) -> None:
    fake.fault("500-after")  # placed, then answered 500: the outcome is unknown to the client
    order = broker.submit(_req())
    assert order.status is OrderStatus.FILLED and fake.created == 1 and len(fake.order_posts()) == 1
    assert len(sleeps) == 1 and RECV_WINDOW * 0.8 < sleeps[0] <= RECV_WINDOW

    sleeps.clear()
    fake.fault("429")  # refused before acting (Retry-After: 1): no window to wait out
    broker.submit(_req(n=1))
    assert sleeps == [1.0] and fake.created == 2 and len(fake.order_posts()) == 3


def test_lookups_failing_too_raise_unavailable_naming_the_id(
    fake: BinanceTradingServer, broker: CcxtBroker
) -> None:
    fake.fail_next("/api/v3/order", lambda r: _then_lookups_fail(fake, Response(drop=True)), method="POST",
                   after=True)  # placed, reply lost, and lookups fail from then on
    with pytest.raises(BrokerUnavailable) as err:
        broker.submit(_req())
    message = str(err.value)
    assert _cid() in message and "unknown" in message and "get_order" in message
    assert fake.created == 1  # the lost order does exist
    fake.fault("lost", 0)  # clears the faults on /api/v3/order
    found = broker.get_order(_cid())
    assert found is not None and found.status is OrderStatus.FILLED
    assert broker.submit(_req()).broker_order_id == found.broker_order_id and fake.created == 1


def test_a_restarted_broker_finds_and_cancels_by_client_id(
    fake: BinanceTradingServer, broker: CcxtBroker, sleeps: list[float]
) -> None:
    broker.submit(_req())
    broker.submit(_req("sl", side=Side.SELL, type=OrderType.STOP, stop_price=50_000.0))
    restarted = _broker(fake, sleeps)
    found = restarted.get_order(_cid("sl"))
    assert found is not None and (found.type, found.stop_price, found.status) == (OrderType.STOP, 50_000.0,
                                                                                 OrderStatus.NEW)
    assert restarted.cancel(_cid("sl")).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert restarted.cancel(_cid("sl")).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert restarted.cancel(_cid("entry")).status is OrderStatus.FILLED  # type: ignore[union-attr]
    blind = _broker(fake, sleeps, symbols=[])
    with pytest.raises(ConfigError, match=r"symbols=\['BTC/USDT'\]"):
        blind.get_order(_cid("sl"))


# ---------------------------------------------------------------------- refusals
def test_shorts_are_refused_without_sending_an_order(fake: BinanceTradingServer, broker: CcxtBroker) -> None:
    with pytest.raises(OrderRejected, match="spot cannot short"):
        broker.submit(_req("exit", side=Side.SELL))
    broker.submit(_req())
    with pytest.raises(OrderRejected, match=r"sells 0.002 BTC but the spot account holds 0.001"):
        broker.submit(_req("exit", side=Side.SELL, qty=2 * QTY))
    assert [_form(p.body)["side"] for p in fake.order_posts()] == ["BUY"]
    assert fake.created == 1


def test_exchange_filters_and_balance_refusals_carry_the_exchange_message(
    fake: BinanceTradingServer, broker: CcxtBroker
) -> None:
    cases = [
        (_req(qty=0.00005), "Filter failure: NOTIONAL (code -1013)"),  # 3 USDT < 5 USDT minimum
        (_req(n=1, qty=200.0), "Filter failure: MARKET_LOT_SIZE"),  # market orders: at most 100
        (_req(n=2, qty=10_000.0, type=OrderType.LIMIT, limit_price=1.0), "Filter failure: LOT_SIZE"),
        (_req(n=3, qty=2.0), "Account has insufficient balance for requested action."),
        (_req(n=4, type=OrderType.TRAILING_STOP, trail_percent=0.5), "Filter failure: TRAILING_DELTA"),
    ]
    for request, reason in cases:
        with pytest.raises(OrderRejected) as err:
            broker.submit(request)
        assert reason in str(err.value) and request.client_order_id in str(err.value)
        assert broker.get_order(request.client_order_id) is None
    assert len(fake.order_posts()) == len(cases) and fake.created == 0  # none retried, none placed
    with pytest.raises(OrderRejected, match=r"does not list 'DOGE/USDT'"):
        broker.submit(OrderRequest(client_order_id=_cid("x"), symbol="DOGE/USDT", side=Side.BUY, qty=1.0))
    with pytest.raises(OrderRejected, match=r"does not list 'BTC/USD' .*did you mean 'BTC/USDT'"):
        broker.submit(OrderRequest(client_order_id=_cid("y"), symbol="BTC/USD", side=Side.BUY, qty=1.0))
    assert len(fake.order_posts()) == len(cases)
    assert broker.normalize_qty(SYMBOL, 0.00123456) == 0.00123
    assert broker.normalize_qty(SYMBOL, 0.00008) == 0.0  # 4.8 USDT: under the minimum order value
    assert broker.normalize_qty(SYMBOL, 0.000001) == 0.0  # under one lot step


# ---------------------------------------------------------------------- account
def test_fees_positions_and_equity(fake: BinanceTradingServer, broker: CcxtBroker) -> None:
    fake.fee_rate = Decimal("0.001")  # 0.1 %, charged in the asset received
    placed = broker.submit(_req(qty=0.002))
    assert (placed.fee, placed.fee_currency) == (0.000002, "BTC")  # in the asset received
    assert broker.get_order(_cid()).fee == pytest.approx(placed.fee)  # type: ignore[union-attr]
    [pos] = broker.positions().values()
    assert pos.symbol == SYMBOL and pos.qty == pytest.approx(0.001998)
    assert pos.avg_price == pytest.approx(0.002 * PRICE0 / 0.001998)
    fake.set_price(SYMBOL, 61_000.0)
    acct = broker.account()
    assert acct.currency == "USDT" and acct.cash == pytest.approx(100_000 - 120)
    assert acct.equity == pytest.approx(acct.cash + 0.001998 * 61_000)
    fake.set_balance("ETH", 2)  # not a traded symbol: not a position
    assert list(broker.positions()) == [SYMBOL]


def test_cycle_books_the_commission_in_the_asset_received(
    fake: BinanceTradingServer, broker: CcxtBroker, tmp_path: Path
) -> None:
    """Binance charges a buy's commission in the base asset and a sell's in the quote: the journal
    books each in its currency, holds what the account holds, and selling that quantity closes it."""
    fake.fee_rate = Decimal("0.001")
    bar = pd.Timestamp("2026-02-01", tz="UTC")
    with Journal(tmp_path / "j.sqlite") as journal:
        buy = _req(qty=0.01)
        journal.record_intent("s", bar, "entry", buy)
        order = broker.submit(buy)
        assert order.fee_in_asset and order.filled_qty == 0.01
        journal.apply(order, fill_bar=bar)
        book = journal.ledger("s", 100_000)
        assert book.positions == {SYMBOL: Decimal("0.00999")} and book.cash == Decimal(100_000 - 600)
        assert broker.positions()[SYMBOL].qty == 0.00999

        fake.set_price(SYMBOL, 61_000.0)
        sell = _req("exit", side=Side.SELL, qty=float(book.positions[SYMBOL]))
        journal.record_intent("s", bar, "exit", sell)
        order = broker.submit(sell)
        assert order.status is OrderStatus.FILLED and (order.fee, order.fee_currency) == (0.60939, "USDT")
        journal.apply(order, fill_bar=bar)
        book = journal.ledger("s", 100_000)
        assert book.positions == {} and broker.positions() == {}
        assert book.cash == Decimal(100_000 - 600) + Decimal("0.00999") * 61_000 - Decimal("0.60939")
        assert Decimal(repr(broker.account().cash)) == book.cash
        [trade] = journal_trades(journal, "s").itertuples()
        assert trade.pnl == pytest.approx(float(book.cash) - 100_000, abs=1e-9)
        assert trade.entry_fees == pytest.approx(0.00001 * 60_000) and trade.exit_fees == 0.60939


# ---------------------------------------------------------------------- settings and secrets
def test_keys_never_reach_logs_exceptions_or_repr(
    fake: BinanceTradingServer, broker: CcxtBroker, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [repr(broker), str(broker)]
    with caplog.at_level(logging.DEBUG):
        broker.submit(_req())
        with pytest.raises(OrderRejected) as rejected:
            broker.submit(_req(n=1, qty=2.0))
        fake.fail_next("/api/v3/order", lambda r: _then_lookups_fail(fake, Response(drop=True)),
                       method="POST", after=True)
        with pytest.raises(BrokerUnavailable) as unavailable:
            broker.submit(_req(n=2))
        fake.fault("lost", 0)
        fake.secret = "rotated"  # our signatures no longer match
        with pytest.raises(CredentialsError) as refused:
            broker.account()
    texts += [caplog.text, *(str(e.value) for e in (rejected, unavailable, refused))]
    texts += [str(r.args) for r in caplog.records]
    for text in texts:
        assert API_KEY not in text and SECRET not in text
    wire = [r.getMessage() for r in caplog.records if r.name == "workbench.paper.ccxt.wire"]
    assert any("X-MBX-APIKEY" in line and "***" in line for line in wire)  # ccxt's lines, redacted
    assert all("signature=***" in line for line in wire if "signature=" in line)


def test_refused_and_missing_keys_name_the_settings(
    fake: BinanceTradingServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_SETTING, "not-the-secret")
    with pytest.raises(CredentialsError) as err:
        _broker(fake, sleeps).submit(_req())
    message = str(err.value)
    assert "Signature for this request is not valid. (code -1022)" in message
    assert API_KEY_SETTING in message and SECRET_SETTING in message and "not-the-secret" not in message
    assert fake.created == 0

    monkeypatch.delenv(API_KEY_SETTING)
    missing = f"set {API_KEY_SETTING} and {SECRET_SETTING}.*BINANCE_API_KEY"
    with pytest.raises(CredentialsError, match=missing):
        _broker(fake, sleeps)
    monkeypatch.setenv("BINANCE_API_KEY", API_KEY)  # the exchange's own names are a fallback
    monkeypatch.setenv("BINANCE_SECRET", SECRET)
    assert _broker(fake, sleeps).account().cash == 100_000


def test_base_url_comes_from_the_setting(
    fake: BinanceTradingServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BASE_URL_SETTING, fake.url)
    from_env = _broker(fake, sleeps, base_url=None)
    assert from_env.base_url == fake.url and from_env.price(SYMBOL) == PRICE0
    assert from_env.exchange.urls["api"]["private"] == f"{fake.url}/api/v3"
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(f"{BASE_URL_SETTING}={fake.url}\n{API_KEY_SETTING}={API_KEY}\n"
                                   f"{SECRET_SETTING}={SECRET}\n")
    from_file = _broker(fake, sleeps, base_url=None)
    assert from_file.base_url == fake.url and from_file.account().equity == 100_000
    assert fake.url in repr(from_file) and API_KEY not in repr(from_file)


def test_bad_options_say_the_fix(fake: BinanceTradingServer, sleeps: list[float]) -> None:
    with pytest.raises(ConfigError, match="did you mean 'binance'"):
        CcxtBroker("binanse")
    with pytest.raises(ConfigError, match="timeout > 0"):
        _broker(fake, sleeps, timeout=0)
    with pytest.raises(ConfigError, match="one quote currency"):
        _broker(fake, sleeps, symbols=["BTC/USDT", "ETH/BTC"])
    with pytest.raises(ConfigError, match="BASE/QUOTE"):
        _broker(fake, sleeps, symbols=["BTCUSDT"])
    with pytest.raises(ConfigError, match="does not list 'BTC/EUR'"):
        _broker(fake, sleeps).price("BTC/EUR")


def test_lot_rules_come_from_the_exchange_filters(broker: CcxtBroker) -> None:
    """exchangeInfo LOT_SIZE and NOTIONAL -> ccxt precision.amount, limits.amount.min, limits.cost.min."""
    from workbench.backtest import Lot

    assert broker.lot("BTC/USDT") == Lot(step=1e-5, min_qty=1e-5, min_notional=5.0)
