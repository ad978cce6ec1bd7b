"""``infsched sms encode`` and ``infsched sms send-test``, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sms_support import ThrottlingGateway

from infsched.cli.context import AppContext
from infsched.cli.main import build_cli
from infsched.plugins import load_plugins
from tests.loopback_servers import HttpRecorder, SmscServer
from tests.management_support import clean_cli


def invoke(*args: str) -> tuple[int, str]:
    registry = load_plugins()
    result = CliRunner().invoke(build_cli(registry), list(args), obj=AppContext(plugins=registry))
    return result.exit_code, result.output


def test_encode_shows_coding_and_parts() -> None:
    code, out = invoke("sms", "encode", "x" * 170)
    assert code == 0, out
    assert out.splitlines()[:3] == [
        "coding: gsm7",
        "parts: 2",
        "part 1 (153 septets): " + "x" * 153,
    ]
    code, out = invoke("sms", "encode", "--json", "Привет €")
    assert json.loads(out) == {"coding": "ucs2", "parts": ["Привет €"]}
    code, out = invoke("sms", "encode", "--coding", "gsm7", "Привет")
    assert code == 1
    assert "outside the GSM 7-bit alphabet" in out


def test_send_test_goes_through_the_configured_transport(tmp_path: Path, smsc: SmscServer) -> None:
    config = tmp_path / "infsched.toml"
    config.write_text(
        f"""
[plugins.sms]
transport = "smpp"
smpp_host = "127.0.0.1"
smpp_port = {smsc.port}
smpp_system_id = "{smsc.system_id}"
smpp_password = "{smsc.password}"
"""
    )
    code, out = invoke(
        "sms", "send-test", "--config", str(config), "--to", "+4915112345678", "--text", "ping"
    )
    assert code == 0, out
    assert "sent to +4915112345678 via smpp: 1 part, gsm7, ref send-test:" in out
    [submit] = smsc.received()
    assert (submit.destination_addr, submit.source_addr, submit.text) == (
        "4915112345678",
        "infsched",
        "ping",
    )
    code, out = invoke("sms", "send-test", "--config", str(config), "--to", "0151", "--text", "x")
    assert code == 1
    assert "is not an E.164 number" in out
    smsc.reject.add("33612345678")
    code, out = invoke(
        "sms", "send-test", "--config", str(config), "--to", "+33612345678", "--text", "x"
    )
    assert code == 1
    assert "rejected: SMSC refused the SMS to +33612345678" in out


def test_send_test_says_when_the_gateway_throttles(tmp_path: Path) -> None:
    config = tmp_path / "infsched.toml"
    with HttpRecorder(ThrottlingGateway(1, 429, retry_after="30")) as server:
        config.write_text(f'[plugins.sms]\ntransport = "http"\nhttp_url = "{server.url}/sms"\n')
        code, out = invoke(
            "sms", "send-test", "--config", str(config), "--to", "+4915112345678", "--text", "x"
        )
    assert code == 1
    assert "not sent, throttled: try again in 30 s: http " in out
    assert "gateway throttled (429, Retry-After 30 s" in out


def test_run_refuses_a_bad_rate_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "infsched.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "sched.db"}"\n'
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
        '[plugins.sms]\ntransport = "console"\nrate = 0\n'
    )
    run = clean_cli(capsys, monkeypatch, tmp_path)("run")
    assert run.code == 1
    assert run.err.splitlines() == [
        "error: plugin sms: [plugins.sms] rate is 0; expected a number of messages per second > 0"
    ]
