"""A local SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it receives.

Plain SMTP without TLS or login, the way a test mail relay answers; apprise reaches it with
``mailto://127.0.0.1:<port>?from=...&to=...&mode=insecure`` (see `SmtpServer.mailto`).
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        """Every text part of the message (plain and HTML), decoded, one after the other."""
        return "\n".join(str(part.get_content()) for part in self.message.walk()
                         if part.get_content_maintype() == "text")


class SmtpServer:
    """Serve SMTP on 127.0.0.1:<free port> in aiosmtpd's thread; `messages` holds what arrived."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._arrived = threading.Condition()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a free port to bind
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def mailto(self, sender: str = "workbench@example.com", to: str = "ops@example.com") -> str:
        """The apprise URL that delivers to this server: plain SMTP, no TLS, no login."""
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}&mode=insecure"

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until `count` messages have arrived; False if they did not within `timeout`."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
