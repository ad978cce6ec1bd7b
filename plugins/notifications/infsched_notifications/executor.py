"""NotificationExecutor: sends due notifications by email or webhook.

A batch's emails go over one SMTP connection (STARTTLS and login when
configured); each webhook is its own signed POST.  A refused login, a
refused recipient and any other 5xx SMTP answer fail for good; 4xx
answers, timeouts and lost connections are retried.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
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
    #: A CA bundle to trust for STARTTLS (a private CA); None uses the system's.
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"SmtpSettings(host={self.host!r}, port={self.port}, starttls={self.starttls})"

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def email_message(job: JobContext[NotificationEntity], sender: str) -> EmailMessage:
    """The email of a job: rendered subject and bodies, the job key in its headers."""
    entity, rendered = job.entity, render(job.entity)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = entity.recipient
    message["Subject"] = rendered.subject
    # The job key in Message-ID lets a mail system spot a repeated delivery.
    message["Message-ID"] = make_msgid(idstring=job.job_key.replace(":", "."))
    message["X-Infsched-Job"] = job.job_key
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    return message


def _smtp_error(exc: smtplib.SMTPException, what: str) -> Exception:
    """PermanentError for a 5xx answer, ConnectionError (retried) otherwise."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(code, int) and code >= 500:
        return PermanentError(f"{what}: the SMTP server answered {code} {_reason(exc)}")
    return ConnectionError(f"{what}: {type(exc).__name__} {exc}")


def _reason(exc: smtplib.SMTPException) -> str:
    raw = getattr(exc, "smtp_error", b"")
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class NotificationExecutor:
    """Sends NotificationEntity jobs: email over SMTP (or to the log), webhooks over HTTP."""

    def __init__(
        self, smtp: SmtpSettings | None, webhook_secret: str | None, webhook_timeout: float = 10.0
    ) -> None:
        self.smtp = smtp
        self.webhook_secret = webhook_secret
        self.webhook_timeout = webhook_timeout

    def __call__(self, job: JobContext[NotificationEntity]) -> None:
        [error] = self.execute_batch([job])
        if error is not None:
            raise error

    def execute_batch(
        self, jobs: Sequence[JobContext[NotificationEntity]]
    ) -> list[BaseException | None]:
        results: list[BaseException | None] = [None] * len(jobs)
        emails: list[tuple[int, JobContext[NotificationEntity]]] = []
        for i, job in enumerate(jobs):
            if job.entity.channel is Channel.EMAIL:
                emails.append((i, job))
                continue
            try:
                self._webhook(job)
            except Exception as exc:
                results[i] = exc
        if emails:
            self._emails(emails, results)
        return results

    # -- email --

    def _emails(
        self,
        emails: Sequence[tuple[int, JobContext[NotificationEntity]]],
        results: list[BaseException | None],
    ) -> None:
        if self.smtp is None:
            for _, job in emails:
                rendered = render(job.entity)
                job.logger.info(
                    "email to %s: %s\n%s", job.entity.recipient, rendered.subject, rendered.text
                )
            return
        settings = self.smtp
        try:
            smtp = self._connect(settings)
        except Exception as exc:
            for i, _ in emails:
                results[i] = exc
            return
        try:
            for n, (i, job) in enumerate(emails):
                try:
                    smtp.send_message(email_message(job, settings.sender))
                except smtplib.SMTPRecipientsRefused as exc:
                    refused = ", ".join(f"{a} ({c})" for a, (c, _) in exc.recipients.items())
                    results[i] = PermanentError(f"SMTP server refused recipient {refused}")
                    continue
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    lost = ConnectionError(f"SMTP connection to {settings.host} lost: {exc}")
                    for k, _ in emails[n:]:
                        results[k] = lost
                    return
                except smtplib.SMTPException as exc:
                    results[i] = _smtp_error(exc, f"email to {job.entity.recipient}")
                    continue
                job.logger.info("email sent to %s", job.entity.recipient)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _connect(self, settings: SmtpSettings) -> smtplib.SMTP:
        try:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        except OSError as exc:
            raise ConnectionError(
                f"SMTP server {settings.host}:{settings.port} unreachable: {exc}"
            ) from None
        try:
            if settings.starttls:
                smtp.starttls(context=settings.tls_context())
            if settings.username:
                smtp.login(settings.username, settings.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise PermanentError(
                f"SMTP login refused for {settings.username}: {exc.smtp_code} {_reason(exc)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            smtp.close()
            raise PermanentError(
                f"SMTP server {settings.host} does not offer this ({exc}); "
                "does it need smtp_starttls = true?"
            ) from None
        except ssl.SSLError as exc:
            smtp.close()
            raise PermanentError(f"STARTTLS with {settings.host} failed: {exc}") from None
        except smtplib.SMTPException as exc:
            smtp.close()
            raise _smtp_error(exc, f"SMTP session with {settings.host}") from None
        except OSError as exc:
            smtp.close()
            raise ConnectionError(f"SMTP connection to {settings.host} lost: {exc}") from None
        return smtp

    # -- webhooks --

    def _webhook(self, job: JobContext[NotificationEntity]) -> None:
        if not self.webhook_secret:
            raise PermanentError(
                "plugin notifications: [plugins.notifications] webhook_secret is not configured"
            )
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


# -- configuration --


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"plugin notifications: [plugins.notifications] {key} {problem}")


def _typed(
    section: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    value = section.get(key, default)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)
    ):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _error(key, f"is {value!r}; expected {names}")
    return value


def smtp_settings(section: Mapping[str, Any]) -> SmtpSettings:
    host = _typed(section, "smtp_host", str, None)
    if not host:
        raise _error("smtp_host", 'is missing (or set email_transport = "log")')
    port = _typed(section, "smtp_port", int, 25)
    if not 0 < port < 65536:
        raise _error("smtp_port", f"is {port}; expected a port number")
    username = _typed(section, "smtp_username", str, None)
    password = _typed(section, "smtp_password", str, None)
    if bool(username) != bool(password):
        missing = "smtp_password" if username else "smtp_username"
        raise _error(missing, "is missing: smtp_username and smtp_password go together")
    ca_file = _typed(section, "smtp_ca_file", str, None)
    if ca_file is not None and not Path(ca_file).is_file():
        raise _error("smtp_ca_file", f"is {ca_file!r}, which is not a file")
    return SmtpSettings(
        host=host,
        port=port,
        starttls=_typed(section, "smtp_starttls", bool, False),
        username=username,
        password=password,
        sender=_typed(section, "smtp_sender", str, "infsched@localhost"),
        timeout=float(_typed(section, "smtp_timeout", (int, float), 30.0)),
        ca_file=ca_file,
    )


def make_executor(section: Mapping[str, Any]) -> NotificationExecutor:
    """Build from ``[plugins.notifications]`` (see the plugin's README for every key)."""
    transport = section.get("email_transport", "smtp")
    smtp: SmtpSettings | None = None
    if transport == "smtp":
        smtp = smtp_settings(section)
        if _typed(section, "connect_at_start", bool, True):
            try:
                socket.create_connection((smtp.host, smtp.port), timeout=smtp.timeout).close()
            except OSError as exc:
                raise _error(
                    "smtp_host",
                    f"names {smtp.host}:{smtp.port}, which cannot be reached ({exc}); "
                    "is the SMTP server up?",
                ) from None
    elif transport != "log":
        raise _error("email_transport", f"is {transport!r}; expected smtp or log")
    timeout = _typed(section, "webhook_timeout", (int, float), 10.0)
    if timeout <= 0:
        raise _error("webhook_timeout", f"is {timeout}; expected a number of seconds > 0")
    return NotificationExecutor(smtp, _typed(section, "webhook_secret", str, None), float(timeout))
