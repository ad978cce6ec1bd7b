"""Webhook delivery: an HTTP POST with a JSON body signed by HMAC-SHA256.

The receiver checks ``X-Infsched-Signature: sha256=<hex>`` against the raw
body with the shared secret, and may drop repeats by ``Idempotency-Key``
(the job key).  5xx, 408, 429, timeouts and connection errors are retried;
any other 4xx fails for good.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import Any

from infsched.executors import PermanentError

SIGNATURE_HEADER = "X-Infsched-Signature"
_RETRYABLE_4XX = {408, 425, 429}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def post(url: str, payload: dict[str, Any], *, secret: str, key: str, timeout: float) -> int:
    """POST `payload`; return the status, raise to retry, PermanentError to give up."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "Idempotency-Key": key,
            "User-Agent": "infsched-notifications",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in _RETRYABLE_4XX:
            raise ConnectionError(f"webhook {url} answered {exc.code}; will retry") from None
        raise PermanentError(
            f"webhook {url} refused the call with {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"webhook {url} unreachable: {reason}; will retry") from None
