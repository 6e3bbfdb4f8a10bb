"""A fake of Alpaca's market data API (stock and crypto bars) on the loopback harness.

It speaks the real wire format: `GET /v2/stocks/bars` and `GET /v1beta3/crypto/us/bars` with
`symbols, timeframe, start, end (inclusive), limit, page_token, feed, adjustment, sort`, answering
`{"bars": {"AAPL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...]}, "next_page_token": ...}`.
Stocks need the `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` headers (401 otherwise); crypto works
without them. Data is deterministic: stock intraday bars exist only in regular NYSE session
minutes (04:00-20:00 New York time with `extended_hours`), stock daily bars are stamped at New
York midnight in UTC, crypto bars are 24/7 on the UTC grid. Knobs: `page_size` (small, so
pagination happens), `gaps` (ranges with no bars), `repeat` (each page repeats the last rows of
the previous one), `invalid` (symbols answered with 422), `sip_allowed`, `extended_hours`.
Faults (429, 5xx, dropped connections) go through the harness (`fail`, `drop`).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.calendar import Calendar
from workbench.data.timeframe import Timeframe

from .loopback import LoopbackServer, Request, Response

STOCK_PATH = "/v2/stocks/bars"
CRYPTO_PATH = "/v1beta3/crypto/us/bars"
API_KEY = "PKFAKE0TEST0KEY0ID00"
SECRET_KEY = "fake-secret-9f8e7d6c5b4a3210-do-not-leak"

_NY = "America/New_York"
_TF = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D)$")
_UNIT_SECONDS = {"Min": 60, "T": 60, "Hour": 3600, "H": 3600, "Day": 86400, "D": 86400}
_STOCK_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,10}$")
_CRYPTO_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
_FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")
_ADJUSTMENTS = ("raw", "split", "dividend", "all")
_XNYS = Calendar("XNYS")


def _error(status: int, code: int, message: str) -> Response:
    return Response(status, {"code": code, "message": message})


def iso(ts: pd.Timestamp) -> str:
    """Alpaca's timestamp spelling: RFC 3339 in UTC with a Z."""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


class AlpacaFake:
    """Alpaca's market data bars endpoints on 127.0.0.1 (use as a context manager)."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        secret_key: str = SECRET_KEY,
        page_size: int = 100,
        stocks: Iterable[str] = ("AAPL", "MSFT", "SPY"),
        crypto: Iterable[str] = ("BTC/USD", "ETH/USD"),
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.default_page_size = page_size
        self.stocks = set(stocks)
        self.crypto = set(crypto)
        self.reset()
        self.server = LoopbackServer({("GET", STOCK_PATH): self._stock_bars,
                                      ("GET", CRYPTO_PATH): self._crypto_bars})
        # answer without Nagle's delay: headers and body go out in two writes, and waiting for
        # the client's delayed ACK in between costs ~40 ms a request
        handler = self.server.httpd.RequestHandlerClass
        self.server.httpd.RequestHandlerClass = type(
            "NoDelayHandler", (handler,), {"disable_nagle_algorithm": True})

    def reset(self) -> None:
        """Forget requests, queued faults and knob settings (to share one server across tests)."""
        self.page_size = self.default_page_size
        self.gaps: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        self.repeat = 0
        self.invalid: set[str] = set()
        self.sip_allowed = False
        self.extended_hours = False
        self.served: dict[str, list[dict[str, Any]]] = {}
        server = getattr(self, "server", None)
        if server is not None:
            server.requests.clear()
            server.faults.clear()

    # ------------------------------------------------------------------ harness
    def __enter__(self) -> AlpacaFake:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url

    def requests(self, path: str | None = None) -> list[Request]:
        """Bar requests received so far (both endpoints unless `path` is given)."""
        paths = (path,) if path else (STOCK_PATH, CRYPTO_PATH)
        return [r for p in paths for r in self.server.hits(p)]

    def fail(self, path: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests to `path` with `status` in Alpaca's error shape."""
        message = "too many requests" if status == 429 else "internal server error"
        self.server.fail_next(path, _error(status, status * 100_000, message), times)

    def drop(self, path: str, times: int = 1) -> None:
        """Close the connection without answering the next `times` requests to `path`."""
        self.server.fail_next(path, Response(drop=True), times)

    def add_gap(self, symbol: str, start: str | pd.Timestamp, end: str | pd.Timestamp) -> None:
        """Serve no bars for `symbol` with t in [start, end)."""
        self.gaps.setdefault(symbol, []).append((_utc(start), _utc(end)))

    # ------------------------------------------------------------------ data
    def bars(self, symbol: str, timeframe: str, start: str | pd.Timestamp,
             end: str | pd.Timestamp) -> list[dict[str, Any]]:
        """Every bar the fake has for `symbol` with t in [start, end] (inclusive, like Alpaca)."""
        known = self.crypto if "/" in symbol else self.stocks
        if symbol not in known:
            return []
        seconds = _timeframe_seconds(timeframe)
        assert seconds is not None, timeframe
        lo, hi = _utc(start), _utc(end)
        stamps = self._stamps("/" in symbol, seconds, lo, hi)
        for a, b in self.gaps.get(symbol, []):
            stamps = stamps[(stamps < a) | (stamps >= b)]
        return [_bar(symbol, seconds, ts) for ts in stamps]

    def _stamps(self, crypto: bool, seconds: int, lo: pd.Timestamp, hi: pd.Timestamp
                ) -> pd.DatetimeIndex:
        if hi < lo:
            return pd.DatetimeIndex([], tz="UTC")
        if crypto:
            step = pd.Timedelta(seconds=seconds)
            first = lo.floor(step) if lo == lo.floor(step) else lo.floor(step) + step
            return pd.date_range(first, hi, freq=step, tz="UTC") if first <= hi else (
                pd.DatetimeIndex([], tz="UTC"))
        if seconds >= 86400:
            # sessions whose New York midnight falls in [lo, hi]
            days = _XNYS.expected(lo - pd.Timedelta(days=1), hi, Timeframe.parse("1d"))
            dates = pd.to_datetime(days, unit="us")
            stamps = pd.DatetimeIndex(dates).tz_localize(_NY).tz_convert("UTC")
            return stamps[(stamps >= lo) & (stamps <= hi)]
        minutes = self._minutes(lo - pd.Timedelta(seconds=seconds), hi)
        if seconds == 4 * 3600:
            # Alpaca's 4h stock bars follow New York time: 00/04/08/12/16/20 local
            local = minutes.tz_convert(_NY).floor("4h", ambiguous=False,
                                                  nonexistent="shift_forward")
            stamps = pd.DatetimeIndex(local.unique()).tz_convert("UTC")
        else:
            stamps = pd.DatetimeIndex(minutes.floor(pd.Timedelta(seconds=seconds)).unique())
        return stamps[(stamps >= lo) & (stamps <= hi)]

    def _minutes(self, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DatetimeIndex:
        """Minutes with stock trading in [lo, hi]: the regular session, or 04:00-20:00 New York
        time on session days when `extended_hours` is on (as IEX minute bars really are)."""
        if not self.extended_hours:
            us = _XNYS.expected(lo, hi, Timeframe.parse("1m"))
            return pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True))
        days = _XNYS.expected(lo - pd.Timedelta(days=1), hi, Timeframe.parse("1d"))
        parts = [pd.date_range(pd.Timestamp(d, unit="us").tz_localize(_NY) + pd.Timedelta(hours=4),
                               periods=16 * 60, freq="1min").tz_convert("UTC") for d in days]
        out = parts[0].append(parts[1:]) if parts else pd.DatetimeIndex([], tz="UTC")
        return out[(out >= lo) & (out <= hi)]

    # ------------------------------------------------------------------ endpoints
    def _stock_bars(self, req: Request) -> Response:
        key, secret = req.headers.get("apca-api-key-id"), req.headers.get("apca-api-secret-key")
        if key != self.api_key or secret != self.secret_key:
            return _error(401, 40110000, "request is not authorized")
        feed = req.query.get("feed", "iex")
        if feed not in _FEEDS:
            return _error(422, 42210000, f"invalid feed: {feed}")
        if feed == "sip" and not self.sip_allowed:
            return _error(403, 40310000, "subscription does not permit querying recent SIP data")
        if req.query.get("adjustment", "raw") not in _ADJUSTMENTS:
            return _error(422, 42210000, f"invalid adjustment: {req.query['adjustment']}")
        return self._bars(req, crypto=False)

    def _crypto_bars(self, req: Request) -> Response:
        key, secret = req.headers.get("apca-api-key-id"), req.headers.get("apca-api-secret-key")
        if (key or secret) and (key != self.api_key or secret != self.secret_key):
            return _error(401, 40110000, "request is not authorized")
        return self._bars(req, crypto=True)

    def _bars(self, req: Request, *, crypto: bool) -> Response:
        q = req.query
        symbols = [s for s in q.get("symbols", "").split(",") if s]
        if not symbols:
            return _error(422, 42210000, "no symbol specified")
        pattern = _CRYPTO_SYMBOL if crypto else _STOCK_SYMBOL
        for sym in symbols:
            if sym in self.invalid or not pattern.match(sym):
                return _error(422, 42210000, f"invalid symbol: {sym}")
        timeframe = q.get("timeframe", "")
        if _timeframe_seconds(timeframe) is None:
            return _error(422, 42210000, f"invalid timeframe: {timeframe}")
        try:
            now = pd.Timestamp.now(tz="UTC")
            start = _utc(q["start"]) if q.get("start") else now.normalize()
            end = _utc(q["end"]) if q.get("end") else now
        except ValueError:
            return _error(422, 42210000, "invalid start or end: use RFC 3339")
        try:
            limit = int(q.get("limit") or 1000)
        except ValueError:
            return _error(422, 42210000, "invalid limit")
        if not 1 <= limit <= 10_000:
            return _error(422, 42210000, "invalid limit: must be between 1 and 10000")
        sort = q.get("sort", "asc")
        if sort not in ("asc", "desc"):
            return _error(422, 42210000, f"invalid sort: {sort}")
        rows = []
        for sym in sorted(set(symbols)):
            bars = self.bars(sym, timeframe, start, end)
            rows += [(sym, b) for b in (bars[::-1] if sort == "desc" else bars)]
        offset = 0
        if q.get("page_token"):
            try:
                offset = int(base64.urlsafe_b64decode(q["page_token"]).decode().rsplit("|", 1)[1])
            except (ValueError, IndexError):
                return _error(422, 42210000, "invalid page token")
        size = min(limit, self.page_size)
        page = rows[offset:offset + size]
        nxt = offset + size
        token = None
        if nxt < len(rows):
            resume = max(nxt - self.repeat, offset + 1)  # `repeat` rows come again next page
            sym, bar = rows[resume]
            token = base64.urlsafe_b64encode(f"{sym}|{bar['t']}|{resume}".encode()).decode()
        out: dict[str, list[dict[str, Any]]] = {}
        for sym, bar in page:
            out.setdefault(sym, []).append(bar)
            self.served.setdefault(sym, []).append(bar)
        return Response(200, {"bars": out, "next_page_token": token})


# ---------------------------------------------------------------------- helpers
def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _timeframe_seconds(value: str) -> int | None:
    m = _TF.match(value)
    if not m or int(m.group(1)) < 1:
        return None
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return seconds if seconds <= 86400 else None


def _noise(*parts: object) -> float:
    """A deterministic number in [-1, 1) from its arguments."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def _bar(symbol: str, seconds: int, ts: pd.Timestamp) -> dict[str, Any]:
    """The fake's bar for (symbol, timeframe, open time): plausible, OHLC-consistent, fixed."""
    base = 30_000.0 if symbol.startswith("BTC") else 50.0 + zlib.crc32(symbol.encode()) % 400
    k = int(ts.timestamp()) // seconds
    level = base * (1 + 0.05 * math.sin(k / 5000))
    o = round(level * (1 + 0.004 * _noise(symbol, seconds, k, "o")), 4)
    c = round(level * (1 + 0.004 * _noise(symbol, seconds, k, "c")), 4)
    h = round(max(o, c) * (1 + 0.002 * (1 + _noise(symbol, seconds, k, "h"))) + 0.01, 4)
    lo = round(min(o, c) * (1 - 0.002 * (1 + _noise(symbol, seconds, k, "l"))) - 0.01, 4)
    crypto = "/" in symbol
    v = 1 + abs(_noise(symbol, seconds, k, "v")) * (5 if crypto else 50_000)
    return {
        "t": iso(ts), "o": o, "h": h, "l": lo, "c": c,
        "v": round(v, 6) if crypto else float(int(v)),
        "n": 1 + int(abs(_noise(symbol, seconds, k, "n")) * 500),
        "vw": round((h + lo + c) / 3, 6),
    }


def frame_of(bars: list[dict[str, Any]]) -> pd.DataFrame:
    """Wire bars as a bar frame (ts as served, not shifted), for comparing with the lake."""
    if not bars:
        return pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume", "trades",
                                     "vwap"])
    df = pd.DataFrame.from_records(bars)
    out = pd.DataFrame({"ts": pd.to_datetime(df["t"], utc=True).dt.as_unit("us")})
    for short, col in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"),
                       ("v", "volume"), ("n", "trades"), ("vw", "vwap")):
        out[col] = df[short].to_numpy(dtype=np.float64)
    return out


__all__ = ["API_KEY", "CRYPTO_PATH", "SECRET_KEY", "STOCK_PATH", "AlpacaFake", "frame_of", "iso"]
