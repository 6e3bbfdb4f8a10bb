"""Who may use the dashboard: the token read from the environment, the requests that carry it, and the
bind addresses that need one.

A dashboard bound to this machine only (127.0.0.1, localhost, ::1) may run without a token; one bound
beyond it refuses to start without one. The token is read from an environment variable (or `.env`),
never from the command line, and is never logged, printed or rendered: a page proves it knows the token
by its address (``?token=...``), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field

from workbench.config import setting
from workbench.errors import ConfigError

TOKEN_ENV = "WORKBENCH_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = ("localhost",)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SHOWN_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # a conventional variable name, safe to echo
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def is_loopback(host: str) -> bool:
    """Whether `host` is an address of this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _named(env: str, *, bare: bool = False) -> str:
    if not _SHOWN_NAME.fullmatch(env):
        return "the variable --token-env names"
    return env if bare else f"${env}"


@dataclass(frozen=True)
class Access:
    """The dashboard's token (None: no token, only for a loopback bind) and the variable it came from."""

    token: str | None = field(default=None, repr=False)
    env: str = TOKEN_ENV

    @classmethod
    def from_env(cls, env: str | None = None) -> Access:
        """The token in the environment variable `env` (default ``WORKBENCH_DASHBOARD_TOKEN``; `.env` is
        read too). A variable named explicitly must be set; the default one may be absent (no token)."""
        name = TOKEN_ENV if env is None else env.strip()
        if not _ENV_NAME.fullmatch(name):
            # never echo it: a token pasted here by mistake must not end up in a terminal or a log
            raise ConfigError("--token-env takes the NAME of an environment variable (letters, digits, _), "
                              "not the token itself; export the token in that variable")
        token = setting(name)
        if token is None and env is not None:
            raise ConfigError(f"{_named(name)} is not set: set it to the dashboard's token "
                              f"(make one with {_MAKE_ONE}), or drop --token-env on 127.0.0.1")
        if token is not None and len(token.strip()) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the token in {_named(name)} is shorter than {MIN_TOKEN_LENGTH} characters; "
                              f"use a long random one ({_MAKE_ONE})")
        return cls(token=None if token is None else token.strip(), env=name)

    @property
    def required(self) -> bool:
        """Whether requests must carry the token."""
        return self.token is not None

    def allows(self, given: str | bytes | None) -> bool:
        """Whether a request carrying `given` (its ``token`` argument; None: none) may see the journal and
        use the controls."""
        if self.token is None:
            return True
        if given is None:
            return False
        raw = given if isinstance(given, bytes) else given.encode()
        return hmac.compare_digest(raw, self.token.encode())

    def sign(self, path: str) -> str | None:
        """A signature of `path` (a report's address) derived from the token, so a page can link a report
        without rendering the token itself; None when no token is set (nothing to prove)."""
        if self.token is None:
            return None
        return hmac.new(self.token.encode(), f"report:{path}".encode(), hashlib.sha256).hexdigest()

    def allows_path(self, path: str, *, signature: str | None, token: str | None) -> bool:
        """Whether a request for `path` may be served: no token is set, or it carries the token or the
        path's signature (`sign`)."""
        if self.token is None or self.allows(token):
            return True
        expected = self.sign(path)
        return bool(signature) and expected is not None and hmac.compare_digest(
            str(signature).encode(), expected.encode())

    def check_bind(self, host: str) -> None:
        """Refuse to serve beyond this machine without a token."""
        if not host.strip():
            raise ConfigError("--host is empty; use 127.0.0.1 (this machine only) or an address of this "
                              "machine together with a token")
        if self.token is None and not is_loopback(host):
            raise ConfigError(
                f"--host {host} serves the dashboard beyond this machine, and no token is set: set "
                f"{_named(self.env, bare=True)} to a token (make one with {_MAKE_ONE}) or bind --host "
                "127.0.0.1")
