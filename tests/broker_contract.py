"""The shared broker contract suite: one set of tests every `Broker` implementation must pass.

A test module subclasses `BrokerContract` and provides a `harness` fixture yielding an object with:

- ``broker``: the `Broker` under test, with zero fees and slippage (fills at the set price);
- ``symbol``: a tradable symbol; ``price0``: its initial price; ``qty``: a small valid quantity;
- ``set_price(symbol, price)``: the price the venue fills market orders at from now on;
- ``fill_mode(mode)``: how the venue fills the next market orders: ``"full"`` (default),
  ``"partial"`` (half now, the rest rests) or ``"none"`` (the order rests unfilled);
- ``complete_fills()``: fill every resting or partial market order at the current price;
- ``fault(kind, times=1) -> bool``: serve ``kind`` instead of the next ``times`` order submissions:
  ``"429"``, ``"500"``, ``"503"``, ``"timeout"`` (the venue accepts the order but answers after the
  client's timeout), ``"lost"`` (the venue accepts the order and drops the connection without a
  reply); ``times=0`` clears queued faults; returns False when the venue cannot (the simulated broker);
- ``created()``: how many distinct orders the venue has created (duplicate checks).

Like optuna's storage suite, the same tests run against every implementation.
"""

from __future__ import annotations

import math

import pytest

from workbench.errors import BrokerUnavailable, OrderRejected
from workbench.paper.broker import (
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    client_order_id,
)


def _cid(leg: str, n: int = 0) -> str:
    return client_order_id("contract", "X", f"2026-01-01T00:{n:02d}:00+00:00", leg)


def _req(
    h, leg: str = "entry", n: int = 0, side: Side = Side.BUY, qty: float | None = None, **kw
) -> OrderRequest:
    return OrderRequest(
        client_order_id=_cid(leg, n), symbol=h.symbol, side=side, qty=qty if qty is not None else h.qty, **kw
    )


def _pos(h) -> float:
    p = h.broker.positions().get(h.symbol)
    return 0.0 if p is None else p.qty


class BrokerContract:
    """Subclass and provide the `harness` fixture."""

    def test_market_buy_fills_and_shows_in_positions(self, harness) -> None:
        before = _pos(harness)
        cash0 = harness.broker.account().cash
        order = harness.broker.submit(_req(harness))
        assert isinstance(order, Order)
        if order.status is not OrderStatus.FILLED:  # venues may fill asynchronously
            order = harness.broker.get_order(order.client_order_id)
        assert order.status is OrderStatus.FILLED
        assert order.filled_qty == pytest.approx(harness.qty)
        assert order.avg_fill_price == pytest.approx(harness.price0, rel=1e-6)
        assert order.client_order_id == _cid("entry")
        assert order.broker_order_id
        assert _pos(harness) == pytest.approx(before + harness.qty)
        cash1 = harness.broker.account().cash
        assert cash1 == pytest.approx(cash0 - harness.qty * harness.price0 - order.fee, rel=1e-6)

    def test_resubmitting_a_client_id_returns_the_same_order(self, harness) -> None:
        first = harness.broker.submit(_req(harness))
        n = harness.created()
        again = harness.broker.submit(_req(harness))
        assert again.broker_order_id == first.broker_order_id
        assert harness.created() == n
        assert _pos(harness) == pytest.approx(harness.qty)

    def test_get_order_unknown_is_none_and_known_matches(self, harness) -> None:
        assert harness.broker.get_order(_cid("entry", 59)) is None
        placed = harness.broker.submit(_req(harness, n=1))
        found = harness.broker.get_order(placed.client_order_id)
        assert found is not None and found.broker_order_id == placed.broker_order_id
        assert found.symbol == harness.symbol and found.side is Side.BUY

    def test_rejected_order_raises_and_changes_nothing(self, harness) -> None:
        cash = harness.broker.account().cash
        huge = cash / harness.price0 * 1000
        with pytest.raises(OrderRejected) as err:
            harness.broker.submit(_req(harness, qty=huge))
        assert str(err.value)
        assert _pos(harness) == 0
        assert harness.broker.account().cash == pytest.approx(cash)
        seen = harness.broker.get_order(_cid("entry"))
        assert seen is None or seen.status is OrderStatus.REJECTED

    def test_partial_fill_then_completion(self, harness) -> None:
        harness.fill_mode("partial")
        order = harness.broker.submit(_req(harness, qty=harness.qty * 2))
        order = harness.broker.get_order(order.client_order_id)
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert 0 < order.filled_qty < order.qty
        assert order in harness.broker.open_orders() or any(
            o.client_order_id == order.client_order_id for o in harness.broker.open_orders()
        )
        harness.complete_fills()
        order = harness.broker.get_order(order.client_order_id)
        assert order.status is OrderStatus.FILLED
        assert order.filled_qty == pytest.approx(harness.qty * 2)
        assert _pos(harness) == pytest.approx(harness.qty * 2)

    def test_resting_order_cancels_and_cancel_is_idempotent(self, harness) -> None:
        harness.fill_mode("none")
        order = harness.broker.submit(_req(harness))
        assert order.status is OrderStatus.NEW
        assert [o.client_order_id for o in harness.broker.open_orders(harness.symbol)] == [
            order.client_order_id
        ]
        gone = harness.broker.cancel(order.client_order_id)
        assert gone is not None and gone.status is OrderStatus.CANCELED
        again = harness.broker.cancel(order.client_order_id)
        assert again is not None and again.status is OrderStatus.CANCELED
        assert harness.broker.open_orders() == []
        assert harness.broker.cancel(_cid("exit", 58)) is None
        assert _pos(harness) == 0

    def test_sell_closes_the_position(self, harness) -> None:
        harness.broker.submit(_req(harness))
        harness.set_price(harness.symbol, harness.price0 * 1.1)
        sold = harness.broker.submit(_req(harness, leg="exit", side=Side.SELL))
        sold = harness.broker.get_order(sold.client_order_id)
        assert sold.status is OrderStatus.FILLED
        assert sold.avg_fill_price == pytest.approx(harness.price0 * 1.1, rel=1e-6)
        assert harness.symbol not in harness.broker.positions() or _pos(harness) == pytest.approx(
            0, abs=1e-12
        )

    def test_protective_stop_rests_until_cancelled(self, harness) -> None:
        harness.broker.submit(_req(harness))
        stop = harness.broker.submit(
            _req(harness, leg="sl", side=Side.SELL, type=OrderType.STOP, stop_price=harness.price0 * 0.5)
        )
        assert stop.status is OrderStatus.NEW
        assert any(o.client_order_id == stop.client_order_id for o in harness.broker.open_orders())
        assert harness.broker.cancel(stop.client_order_id).status is OrderStatus.CANCELED
        assert _pos(harness) == pytest.approx(harness.qty)

    def test_price_and_account(self, harness) -> None:
        assert harness.broker.price(harness.symbol) == pytest.approx(harness.price0, rel=1e-6)
        acct = harness.broker.account()
        assert math.isfinite(acct.cash) and acct.equity == pytest.approx(acct.cash)
        q = harness.broker.normalize_qty(harness.symbol, harness.qty * 1.0000001)
        assert 0 < q <= harness.qty * 1.0000001

    # ---------------------------------------------------------------- transport faults
    @pytest.mark.parametrize("kind", ["429", "500", "503"])
    def test_transient_error_is_retried_once_only_one_order(self, harness, kind) -> None:
        if not harness.fault(kind, 1):
            pytest.skip(f"{type(harness.broker).__name__} has no transport to fail")
        order = harness.broker.submit(_req(harness))
        order = harness.broker.get_order(order.client_order_id)
        assert order.status is OrderStatus.FILLED
        assert harness.created() == 1
        assert _pos(harness) == pytest.approx(harness.qty)

    @pytest.mark.parametrize("kind", ["lost", "timeout"])
    def test_lost_reply_is_resolved_by_client_id_lookup(self, harness, kind) -> None:
        if not harness.fault(kind, 1):
            pytest.skip(f"{type(harness.broker).__name__} has no transport to fail")
        order = harness.broker.submit(_req(harness))
        assert order.client_order_id == _cid("entry")
        assert harness.created() == 1
        assert _pos(harness) == pytest.approx(harness.qty)

    def test_persistent_outage_raises_unavailable_then_lookup_settles_it(self, harness) -> None:
        if not harness.fault("500", 50):
            pytest.skip(f"{type(harness.broker).__name__} has no transport to fail")
        with pytest.raises(BrokerUnavailable):
            harness.broker.submit(_req(harness))
        harness.fault("500", 0)
        seen = harness.broker.get_order(_cid("entry"))
        assert harness.created() == (0 if seen is None else 1)
        again = harness.broker.submit(_req(harness))
        assert harness.created() == 1 and again.client_order_id == _cid("entry")
