"""AlpacaBroker end to end: alpaca-py's unmodified TradingClient against a loopback fake of Alpaca's
paper trading API (tests/servers/alpaca_trading.py). The shared broker contract runs first, then
Alpaca's own cases: the SDK's retry meeting its own order, keys that must not leak, symbol and
time-in-force mapping, settings, and refusals."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import requests
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Clock, NonTradeActivity, Position, TradeAccount
from alpaca.trading.models import Order as SdkOrder
from alpaca.trading.requests import MarketOrderRequest
from broker_contract import BrokerContract
from servers.alpaca import API_KEY, SECRET_KEY
from servers.alpaca_trading import (
    ACCOUNT_ID,
    CRYPTO_LATEST_TRADES,
    ORDERS,
    STOCK_LATEST_TRADES,
    AlpacaTradingFake,
)
from servers.loopback import Response, guard_loopback

from workbench.errors import BrokerError, BrokerUnavailable, ConfigError, CredentialsError, OrderRejected
from workbench.paper.alpaca import AlpacaBroker, workbench_symbol
from workbench.paper.broker import OrderRequest, OrderStatus, OrderType, Side, client_order_id
from workbench.paper.journal import Journal

pytestmark = pytest.mark.network

ENV_VARS = (
    "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY",
    "WORKBENCH_ALPACA_TRADING_URL", "WORKBENCH_ALPACA_BASE_URL", "WORKBENCH_ALPACA_RETRY_ATTEMPTS",
    "WORKBENCH_ALPACA_RETRY_WAIT", "WORKBENCH_ALPACA_RETRY_CODES", "WORKBENCH_ALPACA_TIMEOUT",
    "WORKBENCH_ALPACA_FEED",
)
TIMEOUT = 1.0  # the broker's request timeout in these tests; the fake's slow replies take longer
BY_CLIENT_ID = "/v2/orders:by_client_order_id"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No traffic leaves the machine; no developer settings; the fake's keys in the environment."""
    guard_loopback(monkeypatch)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def trading_server() -> Iterator[AlpacaTradingFake]:
    with AlpacaTradingFake(cash=100_000.0) as f:
        yield f


@pytest.fixture
def fake(trading_server: AlpacaTradingFake) -> AlpacaTradingFake:
    """The module's fake as a fresh account: no orders, positions, faults or request log."""
    trading_server.reset()
    trading_server.timeout_delay = TIMEOUT + 0.5
    return trading_server


def make_broker(fake: AlpacaTradingFake, **options: object) -> AlpacaBroker:
    opts: dict[str, object] = {"base_url": fake.url, "data_url": fake.url, "timeout": TIMEOUT,
                               "retries": 2, "retry_wait": 0.01}
    opts.update(options)
    return AlpacaBroker(**opts)  # type: ignore[arg-type]


@dataclass
class Harness:
    """tests/broker_contract.py's harness protocol for the fake."""

    broker: AlpacaBroker
    fake: AlpacaTradingFake
    symbol: str = "AAPL"
    price0: float = 200.0
    qty: float = 2.0

    def set_price(self, symbol: str, price: float) -> None:
        self.fake.set_price(symbol, price)

    def fill_mode(self, mode: str) -> None:
        assert mode in ("full", "partial", "none")
        self.fake.fill_mode = mode

    def complete_fills(self) -> None:
        self.fake.complete_fills()

    def fault(self, kind: str, times: int = 1) -> bool:
        return self.fake.fault(kind, times)

    def created(self) -> int:
        return self.fake.created()


@pytest.fixture
def harness(fake: AlpacaTradingFake) -> Iterator[Harness]:
    fake.set_price("AAPL", 200.0)
    with make_broker(fake) as broker:
        assert isinstance(broker, AlpacaBroker)
        yield Harness(broker, fake)


@pytest.fixture
def broker(fake: AlpacaTradingFake) -> Iterator[AlpacaBroker]:
    with make_broker(fake) as b:
        assert isinstance(b, AlpacaBroker)
        yield b


class TestAlpacaContract(BrokerContract):
    """The shared suite against the fake (a stock symbol: Alpaca has no plain stops for crypto)."""


def _req(symbol: str = "AAPL", side: Side = Side.BUY, qty: float = 1.0, leg: str = "entry", n: int = 0,
         **kw: object) -> OrderRequest:
    cid = client_order_id("alpaca", symbol, f"2026-02-01T00:{n:02d}:00+00:00", leg)
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, qty=qty, **kw)  # type: ignore[arg-type]


def _posted(fake: AlpacaTradingFake) -> list[dict]:
    return [r.json() for r in fake.requests("POST", ORDERS)]


# ---------------------------------------------------------------------- the SDK's own retry
@pytest.mark.parametrize("kind", ["429-after", "504-after"])
def test_sdk_retry_of_an_accepted_submission_resolves_to_the_one_order(
        fake: AlpacaTradingFake, broker: AlpacaBroker, kind: str) -> None:
    """Alpaca created the order but answered 429/504; alpaca-py resubmits by itself, meets
    "client_order_id must be unique", and the broker returns the order it already placed."""
    fake.fault(kind)
    order = broker.submit(_req(qty=3))
    assert order.client_order_id == _req().client_order_id
    assert fake.created() == 1
    posts = _posted(fake)
    assert len(posts) == 2 and posts[0] == posts[1]  # the SDK's retry, same client order id
    assert len(fake.requests("GET", BY_CLIENT_ID)) == 1
    assert broker.positions()["AAPL"].qty == 3


def test_429_is_retried_by_the_sdk_with_alpacas_rate_limit_headers(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.fault("429", 2)
    order = broker.submit(_req())
    assert order.status is OrderStatus.NEW  # accepted (pending_new); filled right after
    assert len(fake.requests("POST", ORDERS)) == 3 and fake.created() == 1
    assert fake.requests("GET", BY_CLIENT_ID) == []  # a 429 that the SDK retried needs no lookup


def test_lookup_failing_too_raises_unavailable_naming_the_id(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.fault("lost")
    fake.server.fail_next(BY_CLIENT_ID, Response(500, {"code": 50010000, "message": "internal"}), 50)
    request = _req()
    with pytest.raises(BrokerUnavailable) as err:
        broker.submit(request)
    message = str(err.value)
    assert request.client_order_id in message and "outcome is unknown" in message
    assert len(fake.requests("POST", ORDERS)) == 1  # never resubmitted blind
    fake.server.faults.clear()
    found = broker.get_order(request.client_order_id)  # the order was in fact placed
    assert found is not None and found.status is OrderStatus.FILLED and fake.created() == 1


def test_submissions_failing_every_time_stop_after_the_retries(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.fault("503", 50)
    request = _req()
    with pytest.raises(BrokerUnavailable, match=request.client_order_id) as err:
        broker.submit(request)
    assert "503" in str(err.value) and "<html" not in str(err.value)
    assert len(fake.requests("POST", ORDERS)) == 3  # retries=2
    assert len(fake.requests("GET", BY_CLIENT_ID)) == 3  # a lookup before every resubmission
    assert fake.created() == 0


# ---------------------------------------------------------------------- refusals
def test_refusals_raise_with_alpacas_message_and_are_not_retried(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        broker.submit(_req(qty=10_000))
    with pytest.raises(OrderRejected, match='asset "ZZZZ" not found'):
        broker.submit(_req(symbol="ZZZZ"))
    with pytest.raises(OrderRejected, match="fractional orders cannot be sold short"):
        broker.submit(_req(side=Side.SELL, qty=0.5, n=1))
    with pytest.raises(OrderRejected, match="insufficient balance for BTC"):
        broker.submit(_req(symbol="BTC/USD", side=Side.SELL, qty=0.1))
    assert len(fake.requests("POST", ORDERS)) == 4
    assert fake.requests("GET", BY_CLIENT_ID) == [] and fake.created() == 0
    assert broker.positions() == {} and broker.account().cash == pytest.approx(100_000.0)


def test_invalid_qty_422_is_a_refusal(fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.server.fail_next(ORDERS, Response(422, {"code": 40010001, "message": "qty must be > 0"}),
                          method="POST")
    with pytest.raises(OrderRejected, match=r"qty must be > 0 \(HTTP 422\)"):
        broker.submit(_req())
    assert fake.created() == 0


def test_crypto_stop_orders_are_refused_before_any_request(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    for kind, extra in ((OrderType.STOP, {"stop_price": 50_000.0}),
                        (OrderType.TRAILING_STOP, {"trail_percent": 0.02})):
        with pytest.raises(OrderRejected, match=r"no .* orders for crypto"):
            broker.submit(_req(symbol="BTC/USD", side=Side.SELL, qty=0.01, leg="sl", type=kind, **extra))
    assert fake.requests() == []


# ---------------------------------------------------------------------- symbols and time in force
def test_stock_and_crypto_symbols_time_in_force_and_quantities(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    broker.submit(_req("BTC/USD", qty=0.0123456789))
    broker.submit(_req("AAPL", qty=2, n=1))
    broker.submit(_req("AAPL", qty=0.25, n=2))
    broker.submit(_req("AAPL", side=Side.SELL, qty=2, leg="sl", type=OrderType.STOP, stop_price=150.004))
    broker.submit(_req("AAPL", side=Side.SELL, qty=0.25, leg="tp", type=OrderType.LIMIT, limit_price=250.0))
    sent = [(p["symbol"], p["time_in_force"], p["qty"], p["type"]) for p in _posted(fake)]
    assert sent == [("BTC/USD", "gtc", 0.012345679, "market"), ("AAPL", "day", 2.0, "market"),
                    ("AAPL", "day", 0.25, "market"), ("AAPL", "gtc", 2.0, "stop"),
                    ("AAPL", "day", 0.25, "limit")]
    assert _posted(fake)[3]["stop_price"] == 150.0  # stock prices go in cents

    positions = broker.positions()
    wire = requests.get(f"{fake.url}/v2/positions", timeout=5, headers={
        "APCA-API-KEY-ID": API_KEY, "APCA-API-SECRET-KEY": SECRET_KEY}).json()
    assert [p["symbol"] for p in wire] == ["AAPL", "BTCUSD"]  # how Alpaca spells them
    assert set(positions) == {"AAPL", "BTC/USD"}
    assert positions["BTC/USD"].qty == pytest.approx(0.012345679 - 0.000030864)  # net of the 0.25 % fee
    assert positions["AAPL"].qty == pytest.approx(2.25)
    assert positions["AAPL"].avg_price == pytest.approx(200.0)
    crypto = broker.get_order(_req("BTC/USD", qty=0.0123456789).client_order_id)
    assert crypto is not None and crypto.symbol == "BTC/USD" and crypto.extra["time_in_force"] == "gtc"
    assert [o.type for o in broker.open_orders("AAPL")] == [OrderType.LIMIT, OrderType.STOP]
    assert broker.open_orders("BTC/USD") == []

    assert broker.price("BTC/USD") == pytest.approx(60_000.0)
    assert broker.price("AAPL") == pytest.approx(200.0)
    assert fake.requests("GET", CRYPTO_LATEST_TRADES)[0].query["symbols"] == "BTC/USD"
    assert fake.requests("GET", STOCK_LATEST_TRADES)[0].query["feed"] == "iex"
    assert broker.normalize_qty("BTC/USD", 0.12345678987) == 0.123456789
    assert broker.normalize_qty("AAPL", 1.9999999999) == 1.999999999
    assert broker.normalize_qty("AAPL", 1e-10) == 0.0
    with pytest.raises(BrokerError, match="no latest trade for 'ZZZZ'"):
        broker.price("ZZZZ")


@pytest.mark.parametrize(("alpaca", "asset_class", "ours"), [
    ("BTCUSD", "crypto", "BTC/USD"), ("ETHBTC", "crypto", "ETH/BTC"), ("SOLUSDT", "crypto", "SOL/USDT"),
    ("BTC/USD", "crypto", "BTC/USD"), ("AAPL", "us_equity", "AAPL"), ("BRK.B", "us_equity", "BRK.B"),
    ("USD", "us_equity", "USD"),
])
def test_workbench_symbol(alpaca: str, asset_class: str, ours: str) -> None:
    assert workbench_symbol(alpaca, asset_class) == ours


def test_short_position_is_negative_and_trailing_stop_sends_a_percent(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    broker.submit(_req(side=Side.SELL, qty=3))
    assert broker.positions()["AAPL"].qty == pytest.approx(-3)
    acct = broker.account()
    assert acct.cash == pytest.approx(100_600.0) and acct.equity == pytest.approx(100_000.0)
    tsl = broker.submit(_req(side=Side.BUY, qty=3, leg="tsl", type=OrderType.TRAILING_STOP,
                             trail_percent=0.02, ref_price=200.0))
    assert _posted(fake)[-1]["trail_percent"] == 2.0 and "ref_price" not in _posted(fake)[-1]
    assert tsl.trail_percent == pytest.approx(0.02) and tsl.status is OrderStatus.NEW
    fake.set_price("AAPL", 190.0)  # the low water mark follows the price down
    assert broker.get_order(tsl.client_order_id).status is OrderStatus.NEW
    fake.set_price("AAPL", 194.0)  # 2 % above 190 is 193.8: triggered on the way up, filled there
    done = broker.get_order(tsl.client_order_id)
    assert done.status is OrderStatus.FILLED and done.avg_fill_price == pytest.approx(193.8)
    assert broker.positions() == {}


def test_a_second_full_size_exit_is_refused_as_alpaca_holds_the_qty_for_the_first(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    """Alpaca reserves a position's shares for a resting sell: a stop and a target for the same
    shares cannot both rest as separate orders, and Alpaca knows nothing of `oco_group`."""
    broker.submit(_req(qty=2))
    sl = broker.submit(_req(side=Side.SELL, qty=2, leg="sl", type=OrderType.STOP, stop_price=180.0,
                            oco_group="g1"))
    assert sl.oco_group == "g1" and sl.status is OrderStatus.NEW
    with pytest.raises(OrderRejected, match=r"insufficient qty available for order \(requested: 2, "
                                            r"available: 0\)"):
        broker.submit(_req(side=Side.SELL, qty=2, leg="tp", type=OrderType.LIMIT, limit_price=220.0,
                           oco_group="g1"))


# ---------------------------------------------------------------------- cancel races
def test_cancel_of_an_order_that_filled_meanwhile_returns_its_fill(
        fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.fill_mode = "none"
    order = broker.submit(_req())
    # the order fills between the broker's lookup and its DELETE: Alpaca answers 422
    fake.server.fail_next(BY_CLIENT_ID, lambda reply: (fake.complete_fills(), reply)[1], after=True)
    result = broker.cancel(order.client_order_id)
    assert result is not None and result.status is OrderStatus.FILLED
    [delete] = fake.requests("DELETE")
    assert delete.path == f"{ORDERS}/{order.broker_order_id}"
    assert broker.positions()["AAPL"].qty == pytest.approx(1)


def test_cancel_survives_a_lost_reply(fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    fake.fill_mode = "none"
    order = broker.submit(_req())
    fake.server.fail_next(f"{ORDERS}/", Response(drop=True), method="DELETE", after=True)
    assert broker.cancel(order.client_order_id).status is OrderStatus.CANCELED
    assert len(fake.requests("DELETE")) == 1


# ---------------------------------------------------------------------- settings and keys
def test_urls_from_settings_and_the_live_endpoint_refused(
        fake: AlpacaTradingFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORKBENCH_ALPACA_TRADING_URL", fake.url + "/")
    monkeypatch.setenv("WORKBENCH_ALPACA_BASE_URL", fake.url)
    with AlpacaBroker(timeout=TIMEOUT, retries=0) as b:
        assert b.account().cash == pytest.approx(100_000.0)
        assert b.price("AAPL") == pytest.approx(200.0)
    assert len(fake.requests("GET", "/v2/account")) == 1

    monkeypatch.delenv("WORKBENCH_ALPACA_TRADING_URL")
    monkeypatch.delenv("APCA_API_KEY_ID")
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    (tmp_path / ".env").write_text(f"WORKBENCH_ALPACA_TRADING_URL={fake.url}\n"
                                   f"ALPACA_API_KEY={API_KEY}\nALPACA_SECRET_KEY={SECRET_KEY}\n")
    with AlpacaBroker(timeout=TIMEOUT) as b:
        assert b.base_url == fake.url and b.account().equity == pytest.approx(100_000.0)

    (tmp_path / ".env").unlink()
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    assert AlpacaBroker().base_url == "https://paper-api.alpaca.markets"
    with pytest.raises(ConfigError, match="live trading endpoint"):
        AlpacaBroker(base_url="https://api.alpaca.markets")
    with pytest.raises(ConfigError, match="not an http"):
        AlpacaBroker(base_url="paper-api.alpaca.markets")
    with pytest.raises(ConfigError, match="retries"):
        AlpacaBroker(retries="many")


def test_missing_or_refused_keys_say_which_settings(
        fake: AlpacaTradingFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(CredentialsError, match=r"only APCA_API_KEY_ID is set.*APCA_API_SECRET_KEY"):
        make_broker(fake)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "wrong-secret")
    bad = make_broker(fake)
    with pytest.raises(CredentialsError, match=r"HTTP 401.*APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        bad.account()
    with pytest.raises(CredentialsError, match="placing order"):
        bad.submit(_req())
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    fake.server.fail_next(ORDERS, Response(403, "Forbidden", {"Content-Type": "text/plain"}),
                          method="POST")
    with pytest.raises(CredentialsError, match="HTTP 403"):
        make_broker(fake, retries=0).submit(_req())
    assert fake.created() == 0


def test_keys_never_appear_in_logs_messages_or_repr(
        fake: AlpacaTradingFake, broker: AlpacaBroker, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    seen: list[str] = [repr(broker), str(vars(broker).get("base_url"))]
    broker.submit(_req())
    fake.fault("timeout")
    broker.submit(_req(n=1))
    fake.server.fail_next(ORDERS, Response(422, {"code": 40010001, "message": f"bad {SECRET_KEY} {API_KEY}"}),
                          method="POST")
    fake.fault("500", 50)
    fake.server.fail_next(BY_CLIENT_ID, Response(503, "<html>down</html>"), 50, after=True)
    for request in (_req(n=2), _req(n=3)):
        with pytest.raises((OrderRejected, BrokerUnavailable)) as err:
            broker.submit(request)
        seen += [str(err.value), "".join(traceback.format_exception(err.value))]
    assert "***" in seen[2]  # the key echoed by the server was scrubbed
    fake.server.faults.clear()
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY + "x")
    with pytest.raises(CredentialsError) as err:
        make_broker(fake).account()
    seen += [str(err.value), "".join(traceback.format_exception(err.value))]
    seen += [r.getMessage() for r in caplog.records]
    assert any("looking it up" in text for text in seen)  # the log was captured
    for text in seen:
        assert API_KEY not in text and SECRET_KEY not in text


# ---------------------------------------------------------------------- crypto fees
def test_crypto_cycle_books_the_fee_in_the_asset_received(
        fake: AlpacaTradingFake, broker: AlpacaBroker, tmp_path: Path) -> None:
    """Alpaca takes a crypto buy's fee out of the coin received and a sell's out of the USD: the
    journal books both, holds what the account holds, and the exit of that quantity closes it."""
    bar = pd.Timestamp("2026-02-01", tz="UTC")
    with Journal(tmp_path / "j.sqlite") as journal:
        buy = _req("BTC/USD", qty=0.5)
        journal.record_intent("s", bar, "entry", buy)
        order = broker.submit(buy)
        order = broker.get_order(buy.client_order_id) or order
        assert order.filled_qty == 0.5  # Alpaca's filled_qty is the gross quantity
        assert (order.fee, order.fee_currency, order.fee_in_asset) == (0.00125, "BTC", True)
        journal.apply(order, fill_bar=bar)
        book = journal.ledger("s", 100_000)
        assert book.positions == {"BTC/USD": Decimal("0.49875")}
        assert book.cash == Decimal(100_000 - 30_000)
        assert broker.positions()["BTC/USD"].qty == 0.49875  # what the venue holds: the same

        fake.set_price("BTC/USD", 61_000.0)
        sell = _req("BTC/USD", side=Side.SELL, qty=float(book.positions["BTC/USD"]), leg="exit")
        journal.record_intent("s", bar, "exit", sell)
        broker.submit(sell)
        order = broker.get_order(sell.client_order_id)
        assert order is not None and order.status is OrderStatus.FILLED
        assert (order.fee_currency, order.fee_in_asset) == ("USD", False)
        journal.apply(order, fill_bar=bar)
        book = journal.ledger("s", 100_000)
        proceeds = Decimal("0.49875") * 61_000
        assert book.positions == {} and broker.positions() == {}
        assert book.cash == 70_000 + proceeds - (proceeds * Decimal("0.0025")).quantize(Decimal("1e-9"))
        assert Decimal(repr(broker.account().cash)) == book.cash
    assert [a["qty"] for a in fake.activities] == ["-0.00125", "-76.059375"]


def test_crypto_fee_rates_are_settings(fake: AlpacaTradingFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ALPACA_CRYPTO_TAKER_FEE", "0.001")
    assert make_broker(fake).crypto_taker_fee == 0.001
    with pytest.raises(ConfigError, match="is a fraction"):
        make_broker(fake, crypto_maker_fee=0.15)


# ---------------------------------------------------------------------- the fake itself
def test_fake_replies_validate_against_alpaca_py_models(fake: AlpacaTradingFake) -> None:
    """The fake's wire format is what alpaca-py's own models parse (field names, enums, types)."""
    client = TradingClient(API_KEY, SECRET_KEY, paper=True, url_override=fake.url)
    placed = client.submit_order(MarketOrderRequest(symbol="BTC/USD", qty=0.5, side=OrderSide.BUY,
                                                    time_in_force=TimeInForce.GTC, client_order_id="m1"))
    assert isinstance(placed, SdkOrder) and placed.status.value == "pending_new"
    assert client.get_order_by_client_id("m1").status.value == "filled"
    assert client.get_order_by_id(placed.id).filled_avg_price == "60000"
    assert isinstance(client.get_account(), TradeAccount)
    [position] = client.get_all_positions()
    assert isinstance(position, Position) and position.symbol == "BTCUSD"
    assert client.get_open_position("BTCUSD").qty == "0.49875"  # net of the 0.25 % taker fee
    [fee] = client.get("/account/activities/CFEE")
    activity = NonTradeActivity(**fee, account_id=ACCOUNT_ID)
    assert activity.activity_type.value == "CFEE" and activity.qty == pytest.approx(-0.00125)
    assert isinstance(client.get_clock(), Clock)
    fake.fill_mode = "none"
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                                           time_in_force=TimeInForce.DAY, client_order_id="m2"))
    assert [o.client_order_id for o in client.get_orders()] == ["m2"]
    [cancelled] = client.cancel_orders()
    assert cancelled.status == 200
    body = json.loads(fake.requests("POST", ORDERS)[0].body)
    assert body["client_order_id"] == "m1" and fake.created() == 2


def test_lot_rules_come_from_the_asset_record(fake: AlpacaTradingFake, broker: AlpacaBroker) -> None:
    """`GET /v2/assets/{symbol}`: whole shares unless fractionable, crypto's increment and minimum."""
    from workbench.backtest import Lot

    fake.assets["MSFT"] = {"fractionable": False}
    assert broker.lot("MSFT") == Lot(step=1.0)
    assert broker.lot("BTC/USD") == Lot(step=1e-9, min_qty=1e-6)
    assert broker.lot("AAPL") == Lot()  # fractionable equity: any size (9 decimals, normalize_qty)
    assert broker.lot("MSFT").round(2.7) == 2.0
