"""``infsched sms``: see how a text is encoded, and send one test message now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import click

from infsched.cli.context import app_context, config_options
from infsched.cli.output import counted, json_option, print_json
from infsched.executors import PermanentError, ThrottledError
from infsched_sms.encoding import Coding, encode, gsm7_septets
from infsched_sms.entity import SmsCoding, SmsEntity
from infsched_sms.executor import make_transport
from infsched_sms.message import SmsMessage

CODINGS = click.Choice([c.value for c in SmsCoding])


@click.group("sms")
def sms_group() -> None:
    """The SMS plugin: encode texts, send a test message."""


def _units(part: str, coding: Coding) -> str:
    if coding is Coding.GSM7:
        return counted(len(gsm7_septets(part)), "septet")
    return counted(len(part.encode("utf-16-be")) // 2, "UCS-2 unit")


@sms_group.command("encode")
@click.argument("text")
@click.option("--coding", type=CODINGS, default="auto", show_default=True)
@json_option
def encode_command(text: str, coding: str, as_json: bool) -> None:
    """Show the coding (GSM 7-bit or UCS-2) of TEXT and the parts it is sent in."""
    try:
        encoded = encode(text, coding)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        payload = {"coding": encoded.coding.value, "parts": list(encoded.parts)}
        print_json(payload)
        return
    click.echo(f"coding: {encoded.coding.value}")
    click.echo(f"parts: {encoded.count}")
    for i, part in enumerate(encoded.parts, start=1):
        click.echo(f"part {i} ({_units(part, encoded.coding)}): {part}")


@sms_group.command("send-test")
@config_options
@click.option("--to", "to", required=True, help="Recipient in E.164, e.g. +4915112345678.")
@click.option("--text", required=True, help="The message.")
@click.option("--from", "sender", default="infsched", show_default=True, help="Sender id.")
@click.option("--coding", type=CODINGS, default="auto", show_default=True)
@json_option
def send_test(to: str, text: str, sender: str, coding: str, as_json: bool) -> None:
    """Send one SMS now through the transport configured in [plugins.sms]."""
    try:
        entity = SmsEntity(
            scheduled_time=datetime.now(UTC),
            phone_number=to,
            sender=sender,
            message=text,
            coding=SmsCoding(coding),
        )
        message = SmsMessage.from_entity(entity, f"send-test:{uuid.uuid4().hex}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    transport = make_transport(app_context().loaded().config.plugin_section("sms"))
    try:
        transport.send(message)
    except PermanentError as exc:
        raise click.ClickException(f"rejected: {exc}") from None
    except ThrottledError as exc:
        later = "" if exc.retry_after is None else f" in {exc.retry_after:g} s"
        raise click.ClickException(f"not sent, throttled: try again{later}: {exc}") from None
    except ConnectionError as exc:
        raise click.ClickException(f"not sent, try again: {exc}") from None
    finally:
        transport.close()
    if as_json:
        print_json(
            {
                "to": message.to,
                "transport": transport.name,
                "parts": message.encoded.count,
                "coding": message.encoded.coding.value,
                "reference": message.reference,
            }
        )
        return
    click.echo(
        f"sent to {message.to} via {transport.name}: {counted(message.encoded.count, 'part')}, "
        f"{message.encoded.coding.value}, ref {message.reference}"
    )
