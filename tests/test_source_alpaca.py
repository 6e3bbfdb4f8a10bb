"""AlpacaSource end to end: unmodified alpaca-py clients against the loopback Alpaca fake."""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers.alpaca import (
    API_KEY,
    CRYPTO_PATH,
    SECRET_KEY,
    STOCK_PATH,
    AlpacaFake,
    frame_of,
)
from servers.loopback import Response

from workbench import Lake, get_source
from workbench.data.quality import IssueKind
from workbench.data.sources.alpaca import AlpacaSource
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, CredentialsError, SourceError

pytestmark = [
    pytest.mark.network,
    # duckdb's .df() calls DataFrame.drop(inplace=True), deprecated in pandas 3.1; the warning is
    # attributed to workbench/data/lake.py, which pyproject turns into an error (a lake issue)
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:DeprecationWarning"),
]

ENV_VARS = (
    "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY",
    "WORKBENCH_ALPACA_BASE_URL", "WORKBENCH_ALPACA_RETRY_ATTEMPTS", "WORKBENCH_ALPACA_RETRY_WAIT",
    "WORKBENCH_ALPACA_RETRY_CODES", "WORKBENCH_ALPACA_TIMEOUT", "WORKBENCH_ALPACA_FEED",
    "WORKBENCH_ALPACA_ADJUSTMENT",
)
ONE_US = pd.Timedelta(microseconds=1)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Alpaca settings from the machine, and a working directory without a .env file."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def alpaca_server() -> Iterator[AlpacaFake]:
    with AlpacaFake(page_size=100) as f:
        yield f


@pytest.fixture
def fake(alpaca_server: AlpacaFake) -> AlpacaFake:
    """The module's fake, with no requests, faults or knobs left over from earlier tests."""
    alpaca_server.reset()
    return alpaca_server


def source(fake: AlpacaFake, **options: object) -> AlpacaSource:
    opts: dict[str, object] = {"api_key": API_KEY, "secret_key": SECRET_KEY,
                               "base_url": fake.url, "retry_wait": 0.01}
    opts.update(options)
    return AlpacaSource(**opts)


def served(fake: AlpacaFake, symbol: str) -> pd.DataFrame:
    """What the fake actually sent for `symbol`, one row per timestamp (last copy wins)."""
    frame = frame_of(fake.served.get(symbol, []))
    return frame.drop_duplicates("ts", keep="last").sort_values("ts").reset_index(drop=True)


def expected(fake: AlpacaFake, symbol: str, timeframe: str, start: str, end: str
             ) -> pd.DataFrame:
    return frame_of(fake.bars(symbol, timeframe, start, pd.Timestamp(end) - ONE_US))


def lake_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_lake_unchanged(lake: Lake, data_root: Path) -> None:
    assert lake.series() == []
    assert not [p for p in lake_files(data_root) if p.name.endswith(".parquet")]


# ---------------------------------------------------------------------- happy paths
def test_stock_minutes_sync_pages_windows_and_resumes(lake: Lake, fake: AlpacaFake) -> None:
    start, end = "2024-01-02", "2024-01-05T21:00Z"  # Tuesday open to Friday close
    src = source(fake, window="1D")
    [res] = lake.sync(src, ["AAPL"], "1m", start, end)

    want = expected(fake, "AAPL", "1Min", start, end)
    assert len(want) == 4 * 390
    assert res.rows_added == len(want) and res.missing_in_range == 0
    got = lake.read_bars("alpaca", "AAPL", "1m", start, end)
    pd.testing.assert_frame_equal(got, served(fake, "AAPL"))
    pd.testing.assert_frame_equal(got, want)
    assert got["ts"].dt.tz is not None and str(got["ts"].dt.tz) == "UTC"

    reqs = fake.requests(STOCK_PATH)
    assert sum("page_token" in r.query for r in reqs) >= 12  # 100-bar pages
    assert {r.query["timeframe"] for r in reqs} == {"1Min"}
    assert {(r.query["feed"], r.query["adjustment"]) for r in reqs} == {("iex", "raw")}
    assert all(r.headers["apca-api-key-id"] == API_KEY for r in reqs)

    before = len(fake.requests())
    [again] = lake.sync(src, ["AAPL"], "1m", start, end)
    assert again.requested == [] and again.rows_added == 0
    assert len(fake.requests()) == before


def test_crypto_without_keys_via_env_base_url(lake: Lake, fake: AlpacaFake,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ALPACA_BASE_URL", fake.url)
    src = get_source("alpaca", retry_wait=0.01)
    start, end = "2024-03-01T00:00Z", "2024-03-01T12:00Z"
    [res] = lake.sync(src, "BTC/USD", "1m", start, end)

    assert res.rows_added == 720 and res.missing_in_range == 0
    got = lake.read_bars("alpaca", "BTC/USD", "1m", start, end)
    pd.testing.assert_frame_equal(got, served(fake, "BTC/USD"))
    pd.testing.assert_frame_equal(got, expected(fake, "BTC/USD", "1Min", start, end))
    reqs = fake.requests(CRYPTO_PATH)
    assert len(reqs) >= 8 and not fake.requests(STOCK_PATH)
    assert not any("apca-api-key-id" in r.headers or "apca-api-secret-key" in r.headers
                   for r in reqs)

    before = len(fake.requests())
    [again] = lake.sync(src, "BTC/USD", "1m", start, end)
    assert again.requested == [] and again.rows_added == 0
    assert len(fake.requests()) == before


def test_small_windows_never_skip_bars(lake: Lake, fake: AlpacaFake) -> None:
    start, end = "2024-01-08", "2024-01-10"
    [res] = lake.sync(source(fake, window="45min"), "AAPL", "1m", start, end)
    want = expected(fake, "AAPL", "1Min", start, end)
    assert res.rows_added == len(want) == 2 * 390 and res.missing_in_range == 0
    pd.testing.assert_frame_equal(lake.read_bars("alpaca", "AAPL", "1m", start, end), want)
    # each window starts right after the last bar received, or where an empty window ended
    starts = [pd.Timestamp(r.query["start"]) for r in fake.requests() if "page_token" not in r.query]
    got = set(served(fake, "AAPL")["ts"])
    for prev, nxt in itertools.pairwise(starts):
        assert nxt - pd.Timedelta(minutes=1) in got or nxt == prev + pd.Timedelta(minutes=45)
    assert len(starts) > 2 * 390 / 45


def test_repeated_rows_across_pages_give_one_row_per_ts(lake: Lake, fake: AlpacaFake) -> None:
    fake.repeat = 7
    start, end = "2024-01-03", "2024-01-04"
    [res] = lake.sync(source(fake), "AAPL", "1m", start, end)
    assert sum(len(v) for v in fake.served.values()) > 390  # the fake really repeated rows
    got = lake.read_bars("alpaca", "AAPL", "1m", start, end)
    assert len(got) == 390 and got["ts"].is_unique
    pd.testing.assert_frame_equal(got, expected(fake, "AAPL", "1Min", start, end))
    assert res.rows_added == 390 and res.missing_in_range == 0


def test_server_gaps_are_reported(lake: Lake, fake: AlpacaFake) -> None:
    fake.add_gap("AAPL", "2024-01-03T15:00Z", "2024-01-03T15:30Z")
    fake.add_gap("BTC/USD", "2024-03-01T05:00Z", "2024-03-01T05:10Z")
    src = source(fake)
    [stock] = lake.sync(src, "AAPL", "1m", "2024-01-02", "2024-01-04T21:00Z")
    [coin] = lake.sync(src, "BTC/USD", "1m", "2024-03-01T00:00Z", "2024-03-01T10:00Z")

    assert stock.missing_in_range == 30 and stock.rows_added == 3 * 390 - 30
    cov = lake.series_coverage("alpaca", "AAPL", "1m")
    assert cov.missing_bars == 30
    assert cov.gaps == [("2024-01-03 15:00:00+00:00", "2024-01-03 15:29:00+00:00", 30)]
    assert coin.missing_in_range == 10
    assert lake.series_coverage("alpaca", "BTC/USD", "1m").missing_bars == 10


def test_stock_daily_bars_land_at_utc_midnight(lake: Lake, fake: AlpacaFake) -> None:
    start, end = "2024-03-04", "2024-03-16"  # across the switch to daylight saving time
    [res] = lake.sync(source(fake), "AAPL", "1d", start, end)
    wire = fake.served["AAPL"]
    assert {b["t"][11:] for b in wire} == {"05:00:00Z", "04:00:00Z"}  # New York midnight

    got = lake.read_bars("alpaca", "AAPL", "1d", start, end)
    sessions = pd.bdate_range("2024-03-04", "2024-03-15", tz="UTC")
    assert list(got["ts"]) == list(sessions) and res.missing_in_range == 0
    assert (got["ts"] == got["ts"].dt.normalize()).all()
    want = served(fake, "AAPL")
    want["ts"] = want["ts"].dt.tz_convert("America/New_York").dt.tz_localize(None).dt.normalize(
        ).dt.tz_localize("UTC")
    pd.testing.assert_frame_equal(got, want)


def test_stock_4h_bars_are_built_from_hours_on_the_utc_grid(lake: Lake, fake: AlpacaFake
                                                            ) -> None:
    start, end = "2024-01-08", "2024-01-13"  # winter: New York 4h bars sit off the UTC grid
    [res] = lake.sync(source(fake), "AAPL", "4h", start, end)
    assert {r.query["timeframe"] for r in fake.requests()} == {"1Hour"}
    hours = expected(fake, "AAPL", "1Hour", start, end)
    bucket = hours["ts"].dt.floor("4h")
    g = hours.assign(pv=hours["vwap"] * hours["volume"]).groupby(bucket)
    want = pd.DataFrame({
        "ts": g["ts"].first().index, "open": g["open"].first().to_numpy(),
        "high": g["high"].max().to_numpy(), "low": g["low"].min().to_numpy(),
        "close": g["close"].last().to_numpy(), "volume": g["volume"].sum().to_numpy(),
        "trades": g["trades"].sum().to_numpy(),
        "vwap": (g["pv"].sum() / g["volume"].sum()).to_numpy(),
    })
    got = lake.read_bars("alpaca", "AAPL", "4h", start, end)
    assert len(got) == 5 * 3 and res.missing_in_range == 0
    pd.testing.assert_frame_equal(got, want, check_names=False)


def test_extended_hours_are_dropped_unless_asked_for(lake: Lake, fake: AlpacaFake) -> None:
    fake.extended_hours = True
    start, end = "2024-01-03", "2024-01-04"
    [regular] = lake.sync(source(fake), "AAPL", "1m", start, end)
    assert regular.rows_added == 390
    assert regular.report is not None and regular.report.count(IssueKind.OFF_CALENDAR) == 0

    [extended] = lake.sync(source(fake, extended_hours=True), "MSFT", "1m", start, end)
    assert extended.rows_added == 16 * 60
    assert extended.report is not None
    assert extended.report.count(IssueKind.OFF_CALENDAR) == 16 * 60 - 390


def test_unknown_symbol_yields_nothing(fake: AlpacaFake) -> None:
    src = source(fake)
    day = pd.Timestamp("2024-01-03", tz="UTC"), pd.Timestamp("2024-01-04", tz="UTC")
    assert list(src.fetch("QQQQ", Timeframe.parse("1m"), *day)) == []
    assert list(src.fetch("XYZ/USD", Timeframe.parse("1h"), *day)) == []
    assert len(fake.requests()) == 2  # one empty reply each, no error


def test_syncing_an_unknown_symbol_reports_it_missing(lake: Lake, fake: AlpacaFake) -> None:
    [res] = lake.sync(source(fake), "XYZ/USD", "1h", "2024-01-03", "2024-01-04")
    assert res.rows_fetched == 0 and res.rows_added == 0 and res.missing_in_range == 24
    assert lake.series() == []


@pytest.mark.parametrize("via", ["options", "settings"])
def test_feed_and_adjustment_reach_the_api(lake: Lake, fake: AlpacaFake, via: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if via == "options":
        src = source(fake, feed="sip", adjustment="all")
    else:
        monkeypatch.setenv("WORKBENCH_ALPACA_FEED", "sip")
        monkeypatch.setenv("WORKBENCH_ALPACA_ADJUSTMENT", "all")
        src = source(fake)
    with pytest.raises(ConfigError, match="sip") as info:
        lake.sync(src, "AAPL", "1h", "2024-01-03", "2024-01-04")
    assert not isinstance(info.value, CredentialsError)
    fake.sip_allowed = True
    lake.sync(src, "AAPL", "1h", "2024-01-03", "2024-01-04")
    assert {(r.query["feed"], r.query["adjustment"]) for r in fake.requests()} == {("sip", "all")}


# ---------------------------------------------------------------------- faults
def test_rate_limits_and_server_errors_are_retried(lake: Lake, fake: AlpacaFake) -> None:
    fake.fail(STOCK_PATH, 429, times=2)
    fake.fail(STOCK_PATH, 503, times=1)
    fake.drop(STOCK_PATH, times=1)
    start, end = "2024-01-03", "2024-01-04"
    [res] = lake.sync(source(fake), "AAPL", "1m", start, end)
    assert res.rows_added == 390 and res.missing_in_range == 0
    pd.testing.assert_frame_equal(lake.read_bars("alpaca", "AAPL", "1m", start, end),
                                  expected(fake, "AAPL", "1Min", start, end))
    # 3 faults and a dropped connection, then 4 pages and one empty look past the close
    assert len(fake.requests()) == 4 + 4 + 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_persistent_failure_is_one_line_source_error(lake: Lake, fake: AlpacaFake,
                                                     data_root: Path, status: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ALPACA_RETRY_ATTEMPTS", "2")
    fake.fail(STOCK_PATH, status, times=100)
    with pytest.raises(SourceError) as info:
        lake.sync(source(fake), "AAPL", "1m", "2024-01-03", "2024-01-04")
    message = str(info.value)
    assert "\n" not in message and str(status) in message and "re-run" in message
    assert len(fake.requests()) == 3  # the SDK's first try and its two retries
    assert_lake_unchanged(lake, data_root)


def test_unreachable_server_is_one_line_source_error(lake: Lake, fake: AlpacaFake,
                                                     data_root: Path) -> None:
    fake.drop(STOCK_PATH, times=100)
    with pytest.raises(SourceError, match="could not reach Alpaca") as info:
        lake.sync(source(fake, retry_attempts=1), "AAPL", "1m", "2024-01-03", "2024-01-04")
    assert "\n" not in str(info.value)
    assert_lake_unchanged(lake, data_root)


def test_reply_that_is_not_bars_is_source_error(lake: Lake, fake: AlpacaFake,
                                                data_root: Path) -> None:
    fake.server.fail_next(STOCK_PATH, Response(200, "<html>captive portal</html>"))
    with pytest.raises(SourceError, match="not bar data"):
        lake.sync(source(fake), "AAPL", "1m", "2024-01-03", "2024-01-04")
    fake.server.fail_next(STOCK_PATH, Response(200, {"bars": {"AAPL": [{"x": 1}]}}))
    with pytest.raises(SourceError, match="not bar data"):
        lake.sync(source(fake), "AAPL", "1m", "2024-01-03", "2024-01-04")
    assert_lake_unchanged(lake, data_root)


def test_invalid_symbol_is_config_error_naming_it(lake: Lake, fake: AlpacaFake,
                                                  data_root: Path) -> None:
    fake.invalid = {"ZZZZ"}
    with pytest.raises(ConfigError, match="ZZZZ") as info:
        lake.sync(source(fake), "ZZZZ", "1m", "2024-01-03", "2024-01-04")
    assert not isinstance(info.value, CredentialsError)
    with pytest.raises(ConfigError, match="AA PL"):
        lake.sync(source(fake), "AA PL", "1m", "2024-01-03", "2024-01-04")
    assert len(fake.requests()) == 1
    assert_lake_unchanged(lake, data_root)


# ---------------------------------------------------------------------- credentials
def test_missing_credentials_fail_before_any_request(lake: Lake, fake: AlpacaFake,
                                                     data_root: Path) -> None:
    src = get_source("alpaca", base_url=fake.url)  # building it is fine: crypto needs no keys
    with pytest.raises(CredentialsError) as info:
        lake.sync(src, ["BTC/USD", "AAPL"], "1m", "2024-01-03", "2024-01-04")
    message = str(info.value)
    assert "\n" not in message
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", ".env"):
        assert name in message
    assert fake.requests() == []
    assert_lake_unchanged(lake, data_root)
    with pytest.raises(CredentialsError, match="ALPACA_SECRET_KEY"):
        AlpacaSource(api_key=API_KEY, base_url=fake.url).canonical_symbol("AAPL")


def test_wrong_credentials_are_refused_without_echoing_them(lake: Lake, fake: AlpacaFake,
                                                            data_root: Path) -> None:
    wrong = "wrong-secret-0123456789abcdef"
    with pytest.raises(CredentialsError, match="refused") as info:
        lake.sync(source(fake, secret_key=wrong), "AAPL", "1m", "2024-01-03", "2024-01-04")
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert wrong not in text and API_KEY not in text
    assert "\n" not in str(info.value)
    assert_lake_unchanged(lake, data_root)


@pytest.mark.parametrize("names", [("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
                                   ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")])
def test_credentials_from_dotenv_file(lake: Lake, fake: AlpacaFake, tmp_path: Path,
                                      names: tuple[str, str]) -> None:
    (tmp_path / ".env").write_text(
        f"{names[0]}={API_KEY}\n{names[1]}={SECRET_KEY}\nWORKBENCH_ALPACA_BASE_URL={fake.url}\n")
    src = get_source("alpaca", retry_wait=0.01)
    [res] = lake.sync(src, "AAPL", "15m", "2024-01-03", "2024-01-04")
    assert res.rows_added == 26 and res.missing_in_range == 0
    assert SECRET_KEY not in repr(src)


def test_no_secret_in_logs_or_lake_files(lake: Lake, fake: AlpacaFake, data_root: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    src = source(fake)
    lake.sync(src, ["AAPL", "BTC/USD"], "1m", "2024-01-03", "2024-01-04")
    fake.fail(STOCK_PATH, 503, times=4)  # the first try and three retries
    with pytest.raises(SourceError):
        lake.sync(src, "MSFT", "1m", "2024-01-03", "2024-01-04")
    with pytest.raises(CredentialsError):
        lake.sync(source(fake, secret_key="another-secret-value-42"), "SPY", "1m",
                  "2024-01-03", "2024-01-04")
    assert caplog.records  # the source and urllib3 did log
    for secret in (SECRET_KEY, "another-secret-value-42"):
        assert secret not in caplog.text
        for path in lake_files(data_root):
            assert secret.encode() not in path.read_bytes(), path
    assert API_KEY not in caplog.text


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize("options, match", [
    ({"feed": "sipp"}, "did you mean 'sip'"),
    ({"adjustment": "splits"}, "adjustment"),
    ({"window": "0s"}, "window"),
    ({"window": 7}, "unit"),
    ({"retry_attempts": "many"}, "retry_attempts"),
    ({"retry_codes": "abc"}, "retry_codes"),
])
def test_bad_options_are_config_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        get_source("alpaca", **options)


def test_retry_settings_reach_the_sdk_clients(fake: AlpacaFake,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_ALPACA_RETRY_WAIT", "0.25")
    monkeypatch.setenv("WORKBENCH_ALPACA_RETRY_CODES", "429,503")
    src = AlpacaSource(api_key=API_KEY, secret_key=SECRET_KEY, base_url=fake.url,
                       retry_attempts=5)
    client = src._client(crypto=False)
    assert (client._retry, client._retry_wait, client._retry_codes) == (5, 0.25, [429, 503])
    assert np.isclose(AlpacaSource(retry_wait="1.5").retry_wait, 1.5)
