"""Funding-rate history of perpetual futures: the lake table, the synthetic and ccxt sources, the CLI.

The ccxt tests point the unmodified `ccxt.binanceusdm` client at the Binance fake on 127.0.0.1
(`/fapi/v1/exchangeInfo`, `/fapi/v1/fundingRate`); nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import CliResult, invoke
from servers.binance import BinanceServer
from servers.loopback import guard_loopback

from workbench import Lake
from workbench.data import demo
from workbench.data.calendar import Calendar
from workbench.data.sources import get_source
from workbench.data.sources.ccxt import BASE_URL_SETTING, CcxtSource
from workbench.data.sources.synthetic import DEMO_PERPS, SyntheticSource
from workbench.errors import ConfigError, DataError, LakeCorruptError, SourceError

SRC, PERP = "venue", "BTC/USDT:USDT"
H8 = pd.Timedelta(hours=8)


def utc(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


def events(*pairs: tuple[str, float]) -> pd.DataFrame:
    """A hand-written funding frame: (UTC time, rate) rows in the order given."""
    return pd.DataFrame({"ts": pd.DatetimeIndex([utc(t) for t, _ in pairs]),
                         "rate": [r for _, r in pairs]})


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)
    monkeypatch.delenv(BASE_URL_SETTING, raising=False)


# ---------------------------------------------------------------------- the lake table
def test_write_read_roundtrip_dedupe_and_revisions(lake: Lake) -> None:
    first = events(("2024-12-31 16:00", 0.0001), ("2025-01-01 08:00", -0.00025),
                   ("2025-01-01 00:00", 0.0003), ("2025-01-01 08:00", -0.0002))  # unsorted, a repeat
    assert lake.write_funding(SRC, PERP, first) == 3  # the later row of a repeated ts wins
    got = lake.read_funding(SRC, PERP)
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]" and str(got["rate"].dtype) == "float64"
    want = events(("2024-12-31 16:00", 0.0001), ("2025-01-01 00:00", 0.0003), ("2025-01-01 08:00", -0.0002))
    pd.testing.assert_frame_equal(got, want.astype({"ts": "datetime64[ns, UTC]"}))
    # one file per year, as the bars
    years = sorted(p.parent.name for p in lake.funding_series_dir(SRC, PERP).rglob("data.parquet"))
    assert years == ["year=2024", "year=2025"]

    assert lake.write_funding(SRC, PERP, first) == 0  # idempotent
    # a revision of a stored settlement replaces it; a new one is added
    assert lake.write_funding(SRC, PERP, events(("2025-01-01 00:00", 0.0005),
                                                ("2025-01-01 16:00", 0.00001))) == 1
    assert lake.read_funding(SRC, PERP)["rate"].tolist() == [0.0001, 0.0005, -0.0002, 0.00001]
    assert lake.has_funding(SRC, PERP) and not lake.has_funding(SRC, "ETH/USDT:USDT")
    assert lake.funding_series() == [(SRC, PERP)]
    assert lake.series() == []  # funding is not a bar series


def test_read_range_is_start_inclusive_end_exclusive(lake: Lake) -> None:
    every_8h = pd.DataFrame({"ts": utc("2024-12-31") + H8 * np.arange(9), "rate": np.arange(9) / 1e5})
    lake.write_funding(SRC, PERP, every_8h)

    def rates(start: str | None, end: str | None) -> list[float]:
        return lake.read_funding(SRC, PERP, start, end)["rate"].tolist()

    assert rates("2025-01-01", "2025-01-02") == [3e-05, 4e-05, 5e-05]
    assert rates("2024-12-31T08:00Z", "2025-01-01T08:00Z") == [1e-05, 2e-05, 3e-05]
    assert rates("2025-01-01T00:00:01Z", None) == [4e-05, 5e-05, 6e-05, 7e-05, 8e-05]
    assert rates(None, "2024-12-31T00:00:01Z") == [0.0]
    empty = lake.read_funding(SRC, PERP, "2026-01-01", "2026-02-01")  # stored series, empty range
    assert empty.empty and list(empty.columns) == ["ts", "rate"]
    assert str(empty["ts"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(ConfigError, match="is not before end"):
        lake.read_funding(SRC, PERP, "2025-01-02", "2025-01-01")


def test_missing_series_names_the_command_that_fills_it(lake: Lake) -> None:
    with pytest.raises(DataError) as err:
        lake.read_funding("synthetic", PERP, "2025-03-01")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == ("no funding rates stored for synthetic:BTC/USDT:USDT: fill them with `workbench data "
                   "funding --source synthetic --symbols BTC/USDT:USDT --start 2025-03-01`")
    lake.write_funding("binanceusdm", "ETH/USDT:USDT", events(("2025-01-01", 0.0001)))
    with pytest.raises(DataError, match=r"did you mean 'ETH/USDT:USDT'.*--source ccxt:binanceusdm "
                                        r"--symbols ETH/USDT:UDST"):
        lake.read_funding("binanceusdm", "ETH/USDT:UDST")


@pytest.mark.parametrize(("frame", "needle"), [
    (pd.DataFrame({"ts": pd.DatetimeIndex(["2025-01-01"]), "rate": [0.0001]}), "without a zone"),
    (events(("2025-01-01", 1.0)), "divide percentages by 100"),
    (events(("2025-01-01", float("nan"))), "missing or infinite"),
    (pd.DataFrame({"ts": [utc("2025-01-01")]}), "lack column(s) rate"),
    (pd.DataFrame({"ts": [utc("2025-01-01")], "rate": ["high"]}), "non-numeric"),
])
def test_bad_frames_are_refused_before_anything_is_written(lake: Lake, frame: pd.DataFrame,
                                                           needle: str) -> None:
    with pytest.raises(DataError) as err:
        lake.write_funding(SRC, PERP, frame)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not lake.has_funding(SRC, PERP)


def test_a_damaged_file_names_the_funding_resync(lake: Lake) -> None:
    lake.write_funding(SRC, PERP, events(("2025-01-01", 0.0001)))
    victim = next(lake.funding_series_dir(SRC, PERP).rglob("data.parquet"))
    victim.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(LakeCorruptError) as err:
        lake.read_funding(SRC, PERP)
    assert str(victim) in str(err.value)
    assert ("`workbench data funding --source ccxt:venue --symbols BTC/USDT:USDT --start 2025-01-01 "
            "--end 2026-01-01`") in str(err.value)
    with pytest.raises(LakeCorruptError):  # and a write refuses to build on it
        lake.write_funding(SRC, PERP, events(("2025-01-01 08:00", 0.0001)))


def test_incremental_sync_fetches_only_after_the_last_settlement(lake: Lake) -> None:
    src = SyntheticSource(seed=7)
    [a] = lake.sync_funding(src, PERP, "2025-01-01", "2025-01-03")
    assert (a.rows_fetched, a.rows_added) == (6, 6)
    assert a.requested == [("2025-01-01 00:00:00+00:00", "2025-01-03 00:00:00+00:00")]
    [b] = lake.sync_funding(src, [PERP], "2025-01-01", "2025-01-05")
    assert b.requested == [("2025-01-02 16:00:00.000001+00:00", "2025-01-05 00:00:00+00:00")]
    assert (b.rows_fetched, b.rows_added) == (6, 6)
    [c] = lake.sync_funding(src, [PERP], "2025-01-01", "2025-01-05")  # nothing new
    assert (c.rows_fetched, c.rows_added) == (0, 0)
    [d] = lake.sync_funding(src, [PERP], "2024-12-31", "2025-01-05")  # before the first one too
    assert d.requested[0] == ("2024-12-31 00:00:00+00:00", "2025-01-01 00:00:00+00:00")
    assert d.rows_added == 3
    [e] = lake.sync_funding(src, [PERP], end="2025-01-06")  # no start: resume
    assert e.rows_added == 3
    stored = lake.read_funding("synthetic", PERP)
    pd.testing.assert_frame_equal(stored, src.fetch_funding(PERP, utc("2024-12-31"), utc("2025-01-06")))
    assert len(stored) == 18 and stored["ts"].diff().iloc[1:].eq(H8).all()
    with pytest.raises(ConfigError, match=r"no stored funding to resume from: pass a start"):
        lake.sync_funding(src, ["ETH/USDT:USDT"], end="2025-01-06")


def test_sync_refuses_spot_symbols_and_sources_without_funding_before_fetching(lake: Lake) -> None:
    src = SyntheticSource()
    with pytest.raises(ConfigError) as err:
        lake.sync_funding(src, [PERP, "BTC/USDT"], "2025-01-01", "2025-01-02")
    assert str(err.value) == ("funding asked for BTC/USDT, a spot symbol: funding applies to perpetual "
                              "futures (e.g. BTC/USDT:USDT)")
    with pytest.raises(ConfigError, match="funding asked for SPY, an equity"):
        lake.sync_funding(src, ["spy"], "2025-01-01", "2025-01-02")
    with pytest.raises(ConfigError, match=r"source 'alpaca' has no funding-rate history.*ccxt:binanceusdm"):
        lake.sync_funding(get_source("alpaca"), ["BTC/USD"], "2025-01-01", "2025-01-02")
    assert lake.funding_series() == []  # the valid symbol was not fetched either


def test_fingerprint_of_bars_is_unchanged_and_funding_is_opt_in(lake: Lake) -> None:
    src = SyntheticSource()
    lake.sync(src, [PERP], "1h", "2025-01-01", "2025-01-03")
    bars_only = lake.fingerprint("synthetic", PERP, "1h", "2025-01-01", "2025-01-03")
    with pytest.raises(DataError, match="no funding rates stored"):
        lake.fingerprint("synthetic", PERP, "1h", "2025-01-01", "2025-01-03", funding=True)
    lake.sync_funding(src, [PERP], "2025-01-01", "2025-01-03")
    assert lake.fingerprint("synthetic", PERP, "1h", "2025-01-01", "2025-01-03") == bars_only
    with_funding = lake.fingerprint("synthetic", PERP, "1h", "2025-01-01", "2025-01-03", funding=True)
    assert with_funding != bars_only
    lake.write_funding("synthetic", PERP, events(("2025-01-02 08:00", 0.0042)))  # a revision
    assert lake.fingerprint("synthetic", PERP, "1h", "2025-01-01", "2025-01-03", funding=True) not in (
        bars_only, with_funding)


# ---------------------------------------------------------------------- the synthetic perpetuals
def test_synthetic_funding_is_8_hourly_and_independent_of_the_range() -> None:
    src = SyntheticSource(seed=7)
    year = src.fetch_funding(PERP, utc("2025-01-01"), utc("2026-01-01"))
    assert len(year) == 365 * 3
    assert (year["ts"].dt.hour.isin([0, 8, 16]) & (year["ts"].dt.minute == 0)).all()
    assert year["ts"].diff().iloc[1:].eq(H8).all()
    # pinned: the series of seed 7 never changes (demo fingerprints depend on it)
    assert year["rate"].iloc[:3].tolist() == [0.00014297, 0.00012055, 0.00000541]
    # any sub-range, even one starting between settlements, holds the very same values
    part = SyntheticSource(seed=7).fetch_funding("btc/usdt:usdt", utc("2025-03-01 03:00"),
                                                 utc("2025-03-05 08:00"))
    assert part["ts"].iloc[0] == utc("2025-03-01 08:00") and part["ts"].iloc[-1] == utc("2025-03-05 00:00")
    pd.testing.assert_frame_equal(part, year[year["ts"].between(part["ts"].iloc[0], part["ts"].iloc[-1])]
                                  .reset_index(drop=True))
    # positive on average like real markets, sometimes negative, within the cap
    whole = src.fetch_funding(PERP, utc("2018-01-01"), utc("2026-01-01"))
    assert 0.00008 < whole["rate"].mean() < 0.00012
    assert 0.1 < (whole["rate"] < 0).mean() < 0.4
    assert whole["rate"].abs().max() <= 0.0075
    other = SyntheticSource(seed=8).fetch_funding(PERP, utc("2025-01-01"), utc("2025-01-02"))
    assert other["rate"].tolist() != year["rate"].iloc[:3].tolist()
    eth = src.fetch_funding("ETH/USDT:USDT", utc("2025-01-01"), utc("2025-01-02"))
    assert eth["rate"].tolist() != year["rate"].iloc[:3].tolist()


def test_synthetic_perp_bars_follow_spot_trade_24_7_and_do_not_depend_on_the_range() -> None:
    src = SyntheticSource(seed=7)
    assert DEMO_PERPS == ("BTC/USDT:USDT", "ETH/USDT:USDT")
    assert src.calendar(PERP) == Calendar("24/7")
    weekend = src.bars(PERP, "1m", "2025-01-04", "2025-01-06")  # Saturday and Sunday
    assert len(weekend) == 2 * 1440 and weekend["ts"].diff().iloc[1:].eq(pd.Timedelta(minutes=1)).all()
    spot = src.bars("BTC/USDT", "1m", "2025-01-04", "2025-01-06")
    basis = weekend["close"] / spot["close"] - 1
    assert basis.abs().max() < 0.003 and basis.std() > 0  # close to spot, not equal to it
    assert (weekend["open"].iloc[1:].to_numpy() == weekend["close"].iloc[:-1].to_numpy()).all()
    assert (weekend["high"] >= weekend[["open", "close"]].max(axis=1)).all()
    assert (weekend["low"] <= weekend[["open", "close"]].min(axis=1)).all()
    assert (weekend["volume"] > 0).all()
    inner = src.bars(PERP, "1m", "2025-01-05 10:00", "2025-01-05 11:00")
    pd.testing.assert_frame_equal(inner, weekend[weekend["ts"].between(utc("2025-01-05 10:00"),
                                  utc("2025-01-05 10:59"))].reset_index(drop=True))
    hourly = src.bars(PERP, "1h", "2025-01-04", "2025-01-06")
    assert len(hourly) == 48 and hourly["close"].iloc[-1] == weekend["close"].iloc[-1]


def test_synthetic_perps_in_the_lake(lake: Lake) -> None:
    [res] = lake.sync(SyntheticSource(), ["eth/usdt:usdt"], "1m", "2025-01-04", "2025-01-05")
    assert (res.key.symbol, res.rows_added, res.missing_in_range) == ("ETH/USDT:USDT", 1440, 0)
    [cov] = lake.coverage()
    assert cov.calendar == "24/7" and cov.missing_bars == 0


def test_demo_builds_perps_and_their_funding(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (demo.DEMO_PERP_SLICE.symbols, demo.DEMO_PERP_SLICE.timeframe, demo.DEMO_PERP_SLICE.start,
            demo.DEMO_PERP_SLICE.end) == (DEMO_PERPS, "1m", "2025-01-01", "2026-01-01")
    assert demo.DEMO_PERP_SLICE in demo.DEMO_SLICES
    short = demo.DemoSlice(DEMO_PERPS, "1m", "2025-06-01", "2025-06-02")  # a day: the real one takes s
    monkeypatch.setattr(demo, "DEMO_SLICES", (short,))
    monkeypatch.setattr(demo, "DEMO_PERP_SLICE", short)
    results = demo.build_demo(lake)
    assert [r.rows_added for r in results] == [1440, 1440, 3, 3]
    assert [k.symbol for k in lake.series()] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert lake.funding_series() == [("synthetic", s) for s in DEMO_PERPS]
    assert sum(r.rows_added for r in demo.build_demo(lake)) == 0


# ---------------------------------------------------------------------- ccxt against the Binance fake
FSTART, FEND = "2024-03-01", "2024-04-30"  # 60 days: 180 settlements


def _ms(value: str) -> int:
    return int(utc(value).value // 1_000_000)


@pytest.fixture(scope="module")
def _binance() -> Iterator[BinanceServer]:
    with BinanceServer(now_ms=_ms("2024-06-01")) as srv:
        yield srv


@pytest.fixture
def server(_binance: BinanceServer) -> BinanceServer:
    _binance.reset()
    return _binance


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def usdm(server: BinanceServer, sleeps: list[float]) -> CcxtSource:
    return CcxtSource("binanceusdm", base_url=server.url, sleep=sleeps.append, max_retries=3,
                      page_limit=100)


def test_usdm_lists_perpetuals_from_the_futures_endpoint_only(server: BinanceServer,
                                                               usdm: CcxtSource) -> None:
    assert usdm.funding_symbol("BTCUSDT") == PERP
    assert usdm.funding_symbol("eth/usdt:usdt") == "ETH/USDT:USDT"
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/fapi/v1/exchangeInfo")]
    assert usdm.exchange.urls["api"]["fapiPublic"] == f"{server.url}/fapi/v1"


def test_funding_pages_by_the_last_settlement_through_a_429_and_a_5xx(
    server: BinanceServer, usdm: CcxtSource, lake: Lake, sleeps: list[float]
) -> None:
    def outage_after_first_page(label: str, rows: int, total: int) -> None:
        if not seen:
            server.rate_limit_next(path="/fapi/v1/fundingRate", retry_after=3)
            server.server_error_next(path="/fapi/v1/fundingRate", status=502)
        seen.append((label, rows, total))

    seen: list[tuple[str, int, int]] = []
    [res] = lake.sync_funding(usdm, ["BTC/USDT:USDT"], FSTART, FEND, progress=outage_after_first_page)
    assert (res.rows_fetched, res.rows_added) == (180, 180)
    assert seen == [("binanceusdm:BTC/USDT:USDT:funding", 100, 180),
                    ("binanceusdm:BTC/USDT:USDT:funding", 80, 180)]
    assert sleeps == [3.0, 2.0]  # Retry-After, then the second attempt's backoff
    calls = server.funding_calls()
    # page 1, a 429, a 502, page 2, and the empty page that ends it
    assert [c.query["startTime"] for c in calls] == [
        str(_ms(FSTART)), *[str(_ms("2024-04-03 00:00") + 1)] * 3, str(_ms("2024-04-29 16:00") + 1)]
    assert all(c.query == {**c.query, "symbol": "BTCUSDT", "limit": "100",
                           "endTime": str(_ms(FEND) - 1)} for c in calls)
    stored = lake.read_funding("binanceusdm", PERP)
    pd.testing.assert_frame_equal(stored, server.funding_frame("BTCUSDT", FSTART, FEND))
    first_two = server.funding_rows("BTCUSDT", _ms(FSTART), _ms("2024-03-01 08:00") + 1)
    assert stored["rate"].tolist()[:2] == [float(r["fundingRate"]) for r in first_two]
    # a rerun asks once, after the last settlement, and adds nothing
    server.reset()
    [again] = lake.sync_funding(usdm, [PERP], FSTART, FEND)
    assert (again.rows_fetched, again.rows_added) == (0, 0)
    assert [c.query["startTime"] for c in server.funding_calls()] == [str(_ms("2024-04-29 16:00") + 1)]


def test_persistent_errors_raise_one_line_and_keep_what_arrived(
    server: BinanceServer, usdm: CcxtSource, lake: Lake
) -> None:
    def down_after_first_page(label: str, rows: int, total: int) -> None:
        server.server_error_next(times=1000, status=500, path="/fapi/v1/fundingRate")

    with pytest.raises(SourceError) as err:
        lake.sync_funding(usdm, [PERP], FSTART, FEND, progress=down_after_first_page)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        "binanceusdm: fetching funding rates of BTC/USDT:USDT from 2024-04-03T00:00Z failed 4 times")
    assert len(lake.read_funding("binanceusdm", PERP)) == 100  # the first page is kept
    server.reset()
    [again] = lake.sync_funding(usdm, [PERP], FSTART, FEND)
    assert again.rows_added == 80
    pd.testing.assert_frame_equal(lake.read_funding("binanceusdm", PERP),
                                  server.funding_frame("BTCUSDT", FSTART, FEND))


def test_spot_and_dated_symbols_are_refused_in_one_line(server: BinanceServer, usdm: CcxtSource,
                                                        lake: Lake) -> None:
    with pytest.raises(ConfigError) as err:
        lake.sync_funding(usdm, ["BTC/USDT"], FSTART, FEND)
    assert str(err.value) == ("funding asked for BTC/USDT, a spot symbol: funding applies to perpetual "
                              "futures (e.g. BTC/USDT:USDT)")
    with pytest.raises(ConfigError, match=r"BTC/USDT:USDT-260327, a future market: .*\(e.g. BTC/USDT:USDT\)"):
        usdm.funding_symbol("BTC/USDT:USDT-260327")
    spot = CcxtSource("binance", base_url=server.url, sleep=lambda _: None)
    with pytest.raises(ConfigError) as err:
        lake.sync_funding(spot, ["BTCUSDT"], FSTART, FEND)
    assert str(err.value) == (
        "funding asked for BTC/USDT, a spot symbol: funding applies to perpetual futures (e.g. "
        "BTC/USDT:USDT); binance lists spot markets only, use ccxt:binanceusdm or ccxt:binancecoinm")
    with pytest.raises(ConfigError, match=r"binance lists no perpetual futures here .* ccxt:binanceusdm"):
        spot.funding_symbol(PERP)
    assert server.funding_calls() == [] and lake.funding_series() == []


def test_an_exchange_without_funding_history_is_refused_without_a_request(lake: Lake) -> None:
    src = CcxtSource("kraken", base_url="http://127.0.0.1:9")  # spot only: no funding in ccxt
    assert not src.exchange.has.get("fetchFundingRateHistory")
    with pytest.raises(ConfigError, match=r"exchange 'kraken' offers no funding-rate history"):
        lake.sync_funding(src, [PERP], FSTART, FEND)


# ---------------------------------------------------------------------- the command line
def run(data: Path, *args: str, env: dict[str, str | None] | None = None) -> CliResult:
    return invoke(args, data=data, env=env)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_cli_funding_syncs_summarises_lists_and_reruns_to_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = run(data, "data", "funding", "--source", "synthetic", "--symbols", "BTC/USDT:USDT,ETH/USDT:USDT",
               "--start", "2025-01-01", "--end", "2025-01-11")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    mean = SyntheticSource().fetch_funding(PERP, utc("2025-01-01"), utc("2025-01-11"))["rate"].mean()
    assert (f"synthetic:BTC/USDT:USDT:funding │ 30 │ 2025-01-01 00:00 │ 2025-01-10 16:00 │ "
            f"{100 * mean:.4f}% │ {100 * mean * 1095.75:.2f}%") in flat
    assert "synthetic:ETH/USDT:USDT:funding │ 30 │ 30" in flat  # fetched, added
    ls = run(data, "data", "ls")
    assert ls.returncode == 0 and "funding rates" in ls.stdout
    assert "BTC/USDT:USDT" in ls.stdout and "ETH/USDT:USDT" in ls.stdout
    before = snapshot(data)
    again = run(data, "data", "funding", "--source", "synthetic", "--symbols", "BTC/USDT:USDT",
                "--start", "2025-01-01", "--end", "2025-01-11")
    assert again.returncode == 0
    assert "synthetic:BTC/USDT:USDT:funding │ 0 │ 0" in " ".join(again.stdout.split())
    assert snapshot(data) == before


def test_cli_funding_from_the_binance_fake(server: BinanceServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = run(data, "data", "funding", "--source", "ccxt:binanceusdm", "--symbols", "BTCUSDT",
               "--start", FSTART, "--end", FEND, env={BASE_URL_SETTING: server.url})
    assert proc.returncode == 0, proc.stderr
    assert "binanceusdm:BTC/USDT:USDT:funding │ 180 │ 180" in " ".join(proc.stdout.split())
    pd.testing.assert_frame_equal(Lake(data).read_funding("binanceusdm", PERP),
                                  server.funding_frame("BTCUSDT", FSTART, FEND))


@pytest.mark.parametrize(("args", "needle"), [
    (["--source", "synthetic", "--symbols", "BTC/USDT", "--start", "2025-01-01"],
     "funding asked for BTC/USDT, a spot symbol: funding applies to perpetual futures (e.g. BTC/USDT:USDT)"),
    (["--source", "alpaca", "--symbols", "AAPL", "--start", "2025-01-01"],
     "source 'alpaca' has no funding-rate history"),
    (["--source", "synthetic", "--symbols", "BTC/USDT:USDT"], "no stored funding to resume from"),
    (["--source", "synthetic", "--symbols", "BTC/USDT:USDT", "--start", "2025-02-01", "--end",
      "2025-01-01"], "is not before end"),
    (["--source", "synthetic", "--symbols", "DOGE/USDT:USDC", "--start", "2025-01-01"],
     "the synthetic market has no symbol 'DOGE/USDT:USDC' (did you mean 'DOGE/USDT:USDT'?)"),
])
def test_cli_funding_bad_inputs_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    data = tmp_path / "data"
    no_keys: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("ALPACA", "APCA"))}
    proc = run(data, "data", "funding", *args, env=no_keys)
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], lines[0]
    assert not (data / "lake" / "funding").exists()
    shutil.rmtree(data, ignore_errors=True)


def test_numbers_in_the_summary_are_exact(lake: Lake) -> None:
    from workbench.data.funding import funding_summary

    lake.write_funding(SRC, PERP, events(("2025-01-01 00:00", 0.0001), ("2025-01-01 08:00", 0.0003),
                                         ("2025-01-01 16:00", -0.0001)))
    s = funding_summary(lake.read_funding(SRC, PERP))
    assert s["rows"] == 3 and s["first"] == utc("2025-01-01") and s["last"] == utc("2025-01-01 16:00")
    assert s["mean_rate"] == pytest.approx(0.0001, abs=1e-18)
    assert s["mean_annualized"] == pytest.approx(0.0001 * 3 * 365.25, rel=1e-12)
    assert np.isclose(lake.funding_frame()["mean_rate"].iloc[0], 0.0001)
