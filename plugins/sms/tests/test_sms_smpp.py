"""The smpp transport against a real SMSC on loopback (tests/loopback_servers.SmscServer).

Kannel's drive_smpp cannot play this part: it answers a bind only after
connecting to a bearerbox as an smsbox on the fixed port 13001, panics
without one, and does not handle bind_transceiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sms_support import job, message, sms

from infsched.errors import ConfigError
from infsched.executors import PermanentError, ThrottledError
from infsched_sms.executor import make_executor
from infsched_sms.transports.smpp import SmppStatusError, SmppTransport, validity_period
from tests.loopback_servers import (
    BIND_TRANSCEIVER,
    ESME_RMSGQFUL,
    ESME_RTHROTTLED,
    SmscServer,
    free_port,
    wait_for,
)

#: SMPP 3.4's "System Error": the SMSC's trouble, worth a retry.
ESME_RSYSERR = 0x08


def section(smsc: SmscServer, **overrides: object) -> dict[str, Any]:
    return {
        "transport": "smpp",
        "smpp_host": "127.0.0.1",
        "smpp_port": smsc.port,
        "smpp_system_id": smsc.system_id,
        "smpp_password": smsc.password,
        **overrides,
    }


@pytest.fixture
def transport(smsc: SmscServer) -> Iterator[SmppTransport]:
    t = SmppTransport("127.0.0.1", smsc.port, smsc.system_id, smsc.password, window=4, timeout=3)
    yield t
    t.close()


def test_submits_each_message_with_addresses_coding_validity_and_report_flag(
    smsc: SmscServer,
) -> None:
    executor = make_executor(section(smsc))
    try:
        errors = executor.execute_batch(
            [
                job(sms("Hello [1] €", validity_minutes=90, delivery_report=True), "t:1:a"),
                job(sms("Привет", to="+33612345678", sender="+4915112345678"), "t:2:a"),
            ]
        )
    finally:
        executor.close()
    assert errors == [None, None]
    first, second = smsc.received()
    assert (first.source_addr_ton, first.source_addr) == (5, "ACME")
    assert (first.dest_addr_ton, first.destination_addr) == (1, "4915112345678")
    assert (first.data_coding, first.text, first.udh) == (0, "Hello [1] €", b"")
    assert first.validity_period == "000000013000000R"
    assert first.registered_delivery == 1
    assert (second.source_addr_ton, second.source_addr) == (1, "4915112345678")
    assert (second.data_coding, second.text, second.registered_delivery) == (8, "Привет", 0)


def test_a_long_text_goes_as_concatenated_parts_with_one_reference(
    smsc: SmscServer, transport: SmppTransport
) -> None:
    text = "Ж" * 150  # UCS-2: 67 + 67 + 16
    msg = message(text, key="t:9:b")
    assert transport.send_many([msg]) == [None]
    parts = smsc.received()
    assert [p.udh for p in parts] == [
        bytes([5, 0, 3, msg.concat_reference, 3, n]) for n in (1, 2, 3)
    ]
    assert all(p.esm_class & 0x40 for p in parts)
    assert "".join(p.text for p in parts) == text
    # A retry of the same job uses the same reference, so a handset can put it together.
    assert message(text, key="t:9:b").concat_reference == msg.concat_reference


def test_the_window_bounds_outstanding_submits(smsc: SmscServer, transport: SmppTransport) -> None:
    smsc.answer_delay = 0.05
    errors = transport.send_many([message(f"n{i}", key=f"t:{i}:c") for i in range(20)])
    assert errors == [None] * 20
    assert len(smsc.received()) == 20
    assert smsc.max_outstanding_seen == 4


def test_a_rejected_number_fails_for_good_and_the_rest_go(
    smsc: SmscServer, transport: SmppTransport
) -> None:
    smsc.reject.add("33612345678")
    errors = transport.send_many(
        [message("a", key="t:1:d"), message("b", key="t:2:d", to="+33612345678")]
    )
    assert errors[0] is None
    assert isinstance(errors[1], PermanentError)
    assert "Invalid Destination Address" in str(errors[1])
    assert [s.text for s in smsc.received()] == ["a"]


@pytest.mark.parametrize("status", [ESME_RTHROTTLED, ESME_RMSGQFUL], ids=["throttled", "qfull"])
def test_throttling_and_a_full_queue_make_the_job_wait_and_stop_the_batch(
    smsc: SmscServer, status: int
) -> None:
    smsc.throttle, smsc.throttle_status = 1, status
    transport = SmppTransport("127.0.0.1", smsc.port, smsc.system_id, smsc.password, window=1)
    try:
        errors = transport.send_many([message(f"m{i}", key=f"t:{i}:e") for i in range(3)])
        assert all(isinstance(e, ThrottledError) for e in errors)
        assert not any(isinstance(e, PermanentError | ConnectionError) for e in errors)
        assert ("Throttling error" if status == ESME_RTHROTTLED else "Queue is full") in str(
            errors[0]
        )
        # The SMSC said "too fast": the rest of the batch was not submitted.
        assert [str(e).startswith("not sent: ") for e in errors] == [False, True, True]
        assert smsc.received() == []
        assert transport.send_many([message("m0", key="t:0:e")]) == [None]
    finally:
        transport.close()


def test_a_system_error_is_still_retried_as_before(
    smsc: SmscServer, transport: SmppTransport
) -> None:
    smsc.throttle, smsc.throttle_status = 1, ESME_RSYSERR
    [error] = transport.send_many([message("a", key="t:1:s")])
    assert isinstance(error, SmppStatusError)
    assert isinstance(error, ConnectionError)
    assert not isinstance(error, PermanentError | ThrottledError)
    assert "System Error" in str(error)


def test_a_lost_session_is_rebound(smsc: SmscServer, transport: SmppTransport) -> None:
    assert transport.send_many([message("one", key="t:1:f")]) == [None]
    smsc.drop_all()
    # The keeper notices on its next enquire_link, or the next batch does: either way a
    # message is never lost silently; a failed one is retried by the engine.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if transport.send_many([message("two", key="t:2:f")]) == [None]:
            break
        time.sleep(0.2)
    assert [s.text for s in smsc.received()] == ["one", "two"]
    assert transport.binds == 2


def test_an_idle_link_is_kept_alive_with_enquire_link(smsc: SmscServer) -> None:
    transport = SmppTransport(
        "127.0.0.1",
        smsc.port,
        smsc.system_id,
        smsc.password,
        bind="transceiver",
        enquire_link_interval=0.3,
    )
    try:
        transport.open()
        wait_for(lambda: smsc.enquire_links >= 2, 5, "two enquire_links")
        assert transport.send_many([message("still bound", key="t:1:g")]) == [None]
    finally:
        transport.close()
    assert smsc.binds == [(smsc.system_id, BIND_TRANSCEIVER)]


def test_bad_credentials_or_no_smsc_refuse_to_start_with_one_line(smsc: SmscServer) -> None:
    with pytest.raises(ConfigError) as info:
        make_executor(section(smsc, smpp_password="wrong"))
    assert str(info.value).startswith("plugin sms: [plugins.sms] smpp_password was refused")
    assert "Invalid Password" in str(info.value)
    with pytest.raises(ConfigError, match=r"^plugin sms: \[plugins.sms\] smpp_host cannot be used"):
        make_executor(section(smsc, smpp_port=free_port()))
    with pytest.raises(ConfigError, match=r"smpp_bind is 'receiver'; expected one of"):
        make_executor(section(smsc, smpp_bind="receiver"))


def test_bad_credentials_after_start_fail_jobs_for_good(smsc: SmscServer) -> None:
    transport = SmppTransport("127.0.0.1", smsc.port, smsc.system_id, "changed", timeout=3)
    try:
        [error] = transport.send_many([message("x")])
    finally:
        transport.close()
    assert isinstance(error, PermanentError)
    assert smsc.received() == []


def test_validity_period_is_smpp_relative_time() -> None:
    assert validity_period(1) == "000000000100000R"
    assert validity_period(10080) == "000007000000000R"
    assert validity_period(1500) == "000001010000000R"
