"""The ``alerts:`` section shared by the paper and collector configs: where to send, and how often.

Alert URLs carry tokens and passwords, and secrets live only in the environment or a ``.env`` file, so
a config names the setting that holds each URL (``urls: ["${WORKBENCH_ALERT_URL}"]``) and the URL is
read when the section is turned into `AlertSettings`.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from workbench.alerts.alerter import AlertSettings
from workbench.config import ConfigModel, ConfigProblem, Duration, setting
from workbench.errors import ConfigError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UrlsSection(ConfigModel):
    """``alerts: {urls: [...]}``: the settings that hold the apprise URLs to send to."""

    urls: list[str]

    @field_validator("urls")
    @classmethod
    def _references(cls, v: list[str]) -> list[str]:
        if not v:
            raise ConfigProblem("{key} lists no URL; name at least one, e.g. urls: [${WORKBENCH_ALERT_URL}]")
        for u in v:
            if not _REF.fullmatch(u.strip()):
                raise ConfigProblem("{key}: alert URLs hold tokens and passwords, so the config names the "
                                    "setting that holds each one: put the URL in the environment or .env "
                                    "and write ${NAME} here (e.g. ${WORKBENCH_ALERT_URL})")
        return v

    def read_urls(self) -> tuple[str, ...]:
        """Each URL read from its setting (the environment, then .env)."""
        urls = []
        for ref in self.urls:
            name = ref.strip()[2:-1]
            value = setting(name)
            if not value:
                raise ConfigError(f"alerts.urls names {name}, which is not set: put the apprise URL in the "
                                  f"environment or .env (e.g. {name}=mailto://...)")
            urls.append(value)
        return tuple(urls)

    def settings(self) -> AlertSettings:
        """Settings that send each message at once (a one-shot process: no recovery delay, no reminder)."""
        return AlertSettings(urls=self.read_urls(), recover_after=0.0, remind_after=None)


class AlertsSection(UrlsSection):
    """``alerts:`` of a long-running process: its URLs, and when to recover, remind and stop."""

    recover_after: Duration = 300.0
    remind_after: Duration | None = 21600.0
    max_per_hour: int = 30

    def settings(self) -> AlertSettings:
        """The section with each URL read from its setting (the environment, then .env), checked."""
        return AlertSettings(urls=self.read_urls(), recover_after=float(self.recover_after),
                             remind_after=None if self.remind_after is None else float(self.remind_after),
                             max_per_hour=self.max_per_hour)
