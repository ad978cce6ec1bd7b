"""One HTTP request, and what its answer means for a retry.

2xx is success.  401/403 are refused credentials and other 4xx a refused
message: both fail for good (`RejectedError`), except 408, 425 and 429,
which ask to come back later.  5xx, timeouts and connection errors are
retried.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

import attrs

from infsched_sms.transports.base import RejectedError

RETRYABLE_4XX = frozenset({408, 425, 429})


class GatewayUnavailableError(ConnectionError):
    """The gateway could not take the message now (5xx, timeout, no connection): retried."""


@attrs.frozen
class Answer:
    status: int
    body: str


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
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise GatewayUnavailableError(f"{gateway} gateway unreachable: {reason}") from None
    if status >= 500 or status in RETRYABLE_4XX:
        raise GatewayUnavailableError(f"{gateway} gateway answered {status}: {text}")
    if status in (401, 403):
        raise RejectedError(f"{gateway} gateway refused the credentials ({status}: {text})")
    raise RejectedError(f"{gateway} gateway rejected the message ({status}: {text})")
