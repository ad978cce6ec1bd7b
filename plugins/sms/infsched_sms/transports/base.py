"""The transport contract, and how its errors decide retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def send_each(
    send: Callable[[SmsMessage], None], messages: Sequence[SmsMessage]
) -> list[BaseException | None]:
    """Send one at a time; once the gateway is unreachable, the rest fail (to retry) unsent.

    A batch must not wait out one timeout per message against a gateway that is down.
    """
    results: list[BaseException | None] = []
    down: ConnectionError | None = None
    for message in messages:
        if down is not None:
            results.append(ConnectionError(f"not sent: {down}"))
            continue
        try:
            send(message)
            results.append(None)
        except ConnectionError as exc:
            down = exc
            results.append(exc)
        except Exception as exc:
            results.append(exc)
    return results
