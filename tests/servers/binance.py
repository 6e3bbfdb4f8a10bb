"""A Binance spot and USDⓈ-M futures REST fake on the loopback harness, speaking the real wire format.

Serves `/api/v3/ping`, `/api/v3/time`, `/api/v3/exchangeInfo` and `/api/v3/klines` the way
api.binance.com does (same JSON shapes, string-encoded decimals, `{"code": -1121, "msg": ...}`
errors, weight headers), and the futures side the way fapi.binance.com does: `/fapi/v1/ping`,
`/fapi/v1/time`, `/fapi/v1/exchangeInfo` (a perpetual for every USDT-quoted pair, plus one quarterly
future), `/fapi/v1/klines` (the pair's series) and `/fapi/v1/fundingRate` (settlements every 8 h with
`symbol`, `fundingTime`, `fundingRate`, `markPrice`), so the unmodified ccxt client (`binance`, or
`binanceusdm` for the futures) can be pointed at it. Every series is a
pure function of (seed, symbol, interval, open time): any range can be served and recomputed by
the test without storing anything. Tests can punch gaps into a series, make every page repeat a few
rows of the previous one, delist a symbol, and queue 429 / 5xx responses in Binance's real shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .loopback import LoopbackServer, Request, Response

MINUTE_MS = 60_000
# Binance's kline intervals (1M, calendar months, is not served by this fake).
INTERVAL_MS = {
    "1s": 1_000, "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS, "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS, "3d": 3 * 1440 * MINUTE_MS, "1w": 7 * 1440 * MINUTE_MS,
}
WEEK_ORIGIN_MS = 4 * 1440 * MINUTE_MS  # Binance weeks open on Monday 00:00 UTC
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000

TOO_MANY_REQUESTS = {
    "code": -1003,
    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
           "Please use the websocket for live updates to avoid polling the API.",
}
INTERNAL_ERROR = {
    "code": -1001,
    "msg": "Internal error; unable to process your request. Please try again.",
}
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
FUNDING_MS = 8 * 60 * MINUTE_MS  # settlements at 00:00, 08:00 and 16:00 UTC
FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
QUARTER_DELIVERY = "2026-03-27T08:00"  # the one dated future listed: BTCUSDT_260327
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Market:
    """One spot pair as the fake lists it: ids, a price level and the tick it is quoted in."""

    base: str
    quote: str
    price: float
    decimals: int = 2
    status: str = "TRADING"

    @property
    def id(self) -> str:
        return self.base + self.quote


DEFAULT_MARKETS = (
    Market("BTC", "USDT", 60_000.0, 2),
    Market("ETH", "USDT", 3_000.0, 2),
    Market("ETH", "BTC", 0.05, 5),
    Market("SOL", "USDT", 150.0, 2),
)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 over uint64 arrays: a stateless hash, so any bar can be recomputed alone."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key(text: str) -> int:
    out = 1469598103934665603
    for ch in text.encode():
        out = ((out ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return out


class BinanceServer(LoopbackServer):
    """Binance spot REST on 127.0.0.1; `url` is the base URL to hand to the ccxt source.

    Knobs: `missing[symbol_id]` holds [start_ms, end_ms) ranges with no bars (exchange outages);
    `repeat_rows` > 0 makes every klines page start that many bars before `startTime` (rows the
    previous page already held); `now_ms` is the server clock (no bar opens after it);
    `delist(id)` makes the symbol unknown from then on; `rate_limit_next` / `server_error_next`
    queue Binance-shaped failures for the next klines calls.
    """

    def __init__(self, markets: tuple[Market, ...] = DEFAULT_MARKETS, *, seed: int = 7,
                 listed_ms: int | None = None, now_ms: int | None = None) -> None:
        super().__init__({
            ("GET", "/api/v3/ping"): self._ping,
            ("GET", "/api/v3/time"): self._time,
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/klines"): self._klines,
            ("GET", "/fapi/v1/ping"): self._ping,
            ("GET", "/fapi/v1/time"): self._time,
            ("GET", "/fapi/v1/exchangeInfo"): self._futures_info,
            ("GET", "/fapi/v1/klines"): self._klines,
            ("GET", "/fapi/v1/fundingRate"): self._funding_rate,
        })
        self.markets = {m.id: m for m in markets}
        # USDⓈ-M perpetuals share their pair's id (BTCUSDT) and, in this fake, its kline series
        self.perps = {m.id: m for m in markets if m.quote == "USDT"}
        self.seed = seed
        self.listed_ms = listed_ms if listed_ms is not None else _ms("2020-01-01")
        self.now_ms = now_ms
        self.missing: dict[str, list[tuple[int, int]]] = {}
        self.repeat_rows = 0
        self.delisted: set[str] = set()

    # ------------------------------------------------------------------ test helpers
    def reset(self) -> None:
        """Forget requests, queued faults, gaps, repeats and delistings (reuse across tests)."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()
        self.missing.clear()
        self.repeat_rows = 0
        self.delisted.clear()

    def add_gap(self, symbol_id: str, start: str | pd.Timestamp, end: str | pd.Timestamp) -> int:
        """Serve no bars opening in [start, end) for `symbol_id`; returns the 1m bars removed."""
        a, b = _ms(start), _ms(end)
        self.missing.setdefault(symbol_id, []).append((a, b))
        return (b - a) // MINUTE_MS

    def delist(self, symbol_id: str) -> None:
        """From now on klines and exchangeInfo answer -1121 Invalid symbol for `symbol_id`."""
        self.delisted.add(symbol_id)

    def rate_limit_next(self, times: int = 1, retry_after: int = 1,
                        path: str = "/api/v3/klines") -> None:
        """Answer the next `times` calls under `path` (klines by default) with Binance's 429 (-1003)
        and a Retry-After."""
        self.fail_next(path, Response(429, TOO_MANY_REQUESTS, {"Retry-After": str(retry_after)}),
                       times)

    def server_error_next(self, times: int = 1, status: int = 500,
                          path: str = "/api/v3/klines") -> None:
        """Answer the next `times` calls under `path` (klines by default) with a 5xx: 500 JSON -1001,
        or a 502/503 page."""
        if status == 500:
            response = Response(500, INTERNAL_ERROR)
        else:
            response = Response(status, BAD_GATEWAY_HTML if status == 502 else
                                "Service Unavailable.", {"Content-Type": "text/html"})
        self.fail_next(path, response, times)

    def klines_calls(self) -> list[Request]:
        return self.hits("/api/v3/klines")

    def funding_calls(self) -> list[Request]:
        return self.hits("/fapi/v1/fundingRate")

    def funding_rows(self, symbol_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Every settlement (Binance's JSON object) of a perpetual in [start_ms, end_ms)."""
        first = _align_up(max(start_ms, self.listed_ms), FUNDING_MS, "8h")
        stop = min(end_ms, self._clock() + 1)
        times = np.arange(first, max(first, stop), FUNDING_MS, dtype=np.int64)
        return self._encode_funding(symbol_id, times)

    def funding_frame(self, symbol_id: str, start: str | pd.Timestamp,
                      end: str | pd.Timestamp) -> pd.DataFrame:
        """What the server settles in [start, end) as a funding frame (`ts` ns UTC, `rate`)."""
        rows = self.funding_rows(symbol_id, _ms(start), _ms(end))
        return pd.DataFrame({
            "ts": pd.to_datetime([r["fundingTime"] for r in rows], unit="ms", utc=True).as_unit("ns"),
            "rate": np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64),
        })

    def rows(self, symbol_id: str, interval: str, start_ms: int, end_ms: int) -> list[list[Any]]:
        """Every kline (real Binance array) opening in [start_ms, end_ms), gaps left out."""
        step = INTERVAL_MS[interval]
        times = self._times(symbol_id, step, _align_up(max(start_ms, self.listed_ms), step,
                                                       interval), end_ms)
        return self._encode(symbol_id, interval, times)

    def frame(self, symbol_id: str, interval: str, start: str | pd.Timestamp,
              end: str | pd.Timestamp) -> pd.DataFrame:
        """What the server serves for [start, end) as a bar frame (decimals parsed as floats)."""
        rows = self.rows(symbol_id, interval, _ms(start), _ms(end))
        return pd.DataFrame({
            "ts": pd.to_datetime([r[0] for r in rows], unit="ms", utc=True).as_unit("us"),
            **{c: np.array([float(r[i]) for r in rows], dtype=np.float64)
               for i, c in enumerate(("open", "high", "low", "close", "volume"), start=1)},
        })

    # ------------------------------------------------------------------ series
    def _clock(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def _times(self, symbol_id: str, step: int, first: int, stop: int) -> np.ndarray:
        """Open times on the grid from `first` (aligned) up to `stop` (exclusive), gaps removed."""
        stop = min(stop, self._clock() + 1)
        if stop <= first:
            return np.empty(0, dtype=np.int64)
        times = np.arange(first, stop, step, dtype=np.int64)
        for a, b in self.missing.get(symbol_id, []):
            times = times[(times < a) | (times >= b)]
        return times

    def _encode(self, symbol_id: str, interval: str, times: np.ndarray) -> list[list[Any]]:
        if not len(times):
            return []
        m = self.markets[symbol_id]
        step = INTERVAL_MS[interval]
        base = np.uint64(_key(f"{self.seed}|{symbol_id}|{interval}"))
        idx = (times // step).astype(np.uint64)
        u = [(_mix(_mix(idx ^ base) + np.uint64(k)) >> np.uint64(11)).astype(np.float64) / 2**53
             for k in range(8)]
        t = times.astype(np.float64) / 86_400_000
        mid = m.price * np.exp(0.04 * np.sin(2 * np.pi * t / 3.1) + 0.01 * np.sin(2 * np.pi * t)
                               + 0.002 * (u[0] - 0.5))
        op = mid * (1 + 0.0008 * (u[1] - 0.5))
        cl = mid * (1 + 0.0008 * (u[2] - 0.5))
        hi = np.maximum(op, cl) * (1 + 0.0006 * u[3])
        lo = np.minimum(op, cl) * (1 - 0.0006 * u[4])
        d = m.decimals
        op, cl, hi, lo = (np.round(x, d) for x in (op, cl, hi, lo))
        vol = np.round(1 + 99 * u[5] * step / MINUTE_MS, 5)
        trades = (50 + 950 * u[6]).astype(np.int64)
        taker = np.round(vol * (0.3 + 0.4 * u[7]), 5)
        f8 = "{:.8f}".format
        return [
            [int(times[i]), f8(op[i]), f8(hi[i]), f8(lo[i]), f8(cl[i]), f8(vol[i]),
             int(times[i]) + step - 1, f8(vol[i] * cl[i]), int(trades[i]), f8(taker[i]),
             f8(taker[i] * cl[i]), "0"]
            for i in range(len(times))
        ]

    def _encode_funding(self, symbol_id: str, times: np.ndarray) -> list[dict[str, Any]]:
        """Settlements as /fapi/v1/fundingRate answers them: a rate in [-0.00005, 0.00025) per 8 h
        drawn from (seed, symbol, time), and the mark price of the pair's 8 h kline open."""
        if not len(times):
            return []
        base = np.uint64(_key(f"{self.seed}|{symbol_id}|funding"))
        u = (_mix((times // FUNDING_MS).astype(np.uint64) ^ base) >> np.uint64(11)).astype(
            np.float64) / 2**53
        rates = np.round(0.0001 + 0.0003 * (u - 0.5), 8)
        marks = [float(k[1]) for k in self._encode(symbol_id, "8h", times)]
        return [{"symbol": symbol_id, "fundingTime": int(t), "fundingRate": f"{r:.8f}",
                 "markPrice": f"{mk:.8f}"} for t, r, mk in zip(times, rates, marks, strict=True)]

    # ------------------------------------------------------------------ routes
    def _weight(self, used: int) -> dict[str, str]:
        return {"x-mbx-used-weight": str(used), "x-mbx-used-weight-1m": str(used)}

    def _ping(self, req: Request) -> Response:
        return Response(200, {}, self._weight(1))

    def _time(self, req: Request) -> Response:
        return Response(200, {"serverTime": self._clock()}, self._weight(1))

    def _exchange_info(self, req: Request) -> Response:
        wanted = list(self.markets)
        if "symbol" in req.query:
            wanted = [req.query["symbol"]]
        for s in wanted:
            if s not in self.markets or s in self.delisted:
                return Response(400, INVALID_SYMBOL)
        return Response(200, {
            "timezone": "UTC",
            "serverTime": self._clock(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(self.markets[s]) for s in wanted if s not in self.delisted],
        }, self._weight(20))

    def _klines(self, req: Request) -> Response:
        q = req.query
        symbol_id = q.get("symbol", "")
        if not symbol_id:
            return Response(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not "
                                  "sent, was empty/null, or malformed."})
        if symbol_id not in self.markets or symbol_id in self.delisted:
            return Response(400, INVALID_SYMBOL)
        interval = q.get("interval", "")
        if interval not in INTERVAL_MS:
            return Response(400, {"code": -1120, "msg": "Invalid interval."})
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return Response(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if not 1 <= limit <= MAX_LIMIT:
            return Response(400, {"code": -1130,
                                  "msg": "Data sent for parameter 'limit' is not valid."})
        if start is not None and end is not None and start > end:
            return Response(400, {"code": -1023, "msg": "Start time is greater than end time."})
        step = INTERVAL_MS[interval]
        stop = (end + 1) if end is not None else self._clock() + 1
        if start is None:
            # no startTime: the `limit` most recent bars opening at or before endTime / now
            first = _align_up(max(self.listed_ms, stop - (limit + 1) * step * 4), step, interval)
            times = self._times(symbol_id, step, first, stop)[-limit:]
        else:
            first = _align_up(max(start, self.listed_ms), step, interval)
            if self.repeat_rows:
                first = max(first - self.repeat_rows * step, self.listed_ms)
            times = np.empty(0, dtype=np.int64)
            cursor = first
            while len(times) < limit and cursor < min(stop, self._clock() + 1):
                chunk_end = cursor + 2 * limit * step
                times = np.concatenate([times, self._times(symbol_id, step, cursor,
                                                           min(chunk_end, stop))])
                cursor = chunk_end
            times = times[:limit]
        return Response(200, self._encode(symbol_id, interval, times),
                        self._weight(2 if limit < 100 else 5 if limit < 500 else 10))

    def _futures_info(self, req: Request) -> Response:
        symbols = [_future_info(m, self.listed_ms) for m in self.perps.values()]
        first = next(iter(self.perps.values()), None)
        if first is not None:
            symbols.append(_future_info(first, self.listed_ms, _ms(QUARTER_DELIVERY)))
        return Response(200, {
            "timezone": "UTC",
            "serverTime": self._clock(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }, self._weight(1))

    def _funding_rate(self, req: Request) -> Response:
        """GET /fapi/v1/fundingRate: ascending settlements from startTime (at most `limit`), else the
        `limit` most recent up to endTime / now; without `symbol`, every perpetual's."""
        q = req.query
        ids = [q["symbol"]] if q.get("symbol") else list(self.perps)
        if any(s not in self.perps or s in self.delisted for s in ids):
            return Response(400, INVALID_SYMBOL)
        try:
            limit = int(q.get("limit", FUNDING_DEFAULT_LIMIT))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return Response(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if not 1 <= limit <= FUNDING_MAX_LIMIT:
            return Response(400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."})
        if start is not None and end is not None and start > end:
            return Response(400, {"code": -1023, "msg": "Start time is greater than end time."})
        stop = (end + 1) if end is not None else self._clock() + 1
        rows = [r for s in ids for r in self.funding_rows(s, start if start is not None else 0, stop)]
        rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
        rows = rows[:limit] if start is not None else rows[-limit:]
        return Response(200, rows, self._weight(1))


def _future_info(m: Market, listed_ms: int, delivery_ms: int | None = None) -> dict[str, Any]:
    """One /fapi/v1/exchangeInfo symbol: the pair's perpetual, or a dated future when `delivery_ms`."""
    tick = f"{10.0 ** -m.decimals:.{m.decimals}f}"
    symbol = m.id if delivery_ms is None else (
        f"{m.id}_{pd.Timestamp(delivery_ms, unit='ms'):%y%m%d}")
    return {
        "symbol": symbol,
        "pair": m.id,
        "contractType": "PERPETUAL" if delivery_ms is None else "CURRENT_QUARTER",
        "deliveryDate": 4133404800000 if delivery_ms is None else delivery_ms,
        "onboardDate": listed_ms,
        "status": m.status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.quote,
        "pricePrecision": m.decimals,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }


def _symbol_info(m: Market) -> dict[str, Any]:
    tick = f"{10.0 ** -m.decimals:.8f}"
    return {
        "symbol": m.id,
        "status": m.status,
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": m.quote == "USDT",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
             "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
             "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
             "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
             "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2",
             "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH",
                                            "DECREMENT"],
    }


def _ms(value: str | pd.Timestamp | int) -> int:
    if isinstance(value, int):
        return value
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _align_up(ms: int, step: int, interval: str) -> int:
    origin = WEEK_ORIGIN_MS if interval == "1w" else 0
    return -((origin - ms) // step) * step + origin


__all__ = ["DEFAULT_MARKETS", "INTERVAL_MS", "BinanceServer", "Market"]
