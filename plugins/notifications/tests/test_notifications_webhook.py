"""Webhooks against a real HTTP server on loopback that checks the signature."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from notifications_support import email, hook, job

from infsched.executors import PermanentError
from infsched_notifications import Channel, NotificationEntity
from infsched_notifications.executor import make_executor
from infsched_notifications.webhook import SIGNATURE_HEADER, verify
from tests.loopback_servers import HttpRecorder, HttpRequest, free_port

SECRET = "shared-hmac-secret"


def checking(secret: str, status: int = 204) -> HttpRecorder:
    """A receiver that answers 401 unless the body is signed with `secret`."""

    def answer(request: HttpRequest) -> tuple[int, bytes]:
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        if not verify(secret, request.body, signature):
            return 401, b'{"error": "bad signature"}'
        return status, b""

    return HttpRecorder(answer)


def test_a_signed_json_post_with_the_job_key() -> None:
    with checking(SECRET) as server:
        executor = make_executor({"email_transport": "log", "webhook_secret": SECRET})
        assert executor.execute_batch([job(hook(f"{server.url}/hooks/a"), "notes:7:a")]) == [None]
    [request] = server.received()
    assert (request.method, request.path) == ("POST", "/hooks/a")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "notes:7:a"
    assert request.json() == {
        "job_key": "notes:7:a",
        "notification_id": 7,
        "subject": "shipped",
        "text": "Order ORD-1 shipped",
        "html": None,
        "data": {"order": "ORD-1"},
    }


def test_a_wrong_secret_is_refused_by_the_receiver_for_good() -> None:
    with checking("the receiver's secret") as server:
        executor = make_executor({"email_transport": "log", "webhook_secret": SECRET})
        [error] = executor.execute_batch([job(hook(server.url))])
    assert isinstance(error, PermanentError)
    assert "refused the call with 401" in str(error)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried(status: int) -> None:
    with checking(SECRET, status=status) as server:
        executor = make_executor({"email_transport": "log", "webhook_secret": SECRET})
        [error] = executor.execute_batch([job(hook(server.url))])
    assert isinstance(error, ConnectionError)
    assert f"answered {status}; will retry" in str(error)


def test_timeouts_and_refused_connections_are_retried() -> None:
    def slow(_r: HttpRequest) -> tuple[int, bytes]:
        time.sleep(1.0)
        return 200, b""

    executor = make_executor(
        {"email_transport": "log", "webhook_secret": SECRET, "webhook_timeout": 0.2}
    )
    with HttpRecorder(slow) as server:
        [timed_out] = executor.execute_batch([job(hook(server.url))])
    [refused] = executor.execute_batch([job(hook(f"http://127.0.0.1:{free_port()}/"))])
    for error in (timed_out, refused):
        assert error is not None
        assert not isinstance(error, PermanentError)
    assert "unreachable" in str(refused)


def test_emails_and_webhooks_in_one_batch() -> None:
    with checking(SECRET) as server:
        executor = make_executor({"email_transport": "log", "webhook_secret": SECRET})
        errors = executor.execute_batch(
            [job(email(), "n:1"), job(hook(server.url), "n:2"), job(email(), "n:3")]
        )
    assert errors == [None, None, None]
    assert [json.loads(r.body)["job_key"] for r in server.received()] == ["n:2"]


def test_without_a_secret_webhooks_fail_for_good() -> None:
    executor = make_executor({"email_transport": "log"})
    [error] = executor.execute_batch([job(hook("http://127.0.0.1:9/"))])
    assert isinstance(error, PermanentError)
    assert "webhook_secret is not configured" in str(error)


def test_recipients_must_fit_the_channel() -> None:
    with pytest.raises(ValueError, match="is not an http"):
        NotificationEntity(
            send_at=datetime(2030, 1, 1, tzinfo=UTC),
            channel=Channel.WEBHOOK,
            recipient="ada@example.org",
            body_text="x",
        )
