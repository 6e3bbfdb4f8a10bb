"""Every source under the shared source contract (`tests/source_contract.py`): the synthetic market,
CSV files, ccxt against the Binance fake and Alpaca against the Alpaca fake (both loopback,
unmodified clients), on crypto and equity symbols and on intraday and daily bars."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers.alpaca import API_KEY, SECRET_KEY, AlpacaFake
from servers.binance import BinanceServer
from servers.loopback import guard_loopback
from source_contract import SourceCase, SourceContract

from workbench.data.calendar import calendar_for_symbol
from workbench.data.sources.alpaca import AlpacaSource
from workbench.data.sources.ccxt import BASE_URL_SETTING, CcxtSource
from workbench.data.sources.csv import CsvSource
from workbench.data.sources.synthetic import SyntheticSource
from workbench.data.timeframe import Timeframe

ENV_VARS = (
    BASE_URL_SETTING, "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "APCA_API_KEY_ID",
    "APCA_API_SECRET_KEY", "WORKBENCH_ALPACA_BASE_URL", "WORKBENCH_ALPACA_RETRY_ATTEMPTS",
    "WORKBENCH_ALPACA_RETRY_WAIT", "WORKBENCH_ALPACA_RETRY_CODES", "WORKBENCH_ALPACA_TIMEOUT",
    "WORKBENCH_ALPACA_FEED", "WORKBENCH_ALPACA_ADJUSTMENT",
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Loopback only, no source settings from the machine, no developer .env."""
    guard_loopback(monkeypatch)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------- synthetic
SYNTHETIC = {
    "crypto-1h": ("BTC/USDT", "1h", "2018-02-01", "2018-02-03", "btc/usdt"),
    "equity-15m": ("SPY", "15m", "2018-02-05", "2018-02-07", "spy"),
    "equity-1d": ("SPY", "1d", "2018-02-01", "2018-03-01", None),
}


class TestSyntheticContract(SourceContract):
    @pytest.fixture(params=list(SYNTHETIC))
    def case(self, request: pytest.FixtureRequest) -> SourceCase:
        symbol, tf, start, end, spelling = SYNTHETIC[request.param]
        return SourceCase(SyntheticSource(seed=7), symbol, tf, start, end, "ZZZ/USDT", spelling)


# ---------------------------------------------------------------------- CSV
def _write_csv(path: Path, symbol: str, timeframe: str, start: str, end: str) -> None:
    """A clean CSV of every bar the calendar expects, as users' files come: text timestamps
    (daily ones as dates), integer volumes and trade counts."""
    tf = Timeframe.parse(timeframe)
    us = calendar_for_symbol(symbol).expected(pd.Timestamp(start, tz="UTC"),
                                              pd.Timestamp(end, tz="UTC"), tf)
    ts = pd.to_datetime(us, unit="us", utc=True)
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
    frame = pd.DataFrame({
        "Date": ts.strftime("%Y-%m-%d") if tf.seconds >= 86400 else ts.strftime("%Y-%m-%d %H:%M:%S"),
        "Open": np.round(close * 0.999, 2), "High": np.round(close * 1.01, 2),
        "Low": np.round(close * 0.99, 2), "Close": np.round(close, 2),
        "Volume": rng.integers(100, 10_000, len(ts)), "Trades": rng.integers(1, 50, len(ts)),
    })
    frame.to_csv(path, index=False)


CSV = {
    "crypto-1h": ("BTC/USDT", "1h", "2024-03-01", "2024-03-03", "UTC"),
    "equity-1d": ("AAPL", "1d", "2024-02-01", "2024-03-01", "America/New_York"),
}


class TestCsvContract(SourceContract):
    @pytest.fixture(params=list(CSV))
    def case(self, request: pytest.FixtureRequest, tmp_path: Path) -> SourceCase:
        symbol, tf, start, end, tz = CSV[request.param]
        folder = tmp_path / "csv"
        folder.mkdir()
        # the file holds more than the range asked for
        _write_csv(folder / f"{symbol.replace('/', '-')}.csv", symbol, tf, "2024-01-02", "2024-04-01")
        return SourceCase(CsvSource(folder, tz=tz), symbol, tf, start, end, "ETH/USDT")


# ---------------------------------------------------------------------- ccxt
@pytest.fixture(scope="module")
def binance() -> Iterator[BinanceServer]:
    with BinanceServer(now_ms=int(pd.Timestamp("2024-06-01", tz="UTC").value // 1_000_000)) as srv:
        yield srv


CCXT = {
    "1h": ("1h", "2024-03-01", "2024-03-03"),
    "1d": ("1d", "2024-02-01", "2024-03-01"),
}


@pytest.mark.network
class TestCcxtContract(SourceContract):
    @pytest.fixture(params=list(CCXT))
    def case(self, request: pytest.FixtureRequest, binance: BinanceServer) -> SourceCase:
        binance.reset()
        tf, start, end = CCXT[request.param]
        # small pages, so every range is paginated
        src = CcxtSource("binance", base_url=binance.url, page_limit=7, sleep=lambda _: None)
        return SourceCase(src, "BTC/USDT", tf, start, end, "DOGE/USDT", "BTCUSDT")


# ---------------------------------------------------------------------- Alpaca
@pytest.fixture(scope="module")
def alpaca() -> Iterator[AlpacaFake]:
    with AlpacaFake(page_size=10) as fake:
        yield fake


ALPACA = {
    "crypto-15m": ("BTC/USD", "15m", "2024-03-01", "2024-03-02", "btc/usd"),
    "stock-1h": ("AAPL", "1h", "2024-03-04", "2024-03-07", "aapl"),
    "stock-4h": ("AAPL", "4h", "2024-03-04", "2024-03-09", None),
    "stock-1d": ("AAPL", "1d", "2024-02-01", "2024-03-01", None),
}


@pytest.mark.network
class TestAlpacaContract(SourceContract):
    @pytest.fixture(params=list(ALPACA))
    def case(self, request: pytest.FixtureRequest, alpaca: AlpacaFake) -> SourceCase:
        alpaca.reset()
        alpaca.invalid.add("ZZZZ")  # what Alpaca answers for a ticker it does not know: 422
        symbol, tf, start, end, spelling = ALPACA[request.param]
        # request windows shorter than the range, pages shorter than a window
        src = AlpacaSource(api_key=API_KEY, secret_key=SECRET_KEY, base_url=alpaca.url,
                           retry_wait=0.01, window="2D" if tf == "1d" else "12h")
        return SourceCase(src, symbol, tf, start, end, "ZZZZ", spelling)
