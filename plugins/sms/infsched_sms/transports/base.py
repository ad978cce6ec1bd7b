"""The transport contract, and how its errors decide retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from infsched.executors import PermanentError, ThrottledError
from infsched_sms.message import SmsMessage


class RejectedError(PermanentError):
    """The gateway refused the message for good (bad number, bad credentials)."""


class SmsTransport(Protocol):
    """Sends messages; raises RejectedError for a refusal, ThrottledError for "too fast"
    (the job waits again, no attempt counted), anything else to retry."""

    name: str

    def send(self, message: SmsMessage) -> None: ...

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]: ...

    def close(self) -> None: ...


def unsent(cause: ConnectionError | ThrottledError) -> ConnectionError | ThrottledError:
    """The error of a message left unsent after `cause`: throttled ones wait again as well."""
    if isinstance(cause, ThrottledError):
        return ThrottledError(f"not sent: {cause}", cause.retry_after)
    return ConnectionError(f"not sent: {cause}")


def send_each(
    send: Callable[[SmsMessage], None], messages: Sequence[SmsMessage]
) -> list[BaseException | None]:
    """Send one at a time; once the gateway is unreachable or throttles, the rest are not sent.

    A batch must not wait out one timeout per message against a gateway that
    is down, nor keep pushing into one that just said "too fast".
    """
    results: list[BaseException | None] = []
    stop: ConnectionError | ThrottledError | None = None
    for message in messages:
        if stop is not None:
            results.append(unsent(stop))
            continue
        try:
            send(message)
            results.append(None)
        except (ConnectionError, ThrottledError) as exc:
            stop = exc
            results.append(exc)
        except Exception as exc:
            results.append(exc)
    return results
