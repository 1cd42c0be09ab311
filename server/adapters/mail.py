"""Outgoing e-mail: smtplib behind a small interface, with a recording fake beside it."""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from server.config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> None:
        """Send the mail; raises OSError or smtplib.SMTPException when it cannot."""


class SmtpMailer:
    """Sends through the SMTP server of the settings (STARTTLS unless switched off)."""

    def __init__(
        self,
        host: str,
        *,
        port: int = 587,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout

    def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)
        logger.info("mail sent to %s: %s", mail.to, mail.subject)


class RecordingMailer:
    """The fake: keeps what it was asked to send (tests, and a demo without SMTP)."""

    def __init__(self) -> None:
        self.sent: list[Mail] = []
        self._lock = threading.Lock()

    def send(self, mail: Mail) -> None:
        with self._lock:
            self.sent.append(mail)


def make_mailer(settings: Settings) -> Mailer | None:
    """The SMTP mailer if the settings name a server, else None (links are shown only)."""
    if not settings.smtp_host:
        return None
    return SmtpMailer(
        settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
    )
