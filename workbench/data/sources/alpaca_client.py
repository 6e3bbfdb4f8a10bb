"""What the Alpaca data source and the Alpaca paper broker share about talking to Alpaca.

Both use alpaca-py's unmodified clients; this module holds, once, what they add around them:

- **keys** from the environment or a `.env` file: a pair from one family, ``ALPACA_API_KEY`` /
  ``ALPACA_SECRET_KEY`` first, then the SDK's ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``
  (`read_keys`); they never appear in logs, messages or ``repr`` (`scrub`);
- **base URL overrides** (`check_url`, `host`) and the data endpoint's setting;
- **the HTTP session**: a timeout on every request, connection failures of GETs retried by the
  transport, and alpaca-py's own status retries set from our settings (`configure`);
- **error mapping**: Alpaca's message out of an error body or an HTML proxy page
  (`server_message`, `message`), refused keys (`is_auth`), Alpaca's own "not found"
  (`is_not_found`), the server's Retry-After (`api_retry_after`), transport failures in words
  (`transport_problem`);
- **option parsing** with one-line errors that name the setting (`choice`, `number`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from workbench.config import setting
from workbench.errors import ConfigError, did_you_mean
from workbench.retry import retry_after

log = logging.getLogger(__name__)

DATA_URL_SETTING = "WORKBENCH_ALPACA_BASE_URL"
DATA_HOST = "data.alpaca.markets"
FEED_SETTING = "WORKBENCH_ALPACA_FEED"
TIMEOUT_SETTING = "WORKBENCH_ALPACA_TIMEOUT"
RETRY_ATTEMPTS_SETTING = "WORKBENCH_ALPACA_RETRY_ATTEMPTS"
RETRY_WAIT_SETTING = "WORKBENCH_ALPACA_RETRY_WAIT"
FEEDS = ("iex", "sip")
KEY_PAIRS = (("ALPACA_API_KEY", "ALPACA_SECRET_KEY"), ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"))
DATA_RETRY_CODES = (429, 500, 502, 503, 504)  # GETs only: safe to retry

_UNAUTHORIZED = 40110000
_NOT_FOUND = 40410000
_TAGS = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


# ---------------------------------------------------------------------- keys
def read_keys() -> tuple[str | None, str | None]:
    """The API key pair from settings, from one family (never a key of one and a secret of the
    other): the first family with both set, else the first with either set (the other None, for a
    message that names what is missing), else (None, None)."""
    pairs = [(setting(key_name), setting(secret_name)) for key_name, secret_name in KEY_PAIRS]
    for key, secret in pairs:
        if key and secret:
            return key, secret
    for key, secret in pairs:
        if key or secret:
            return key or None, secret or None
    return None, None


def keys_set() -> list[str]:
    """The names of the key settings that are set (for messages; never their values)."""
    return [name for pair in KEY_PAIRS for name in pair if setting(name)]


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every key or secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------- URLs
def check_url(value: str, what: str, setting_name: str, example: str) -> str:
    """An http(s) base URL without its trailing slash, or a ConfigError naming the option."""
    url = str(value).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} {value!r} is not an http(s) URL: set e.g. {example} "
                          f"({what} or {setting_name})")
    return url


def host(url: str | None, default: str) -> str:
    """The host name a base URL points at (`default` when there is no override)."""
    if not url:
        return default
    return urlsplit(url).hostname or "the configured base URL"


# ---------------------------------------------------------------------- sessions
class TransportAdapter(HTTPAdapter):
    """Give every request a timeout (alpaca-py sets none, so a stalled connection would hang)
    and retry GETs whose connection failed or dropped (alpaca-py retries HTTP statuses only;
    POSTs and DELETEs are never retried at this level)."""

    def __init__(self, timeout: float, attempts: int, wait: float) -> None:
        retry = Retry(total=attempts, connect=attempts, read=attempts, status=0, other=0,
                      allowed_methods=frozenset({"GET"}), backoff_factor=wait / 2,
                      raise_on_status=False)
        super().__init__(max_retries=retry)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None,
             verify: bool | str = True, cert: str | tuple[str, str] | None = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        return super().send(request, stream=stream, timeout=self._timeout if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


def configure(client: RESTClient, *, timeout: float, retries: int, wait: float,
              codes: Iterable[int]) -> None:
    """Set alpaca-py's status retries (`retries` after the first attempt, `wait` seconds apart, on
    `codes`) and mount the transport adapter on the client's session."""
    # alpaca-py 0.44: RESTClient keeps these in _retry / _retry_wait / _retry_codes (its
    # constructors do not take them) and its _request loop makes _retry + 1 attempts
    if not all(hasattr(client, a) for a in ("_retry", "_retry_wait", "_retry_codes")):
        log.warning("this alpaca-py version keeps its retry settings elsewhere: using its "
                    "defaults instead of the workbench's retry settings")
    else:
        client._retry = retries
        client._retry_wait = wait  # type: ignore[assignment]  # alpaca-py annotates int; it only sleeps it
        client._retry_codes = list(codes)
    session = getattr(client, "_session", None)
    if isinstance(session, requests.Session):
        adapter = TransportAdapter(timeout, retries, wait)
        session.mount("https://", adapter)
        session.mount("http://", adapter)


def close(client: RESTClient) -> None:
    """Close an alpaca-py client's HTTP session."""
    session = getattr(client, "_session", None)
    if isinstance(session, requests.Session):
        session.close()


# ---------------------------------------------------------------------- errors
def server_message(exc: APIError) -> str:
    """The `message` of an Alpaca error body, or a short single-line excerpt of the body."""
    text = str(exc)
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("message"):
            text = str(body["message"])
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:200] or "no message"


def message(exc: APIError, secrets: Iterable[str | None]) -> str:
    """`server_message`, the title (else the text) of an HTML error page from a proxy, keys
    scrubbed."""
    text = server_message(exc)
    if text.startswith("<"):
        title = _TITLE.search(text)
        text = " ".join(_TAGS.sub(" ", title.group(1) if title else text).split())[:120] or "no message"
    return scrub(text, secrets)


def api_code(exc: APIError) -> int | None:
    """Alpaca's own error code from the body (40110000, 40410000, ...), if there is one."""
    try:
        body = json.loads(str(exc))
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def is_auth(exc: APIError) -> bool:
    """Refused keys: a 401, or a 403 that is not one of Alpaca's refusals with a reason (40310000
    insufficient buying power, ...): a bare "forbidden" page, or "request is not authorized"."""
    if exc.status_code == 401:
        return True
    if exc.status_code != 403:
        return False
    code = api_code(exc)
    return code is None or code == _UNAUTHORIZED or server_message(exc).lower() in (
        "forbidden", "request is not authorized")


def is_not_found(exc: APIError) -> bool:
    """Alpaca's own 404 (an unknown order), not a 404 page from a wrong base URL."""
    if exc.status_code != 404:
        return False
    return api_code(exc) == _NOT_FOUND or "not found" in server_message(exc).lower()


def api_retry_after(exc: APIError) -> float | None:
    """The Retry-After (seconds) of the reply behind an APIError, if it sent one."""
    response = exc.response
    return retry_after(getattr(response, "headers", None)) if response is not None else None


def transport_problem(exc: requests.RequestException) -> str:
    """A failed request in words: a timeout, or a connection that failed."""
    if isinstance(exc, requests.Timeout):
        return f"no reply within the timeout ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__})"


# ---------------------------------------------------------------------- options
def choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` lower-cased if it is one of `choices`, else a ConfigError with a "did you mean"."""
    v = str(value).strip().lower()
    if v not in choices:
        raise ConfigError(f"unknown Alpaca {what} {value!r}{did_you_mean(v, choices)}: use one of "
                          f"{', '.join(choices)}")
    return v


def number(value: Any, name: str, default: float, kind: type, what: str, minimum: float) -> Any:
    """Option `what` (else setting `name`, else `default`) as `kind`, at least `minimum`."""
    raw = value if value is not None and value != "" else setting(name)
    if raw is None or raw == "":
        return kind(default)
    try:
        out = kind(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{what} {raw!r} is not a number: set e.g. {kind(default)} "
                          f"(option {what} or {name})") from None
    if out < minimum:
        raise ConfigError(f"{what} {raw!r} is below {minimum}: set e.g. {kind(default)} "
                          f"(option {what} or {name})")
    return out


__all__ = [
    "DATA_RETRY_CODES", "DATA_URL_SETTING", "FEEDS", "KEY_PAIRS", "TransportAdapter", "api_code",
    "api_retry_after", "check_url", "choice", "close", "configure", "host", "is_auth", "is_not_found",
    "keys_set", "message", "number", "read_keys", "scrub", "server_message", "transport_problem",
]
