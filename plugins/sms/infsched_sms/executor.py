"""SmsExecutor: sends due SmsEntity jobs through the configured transport."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infsched.executors import JobContext, PermanentError
from infsched.flow_limits import FlowLimit
from infsched_sms.entity import SmsEntity
from infsched_sms.message import SmsMessage
from infsched_sms.settings import Settings, url_address
from infsched_sms.transports.base import RejectedError, SmsTransport
from infsched_sms.transports.console import ConsoleTransport
from infsched_sms.transports.http import DEFAULT_BODY, HttpTransport, unknown_placeholders
from infsched_sms.transports.kannel import DEFAULT_DLR_MASK, KannelTransport
from infsched_sms.transports.smpp import BIND_MODES, SmppTransport

TransportFactory = Callable[[Settings], SmsTransport]


def _console(settings: Settings) -> SmsTransport:
    return ConsoleTransport()


def _kannel(settings: Settings) -> SmsTransport:
    url = settings.http_url("kannel_url")
    transport = KannelTransport(
        url,
        settings.text("kannel_username"),
        settings.text("kannel_password"),
        dlr_url=settings.optional_text("kannel_dlr_url"),
        dlr_mask=settings.integer("kannel_dlr_mask", DEFAULT_DLR_MASK, high=255),
        smsc=settings.optional_text("kannel_smsc"),
        timeout=settings.seconds("timeout", 10.0),
    )
    if settings.boolean("connect_at_start", True):
        settings.reachable("kannel_url", *url_address(url), timeout=transport.timeout)
    return transport


def _smpp(settings: Settings) -> SmsTransport:
    transport = SmppTransport(
        settings.text("smpp_host"),
        settings.integer("smpp_port", 2775, high=65535),
        settings.text("smpp_system_id"),
        settings.text("smpp_password"),
        system_type=str(settings.section.get("smpp_system_type", "")),
        bind=settings.choice("smpp_bind", "transmitter", BIND_MODES),
        window=settings.integer("smpp_window", 10, high=1000),
        enquire_link_interval=settings.seconds("smpp_enquire_link_interval", 30.0),
        timeout=settings.seconds("timeout", 10.0),
    )
    if settings.boolean("connect_at_start", True):
        try:
            transport.open()
        except RejectedError as exc:
            raise settings.error("smpp_password", f"was refused: {exc}") from None
        except ConnectionError as exc:
            raise settings.error("smpp_host", f"cannot be used: {exc}") from None
    return transport


def _http(settings: Settings) -> SmsTransport:
    url = settings.http_url("http_url")
    headers = settings.table("http_headers", {})
    if not all(isinstance(v, str) for v in headers.values()):
        raise settings.error("http_headers", "must map header names to strings")
    body = settings.table("http_body", DEFAULT_BODY)
    unknown = unknown_placeholders(body)
    if unknown:
        raise settings.error(
            "http_body", f"uses unknown placeholder(s) {', '.join(sorted(unknown))}"
        )
    transport = HttpTransport(
        url,
        headers={str(k): str(v) for k, v in headers.items()},
        body=body,
        bulk_size=settings.integer("http_bulk_size", 1, high=10_000),
        timeout=settings.seconds("timeout", 10.0),
    )
    if settings.boolean("connect_at_start", True):
        settings.reachable("http_url", *url_address(url), timeout=transport.timeout)
    return transport


#: Transport name -> factory taking the plugin's settings.
TRANSPORTS: dict[str, TransportFactory] = {
    "console": _console,
    "http": _http,
    "kannel": _kannel,
    "smpp": _smpp,
}


class SmsExecutor:
    """Runs SMS jobs in batches (one gateway round per batch where the transport can)."""

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
        sent = self.transport.send_many(messages) if messages else []
        for position, error in zip(positions, sent, strict=True):
            results[position] = error
        return results

    def close(self) -> None:
        self.transport.close()


#: The ``[plugins.sms]`` keys of the executor's flow limit (target ``executor:sms``).
LIMIT_KEYS = ("rate", "burst", "max_concurrent")
#: The limits table keeps burst and max_concurrent as 32-bit integers.
_LIMIT_HIGH = 2**31 - 1


def flow_limit(section: Mapping[str, Any]) -> FlowLimit | None:
    """The executor's limit from ``[plugins.sms]`` ``rate``, ``burst``, ``max_concurrent``.

    None when none of them is set.  The gateway account's own limit belongs
    here (``rate = 100`` for a Kannel account or an SMPP bind): every node
    puts it in the limits table when it starts, so the cluster together
    stays under it.
    """
    if not any(key in section for key in LIMIT_KEYS):
        return None
    settings = Settings(section)
    rate = settings.optional_rate("rate", "messages")
    max_concurrent = settings.optional_integer("max_concurrent", high=_LIMIT_HIGH)
    if "burst" in section and rate is None:
        raise settings.error(
            "burst", f"is {section['burst']!r} without rate; a burst only shapes a rate"
        )
    burst = settings.integer("burst", 1, high=_LIMIT_HIGH)
    return FlowLimit(rate=rate, burst=burst, max_concurrent=max_concurrent)


def make_transport(section: Mapping[str, Any]) -> SmsTransport:
    """The transport ``[plugins.sms]`` names; ConfigError naming the key when it is wrong."""
    settings = Settings(section)
    name = settings.choice("transport", "console", tuple(sorted(TRANSPORTS)))
    return TRANSPORTS[name](settings)


def make_executor(section: Mapping[str, Any]) -> SmsExecutor:
    """Build the executor from ``[plugins.sms]``."""
    return SmsExecutor(make_transport(section))
