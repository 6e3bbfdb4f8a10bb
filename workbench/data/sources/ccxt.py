"""Bars from any exchange ccxt supports (`ccxt:binance`, `ccxt:kraken`...) behind the Source API.

The unmodified ccxt client does the wire work (signing, rate limiting, error mapping); this module
adds what the lake needs on top: canonical symbols, manual pagination by the last bar actually
received (ccxt's own `paginate=True` walks fixed time windows and can skip bars), bounded retries of
transient failures, and one-line errors that say what to do. A base-URL override points every REST
endpoint of the exchange at another host, e.g. a local fake in tests or a regional mirror.

Funding-rate history of perpetual futures comes through ccxt's unified `fetch_funding_rate_history`,
paged the same way (by the last settlement received). A futures exchange id loads only its own
markets: `ccxt:binanceusdm` (Binance USDⓈ-M perpetuals, symbols like `BTC/USDT:USDT`) asks nothing
but `/fapi/v1/exchangeInfo` to list them.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import pandas as pd

from workbench.config import setting
from workbench.data.sources.base import Source, spot_funding_error
from workbench.data.timeframe import STORED, Timeframe
from workbench.errors import (
    ConfigError,
    CredentialsError,
    SourceError,
    TemporaryError,
    did_you_mean,
)
from workbench.retry import MAX_WAIT_SECONDS, RetryPolicy, retry_after

log = logging.getLogger(__name__)

BASE_URL_SETTING = "WORKBENCH_CCXT_BASE_URL"
_FUTURES_WORDS = ("usdm", "coinm", "futures", "swap", "perp")
MAX_BACKOFF_SECONDS = MAX_WAIT_SECONDS
_T = TypeVar("_T")


class CcxtSource(Source):
    """Historical OHLCV bars from one ccxt exchange; `name` is the exchange id (the lake label).

    >>> src = CcxtSource("binance")                      # doctest: +SKIP
    >>> lake.sync(src, ["BTC/USDT"], "1m", "2024-01-01")  # doctest: +SKIP

    Options: `base_url` replaces scheme and host of every REST endpoint (default: the
    WORKBENCH_CCXT_BASE_URL setting, else the exchange's own hosts); `max_retries` and `backoff`
    (seconds, doubled per attempt, capped at a minute) govern retries of network failures, rate
    limiting and 5xx answers; `page_limit` is the most bars asked for per request; `sleep` waits
    between retries (tests pass a no-op). ccxt's own rate limiter is always on.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        base_url: str | None = None,
        max_retries: int = 5,
        backoff: float = 1.0,
        page_limit: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        exchange_id = exchange_id.strip().lower()
        if exchange_id not in ccxt.exchanges:
            raise ConfigError(
                f"unknown ccxt exchange {exchange_id!r}{did_you_mean(exchange_id, ccxt.exchanges)}"
                ": use an id from ccxt.exchanges, e.g. ccxt:binance"
            )
        if max_retries < 0 or backoff < 0 or page_limit < 1:
            raise ConfigError(
                f"bad ccxt source options (max_retries={max_retries}, backoff={backoff}, "
                f"page_limit={page_limit}): use max_retries >= 0, backoff >= 0, page_limit >= 1"
            )
        self.name = exchange_id
        self.max_retries = max_retries
        self.backoff = backoff
        self.page_limit = page_limit
        self._retry = RetryPolicy(retries=max_retries, wait=backoff, max_wait=MAX_BACKOFF_SECONDS,
                                  sleep=sleep, logger=log)
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True})
        self.exchange.options.update(_market_options(self.exchange.options))
        self.base_url = base_url or setting(BASE_URL_SETTING)
        if self.base_url:
            self.exchange.urls["api"] = rebase_urls(self.exchange.urls["api"], self.base_url)
            log.info("%s: REST endpoints redirected to %s", self.name, self.base_url)
        offered = (self.exchange.timeframes or {}) if self.exchange.has.get("fetchOHLCV") else {}
        self.timeframes = tuple(tf for tf in STORED if tf in offered)
        self._markets: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"CcxtSource({self.name!r})"

    # ------------------------------------------------------------------ symbols and timeframes
    def check_timeframe(self, timeframe: Timeframe) -> None:
        """Raise ConfigError when the exchange cannot deliver `timeframe` bars directly."""
        if not self.timeframes:
            raise ConfigError(
                f"exchange {self.name!r} offers no OHLCV history through ccxt: pick another "
                "exchange (e.g. ccxt:binance)"
            )
        super().check_timeframe(timeframe)

    def markets(self) -> dict[str, Any]:
        """The exchange's markets by unified symbol, loaded once (with retries)."""
        if self._markets is None:
            self._markets = self._call("loading the market list", None, self.exchange.load_markets)
        return self._markets

    def canonical_symbol(self, symbol: str) -> str:
        """Accept `BTC/USDT`, `btc/usdt` or the exchange's id `BTCUSDT`; return `BTC/USDT`."""
        symbol = super().canonical_symbol(symbol)
        markets = self.markets()
        if symbol in markets:
            return symbol
        by_upper = {s.upper(): s for s in markets}
        if symbol.upper() in by_upper:
            return by_upper[symbol.upper()]
        by_id: dict[str, str] = {}
        for s, m in markets.items():
            mid = str(m.get("id") or "")
            # several markets can share an id (spot and margin, say): prefer the spot one
            if mid and (mid.upper() not in by_id or m.get("spot")):
                by_id[mid.upper()] = s
        if symbol.upper() in by_id:
            return by_id[symbol.upper()]
        close = difflib.get_close_matches(symbol.upper(), [*by_upper, *by_id], n=1, cutoff=0.6)
        hint = f" (did you mean {by_upper.get(close[0]) or by_id[close[0]]!r}?)" if close else ""
        examples = ", ".join(list(markets)[:3])
        raise ConfigError(
            f"unknown symbol {symbol!r} on {self.name}{hint}: use a market the exchange lists, "
            f"written BASE/QUOTE (e.g. {examples}); ccxt.{self.name}().load_markets() lists them"
        )

    # ------------------------------------------------------------------ bars
    def fetch(
        self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp
    ) -> Iterator[pd.DataFrame]:
        """Yield pages of bars in [start, end), each page resuming after the last bar received.

        Paging by the last timestamp actually returned (not by fixed windows) means a page that
        repeats earlier rows, or stops short at a gap, can neither skip bars nor loop forever.
        """
        symbol = self.canonical_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        self.check_timeframe(tf)
        step = tf.seconds * 1000
        start_ms = -(-pd.Timestamp(start).value // 1_000_000)
        end_ms = -(-pd.Timestamp(end).value // 1_000_000)
        since = start_ms
        last: int | None = None
        while since < end_ms:
            # ask for no more bars than the range still needs; if such a short page brings
            # nothing new (it may hold only repeats), ask once more for a full page
            limit = min(self.page_limit, math.ceil((end_ms - since) / step))
            page = self._page(symbol, tf, since, limit, last)
            if page.empty and limit < self.page_limit:
                page = self._page(symbol, tf, since, self.page_limit, last)
            if page.empty:
                log.debug("%s: no %s bars of %s after %s, stopping", self.name, tf.name, symbol,
                          _iso(since))
                break
            last = int(page["ts_ms"].iloc[-1])
            since = last + step
            page = page[(page["ts_ms"] >= start_ms) & (page["ts_ms"] < end_ms)]
            if not page.empty:
                yield page.drop(columns="ts_ms").reset_index(drop=True)

    def _page(self, symbol: str, tf: Timeframe, since: int, limit: int, last: int | None
              ) -> pd.DataFrame:
        """One `fetch_ohlcv` call, keeping only bars newer than the last one received."""
        what = f"fetching {tf.name} bars of {symbol} from {_iso(since)}"
        rows = self._call(what, symbol, self.exchange.fetch_ohlcv, symbol, tf.name, since, limit)
        page = _frame(rows)
        return page[page["ts_ms"] > (last if last is not None else since - 1)]

    # ------------------------------------------------------------------ trades
    def fetch_trades(self, symbol: str, *, since_ms: int | None = None, limit: int = 1000,
                     params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One page of the exchange's public trades as ccxt returns them (the collector's
        backfill), with the retries and errors of every call of this source."""
        symbol = self.canonical_symbol(symbol)
        return self._call(f"fetching trades of {symbol}", symbol, self.exchange.fetch_trades, symbol,
                          since_ms, limit, params or {})

    # ------------------------------------------------------------------ funding rates
    def funding_symbol(self, symbol: str) -> str:
        """The unified symbol of a perpetual (`BTC/USDT:USDT`, or its id `BTCUSDT` on a futures
        exchange); a spot pair, a dated future or an exchange without funding history is refused."""
        if not self.exchange.has.get("fetchFundingRateHistory"):
            raise ConfigError(
                f"exchange {self.name!r} offers no funding-rate history through ccxt: sync funding from "
                f"a perpetual-futures exchange{self._futures_hint(', e.g. ')}"
            )
        markets = self.markets()
        raw = symbol.strip()
        try:
            sym = self.canonical_symbol(raw)
        except ConfigError:
            perp = self._perp_of(raw.upper())
            if perp is not None:  # `BTC/USDT` on a futures exchange: the pair, not its perpetual
                raise spot_funding_error(raw, perp) from None
            if ":" in raw and not any(m.get("swap") for m in markets.values()):
                raise ConfigError(
                    f"{self.name} lists no perpetual futures here (its spot markets only), so it has no "
                    f"{raw}: sync funding from its futures exchange{self._futures_hint(', e.g. ')}"
                ) from None
            raise
        market = markets[sym]
        if market.get("swap"):
            return sym
        pair = f"{market.get('base')}/{market.get('quote')}" if market.get("base") else sym.split(":")[0]
        example = self._perp_of(pair) or f"{pair}:{pair.split('/', 1)[-1]}"
        kind = "a spot symbol" if market.get("spot") else f"a {market.get('type') or 'non-perpetual'} market"
        hint = ("" if any(m.get("swap") for m in markets.values())
                else f"; {self.name} lists spot markets only{self._futures_hint(', use ')}")
        raise spot_funding_error(sym, example, kind, hint)

    def _perp_of(self, pair: str) -> str | None:
        """The listed linear perpetual of a `BASE/QUOTE` pair, if the exchange has one."""
        perp = f"{pair}:{pair.split('/', 1)[1]}" if "/" in pair and ":" not in pair else None
        return perp if perp is not None and (self.markets().get(perp) or {}).get("swap") else None

    def _futures_hint(self, lead: str) -> str:
        """`lead` + the ccxt ids of this exchange's futures venues (`ccxt:binanceusdm`), or ''."""
        if any(k in self.name for k in _FUTURES_WORDS):
            return ""
        ids = sorted((e for e in ccxt.exchanges if e.startswith(self.name) and e != self.name
                      and any(k in e for k in _FUTURES_WORDS)), key=lambda e: ("usdm" not in e, e))
        return lead + " or ".join(f"ccxt:{e}" for e in ids) if ids else ""

    def fetch_funding(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Funding settlements of a perpetual in [start, end) (`ts`, `rate` per interval), all pages."""
        pages = list(self.funding_pages(symbol, start, end))
        if not pages:
            return _funding_frame([]).drop(columns="ts_ms")
        return pd.concat(pages, ignore_index=True)

    def funding_pages(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp
                      ) -> Iterator[pd.DataFrame]:
        """Yield pages of funding settlements in [start, end), each resuming after the last one
        received; stops at the first page that brings nothing new."""
        symbol = self.funding_symbol(symbol)
        start_ms = -(-pd.Timestamp(start).value // 1_000_000)
        end_ms = -(-pd.Timestamp(end).value // 1_000_000)
        since = start_ms
        while since < end_ms:
            what = f"fetching funding rates of {symbol} from {_iso(since)}"
            rows = self._call(what, symbol, self.exchange.fetch_funding_rate_history, symbol, since,
                              self.page_limit, {"until": end_ms - 1})
            page = _funding_frame(rows)
            page = page[page["ts_ms"] >= since]
            if page.empty:
                break
            since = int(page["ts_ms"].iloc[-1]) + 1
            page = page[page["ts_ms"] < end_ms]
            if not page.empty:
                yield page.drop(columns="ts_ms").reset_index(drop=True)

    # ------------------------------------------------------------------ errors and retries
    def _call(self, what: str, symbol: str | None, fn: Callable[..., _T], *args: Any) -> _T:
        """Run one ccxt call, retrying transient failures and mapping ccxt errors to ours."""

        def attempt(_: int) -> _T:
            self.exchange.last_response_headers = None  # so a stale Retry-After is never read
            try:
                return fn(*args)
            except ccxt.BadSymbol as exc:
                log.debug("%s: %s: %s", self.name, what, exc)
                raise ConfigError(
                    f"{self.name} rejected symbol {symbol or '?'} while {what} "
                    f"({_short(exc)}): check the symbol is listed on {self.name} and spelt "
                    "BASE/QUOTE"
                ) from None
            except ccxt.AuthenticationError as exc:
                log.debug("%s: %s: %s", self.name, what, exc)
                raise CredentialsError(
                    f"{self.name} refused the request while {what} ({_short(exc)}): "
                    "check the API key and its permissions, or use a public endpoint"
                ) from None
            except ccxt.OperationFailed as exc:  # NetworkError, DDoSProtection, timeouts, 5xx
                raise TemporaryError(
                    f"{self.name}: {what}: {type(exc).__name__} ({_short(exc, 120)})",
                    retry_after=retry_after(self.exchange.last_response_headers)) from exc
            except ccxt.BaseError as exc:  # ExchangeError and anything else ccxt raises
                log.debug("%s: %s: %s", self.name, what, exc)
                raise SourceError(
                    f"{self.name}: {what} failed with {type(exc).__name__} "
                    f"({_short(exc)}): check the request is valid for {self.name}; retrying will "
                    "not help"
                ) from None

        try:
            return self._retry.call(attempt)
        except TemporaryError as exc:
            cause = exc.__cause__
            log.debug("%s: %s: giving up: %s", self.name, what, cause)
            raise SourceError(
                f"{self.name}: {what} failed {exc.attempts} times, last with "
                f"{type(cause).__name__} ({_short(cause or exc)}): check the network and the "
                "exchange's status, then re-run; a sync resumes from what is stored"
            ) from None


def rebase_urls(urls: Any, base_url: str) -> Any:
    """Replace scheme and host of every URL in ccxt's nested `urls['api']`, keeping each path.

    A path in `base_url` is prefixed: `http://127.0.0.1:8080/x` turns
    `https://api.binance.com/api/v3` into `http://127.0.0.1:8080/x/api/v3`.
    """
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(
            f"bad base URL {base_url!r} ({BASE_URL_SETTING} or base_url=): "
            "write scheme and host, e.g. http://127.0.0.1:8080"
        )
    return rebase_nested(urls, base_url, ("http", "https"))


def rebase_nested(urls: Any, base_url: str, schemes: tuple[str, ...]) -> Any:
    """Every URL with one of `schemes` in ccxt's nested `urls` moved to `base_url`'s scheme and
    host, its path kept (a path in `base_url` becomes a prefix); other values as they were."""
    base = urlsplit(base_url)
    prefix = base.path.rstrip("/")

    def rebase(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rebase(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rebase(v) for v in value]
        if isinstance(value, str):
            parts = urlsplit(value)
            if parts.scheme in schemes and parts.netloc:
                return urlunsplit((base.scheme, base.netloc, prefix + parts.path, parts.query,
                                   parts.fragment))
        return value

    return rebase(urls)


def _market_options(defaults: dict[str, Any]) -> dict[str, Any]:
    """ccxt options that keep `load_markets` to public spot endpoints where the exchange allows.

    Binance-style exchanges read `fetchMarkets.types` (otherwise futures and options exchange
    info is fetched too), `fetchCurrencies` (a private wallet call) and `fetchMargins` (sapi
    margin pairs); options an exchange does not define are left alone.
    """
    options: dict[str, Any] = {}
    fetch_markets = defaults.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and "spot" in (fetch_markets.get("types") or []):
        options["fetchMarkets"] = {**fetch_markets, "types": ["spot"]}
    if "fetchCurrencies" in defaults:
        options["fetchCurrencies"] = False
    if "fetchMargins" in defaults:
        options["fetchMargins"] = False
    return options


def _frame(rows: list[list[Any]] | None) -> pd.DataFrame:
    """ccxt OHLCV rows as a bar frame (plus integer `ts_ms`), sorted, one row per timestamp."""
    rows = [r for r in rows or [] if r and r[0] is not None]
    ts = np.array([int(r[0]) for r in rows], dtype=np.int64)
    values = np.array([[np.nan if v is None else v for v in r[1:6]] for r in rows],
                      dtype=np.float64).reshape(len(rows), 5)
    frame = pd.DataFrame({
        "ts_ms": ts,
        "ts": pd.to_datetime(ts, unit="ms", utc=True).as_unit("us"),
        **{c: values[:, i] for i, c in enumerate(("open", "high", "low", "close", "volume"))},
    })
    frame = frame.sort_values("ts_ms", kind="stable")
    return frame.drop_duplicates("ts_ms", keep="last").reset_index(drop=True)


def _funding_frame(rows: list[dict[str, Any]] | None) -> pd.DataFrame:
    """ccxt funding-rate-history structures as a funding frame (plus integer `ts_ms`), sorted, one row
    per settlement; entries without a time or a rate are left out."""
    rows = [r for r in rows or [] if r.get("timestamp") is not None and r.get("fundingRate") is not None]
    ts = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
    frame = pd.DataFrame({
        "ts_ms": ts,
        "ts": pd.to_datetime(ts, unit="ms", utc=True).as_unit("ns"),
        "rate": np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64),
    })
    frame = frame.sort_values("ts_ms", kind="stable")
    return frame.drop_duplicates("ts_ms", keep="last").reset_index(drop=True)


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def _short(exc: BaseException, width: int = 200) -> str:
    """An exception's message on one line, cut to `width` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= width else text[: width - 3] + "..."


__all__ = ["BASE_URL_SETTING", "CcxtSource", "rebase_urls"]
