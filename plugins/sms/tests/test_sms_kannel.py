"""The kannel transport against a real Kannel (bearerbox + smsbox) and fakesmsc as the SMSC."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sms_support import ThrottlingGateway, job, message, sms

from infsched.errors import ConfigError
from infsched.executors import PermanentError, ThrottledError
from infsched_sms.executor import make_executor
from infsched_sms.transports.kannel import KannelTransport
from tests.loopback_servers import HttpRecorder, KannelBoxes, SmscMessage, free_port, wait_for


def section(kannel: KannelBoxes, **overrides: object) -> dict[str, Any]:
    return {
        "transport": "kannel",
        "kannel_url": kannel.sendsms_url,
        "kannel_username": kannel.username,
        "kannel_password": kannel.password,
        **overrides,
    }


def arrivals(kannel: KannelBoxes, before: int, count: int) -> list[SmscMessage]:
    wait_for(lambda: len(kannel.received()) >= before + count, 15, f"{count} SMSC messages")
    time.sleep(0.3)  # nothing more should come
    got = kannel.received()[before:]
    assert len(got) == count, got
    return got


def test_executor_sends_gsm7_ucs2_and_concatenated_texts(kannel: KannelBoxes) -> None:
    executor = make_executor(section(kannel))
    long_text = "Your parcel 12345 is on its way. " * 6  # 198 GSM characters: 2 parts
    jobs = [
        job(sms("Hello from infsched"), "texts:1:a"),
        job(sms("Grüße aus Köln, Привет!", to="+33612345678"), "texts:2:a"),
        job(sms(long_text, sender="+4915112345678"), "texts:3:a"),
    ]
    before = len(kannel.received())
    assert executor.execute_batch(jobs) == [None, None, None]
    got = arrivals(kannel, before, 4)
    by_text = {m.text: m for m in got}
    plain = by_text["Hello from infsched"]
    assert (plain.sender, plain.to, plain.udh) == ("ACME", "+4915112345678", b"")
    assert by_text["Grüße aus Köln, Привет!"].to == "+33612345678"
    parts = sorted((m for m in got if m.udh), key=lambda m: m.udh[-1])
    assert [m.udh[4:] for m in parts] == [bytes([2, 1]), bytes([2, 2])]
    assert parts[0].udh[:3] == bytes([5, 0, 3])
    assert "".join(m.text for m in parts) == long_text
    assert {m.sender for m in parts} == {"+4915112345678"}


def test_bad_credentials_fail_for_good_and_send_nothing(kannel: KannelBoxes) -> None:
    executor = make_executor(section(kannel, kannel_password="wrong"))
    before = len(kannel.received())
    [error, second] = executor.execute_batch([job(sms("a")), job(sms("b"), "texts:2:b")])
    assert isinstance(error, PermanentError)
    assert "refused the credentials (403" in str(error)
    assert isinstance(second, PermanentError)
    time.sleep(0.5)
    assert len(kannel.received()) == before


def test_a_number_kannel_refuses_fails_for_good(kannel: KannelBoxes) -> None:
    transport = KannelTransport(kannel.sendsms_url, kannel.username, kannel.password)
    bad = message("x")
    object.__setattr__(bad, "to", "not-a-number")  # past the entity's own check
    with pytest.raises(PermanentError, match=r"rejected the message \(400"):
        transport.send(bad)


def test_kannels_temporal_failure_makes_the_batch_wait_without_failing() -> None:
    # Kannel's smsbox answers a full queue with 503 and these words (no real Kannel here:
    # one with an SMSC that takes nothing would queue, not refuse).
    gateway = ThrottlingGateway(
        1, 503, refusal=b"Temporal failure, try again later.", accepted=b"0: Accepted for delivery"
    )
    with HttpRecorder(gateway) as server:
        transport = KannelTransport(f"{server.url}/cgi-bin/sendsms", "u", "p")
        errors = transport.send_many([message(str(i), key=f"k{i}") for i in range(3)])
        assert len(server.received()) == 1
        assert transport.send_many([message("0", key="k0")]) == [None]
    assert all(isinstance(e, ThrottledError) and e.retry_after is None for e in errors)
    assert "throttled (503: Temporal failure, try again later.)" in str(errors[0])
    assert not any(isinstance(e, PermanentError | ConnectionError) for e in errors)


def test_gateway_down_is_retried_and_the_batch_does_not_wait_per_message() -> None:
    port = free_port()
    transport = KannelTransport(f"http://127.0.0.1:{port}/cgi-bin/sendsms", "u", "p", timeout=5)
    started = time.monotonic()
    errors = transport.send_many([message(str(i), key=f"k{i}") for i in range(20)])
    assert time.monotonic() - started < 2
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert not any(isinstance(e, PermanentError) for e in errors)


def test_delivery_reports_carry_the_job_key() -> None:
    transport = KannelTransport(
        "http://kannel/cgi-bin/sendsms", "u", "p", dlr_url="http://app/dlr?status=%d"
    )
    key = "texts:42:20300101T090000.000000Z"
    params = transport.params(message("x", key=key, delivery_report=True, validity_minutes=90))
    assert params["dlr-mask"] == "31"
    assert params["dlr-url"] == "http://app/dlr?status=%d&ref=texts:42:20300101T090000.000000Z"
    assert params["validity"] == "90"
    assert (params["coding"], params["charset"]) == ("0", "UTF-8")
    assert "dlr-mask" not in transport.params(message("x"))


def test_config_errors_name_the_plugin_and_the_setting(kannel: KannelBoxes) -> None:
    down = f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms"
    cases: dict[str, dict[str, Any]] = {
        "kannel_url names 127.0.0.1:": section(kannel, kannel_url=down),
        "kannel_password is missing": {
            k: v for k, v in section(kannel).items() if k != "kannel_password"
        },
        "kannel_url is 'ftp://x'; expected an http:// or https:// URL": section(
            kannel, kannel_url="ftp://x"
        ),
        "transport is 'pigeon'; expected one of console, http, kannel, smpp": {
            "transport": "pigeon"
        },
    }
    for expected, config in cases.items():
        with pytest.raises(ConfigError) as info:
            make_executor(config)
        text = str(info.value)
        assert text.startswith("plugin sms: [plugins.sms] "), text
        assert expected in text
        assert "\n" not in text
