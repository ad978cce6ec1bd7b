"""The ``console`` transport: writes each message to the log. The demo's default."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from infsched_sms.message import SmsMessage

log = logging.getLogger("infsched.sms.console")


class ConsoleTransport:
    name = "console"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def send(self, message: SmsMessage) -> None:
        self._log.info(
            "SMS %s -> %s (%d part%s, %s, ref %s): %s",
            message.sender,
            message.to,
            message.encoded.count,
            "" if message.encoded.count == 1 else "s",
            message.encoded.coding.value,
            message.reference,
            message.text,
        )

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]:
        for message in messages:
            self.send(message)
        return [None] * len(messages)

    def close(self) -> None:
        pass
