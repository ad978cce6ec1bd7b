"""The transport contract, and how its errors decide retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from infsched.executors import PermanentError
from infsched_sms.message import SmsMessage


class RejectedError(PermanentError):
    """The gateway refused the message for good (bad number, bad credentials)."""


class SmsTransport(Protocol):
    """Sends messages; raises RejectedError for a refusal, anything else to retry."""

    name: str

    def send(self, message: SmsMessage) -> None: ...

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]: ...

    def close(self) -> None: ...
