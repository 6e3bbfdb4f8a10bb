"""Alpaca market data: US stock and crypto bars through alpaca-py's historical data clients.

Stocks need API keys (`ALPACA_API_KEY` / `ALPACA_SECRET_KEY`, or the SDK's `APCA_API_KEY_ID` /
`APCA_API_SECRET_KEY`, from the environment or a `.env` file); crypto pairs (`BTC/USD`) need none.
Requests go out one window at a time (the SDK follows `next_page_token` inside a window), so
progress streams and memory stays bounded; the next window starts after the last bar received.

Timestamps are translated here: stock daily bars, stamped at New York midnight by Alpaca, are
moved to 00:00 UTC of their session date, and stock 4h bars are built here from 1h bars on the
lake's UTC-aligned 4h grid. Stock intraday bars outside the regular NYSE session are dropped unless
`extended_hours=True`.

Retries: alpaca-py's clients retry some HTTP statuses themselves but their constructors do not
take retry settings (and alpaca-py reads no environment variables for them), so this source sets
the attempts, wait and status codes on each client it builds (options `retry_attempts`,
`retry_wait`, `retry_codes`, or the settings `WORKBENCH_ALPACA_RETRY_ATTEMPTS`,
`WORKBENCH_ALPACA_RETRY_WAIT`, `WORKBENCH_ALPACA_RETRY_CODES`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, CryptoTradesRequest, StockBarsRequest, StockTradesRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from workbench.config import setting
from workbench.data.bars import aggregate_bars
from workbench.data.calendar import Calendar
from workbench.data.sources.alpaca_client import (
    DATA_HOST,
    DATA_RETRY_CODES,
    DATA_URL_SETTING,
    FEED_SETTING,
    FEEDS,
    KEY_PAIRS,
    RETRY_ATTEMPTS_SETTING,
    RETRY_WAIT_SETTING,
    TIMEOUT_SETTING,
    check_url,
    choice,
    configure,
    host,
    number,
    read_keys,
    scrub,
    server_message,
)
from workbench.data.sources.base import Source
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, CredentialsError, SourceError, WorkbenchError

log = logging.getLogger(__name__)

BASE_URL_SETTING = DATA_URL_SETTING
ADJUSTMENTS = ("raw", "split", "dividend", "all")
DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_RETRY_WAIT = 3.0
DEFAULT_RETRY_CODES = DATA_RETRY_CODES
DEFAULT_TIMEOUT = 30.0
WINDOW_BARS = 10_000  # default request window, in bars: about one full SDK page per request

_NY = "America/New_York"
_COLUMNS = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "n": "trades",
            "vw": "vwap"}
_OUT_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "trades", "vwap")
_STOCK = re.compile(r"^[A-Z][A-Z0-9.]{0,14}$")
_CRYPTO = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,15}$")
_XNYS = Calendar("XNYS")
_ONE_US = pd.Timedelta(microseconds=1)
_TIMEFRAMES = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "4h": TimeFrame(4, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}


class AlpacaSource(Source):
    """US stock and crypto bars from Alpaca's market data API (`get_source("alpaca", ...)`).

    Options: `api_key`, `secret_key` (else read from settings), `feed` (`iex` or `sip`, else
    `WORKBENCH_ALPACA_FEED`, else iex), `adjustment` (`raw`, `split`, `dividend`, `all`, else
    `WORKBENCH_ALPACA_ADJUSTMENT`, else raw), `base_url` (else `WORKBENCH_ALPACA_BASE_URL`, else
    Alpaca's), `window` (request range per call, e.g. `"7D"`; default 10,000 bars),
    `retry_attempts`, `retry_wait` (seconds), `retry_codes`, `timeout` (seconds per request)
    and `extended_hours` (keep stock bars outside the regular session).
    """

    name = "alpaca"
    timeframes = ("1m", "5m", "15m", "1h", "4h", "1d")

    def __init__(
        self,
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
        feed: str | None = None,
        adjustment: str | None = None,
        base_url: str | None = None,
        window: str | timedelta | None = None,
        retry_attempts: int | str | None = None,
        retry_wait: float | str | None = None,
        retry_codes: Iterable[int] | str | None = None,
        timeout: float | str | None = None,
        extended_hours: bool = False,
    ) -> None:
        key, secret = read_keys()
        self._api_key = api_key or key
        self._secret_key = secret_key or secret
        self.feed = choice(feed or setting(FEED_SETTING) or "iex", FEEDS, "feed")
        self.adjustment = choice(adjustment or setting("WORKBENCH_ALPACA_ADJUSTMENT") or "raw",
                                  ADJUSTMENTS, "adjustment")
        url = base_url or setting(BASE_URL_SETTING)
        self.base_url = check_url(url, "base_url", BASE_URL_SETTING, f"https://{DATA_HOST}") if url else None
        self.window = _window(window)
        self.retry_attempts = number(
            retry_attempts, RETRY_ATTEMPTS_SETTING, DEFAULT_RETRY_ATTEMPTS, int,
            "retry_attempts", minimum=0)
        self.retry_wait = number(
            retry_wait, RETRY_WAIT_SETTING, DEFAULT_RETRY_WAIT, float, "retry_wait",
            minimum=0)
        self.retry_codes = _codes(retry_codes)
        self.timeout = number(timeout, TIMEOUT_SETTING, DEFAULT_TIMEOUT, float,
                               "timeout", minimum=0.001)
        self.extended_hours = bool(extended_hours)
        self._clients: dict[bool, Any] = {}  # crypto? -> alpaca-py client

    def __repr__(self) -> str:
        keys = "set" if self._api_key and self._secret_key else "not set"
        return (f"AlpacaSource(feed={self.feed!r}, adjustment={self.adjustment!r}, "
                f"base_url={self.base_url!r}, keys {keys})")

    def credentials(self) -> tuple[str | None, str | None]:
        """The key pair this source uses (the live feed opens its streams with it); never log it."""
        return self._api_key, self._secret_key

    # ------------------------------------------------------------------ Source contract
    def canonical_symbol(self, symbol: str) -> str:
        """`AAPL`, `BRK.B` or a crypto pair `BTC/USD`; stocks also need keys (checked here,
        so a sync fails before its first request)."""
        sym = super().canonical_symbol(symbol).upper()
        if _is_crypto(sym):
            if not _CRYPTO.match(sym):
                raise ConfigError(f"invalid crypto pair {symbol!r}: write it as BASE/QUOTE, "
                                  "e.g. BTC/USD")
            return sym
        if not _STOCK.match(sym):
            raise ConfigError(f"invalid stock symbol {symbol!r}: use a ticker such as AAPL or "
                              "BRK.B, or a crypto pair such as BTC/USD")
        self._check_keys()
        return sym

    def fetch(
        self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp
    ) -> Iterator[pd.DataFrame]:
        """Yield bar frames for `symbol` covering [start, end), one request window at a time."""
        self.check_timeframe(timeframe)
        crypto = _is_crypto(symbol)
        client = self._client(crypto)
        start, end = _utc(start), _utc(end)
        # stock 4h bars are built from 1h bars on the lake's UTC grid: Alpaca's own stock 4h
        # bars are not promised to sit on it (New York-aligned ones are an hour off in winter)
        fetch_tf = Timeframe.parse("1h") if (not crypto and timeframe.name == "4h") else timeframe
        step = self.window if self.window is not None else WINDOW_BARS * fetch_tf.delta
        step = max(1, -(-step // timeframe.delta)) * timeframe.delta  # whole output bars
        cursor = timeframe.floor(start)
        stop = timeframe.floor(end - _ONE_US) + timeframe.delta
        while cursor < stop:
            upper = min(cursor + step, stop)
            raw = self._request(client, crypto, symbol, fetch_tf, cursor, upper)
            if raw.empty:
                cursor = upper
                continue
            # resume right after the last bar actually received (never skip a bar), on the
            # output grid so that an aggregated bucket is always built from one reply; a bucket
            # the next window fetches again is held back until then
            nxt = timeframe.floor(raw["ts"].iloc[-1] + fetch_tf.delta)
            if nxt <= cursor:  # only possible when aggregating: move on by one bucket
                nxt = cursor + timeframe.delta
            bars = self._shape(raw, crypto, fetch_tf, timeframe)
            keep = (bars["ts"] >= start) & (bars["ts"] < end) & (bars["ts"] < nxt)
            bars = bars[keep].reset_index(drop=True)
            if len(bars):
                yield bars
            cursor = nxt

    # ------------------------------------------------------------------ clients
    def _check_keys(self) -> None:
        missing = [name for name, value in zip(KEY_PAIRS[0], (self._api_key, self._secret_key),
                                               strict=True) if not value]
        if missing:
            raise CredentialsError(
                f"Alpaca stock data needs API keys, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set: set ALPACA_API_KEY and "
                "ALPACA_SECRET_KEY (or APCA_API_KEY_ID and APCA_API_SECRET_KEY) in the "
                "environment or in a .env file in the working directory (crypto pairs need none)"
            )

    def _client(self, crypto: bool) -> Any:
        client = self._clients.get(crypto)
        if client is not None:
            return client
        if crypto:
            # keys are optional for crypto (they only raise the rate limit); send both or none
            both = bool(self._api_key and self._secret_key)
            client = CryptoHistoricalDataClient(
                api_key=self._api_key if both else None,
                secret_key=self._secret_key if both else None,
                raw_data=True, url_override=self.base_url)
        else:
            self._check_keys()
            client = StockHistoricalDataClient(
                api_key=self._api_key, secret_key=self._secret_key, raw_data=True,
                url_override=self.base_url)
        configure(client, timeout=self.timeout, retries=self.retry_attempts, wait=self.retry_wait,
                  codes=self.retry_codes)
        self._clients[crypto] = client
        return client

    # ------------------------------------------------------------------ one window
    def _request(self, client: Any, crypto: bool, symbol: str, tf: Timeframe,
                 lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
        """All bars with open time in [lo, hi) in lake time, sorted and de-duplicated."""
        common: dict[str, Any] = {
            "symbol_or_symbols": symbol, "timeframe": _TIMEFRAMES[tf.name],
            # Alpaca's end is inclusive; stop one microsecond short of the next window
            "start": lo.to_pydatetime(), "end": (hi - _ONE_US).to_pydatetime(),
        }
        request = (CryptoBarsRequest(**common) if crypto else StockBarsRequest(
            **common, feed=DataFeed(self.feed), adjustment=Adjustment(self.adjustment)))
        not_bars = (f"Alpaca at {self._host()} sent a reply that is not bar data for {symbol}: "
                    f"check the base URL ({BASE_URL_SETTING})")
        reply = self._get(client.get_crypto_bars if crypto else client.get_stock_bars, request, symbol,
                          f"{symbol} {tf} bars", "bar data")
        try:
            frame = _frame((reply or {}).get(symbol) or [])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise SourceError(not_bars) from None
        if not crypto and tf.name == "1d":
            # stamped at New York midnight (04:00/05:00 UTC): the session date at 00:00 UTC
            local = frame["ts"].dt.tz_convert(_NY).dt.tz_localize(None).dt.normalize()
            frame["ts"] = local.dt.tz_localize("UTC")
        if not frame["ts"].is_monotonic_increasing:
            frame = frame.sort_values("ts", kind="stable")
        repeated = int(frame["ts"].duplicated(keep="last").sum())
        if repeated:
            frame = frame.drop_duplicates("ts", keep="last")
        frame = frame[(frame["ts"] >= lo) & (frame["ts"] < hi)].reset_index(drop=True)
        log.debug("alpaca %s %s [%s, %s): %d bars%s", symbol, tf, lo, hi, len(frame),
                  f" ({repeated} repeated rows dropped)" if repeated else "")
        return frame

    def fetch_trades(self, symbol: str, start: pd.Timestamp, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` trades of `symbol` from `start` (inclusive) on, as Alpaca sends them
        (``t`` RFC 3339, ``p``, ``s``, ``i``, crypto ``tks``): the collector's backfill."""
        crypto = _is_crypto(symbol)
        client = self._client(crypto)
        first = _utc(start).floor("us").to_pydatetime()  # Alpaca's times are microseconds
        common: dict[str, Any] = {"symbol_or_symbols": symbol, "start": first, "limit": limit}
        request = (CryptoTradesRequest(**common) if crypto
                   else StockTradesRequest(**common, feed=DataFeed(self.feed)))
        reply = self._get(client.get_crypto_trades if crypto else client.get_stock_trades, request,
                          symbol, f"{symbol} trades", "trade data")
        rows = (reply or {}).get(symbol) or [] if isinstance(reply, dict) else []
        return list(rows)

    def _get(self, get: Any, request: Any, symbol: str, what: str, noun: str) -> Any:
        """`get(request)` with Alpaca's failures as one line each; `what` names the data asked for
        (``BTC/USD 1m bars``), `noun` the kind of reply expected (``bar data``)."""
        try:
            return get(request)
        except APIError as exc:
            raise self._api_error(exc, symbol, what) from None
        except ValueError:  # JSON that is not such a reply (requests' JSONDecodeError included)
            raise SourceError(f"Alpaca at {self._host()} sent a reply that is not {noun} for {symbol}: "
                              f"check the base URL ({BASE_URL_SETTING})") from None
        except requests.RequestException as exc:
            raise SourceError(
                f"could not reach Alpaca at {self._host()} for {what} ({type(exc).__name__}): check the "
                f"network connection, or the base URL ({BASE_URL_SETTING})") from None

    def _shape(self, raw: pd.DataFrame, crypto: bool, fetch_tf: Timeframe, tf: Timeframe
               ) -> pd.DataFrame:
        """Drop off-session stock bars (unless extended_hours) and aggregate to `tf`."""
        bars = raw
        if not crypto and fetch_tf.seconds < 86400 and not self.extended_hours:
            ts = pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8
            bars = bars[_XNYS.is_open_at(ts, fetch_tf)]
        if fetch_tf != tf and len(bars):
            bars = _aggregate(bars, tf)
        return bars.reset_index(drop=True)

    # ------------------------------------------------------------------ errors
    def _api_error(self, exc: APIError, symbol: str, what: str) -> WorkbenchError:
        """`exc` as one line; `what` names the data asked for (e.g. ``BTC/USD 1m bars``)."""
        status = exc.status_code
        message = scrub(server_message(exc), (self._secret_key, self._api_key))
        if status in (401, 403) and "subscription" in message.lower():
            return ConfigError(
                f"Alpaca refused {self.feed} data for {symbol} (HTTP {status}: {message}): use "
                "feed='iex', or a subscription that includes this feed"
            )
        if status in (401, 403):
            return CredentialsError(
                f"Alpaca refused the API keys (HTTP {status}) for {symbol}: check ALPACA_API_KEY "
                "and ALPACA_SECRET_KEY (environment or .env) hold a current key pair"
            )
        if status in (400, 404, 422):
            return ConfigError(
                f"Alpaca rejected the request for symbol {symbol!r} (HTTP {status}: {message}): "
                "check the symbol (a ticker such as AAPL, or a pair such as BTC/USD)"
            )
        retried = (f" after {self.retry_attempts} retries"
                   if status in self.retry_codes and self.retry_attempts else "")
        if status == 429:
            return SourceError(
                f"Alpaca kept rate-limiting {what} (HTTP 429{retried}): wait a "
                "minute and re-run the sync (it resumes where it stopped), or raise retry_wait "
                "(WORKBENCH_ALPACA_RETRY_WAIT)"
            )
        if status is not None and status >= 500:
            return SourceError(
                f"Alpaca failed serving {what} (HTTP {status}{retried}): it is "
                "having trouble; re-run the sync later (it resumes where it stopped), or raise "
                "retry_attempts (WORKBENCH_ALPACA_RETRY_ATTEMPTS)"
            )
        return SourceError(
            f"Alpaca answered HTTP {status} for {what} ({message}): check the "
            f"base URL ({BASE_URL_SETTING}) and the source options"
        )

    def _host(self) -> str:
        return host(self.base_url, DATA_HOST)


# ---------------------------------------------------------------------- helpers
def _is_crypto(symbol: str) -> bool:
    return "/" in symbol


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _window(value: str | timedelta | None) -> pd.Timedelta | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        raise ConfigError(f"window {value!r} has no unit: give a duration such as '7D' or '12h'")
    try:
        window = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ConfigError(f"cannot read window {value!r} as a duration: use e.g. '7D' or "
                          "'12h'") from None
    if window <= pd.Timedelta(0):
        raise ConfigError(f"window {value!r} is not positive: use e.g. '7D' or '12h'")
    return window


def _codes(value: Iterable[int] | str | None) -> tuple[int, ...]:
    raw: Any = value if value is not None else setting("WORKBENCH_ALPACA_RETRY_CODES")
    if raw is None or raw == "":
        return DEFAULT_RETRY_CODES
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    try:
        codes = tuple(int(str(c).strip()) for c in items if str(c).strip())
    except ValueError:
        raise ConfigError(f"retry_codes {raw!r} are not HTTP status codes: write e.g. "
                          "429,500,502,503,504") from None
    if not all(400 <= c <= 599 for c in codes):
        raise ConfigError(f"retry_codes {raw!r} must be HTTP error statuses (400-599)")
    return codes


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Alpaca bar dicts (`t o h l c v n vw`) as a bar frame with float64 values."""
    if not rows:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in _OUT_COLUMNS})
        out["ts"] = pd.Series(dtype="datetime64[us, UTC]")
        return out
    df = pd.DataFrame.from_records(rows)
    out = pd.DataFrame({"ts": pd.to_datetime(df["t"], utc=True, format="ISO8601").dt.as_unit("us")})
    for short, col in _COLUMNS.items():
        if short in df.columns:
            out[col] = pd.to_numeric(df[short], errors="coerce").astype("float64")
        else:  # an optional field the reply left out
            out[col] = np.nan
    return out


def _aggregate(bars: pd.DataFrame, tf: Timeframe) -> pd.DataFrame:
    """Combine sorted bars into `tf` buckets (epoch-aligned, as the lake stores them)."""
    us = pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8
    bucket = (us - tf.origin_micros) // tf.micros * tf.micros + tf.origin_micros
    return aggregate_bars(bars, bucket)[list(_OUT_COLUMNS)]


__all__ = ["AlpacaSource"]
