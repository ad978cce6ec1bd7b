"""Email over SMTP against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from notifications_support import email, job

from infsched.errors import ConfigError
from infsched.executors import PermanentError
from infsched_notifications.executor import make_executor
from tests.loopback_servers import SmtpRecorder, free_port, self_signed_certificate


def section(server: SmtpRecorder, **overrides: object) -> dict[str, Any]:
    return {
        "email_transport": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_sender": "noreply@example.org",
        **overrides,
    }


def test_a_batch_of_emails_is_rendered_and_delivered() -> None:
    with SmtpRecorder() as server:
        executor = make_executor(section(server))
        errors = executor.execute_batch(
            [
                job(email(html="<p>Hi <b>$name</b></p>"), "notes:1:a"),
                job(email("bob@example.org", data={"name": "Bob", "event": "lunch"}), "notes:2:a"),
            ]
        )
    assert errors == [None, None]
    first, second = server.messages
    assert first.mail_from == "noreply@example.org"
    assert first.rcpt_tos == ["ada@example.org"]
    message = first.message
    assert message["Subject"] == "Hello Ada"
    assert message["X-Infsched-Job"] == "notes:1:a"
    assert "notes.1.a" in message["Message-ID"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "Hi Ada, see you at the launch."
    assert html.get_content().strip() == "<p>Hi <b>Ada</b></p>"
    assert second.rcpt_tos == ["bob@example.org"]
    assert second.message["Subject"] == "Hello Bob"


def test_a_refused_recipient_fails_for_good_and_the_others_go() -> None:
    with SmtpRecorder(refuse={"nobody@example.org"}) as server:
        executor = make_executor(section(server))
        errors = executor.execute_batch(
            [job(email("nobody@example.org"), "n:1"), job(email(), "n:2")]
        )
    assert isinstance(errors[0], PermanentError)
    assert "refused recipient nobody@example.org (550)" in str(errors[0])
    assert errors[1] is None
    assert [m.rcpt_tos for m in server.messages] == [["ada@example.org"]]


def test_starttls_and_login(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with SmtpRecorder(tls_cert=(cert, key), login=("scheduler", "s3cret")) as server:
        good = section(
            server,
            smtp_starttls=True,
            smtp_ca_file=str(cert),
            smtp_username="scheduler",
            smtp_password="s3cret",
        )
        assert make_executor(good).execute_batch([job(email())]) == [None]
        [refused] = make_executor({**good, "smtp_password": "wrong"}).execute_batch([job(email())])
        # Without STARTTLS this server offers no login: a setting to fix, not retried.
        plain = {**good, "smtp_starttls": False}
        [no_tls] = make_executor(plain).execute_batch([job(email())])
    assert len(server.messages) == 1
    assert isinstance(refused, PermanentError)
    assert "SMTP login refused for scheduler: 535" in str(refused)
    assert isinstance(no_tls, PermanentError)
    assert "does it need smtp_starttls = true?" in str(no_tls)


def test_an_unknown_certificate_fails_for_good(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with SmtpRecorder(tls_cert=(cert, key)) as server:
        [error] = make_executor(section(server, smtp_starttls=True)).execute_batch([job(email())])
    assert isinstance(error, PermanentError)
    assert "STARTTLS with 127.0.0.1 failed" in str(error)
    assert server.messages == []


def test_a_server_gone_after_start_is_retried() -> None:
    with SmtpRecorder() as server:
        executor = make_executor(section(server))
    errors = executor.execute_batch([job(email(), "n:1"), job(email(), "n:2")])
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert not any(isinstance(e, PermanentError) for e in errors)


def test_the_log_transport_sends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    executor = make_executor({"email_transport": "log"})
    with caplog.at_level("INFO"):
        assert executor.execute_batch([job(email())]) == [None]
    assert "email to ada@example.org: Hello Ada" in caplog.text


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"smtp_port": 1}, "smtp_host names 127.0.0.1:1, which cannot be reached"),
        ({"smtp_host": ""}, 'smtp_host is missing (or set email_transport = "log")'),
        ({"smtp_port": "25"}, "smtp_port is '25'; expected int"),
        ({"smtp_starttls": "yes"}, "smtp_starttls is 'yes'; expected bool"),
        ({"smtp_username": "u"}, "smtp_password is missing"),
        ({"smtp_ca_file": "/nope.pem"}, "smtp_ca_file is '/nope.pem', which is not a file"),
        ({"email_transport": "pigeon"}, "email_transport is 'pigeon'; expected smtp or log"),
        ({"webhook_timeout": 0}, "webhook_timeout is 0; expected a number of seconds > 0"),
    ],
)
def test_config_errors_are_one_line_naming_the_setting(
    config: dict[str, object], expected: str
) -> None:
    base: dict[str, object] = {"smtp_host": "127.0.0.1", "smtp_port": free_port()}
    with SmtpRecorder() as server:
        base["smtp_port"] = server.port
        with pytest.raises(ConfigError) as info:
            make_executor({**base, **config})
    text = str(info.value)
    assert text.startswith("plugin notifications: [plugins.notifications] "), text
    assert expected in text
    assert "\n" not in text
