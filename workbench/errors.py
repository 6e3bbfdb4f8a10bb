"""The workbench's exception tree: every message names the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class WorkbenchError(Exception):
    """Root of every error the workbench raises on purpose; the CLI prints it as one line."""


class ConfigError(WorkbenchError):
    """Bad settings, arguments or configuration files."""


class SweepTooLarge(ConfigError):
    """A sweep above the size that needs an explicit yes (`confirm_large=True`, `--yes`)."""


class DataError(WorkbenchError):
    """Bars that are malformed, missing, or fail a quality policy."""


class LakeCorruptError(DataError):
    """A file inside the lake cannot be read."""


class TemporaryError(WorkbenchError):
    """A failure that may pass when the same request is tried again: rate limiting, a 5xx answer,
    a timeout or a dropped connection.

    Raised inside a retried call for `workbench.retry.RetryPolicy` to retry (and only this is
    retried); `retry_after` is the wait in seconds the server asked for, if it asked. When the
    retries run out the policy re-raises the last one with `attempts` set, and the caller turns
    it into the error its user sees (`SourceError`, `BrokerUnavailable`).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.attempts = 0  # set by the retry policy when it gives up


class SourceError(WorkbenchError):
    """A data source failed in a way retries did not fix."""


class CredentialsError(ConfigError):
    """API credentials are missing or were refused."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return a ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class PromotionRejected(WorkbenchError):
    """A run failed one or more promotion gates (the message lists them)."""

    verdicts: list[Any]  # every gate's Verdict (workbench.promote.gates), set where it is raised


class BrokerError(WorkbenchError):
    """A broker refused or failed a request."""


class OrderRejected(BrokerError):
    """The broker answered and refused the order (insufficient funds, bad quantity, unknown symbol...)."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached after retries: the request's outcome is unknown.

    After this error the order may or may not exist; look it up by its client order id before
    submitting it again.
    """
