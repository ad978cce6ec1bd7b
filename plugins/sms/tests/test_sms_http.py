"""The http transport against a real HTTP server on loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sms_support import ThrottlingGateway, job, message, sms

from infsched.errors import ConfigError
from infsched.executors import PermanentError, ThrottledError
from infsched_sms.executor import make_executor
from infsched_sms.transports.http import HttpTransport
from infsched_sms.transports.httpcall import retry_after_seconds
from tests.loopback_servers import HttpRecorder, HttpRequest, free_port


def section(server: HttpRecorder, **overrides: object) -> dict[str, Any]:
    return {"transport": "http", "http_url": f"{server.url}/sms", **overrides}


def test_one_post_per_message_from_the_template_with_the_job_key() -> None:
    with HttpRecorder() as server:
        executor = make_executor(
            section(
                server,
                http_headers={"Authorization": "Bearer k"},
                http_body={
                    "recipient": "$to",
                    "body": "$text",
                    "meta": {"ref": "$reference", "parts": "$parts", "note": "from $sender"},
                },
            )
        )
        errors = executor.execute_batch([job(sms("a" * 200), "t:1:a"), job(sms("Привет"), "t:2:a")])
    assert errors == [None, None]
    first, second = server.received()
    assert first.method == "POST"
    assert first.path == "/sms"
    assert first.headers["authorization"] == "Bearer k"
    assert first.headers["idempotency-key"] == "t:1:a"
    assert first.json() == {
        "recipient": "+4915112345678",
        "body": "a" * 200,
        "meta": {"ref": "t:1:a", "parts": 2, "note": "from ACME"},
    }
    assert second.json()["meta"]["parts"] == 1


def test_bulk_posts_carry_many_messages_and_per_message_results() -> None:
    def answer(request: HttpRequest) -> tuple[int, bytes]:
        results = [
            {"error": "unknown subscriber", "permanent": True}
            if m["to"] == "+33612345678"
            else {"id": m["reference"]}
            for m in request.json()["messages"]
        ]
        return 200, json.dumps({"results": results}).encode()

    with HttpRecorder(answer) as server:
        transport = HttpTransport(f"{server.url}/bulk", bulk_size=3)
        messages = [message(f"m{i}", key=f"t:{i}:b") for i in range(5)]
        messages[1] = message("m1", key="t:1:b", to="+33612345678")
        errors = transport.send_many(messages)
    assert [len(r.json()["messages"]) for r in server.received()] == [3, 2]
    assert [e is None for e in errors] == [True, False, True, True, True]
    assert isinstance(errors[1], PermanentError)
    assert "unknown subscriber" in str(errors[1])


@pytest.mark.parametrize(
    ("status", "permanent", "text"),
    [
        (500, False, "answered 500"),
        (502, False, "answered 502"),
        (408, False, "answered 408"),
        (401, True, "refused the credentials (401"),
        (422, True, "rejected the message (422"),
    ],
)
def test_status_codes_decide_retry_or_not(status: int, permanent: bool, text: str) -> None:
    with HttpRecorder(lambda _r: (status, b'{"error": "no"}')) as server:
        [error] = HttpTransport(server.url).send_many([message()])
    assert isinstance(error, PermanentError) is permanent
    assert isinstance(error, ConnectionError) is not permanent
    assert not isinstance(error, ThrottledError)
    assert text in str(error)


@pytest.mark.parametrize(
    ("status", "retry_after", "seconds"),
    [(429, "7", 7.0), (503, "0", 0.0), (429, None, None), (503, "soon", None)],
)
def test_429_and_503_are_throttling_with_the_gateways_retry_after(
    status: int, retry_after: str | None, seconds: float | None
) -> None:
    gateway = ThrottlingGateway(1, status, retry_after=retry_after)
    with HttpRecorder(gateway) as server:
        errors = HttpTransport(server.url).send_many([message(key=f"t:{i}:t") for i in range(3)])
        assert len(server.received()) == 1  # the rest of the batch waits: not sent
    assert all(isinstance(e, ThrottledError) for e in errors)
    assert [e.retry_after for e in errors if isinstance(e, ThrottledError)] == [seconds] * 3
    assert not any(isinstance(e, PermanentError | ConnectionError) for e in errors)
    assert f"gateway throttled ({status}" in str(errors[0])
    assert str(errors[1]).startswith("not sent: ")


def test_a_throttled_bulk_post_holds_back_the_rest_of_the_batch() -> None:
    gateway = ThrottlingGateway(1, 429, retry_after="3")
    with HttpRecorder(gateway) as server:
        transport = HttpTransport(f"{server.url}/bulk", bulk_size=2)
        errors = transport.send_many([message(f"m{i}", key=f"t:{i}:u") for i in range(5)])
        assert len(server.received()) == 1
        assert transport.send_many([message("again", key="t:9:u")]) == [None]
    assert [isinstance(e, ThrottledError) and e.retry_after == 3.0 for e in errors] == [True] * 5


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 5 ", now) == 5.0
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Fri, 15 Jan 2027 07:59:00 GMT", now) == 0.0  # already past
    assert retry_after_seconds("Fri, 15 Jan 2027 08:01:00 -0000", now) == 60.0
    for unreadable in (None, "", "-3", "1.5", "later", "٣"):
        assert retry_after_seconds(unreadable, now) is None


def test_a_timeout_is_retried() -> None:
    def slow(_r: HttpRequest) -> tuple[int, bytes]:
        time.sleep(1.0)
        return 200, b"{}"

    with HttpRecorder(slow) as server:
        [error] = HttpTransport(server.url, timeout=0.2).send_many([message()])
    assert isinstance(error, ConnectionError)
    assert not isinstance(error, PermanentError)


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"http_url names 127\.0\.0\.1:\d+, which cannot be"):
        make_executor({"transport": "http", "http_url": f"http://127.0.0.1:{free_port()}/"})
    with HttpRecorder() as server:
        with pytest.raises(ConfigError, match=r"http_body uses unknown placeholder\(s\) nmber"):
            make_executor(section(server, http_body={"to": "$nmber"}))
        with pytest.raises(ConfigError, match=r"http_bulk_size is 0; expected a whole number"):
            make_executor(section(server, http_bulk_size=0))
