"""SmsExecutor: sends a due SmsEntity through the configured transport."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infsched.errors import ConfigError
from infsched.executors import JobContext, PermanentError
from infsched_sms.entity import SmsEntity
from infsched_sms.message import SmsMessage
from infsched_sms.transports.base import SmsTransport
from infsched_sms.transports.console import ConsoleTransport

TransportFactory = Callable[[Mapping[str, Any]], SmsTransport]


def _console(section: Mapping[str, Any]) -> SmsTransport:
    return ConsoleTransport()


#: Transport name -> factory taking the plugin's config section.
TRANSPORTS: dict[str, TransportFactory] = {"console": _console}


class SmsExecutor:
    """Runs SMS jobs singly or in batches (one gateway round per batch where it can)."""

    def __init__(self, transport: SmsTransport) -> None:
        self.transport = transport

    def execute_batch(self, jobs: Sequence[JobContext[SmsEntity]]) -> list[BaseException | None]:
        messages: list[SmsMessage] = []
        results: list[BaseException | None] = []
        positions: list[int] = []
        for i, job in enumerate(jobs):
            try:
                messages.append(SmsMessage.from_job(job))
                positions.append(i)
                results.append(None)
            except ValueError as exc:  # cannot be encoded as asked: retrying won't help
                results.append(PermanentError(str(exc)))
        sent = self.transport.send_many(messages)
        for position, error in zip(positions, sent, strict=True):
            results[position] = error
        return results


def make_executor(section: Mapping[str, Any]) -> SmsExecutor:
    """Build the executor from ``[plugins.sms]``; an unknown transport is one clear error."""
    name = str(section.get("transport", "console"))
    factory = TRANSPORTS.get(name)
    if factory is None:
        raise ConfigError(
            f"plugin sms: transport {name!r} is unknown; use one of "
            f"{', '.join(sorted(TRANSPORTS))} in [plugins.sms] transport"
        )
    return SmsExecutor(factory(section))
