"""NotificationExecutor: sends due notifications by email or webhook."""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import attrs

from infsched.errors import ConfigError
from infsched.executors import JobContext, PermanentError
from infsched_notifications import webhook
from infsched_notifications.entity import Channel, NotificationEntity
from infsched_notifications.render import render

log = logging.getLogger("infsched.notifications")


@attrs.frozen(repr=False)
class SmtpSettings:
    host: str
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "infsched@localhost"
    timeout: float = 30.0

    def __repr__(self) -> str:  # never the password
        return f"SmtpSettings(host={self.host!r}, port={self.port}, starttls={self.starttls})"


class NotificationExecutor:
    """Sends NotificationEntity jobs: email over SMTP (or to the log), webhooks over HTTP."""

    def __init__(
        self, smtp: SmtpSettings | None, webhook_secret: str | None, webhook_timeout: float = 10.0
    ) -> None:
        self.smtp = smtp
        self.webhook_secret = webhook_secret
        self.webhook_timeout = webhook_timeout

    def __call__(self, job: JobContext[NotificationEntity]) -> None:
        entity = job.entity
        if entity.channel is Channel.EMAIL:
            self._email(job)
        else:
            self._webhook(job)

    def _email(self, job: JobContext[NotificationEntity]) -> None:
        entity, rendered = job.entity, render(job.entity)
        if self.smtp is None:
            job.logger.info(
                "email to %s: %s\n%s", entity.recipient, rendered.subject, rendered.text
            )
            return
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = entity.recipient
        message["Subject"] = rendered.subject
        # The job key in Message-ID lets a mail system spot a repeated delivery.
        message["Message-ID"] = make_msgid(idstring=job.job_key.replace(":", "."))
        message["X-Infsched-Job"] = job.job_key
        message.set_content(rendered.text)
        if rendered.html is not None:
            message.add_alternative(rendered.html, subtype="html")
        try:
            with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.smtp.timeout) as smtp:
                if self.smtp.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.smtp.username:
                    smtp.login(self.smtp.username, self.smtp.password or "")
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                f"SMTP login refused for {self.smtp.username}: {exc.smtp_code}"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(
                f"SMTP server refused recipient {entity.recipient}: {exc}"
            ) from None
        job.logger.info("email sent to %s", entity.recipient)

    def _webhook(self, job: JobContext[NotificationEntity]) -> None:
        if not self.webhook_secret:
            raise PermanentError("plugin notifications: webhook_secret is not configured")
        entity, rendered = job.entity, render(job.entity)
        payload = {
            "job_key": job.job_key,
            "notification_id": entity.id,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "data": entity.template_data,
        }
        status = webhook.post(
            entity.recipient,
            payload,
            secret=self.webhook_secret,
            key=job.job_key,
            timeout=self.webhook_timeout,
        )
        job.logger.info("webhook %s answered %d", entity.recipient, status)


def make_executor(section: Mapping[str, Any]) -> NotificationExecutor:
    """Build from ``[plugins.notifications]``.

    email_transport = "smtp" (needs smtp_host) or "log"; smtp_port, smtp_starttls,
    smtp_username, smtp_password, smtp_sender; webhook_secret, webhook_timeout.
    """
    transport = str(section.get("email_transport", "smtp"))
    smtp: SmtpSettings | None = None
    if transport == "smtp":
        host = section.get("smtp_host")
        if not host:
            raise ConfigError(
                "plugin notifications: smtp_host is missing in [plugins.notifications] "
                '(or set email_transport = "log")'
            )
        smtp = SmtpSettings(
            host=str(host),
            port=int(section.get("smtp_port", 25)),
            starttls=bool(section.get("smtp_starttls", False)),
            username=section.get("smtp_username"),
            password=section.get("smtp_password"),
            sender=str(section.get("smtp_sender", "infsched@localhost")),
        )
    elif transport != "log":
        raise ConfigError(
            f"plugin notifications: email_transport {transport!r} is unknown; use smtp or log"
        )
    return NotificationExecutor(
        smtp,
        section.get("webhook_secret"),
        float(section.get("webhook_timeout", 10.0)),
    )
