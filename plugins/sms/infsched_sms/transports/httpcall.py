"""One HTTP request, and what its answer means for a retry.

2xx is success.  429 (Too Many Requests) and 503 (Service Unavailable:
Kannel's "Temporal failure, try again later" when its queue is full) say
"too fast": `ThrottledError`, carrying the answer's ``Retry-After`` (seconds
or an HTTP date), so the job waits again without an attempt counted and the
executor is held that long.  401/403 are refused credentials and other 4xx
a refused message: both fail for good (`RejectedError`), except 408 and
425, which ask to come back later.  Other 5xx, timeouts and connection
errors are retried.
"""

from __future__ import annotations

import email.utils
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC

import attrs

from infsched.executors import ThrottledError
from infsched_sms.transports.base import RejectedError

RETRYABLE_4XX = frozenset({408, 425})
#: Answers that mean "too fast, come back later" rather than a failure.
THROTTLING_STATUSES = frozenset({429, 503})


class GatewayUnavailableError(ConnectionError):
    """The gateway could not take the message now (5xx, timeout, no connection): retried."""


@attrs.frozen
class Answer:
    status: int
    body: str


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    None when there is none or it cannot be read: the engine's default hold applies.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP date is GMT all the same
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    gateway: str,
) -> Answer:
    """Make the request; raise for anything but 2xx (see the module doc)."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Answer(int(response.status), response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace").strip()[:200]
        status = exc.code
        retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise GatewayUnavailableError(f"{gateway} gateway unreachable: {reason}") from None
    if status in THROTTLING_STATUSES:
        wait = "" if retry_after is None else f", Retry-After {retry_after:g} s"
        raise ThrottledError(f"{gateway} gateway throttled ({status}{wait}: {text})", retry_after)
    if status >= 500 or status in RETRYABLE_4XX:
        raise GatewayUnavailableError(f"{gateway} gateway answered {status}: {text}")
    if status in (401, 403):
        raise RejectedError(f"{gateway} gateway refused the credentials ({status}: {text})")
    raise RejectedError(f"{gateway} gateway rejected the message ({status}: {text})")
