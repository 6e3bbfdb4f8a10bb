"""Paper trading resting entries (SEMANTICS.md "Entry orders"): the runner sends limit, stop and stop-limit
entries with their time in force through the sim broker, which fills them bar by bar as the backtest does
(gaps at the open, the range after, a stop-limit past its limit resting as a limit), places their
protective legs when they fill (the stop-loss tested in the fill's own bar) and expires them; a replay
equals the backtest trade for trade."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paper_helpers import BRACKETS, build_lake, registered, spec_for

from workbench.backtest.engine import Costs
from workbench.paper.journal import Journal
from workbench.paper.replay import replay
from workbench.strategies.base import ParamSpace, Signals, Strategy, float_param, int_param

PERIOD = ("2025-03-01", "2025-03-15")
KINDS = np.array(["limit", "stop", "stop_limit"])


def _resting_signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Entries drawn from each bar's own timestamp (causal), each with a random order type, price
    distance and time in force; exits and brackets as the market test strategy's."""
    t = pd.DatetimeIndex(bars.index).as_unit("ns").asi8 // 3_600_000_000_000
    h = (t * 2654435761 + p["seed"] * 97) % 1000
    le, se = h < 90, (h >= 90) & (h < 160)
    lx, sx = (h >= 500) & (h < 520), (h >= 520) & (h < 540)
    close = bars["close"].to_numpy()
    side = np.where(le, 1.0, -1.0)
    kind = KINDS[(h // 7) % 3]
    away = 0.001 + (h % 13) * 0.0006  # 0.1 % .. 0.8 % from the close
    limit = np.where(kind == "limit", close * (1 - side * away), np.nan)
    stop = np.where(kind != "limit", close * (1 + side * away), np.nan)
    limit = np.where(kind == "stop_limit", stop * (1 + side * 0.002 * (h % 3)), limit)
    return Signals(le, lx, se, sx, stop_loss=p["sl"], take_profit=p["tp"], trailing_stop=p["tsl"],
                   order_type=kind, limit_price=limit, stop_price=stop, time_in_force=1 + (h % 5))


RESTING = Strategy(
    name="test_resting",
    space=ParamSpace.of(int_param("seed", 1, 0, 100), float_param("sl", 0.006, 0.001, 0.5),
                        float_param("tp", 0.012, 0.001, 0.5), float_param("tsl", 0.01, 0.001, 0.5)),
    fn=_resting_signals,
    warmup=lambda p: 1,
)


@pytest.fixture(autouse=True)
def _registered():
    with registered(RESTING, BRACKETS):
        yield


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    return build_lake(tmp_path_factory.mktemp("resting_lake"))


def _check(res) -> None:
    assert res.parity.ok, f"{res.parity.summary()}\n{res.parity.differences.to_string()}"
    assert len(res.trades) == len(res.backtest.trades)


@pytest.mark.parametrize(("order", "short"), [("limit", False), ("stop", True)])
def test_sma_pullback_replays_trade_for_trade(lake, tmp_path: Path, order: str, short: bool) -> None:
    params = {"fast": 5, "slow": 20, "order": order, "offset": 0.003, "tif": 4, "short": short}
    res = replay(spec_for("sma_pullback", params), "2025-02-01", "2025-04-01", lake=lake, workdir=tmp_path)
    _check(res)
    assert len(res.trades) >= 4
    with Journal(res.journal_path) as j:
        entries = j.orders_frame("sma_pullback").query("leg == 'entry'")
        assert set(entries["type"]) == {order}
        # some rest to their time in force and expire unfilled; the filled ones fill at their price
        assert (entries["status"] == "expired").any() and (entries["status"] == "filled").any()


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_limit_stop_and_stop_limit_entries_with_brackets_replay_trade_for_trade(
        lake, tmp_path: Path, fill: str) -> None:
    spec = spec_for(RESTING.name, {"seed": 11}, symbols=("BTC/USDT", "ETH/USDT"), fill=fill,
                    costs=Costs(fees=0.0007, slippage=0.0003), max_exposure=0.8)
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    _check(res)
    assert len(res.trades) >= 15
    reasons = set(res.trades["exit_reason"])
    assert {"stop_loss", "take_profit"} <= reasons, reasons
    with Journal(res.journal_path) as j:
        orders = j.orders_frame(spec.name)
        entries = orders[orders["leg"] == "entry"]
        assert set(entries["type"]) == {"limit", "stop", "stop_limit"}
        filled = set(entries.loc[entries["status"] == "filled", "type"])
        assert filled == {"limit", "stop", "stop_limit"}, filled
        assert {"expired", "canceled"} <= set(entries["status"])
        # the protective legs rested with their entries; those of entries that never filled went with them
        legs = orders[orders["leg"].isin(["sl", "tp", "tsl"])]
        assert len(legs) == 3 * len(entries)
        done = entries["status"].isin(["expired", "canceled"])
        never = entries.loc[(entries["filled_qty"].map(float) == 0) & done, "client_order_id"]
        assert (legs[legs["oco_group"].isin(never)]["status"] == "canceled").all()
        # a position entered inside a bar was stopped out in that same bar at least once
        fills = j.fills_frame(spec.name)
        by_order = fills.set_index("client_order_id")
        same_bar = 0
        for _, leg in legs[legs["status"] == "filled"].iterrows():
            entry_bar = by_order.loc[leg["oco_group"], "bar"]
            exit_bar = by_order.loc[leg["client_order_id"], "bar"]
            same_bar += leg["leg"] == "sl" and entry_bar == exit_bar
        assert same_bar >= 1


def test_a_broker_without_resting_entries_refuses_them_in_one_line(lake, tmp_path: Path) -> None:
    """A broker that takes no resting entries: the tick that would send one fails in one line, journaled,
    and nothing is sent."""
    from workbench.paper.feed import BarFeed
    from workbench.paper.journal import TickStatus
    from workbench.paper.runner import Runner
    from workbench.paper.sim import SimBroker

    class MarketOnly(SimBroker):
        name = "market-only"
        resting_entries = False

    spec = spec_for("sma_pullback", {"fast": 5, "slow": 20, "order": "limit", "offset": 0.003, "tif": 4})
    feed = BarFeed(spec.symbols, "1h", lake=lake)
    clock = {"now": pd.Timestamp("2025-02-02", tz="UTC")}
    broker = MarketOnly(feed=feed, costs=spec.costs, clock=lambda: clock["now"])
    with Journal(tmp_path / "j.sqlite") as j:
        runner = Runner([spec], broker=broker, journal=j, feeds={spec.name: feed}, follow_timeout=0.0)
        failed = None
        for now in pd.date_range("2025-02-02", periods=400, freq="1h", tz="UTC"):
            clock["now"] = now
            out = runner.tick(now)[0]
            if out.status is TickStatus.ERROR:
                failed = out.message
                break
        assert failed is not None and "\n" not in failed
        assert failed.startswith("sma_pullback: BTC/USDT enters with a limit order; the market-only broker "
                                 "takes no resting entries yet")
        assert j.orders_frame().empty and failed in j.errors_frame()["message"].tolist()


def _one_limit_then_exit(bars: pd.DataFrame, p: dict) -> Signals:
    """A buy limit at 99 placed on the bar at `p["at"]` hours (resting 5 bars), and an exit signal on the
    next bar: it must cancel the order before the bar after opens through the limit."""
    hours = (pd.DatetimeIndex(bars.index) - pd.Timestamp("2025-01-01", tz="UTC")) // pd.Timedelta(hours=1)
    le = np.asarray(hours == p["at"])
    lx = np.asarray(hours == p["at"] + 1)
    return Signals(le, lx, order_type="limit", limit_price=99.0, time_in_force=5)


def test_an_exit_signal_cancels_a_resting_limit_before_the_open_that_would_fill_it(tmp_path: Path) -> None:
    from workbench.data.lake import Lake

    n, at = 300, 250
    index = pd.date_range("2025-01-01", periods=n, freq="1h", tz="UTC")
    px = np.full(n, 100.0)
    bars = pd.DataFrame({"ts": index, "open": px, "high": px + 0.5, "low": px - 0.5, "close": px,
                         "volume": 10.0})
    bars.loc[at + 2, ["open", "low", "close"]] = [98.0, 97.5, 98.5]  # opens through the limit at 99
    lake = Lake(tmp_path / "lake")
    lake.write_bars("synthetic", "BTC/USDT", "1h", bars)
    strat = Strategy("test_limit_exit", ParamSpace.of(int_param("at", at, 0, 1000)), _one_limit_then_exit,
                     warmup=lambda p: 1)
    with registered(strat):
        spec = spec_for(strat.name, {"at": at}, costs=Costs(fees=0.001, slippage=0.0))
        res = replay(spec, index[at - 5], index[-1], lake=lake, workdir=tmp_path / "w")
    assert res.parity.ok, res.parity.summary()
    assert len(res.backtest.trades) == 0 and len(res.trades) == 0  # cancelled at the open, unfilled
    with Journal(res.journal_path) as j:
        [entry] = j.orders_frame(spec.name).query("leg == 'entry'").to_dict("records")
        assert entry["status"] == "canceled" and float(entry["filled_qty"]) == 0


@pytest.mark.parametrize("strategy", ["test_resting", "test_brackets"])
def test_volume_capped_entries_replay_trade_for_trade(lake, tmp_path: Path, strategy: str) -> None:
    """Entries fill at most 0.08 % of their bar's volume (SEMANTICS.md "Volume cap"): a market entry's rest
    is cancelled, a limit's rest keeps resting and adds to the position; the sim broker fills and the
    journal books them as the backtest does."""
    costs = Costs(fees=0.0007, slippage=0.0003, volume_cap=0.0008)
    spec = spec_for(strategy, {"seed": 11}, symbols=("BTC/USDT", "ETH/USDT"), costs=costs, max_exposure=0.8)
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    _check(res)
    assert len(res.trades) >= 10
    with Journal(res.journal_path) as j:
        entries = j.orders_frame(spec.name).query("leg == 'entry'")
        cut = entries[(entries["filled_qty"].map(float) > 0)
                      & (entries["filled_qty"].map(float) < entries["qty"].map(float) * (1 - 1e-9))]
        assert len(cut) >= 3  # orders the cap cut short
        if strategy == "test_resting":  # some limit remainders filled on a later bar
            fills = j.fills_frame(spec.name)
            per_entry = fills[fills["client_order_id"].isin(entries["client_order_id"])].groupby(
                "client_order_id")["bar"].nunique()
            assert (per_entry > 1).sum() >= 1
