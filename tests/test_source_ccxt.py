"""CcxtSource against a Binance spot fake: the unmodified ccxt client, real wire format, loopback.

The source is pointed at the fake through its base-URL override (constructor option or the
WORKBENCH_CCXT_BASE_URL setting); a guard fails any test that opens a socket anywhere but loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from servers.binance import BinanceServer
from servers.loopback import Response, guard_loopback

from workbench import Lake
from workbench.data.quality import IssueKind
from workbench.data.sources import get_source
from workbench.data.sources.ccxt import BASE_URL_SETTING, CcxtSource, rebase_urls
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, CredentialsError, SourceError

pytestmark = pytest.mark.network

START, END = "2024-03-01", "2024-03-04"  # three days: 4320 one-minute bars
DAY_BARS = 1440


def _ms(value: str) -> int:
    return int(pd.Timestamp(value, tz="UTC").value // 1_000_000)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No traffic leaves the machine, and no developer .env or env var redirects the source."""
    guard_loopback(monkeypatch)
    monkeypatch.delenv(BASE_URL_SETTING, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def _binance() -> Iterator[BinanceServer]:
    with BinanceServer(now_ms=_ms("2024-06-01")) as srv:
        yield srv


@pytest.fixture
def server(_binance: BinanceServer) -> BinanceServer:
    """The module's fake, reset: no requests logged, no faults queued, no gaps."""
    _binance.reset()
    return _binance


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def source(server: BinanceServer, sleeps: list[float]) -> CcxtSource:
    return CcxtSource("binance", base_url=server.url, sleep=sleeps.append, max_retries=3)


def _served(server: BinanceServer, start: str = START, end: str = END,
            symbol_id: str = "BTCUSDT", interval: str = "1m") -> pd.DataFrame:
    return server.frame(symbol_id, interval, start, end)


def _stored(lake: Lake, start: str = START, end: str = END, tf: str = "1m") -> pd.DataFrame:
    return lake.read_bars("binance", "BTC/USDT", tf, start, end)


def _snapshot(lake: Lake) -> tuple[list[tuple[str, int, int]], list[object]]:
    coverage = lake.coverage()
    files = sorted(
        (str(p.relative_to(lake.root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in lake.root.rglob("*") if p.is_file()
    )
    return files, coverage


# ---------------------------------------------------------------------- wiring
def test_base_url_option_redirects_every_endpoint_and_loads_spot_only(
    server: BinanceServer, source: CcxtSource
) -> None:
    api = source.exchange.urls["api"]
    assert api["public"] == f"{server.url}/api/v3"
    assert api["sapi"] == f"{server.url}/sapi/v1"
    assert api["fapiPublic"] == f"{server.url}/fapi/v1"
    assert all(str(u).startswith(server.url) for u in api.values())
    assert source.exchange.options["fetchMarkets"]["types"] == ["spot"]
    assert source.exchange.options["fetchCurrencies"] is False

    assert source.canonical_symbol("BTC/USDT") == "BTC/USDT"
    # load_markets touched exactly one endpoint: spot exchangeInfo (no fapi/dapi/sapi calls)
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/api/v3/exchangeInfo")]


def test_env_setting_points_the_source_at_the_fake(
    server: BinanceServer, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BASE_URL_SETTING, server.url)
    src = get_source("ccxt:binance", sleep=lambda _: None)
    assert isinstance(src, CcxtSource)
    assert src.name == "binance"
    assert src.base_url == server.url
    [res] = lake.sync(src, ["BTC/USDT"], "1m", START, "2024-03-02")
    assert res.rows_added == DAY_BARS
    assert len(server.klines_calls()) == 2
    assert src.exchange.last_request_url.startswith(server.url)


def test_rebase_urls_keeps_paths_through_nested_structures() -> None:
    urls = {
        "public": "https://api.example.com/api/v3",
        "nested": {"rest": "https://x.example.com/v2?x=1", "list": ["https://y.example.com"]},
        "template": "https://api.{hostname}/v1",
        "not_a_url": "{hostname}",
    }
    out = rebase_urls(urls, "http://127.0.0.1:8080/prefix/")
    assert out == {
        "public": "http://127.0.0.1:8080/prefix/api/v3",
        "nested": {"rest": "http://127.0.0.1:8080/prefix/v2?x=1",
                   "list": ["http://127.0.0.1:8080/prefix"]},
        "template": "http://127.0.0.1:8080/prefix/v1",
        "not_a_url": "{hostname}",
    }
    with pytest.raises(ConfigError, match="scheme and host"):
        rebase_urls(urls, "127.0.0.1:8080")


def test_unknown_exchange_and_timeframes() -> None:
    with pytest.raises(ConfigError, match="did you mean 'binance'"):
        CcxtSource("binanse")
    src = CcxtSource("binance", base_url="http://127.0.0.1:9")
    assert src.timeframes == ("1m", "5m", "15m", "1h", "4h", "1d")
    with pytest.raises(ConfigError, match="does not serve 3m"):
        src.check_timeframe(Timeframe.parse("3m"))


# ---------------------------------------------------------------------- symbols
def test_canonical_symbol_translation(server: BinanceServer, source: CcxtSource) -> None:
    assert source.canonical_symbol("BTCUSDT") == "BTC/USDT"
    assert source.canonical_symbol("btc/usdt") == "BTC/USDT"
    assert source.canonical_symbol(" ethbtc ") == "ETH/BTC"
    assert source.canonical_symbol("ETH/BTC") == "ETH/BTC"
    assert len(server.hits("/api/v3/exchangeInfo")) == 1  # markets are loaded once


def test_sync_accepts_exchange_ids(server: BinanceServer, source: CcxtSource, lake: Lake) -> None:
    [res] = lake.sync(source, ["BTCUSDT"], "1m", START, "2024-03-01T02:00")
    assert res.key.symbol == "BTC/USDT"
    assert [c.symbol for c in lake.coverage()] == ["BTC/USDT"]


def test_unknown_symbol_raises_config_error_naming_it(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    with pytest.raises(ConfigError, match=r"unknown symbol 'DOGE/USDT' on binance"):
        lake.sync(source, ["DOGE/USDT"], "1m", START, END)
    with pytest.raises(ConfigError, match=r"'BTC/USD'.*did you mean 'BTC/USDT'"):
        source.canonical_symbol("BTC/USD")
    with pytest.raises(ConfigError, match=r"'ETHUSD'.*did you mean 'ETH/USDT'"):
        source.canonical_symbol("ETHUSD")
    assert server.klines_calls() == []
    assert lake.series() == []


def test_symbol_rejected_by_the_exchange_is_a_config_error(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    source.canonical_symbol("ETH/BTC")  # markets loaded while it was still listed
    server.delist("ETHBTC")  # klines now answer 400 {"code":-1121,"msg":"Invalid symbol."}
    with pytest.raises(ConfigError, match="rejected symbol ETH/BTC") as err:
        lake.sync(source, ["ETH/BTC"], "1m", START, END)
    assert "Invalid symbol" in str(err.value)
    assert len(server.klines_calls()) == 1  # not retried
    assert lake.series() == []


# ---------------------------------------------------------------------- syncing
def test_sync_stores_exactly_what_the_server_served(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    [res] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert (res.rows_fetched, res.rows_added, res.missing_in_range) == (3 * DAY_BARS,) * 2 + (0,)
    pd.testing.assert_frame_equal(_stored(lake), _served(server))
    calls = server.klines_calls()
    assert len(calls) == 5  # 4320 bars in pages of at most 1000
    assert all(c.query["symbol"] == "BTCUSDT" and c.query["interval"] == "1m" for c in calls)
    assert all(int(c.query["limit"]) <= 1000 for c in calls)
    assert int(calls[0].query["startTime"]) == _ms(START)
    # every request went to the fake, and nothing but market data was asked for
    assert {r.path for r in server.requests} == {"/api/v3/exchangeInfo", "/api/v3/klines"}
    [cov] = lake.coverage()
    assert (cov.source, cov.rows, cov.missing_bars) == ("binance", 3 * DAY_BARS, 0)


def test_sync_hourly_bars(server: BinanceServer, source: CcxtSource, lake: Lake) -> None:
    [res] = lake.sync(source, ["BTC/USDT"], "1h", START, END)
    assert res.rows_added == 72
    pd.testing.assert_frame_equal(_stored(lake, tf="1h"),
                                  _served(server, interval="1h"))


def test_resync_is_incremental(server: BinanceServer, source: CcxtSource, lake: Lake) -> None:
    lake.sync(source, ["BTC/USDT"], "1m", START, END)
    before = len(server.klines_calls())

    [again] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert (again.rows_fetched, again.rows_added, again.requested) == (0, 0, [])
    assert len(server.klines_calls()) == before  # nothing fetched

    later = "2024-03-04T06:00"
    [more] = lake.sync(source, ["BTC/USDT"], "1m", START, later)
    new_calls = server.klines_calls()[before:]
    assert more.requested == [(str(pd.Timestamp(END, tz="UTC")),
                               str(pd.Timestamp(later, tz="UTC")))]
    assert (more.rows_fetched, more.rows_added) == (360, 360)
    assert len(new_calls) == 1 and int(new_calls[0].query["startTime"]) == _ms(END)
    assert int(new_calls[0].query["limit"]) == 360
    pd.testing.assert_frame_equal(_stored(lake, end=later), _served(server, end=later))


def test_repeated_rows_across_pages_give_one_row_per_bar_and_skip_none(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    server.repeat_rows = 5  # each page starts 5 bars before startTime
    pages = list(source.fetch("BTC/USDT", Timeframe.parse("1m"), pd.Timestamp(START, tz="UTC"),
                              pd.Timestamp(END, tz="UTC")))
    fetched = pd.concat(pages, ignore_index=True)
    assert fetched["ts"].is_unique
    pd.testing.assert_frame_equal(fetched, _served(server))

    [res] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert res.rows_added == 3 * DAY_BARS and res.missing_in_range == 0
    assert res.report is not None and res.report.count(IssueKind.DUPLICATE_TS) == 0
    pd.testing.assert_frame_equal(_stored(lake), _served(server))


def test_ccxt_paginate_skips_bars_when_pages_repeat_rows(
    server: BinanceServer, source: CcxtSource
) -> None:
    """Why fetch pages by hand: ccxt's paginate=True walks fixed windows and loses bars here."""
    server.repeat_rows = 3
    until = _ms(END)
    rows = source.exchange.fetch_ohlcv("BTC/USDT", "1m", _ms(START), None,
                                       {"paginate": True, "until": until})
    got = {r[0] for r in rows if r[0] < until}
    assert len(got) < 3 * DAY_BARS


def test_server_side_gaps_are_reported(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    missing = server.add_gap("BTCUSDT", "2024-03-01T06:00", "2024-03-01T06:37")
    missing += server.add_gap("BTCUSDT", "2024-03-02T23:59", "2024-03-03T00:02")
    assert missing == 40
    [res] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert res.missing_in_range == 40
    assert res.rows_added == 3 * DAY_BARS - 40
    [cov] = lake.coverage()
    assert cov.missing_bars == 40
    assert cov.gaps == [
        ("2024-03-01 06:00:00+00:00", "2024-03-01 06:36:00+00:00", 37),
        ("2024-03-02 23:59:00+00:00", "2024-03-03 00:01:00+00:00", 3),
    ]
    pd.testing.assert_frame_equal(_stored(lake), _served(server))


# ---------------------------------------------------------------------- failures
def test_rate_limits_and_server_errors_are_retried(
    server: BinanceServer, source: CcxtSource, lake: Lake, sleeps: list[float]
) -> None:
    server.rate_limit_next(times=2, retry_after=7)
    [res] = lake.sync(source, ["BTC/USDT"], "1m", START, "2024-03-02")
    assert res.rows_added == DAY_BARS
    assert sleeps == [7.0, 7.0]  # Retry-After outweighs the 1 s / 2 s backoff
    assert len(server.klines_calls()) == 2 + 2  # two refused, then two pages

    sleeps.clear()
    server.server_error_next(times=1, status=500)  # {"code":-1001,"msg":"Internal error; ..."}
    server.server_error_next(times=1, status=502)  # a gateway's HTML page
    server.fail_next("/api/v3/klines", Response(drop=True))  # connection lost mid-request
    [res] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert res.rows_added == 2 * DAY_BARS
    assert sleeps == [1.0, 2.0, 4.0]  # exponential backoff
    pd.testing.assert_frame_equal(_stored(lake), _served(server))


def test_persistent_server_errors_raise_keep_what_arrived_and_a_rerun_resumes(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    lake.sync(source, ["BTC/USDT"], "1m", START, "2024-03-02")
    calls_before = len(server.klines_calls())
    injected = []

    def fail_after_first_page(key: str, rows: int, total: int) -> None:
        if not injected:  # the first page arrived; from now on the exchange is down
            injected.append(rows)
            server.server_error_next(times=1000, status=500)

    with pytest.raises(SourceError) as err:
        lake.sync(source, ["BTC/USDT"], "1m", START, END, progress=fail_after_first_page)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("binance: fetching 1m bars of BTC/USDT from 2024-03-02T16:40Z")
    assert "failed 4 times" in message and "re-run" in message
    assert injected == [1000]
    assert len(server.klines_calls()) == calls_before + 1 + 4  # one page, then 1 + 3 retries
    # the page that arrived before the outage is kept (whole, validated): a re-run resumes after it
    cov = lake.series_coverage("binance", "BTC/USDT", "1m")
    assert cov.rows == DAY_BARS + 1000 and cov.missing_bars == 0
    server.reset()
    [again] = lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert again.requested == [("2024-03-02 16:40:00+00:00", "2024-03-04 00:00:00+00:00")]
    stored = lake.read_bars("binance", "BTC/USDT", "1m")
    served = server.frame("BTCUSDT", "1m", START, END)
    pd.testing.assert_frame_equal(stored[served.columns.tolist()], served)


def test_refused_credentials_and_other_exchange_errors(
    server: BinanceServer, source: CcxtSource, lake: Lake
) -> None:
    server.fail_next("/api/v3/klines", Response(401, {
        "code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}))
    with pytest.raises(CredentialsError, match="binance refused the request"):
        lake.sync(source, ["BTC/USDT"], "1m", START, END)
    server.fail_next("/api/v3/klines", Response(400, {
        "code": -1100, "msg": "Illegal characters found in a parameter."}))
    with pytest.raises(SourceError, match="retrying will not help"):
        lake.sync(source, ["BTC/USDT"], "1m", START, END)
    assert len(server.klines_calls()) == 2  # neither was retried
    assert lake.series() == []
