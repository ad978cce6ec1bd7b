"""``infsched notifications send-test``: one email or webhook now, as configured."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import click

from infsched.cli.context import app_context, config_options
from infsched.cli.output import json_option, print_json
from infsched.engine.joblog import job_logger
from infsched.executors import JobContext, PermanentError
from infsched_notifications.entity import Channel, NotificationEntity
from infsched_notifications.executor import make_executor


@click.group("notifications")
def notifications_group() -> None:
    """The notifications plugin: send a test email or webhook."""


@notifications_group.command("send-test")
@config_options
@click.option("--to", "to", required=True, help="An email address, or an http(s) URL.")
@click.option("--subject", default="infsched test", show_default=True)
@click.option("--text", default="This is a test from infsched.", show_default=True)
@json_option
def send_test(to: str, subject: str, text: str, as_json: bool) -> None:
    """Send one notification now through [plugins.notifications]: email or webhook by --to."""
    channel = Channel.WEBHOOK if to.startswith(("http://", "https://")) else Channel.EMAIL
    try:
        entity = NotificationEntity(
            send_at=datetime.now(UTC),
            channel=channel,
            recipient=to,
            subject=subject,
            body_text=text,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    executor = make_executor(app_context().loaded().config.plugin_section("notifications"))
    key = f"send-test:{uuid.uuid4().hex}"
    job = JobContext(entity, key, 1, entity.send_at, "send-test", job_logger(key, "send-test"))
    [error] = executor.execute_batch([job])
    if isinstance(error, PermanentError):
        raise click.ClickException(f"refused: {error}")
    if error is not None:
        raise click.ClickException(f"not sent, try again: {error}")
    if as_json:
        print_json({"sent": channel.value, "to": to, "job_key": key})
    else:
        click.echo(f"sent {channel.value} to {to} (job key {key})")
