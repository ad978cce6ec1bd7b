"""``infsched notifications send-test`` through the real command line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from infsched.cli.context import AppContext
from infsched.cli.main import build_cli
from infsched.plugins import load_plugins
from infsched_notifications.webhook import verify
from tests.loopback_servers import HttpRecorder, SmtpRecorder


def test_send_test_sends_an_email_or_a_webhook(tmp_path: Path) -> None:
    registry = load_plugins()
    cli = build_cli(registry)
    with SmtpRecorder(refuse={"nobody@example.org"}) as smtp, HttpRecorder() as hooks:
        config = tmp_path / "infsched.toml"
        config.write_text(
            f"""
[plugins.notifications]
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
webhook_secret = "s"
"""
        )

        def run(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(
                cli,
                ["notifications", "send-test", "--config", str(config), *args],
                obj=AppContext(plugins=registry),
            )
            return result.exit_code, result.output

        assert run("--to", "ada@example.org", "--subject", "ping")[0] == 0
        code, out = run("--to", f"{hooks.url}/x", "--text", "pong")
        assert code == 0, out
        assert out.startswith(f"sent webhook to {hooks.url}/x (job key send-test:")
        code, out = run("--to", "nobody@example.org")
        assert code == 1
        assert "refused: SMTP server refused recipient nobody@example.org (550)" in out
        code, out = run("--to", "not an address")
        assert code == 1
        assert "is not an email address" in out
    [mail] = smtp.messages
    assert (mail.rcpt_tos, mail.message["Subject"]) == (["ada@example.org"], "ping")
    [request] = hooks.received()
    assert request.json()["text"] == "pong"
    assert verify("s", request.body, request.headers["x-infsched-signature"])
