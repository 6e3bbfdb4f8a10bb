"""Apprise URLs: checking them up front, and naming them in logs without their secrets.

An apprise URL carries its credentials (``mailto://user:password@host``, ``slack://TokenA/TokenB/
TokenC``, ``tgram://bottoken/chat``), so only `url_label` (scheme and host, and the host only when
it looks like a host name rather than a token) ever reaches a log line or an error message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
from collections.abc import Iterator, Sequence

import apprise
from apprise.manager_plugins import NotificationManager

from workbench.errors import ConfigError, did_you_mean

URL_FORMATS = ("see the apprise URL formats, e.g. mailto://user:pass@host, json://host/path, "
               "slack://TokenA/TokenB/TokenC, tgram://bottoken/chat_id")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z][A-Za-z0-9-]{0,62}")


def url_label(url: str) -> str:
    """``scheme://host[:port]`` of an apprise URL, safe for logs: no user, password, path or query.

    Many apprise services put a token where a host would be (``slack://TokenA/...``,
    ``discord://webhook_id/...``), so the host is shown only when it is an IP address, localhost
    or a dotted name; otherwise it is ``***``.
    """
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "<not a URL>"
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    first = head.split("/", 1)[0]
    if "@" not in first and ":" in first and "@" in head:  # user:pa/ss@host: a password holding "/"
        return f"{scheme}://***"
    netloc = first.rpartition("@")[2]
    if netloc.startswith("["):  # [IPv6]:port
        host, _, port = netloc.partition("]")
        host, port = host + "]", port.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    if port and not port.isdigit():  # tgram://123456:TOKEN...: not a port but a secret
        host, port = "***", ""
    if not host:
        return f"{scheme}://"
    host = _public_host(host)
    return f"{scheme}://{host}" + (f":{port}" if port and host != "***" else "")


def _public_host(host: str) -> str:
    if host.lower() == "localhost" or _HOST_NAME.fullmatch(host):
        return host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.strip("[]"))
        return host
    return "***"


def check_urls(urls: Sequence[str]) -> None:
    """Raise `ConfigError` (one line, URL redacted) unless every URL is one apprise can send to."""
    if isinstance(urls, str) or not isinstance(urls, Sequence):
        raise ConfigError("alert urls must be a list of apprise URLs, not "
                          f"{'one string' if isinstance(urls, str) else type(urls).__name__}; "
                          "write urls: [<url>, ...]")
    if not urls:
        raise ConfigError(f"no alert URL given: list at least one apprise URL ({URL_FORMATS})")
    for url in urls:
        if not isinstance(url, str):
            raise ConfigError(f"alert URL must be a string, got {type(url).__name__}; {URL_FORMATS}")
        with quiet_apprise():  # apprise's own complaint names the URL; ours says it without secrets
            loaded = apprise.Apprise.instantiate(url)
        if loaded is None:
            raise ConfigError(f"alert URL {url_label(url)!r} is not a URL apprise can send to "
                              f"({_why(url)}); {URL_FORMATS}")


def _why(url: str) -> str:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if not scheme:
        return "no scheme://"
    schemes = NotificationManager().schemas()
    if scheme not in schemes:
        return f"unknown scheme {scheme!r}{did_you_mean(scheme, schemes)}"
    return f"missing or malformed parts for {scheme}://"


# Apprise's debug and trace records spell out the URLs they load and post to, tokens included
# (its warnings and errors name only hosts). The filter below drops apprise's records under
# WARNING, and every apprise record raised in a thread inside `quiet_apprise()`.
_quiet_threads: set[int] = set()
_quiet_lock = threading.Lock()


class _AppriseSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and record.thread not in _quiet_threads


_FILTER = _AppriseSecrets()


def guard_apprise_logs() -> None:
    """Install the filter that keeps apprise's URL-bearing records out of the logs (idempotent)."""
    logger = logging.getLogger("apprise")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


@contextlib.contextmanager
def quiet_apprise() -> Iterator[None]:
    """Drop every apprise log record raised in this thread while inside the block."""
    guard_apprise_logs()
    ident = threading.get_ident()
    with _quiet_lock:
        _quiet_threads.add(ident)
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_threads.discard(ident)
