"""The ``http`` transport: a generic JSON HTTP gateway.

Each message becomes a JSON object built from a body template whose string
values may hold placeholders: ``$to``, ``$sender``, ``$text``,
``$reference`` (the job key), ``$coding`` (``gsm7``/``ucs2``), ``$parts``,
``$validity_minutes`` and ``$delivery_report``.  A value that is exactly
one placeholder keeps its type (``"$parts"`` becomes the number 2);
placeholders inside longer strings are filled in as text.  The gateway
splits long texts itself; ``$parts`` and ``$coding`` tell it what to expect.

With ``bulk_size`` 1 each message is its own POST, with the job key in an
``Idempotency-Key`` header.  With a larger ``bulk_size`` up to that many
messages go in one POST as ``{"messages": [...]}``; the gateway may answer
``{"results": [...]}``, one entry per message in order, where an entry with
an ``error`` fails that message (for good when ``"permanent": true``, else
to retry); without results, a 2xx accepts them all.

A 429 or 503 answer is throttling (httpcall.py): the message, or the whole
bulk POST, waits again without an attempt counted, and what the batch had
not sent yet is not sent into the throttled gateway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any

from infsched.executors import ThrottledError
from infsched_sms.message import SmsMessage
from infsched_sms.transports.base import RejectedError, send_each, unsent
from infsched_sms.transports.httpcall import GatewayUnavailableError, request

log = logging.getLogger("infsched.sms.http")

PLACEHOLDERS = (
    "to",
    "sender",
    "text",
    "reference",
    "coding",
    "parts",
    "validity_minutes",
    "delivery_report",
)
DEFAULT_BODY: Mapping[str, Any] = {
    "to": "$to",
    "from": "$sender",
    "text": "$text",
    "reference": "$reference",
    "coding": "$coding",
    "parts": "$parts",
    "validity_minutes": "$validity_minutes",
    "delivery_report": "$delivery_report",
}


def unknown_placeholders(template: object) -> set[str]:
    """Placeholders in `template` (nested tables and lists too) that are not in PLACEHOLDERS."""
    if isinstance(template, str):
        return set(Template(template).get_identifiers()) - set(PLACEHOLDERS)
    if isinstance(template, Mapping):
        return set().union(*(unknown_placeholders(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(unknown_placeholders(v) for v in template))
    return set()


def values_of(message: SmsMessage) -> dict[str, Any]:
    return {
        "to": message.to,
        "sender": message.sender,
        "text": message.text,
        "reference": message.reference,
        "coding": message.encoded.coding.value,
        "parts": message.encoded.count,
        "validity_minutes": message.validity_minutes,
        "delivery_report": message.delivery_report,
    }


def render(template: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        if template.startswith("$") and template[1:] in values:
            return values[template[1:]]
        return Template(template).safe_substitute({k: str(v) for k, v in values.items()})
    if isinstance(template, Mapping):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


class HttpTransport:
    name = "http"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] = DEFAULT_BODY,
        bulk_size: int = 1,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.body = body
        self.bulk_size = bulk_size
        self.timeout = timeout

    def __repr__(self) -> str:  # headers may hold an API key
        return f"HttpTransport(url={self.url!r}, bulk_size={self.bulk_size})"

    def _post(self, payload: object, headers: Mapping[str, str]) -> str:
        body = json.dumps(payload, separators=(",", ":")).encode()
        answer = request(
            "POST",
            self.url,
            body=body,
            headers={**self.headers, **headers},
            timeout=self.timeout,
            gateway=f"http {self.url}",
        )
        return answer.body

    def send(self, message: SmsMessage) -> None:
        self._post(render(self.body, values_of(message)), {"Idempotency-Key": message.reference})
        log.info("SMS %s -> %s sent (ref %s)", message.sender, message.to, message.reference)

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]:
        if self.bulk_size <= 1:
            return send_each(self.send, messages)
        results: list[BaseException | None] = []
        for start in range(0, len(messages), self.bulk_size):
            chunk = messages[start : start + self.bulk_size]
            last = results[-1] if results else None
            if isinstance(last, GatewayUnavailableError | ThrottledError):
                results += [unsent(last)] * len(chunk)
                continue
            results += self._send_bulk(chunk)
        return results

    def _send_bulk(self, chunk: Sequence[SmsMessage]) -> list[BaseException | None]:
        payload = {"messages": [render(self.body, values_of(m)) for m in chunk]}
        try:
            text = self._post(payload, {})
        except Exception as exc:
            return [exc] * len(chunk)
        per_message = _results(text, len(chunk))
        for message, error in zip(chunk, per_message, strict=True):
            if error is None:
                log.info(
                    "SMS %s -> %s sent (ref %s)", message.sender, message.to, message.reference
                )
        return per_message

    def close(self) -> None:
        pass


def _results(text: str, count: int) -> list[BaseException | None]:
    """Per-message outcomes from a bulk answer; all accepted when it lists none."""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    entries = data.get("results") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) != count:
        return [None] * count
    out: list[BaseException | None] = []
    for entry in entries:
        error = entry.get("error") if isinstance(entry, dict) else None
        if not error:
            out.append(None)
        elif isinstance(entry, dict) and entry.get("permanent") is True:
            out.append(RejectedError(f"http gateway rejected the message: {error}"))
        else:
            out.append(GatewayUnavailableError(f"http gateway could not take the message: {error}"))
    return out
