"""The ``smpp`` transport: submit_sm over SMPP 3.4 (smpplib), with a window.

One session per executor: connect, bind (transmitter by default, or
transceiver), then each batch is submitted with up to `window` submit_sm
PDUs awaiting their submit_sm_resp at once.  A keeper thread sends
enquire_link when the link has been idle for `enquire_link_interval`
seconds, and reconnects a lost session in the background; a batch that
finds no session binds one first.

Long texts are split here, not by the SMSC: each part carries a
concatenation user data header (esm_class UDHI, 8-bit reference derived
from the job key, so a retry reuses it) and GSM 7-bit text goes as
unpacked septets with data_coding 0, UCS-2 as UTF-16BE with data_coding 8.

SMPP 3.4 has no client reference string (user_message_reference holds 16
bits), so the job key does not reach the SMSC; the SMSC's message_id of
each part is logged with the job key instead.

A bind refused for its credentials, and submit_sm_resp statuses that name
the message itself (bad destination or source address, bad length, bad
validity), fail for good (`RejectedError`).  ESME_RTHROTTLED and
ESME_RMSGQFUL say "too fast": `ThrottledError`, so the job waits again
without an attempt counted, and the batch submits nothing more.  A lost
connection, a timeout or any other status (a system error) is retried.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import smpplib.client  # type: ignore[import-untyped]
import smpplib.consts  # type: ignore[import-untyped]
import smpplib.exceptions  # type: ignore[import-untyped]
import smpplib.smpp  # type: ignore[import-untyped]

from infsched.executors import ThrottledError
from infsched_sms.encoding import DATA_CODING, ESM_CLASS_UDHI, wire_parts
from infsched_sms.message import SmsMessage
from infsched_sms.transports.base import RejectedError, unsent

log = logging.getLogger("infsched.sms.smpp")

C = smpplib.consts
#: Bind statuses that mean wrong credentials: retrying cannot help.
CREDENTIAL_STATUSES = frozenset(
    {C.SMPP_ESME_RINVPASWD, C.SMPP_ESME_RINVSYSID, C.SMPP_ESME_RBINDFAIL}
)
#: submit_sm_resp statuses about the message itself: fail for good.
PERMANENT_STATUSES = frozenset(
    {
        C.SMPP_ESME_RINVMSGLEN,
        C.SMPP_ESME_RINVSRCADR,
        C.SMPP_ESME_RINVDSTADR,
        C.SMPP_ESME_RINVESMCLASS,
        C.SMPP_ESME_RINVSRCTON,
        C.SMPP_ESME_RINVSRCNPI,
        C.SMPP_ESME_RINVDSTTON,
        C.SMPP_ESME_RINVDSTNPI,
        C.SMPP_ESME_RINVEXPIRY,
        C.SMPP_ESME_RINVPASWD,
        C.SMPP_ESME_RINVSYSID,
    }
)
#: submit_sm_resp statuses that say "too fast": the job waits, no attempt counted.
THROTTLING_STATUSES = frozenset({C.SMPP_ESME_RTHROTTLED, C.SMPP_ESME_RMSGQFUL})
#: Type of number / numbering plan: international ISDN, and alphanumeric.
TON_INTERNATIONAL, NPI_ISDN = 1, 1
TON_ALPHANUMERIC, NPI_UNKNOWN = 5, 0
BIND_MODES = ("transmitter", "transceiver")


class SmppStatusError(ConnectionError):
    """The SMSC answered a submit with a status worth retrying (a system error...)."""


def describe_status(status: int) -> str:
    return f"0x{status:08X} {C.DESCRIPTIONS.get(status, 'unknown status')}"


def validity_period(minutes: int) -> str:
    """SMPP relative time (``YYMMDDhhmmsstnnR``) of `minutes`."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{mins:02d}00000R"


def submit_fields(message: SmsMessage) -> list[dict[str, Any]]:
    """The submit_sm fields of each part of `message`."""
    numeric_sender = message.sender.startswith("+")
    common: dict[str, Any] = {
        "source_addr_ton": TON_INTERNATIONAL if numeric_sender else TON_ALPHANUMERIC,
        "source_addr_npi": NPI_ISDN if numeric_sender else NPI_UNKNOWN,
        "source_addr": message.sender.removeprefix("+"),
        "dest_addr_ton": TON_INTERNATIONAL,
        "dest_addr_npi": NPI_ISDN,
        "destination_addr": message.to.removeprefix("+"),
        "registered_delivery": 1 if message.delivery_report else 0,
        "data_coding": DATA_CODING[message.encoded.coding],
        "esm_class": ESM_CLASS_UDHI if message.encoded.count > 1 else 0,
    }
    if message.validity_minutes is not None:
        common["validity_period"] = validity_period(message.validity_minutes)
    return [
        {**common, "short_message": payload}
        for payload in wire_parts(message.encoded, message.concat_reference)
    ]


class SmppTransport:
    name = "smpp"

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        bind: str = "transmitter",
        window: int = 10,
        enquire_link_interval: float = 30.0,
        timeout: float = 10.0,
        reconnect_delay: float = 5.0,
    ) -> None:
        if bind not in BIND_MODES:
            raise ValueError(f"bind {bind!r} is not one of {', '.join(BIND_MODES)}")
        self.host, self.port = host, port
        self.system_id, self.password, self.system_type = system_id, password, system_type
        self.bind_mode = bind
        self.window = window
        self.enquire_link_interval = enquire_link_interval
        self.timeout = timeout
        self.reconnect_delay = reconnect_delay
        self._lock = threading.Lock()
        self._client: Any = None
        self._last_io = time.monotonic()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        #: Binds made so far (the first, then each reconnect).
        self.binds = 0

    def __repr__(self) -> str:  # never the password
        return f"SmppTransport({self.host}:{self.port}, system_id={self.system_id!r})"

    # -- the session --

    def open(self) -> None:
        """Connect and bind now (a start-up check); later sends reuse the session."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Any:
        if self._client is None:
            self._client = self._bind()
            self.binds += 1
            self._last_io = time.monotonic()
            log.info(
                "bound to SMSC %s:%d as %s (%s)",
                self.host,
                self.port,
                self.system_id,
                self.bind_mode,
            )
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep, name="infsched-sms-smpp-keeper", daemon=True
            )
            self._keeper.start()
        return self._client

    def _bind(self) -> Any:
        client = smpplib.client.Client(
            self.host,
            self.port,
            timeout=self.timeout,
            logger_name="infsched.sms.smpp.wire",
            allow_unknown_opt_params=True,
        )
        try:
            client.connect()
            binder = getattr(client, f"bind_{self.bind_mode}")
            binder(system_id=self.system_id, password=self.password, system_type=self.system_type)
        except smpplib.exceptions.PDUError as exc:
            _close(client)
            status = exc.args[1] if len(exc.args) > 1 else -1
            if status in CREDENTIAL_STATUSES:
                raise RejectedError(
                    f"SMSC {self.host}:{self.port} refused the bind of {self.system_id!r}: "
                    f"{describe_status(status)}"
                ) from None
            raise ConnectionError(f"SMSC {self.host}:{self.port} refused the bind: {exc}") from None
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            _close(client)
            raise ConnectionError(
                f"SMSC {self.host}:{self.port} unreachable: {exc or 'connection closed'}"
            ) from None
        return client

    def _drop(self, why: str) -> None:
        if self._client is not None:
            log.warning("SMPP session to %s:%d lost: %s", self.host, self.port, why)
            _close(self._client)
            self._client = None

    def _keep(self) -> None:
        """enquire_link on an idle link; reconnect a lost one."""
        next_reconnect = 0.0
        while not self._stop.wait(min(1.0, self.enquire_link_interval / 2)):
            if not self._lock.acquire(blocking=False):
                continue  # a batch is using the link
            try:
                if self._client is None:
                    if time.monotonic() >= next_reconnect:
                        next_reconnect = time.monotonic() + self.reconnect_delay
                        try:
                            self._ensure()
                        except Exception as exc:
                            log.warning(
                                "SMPP reconnect to %s:%d failed: %s", self.host, self.port, exc
                            )
                elif time.monotonic() - self._last_io >= self.enquire_link_interval:
                    self._enquire_link()
            finally:
                self._lock.release()

    def _enquire_link(self) -> None:
        client = self._client
        try:
            pdu = smpplib.smpp.make_pdu("enquire_link", client=client)
            client.send_pdu(pdu)
            while True:
                answer = client.read_pdu()
                if answer.command == "enquire_link_resp" and answer.sequence == pdu.sequence:
                    break
                self._handle_other(client, answer)
            self._last_io = time.monotonic()
        except Exception as exc:
            self._drop(f"enquire_link failed: {exc or type(exc).__name__}")

    def _handle_other(self, client: Any, pdu: Any) -> None:
        """PDUs the SMSC sends on its own: answer them so the session stays healthy."""
        if pdu.command == "enquire_link":
            reply = smpplib.smpp.make_pdu("enquire_link_resp", client=client, sequence=pdu.sequence)
            client.send_pdu(reply)
        elif pdu.command == "deliver_sm":
            reply = smpplib.smpp.make_pdu("deliver_sm_resp", client=client, sequence=pdu.sequence)
            client.send_pdu(reply)
            log.info("SMSC report or message: %r", pdu.short_message)
        elif pdu.command == "unbind":
            reply = smpplib.smpp.make_pdu("unbind_resp", client=client, sequence=pdu.sequence)
            client.send_pdu(reply)
            raise ConnectionError("the SMSC unbound the session")

    # -- sending --

    def send(self, message: SmsMessage) -> None:
        [error] = self.send_many([message])
        if error is not None:
            raise error

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]:
        with self._lock:
            try:
                client = self._ensure()
            except Exception as exc:
                return [exc] * len(messages)
            return self._submit_all(client, messages)

    def _submit_all(
        self, client: Any, messages: Sequence[SmsMessage]
    ) -> list[BaseException | None]:
        queue = collections.deque(
            (i, fields) for i, m in enumerate(messages) for fields in submit_fields(m)
        )
        left = collections.Counter(i for i, _ in queue)
        outstanding: dict[int, int] = {}  # sequence -> message index
        failed: dict[int, BaseException] = {}
        message_ids: dict[int, list[str]] = collections.defaultdict(list)
        try:
            while queue or outstanding:
                while queue and len(outstanding) < self.window:
                    i, fields = queue.popleft()
                    if i in failed:
                        continue  # a part was refused: the rest would be wasted
                    pdu = smpplib.smpp.make_pdu("submit_sm", client=client, **fields)
                    client.send_pdu(pdu)
                    outstanding[pdu.sequence] = i
                if not outstanding:
                    break
                answer = client.read_pdu()
                self._last_io = time.monotonic()
                if answer.command not in ("submit_sm_resp", "generic_nack"):
                    self._handle_other(client, answer)
                    continue
                i = outstanding.pop(answer.sequence, -1)
                if i < 0:
                    continue
                if answer.status != C.SMPP_ESME_ROK:
                    refusal = _status_error(answer.status, messages[i])
                    failed.setdefault(i, refusal)
                    if isinstance(refusal, ThrottledError):
                        # Submit nothing more into an SMSC that said "too fast".
                        for j, _fields in queue:
                            failed.setdefault(j, unsent(refusal))
                        queue.clear()
                else:
                    left[i] -= 1
                    message_ids[i].append(_text(getattr(answer, "message_id", b"")))
        except TimeoutError:
            self._fail_rest(
                left, failed, TimeoutError(f"SMSC did not answer in {self.timeout:g} s")
            )
            self._drop("no answer in time")
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as exc:
            lost = ConnectionError(f"SMPP session to {self.host}:{self.port} failed: {exc}")
            self._fail_rest(left, failed, lost)
            self._drop(str(lost))
        results: list[BaseException | None] = []
        for i, message in enumerate(messages):
            error = failed.get(i)
            if error is None:
                log.info(
                    "SMS %s -> %s submitted (ref %s, message id %s)",
                    message.sender,
                    message.to,
                    message.reference,
                    ",".join(message_ids[i]),
                )
            results.append(error)
        return results

    @staticmethod
    def _fail_rest(
        left: collections.Counter[int], failed: dict[int, BaseException], error: BaseException
    ) -> None:
        for i, count in left.items():
            if count > 0:
                failed.setdefault(i, error)

    def close(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.unbind()
            except Exception as exc:  # closing anyway
                log.debug("unbind failed: %s", exc)
            _close(client)


def _status_error(status: int, message: SmsMessage) -> BaseException:
    text = f"SMSC refused the SMS to {message.to}: {describe_status(status)}"
    if status in PERMANENT_STATUSES:
        return RejectedError(text)
    if status in THROTTLING_STATUSES:
        return ThrottledError(text)
    return SmppStatusError(text)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value or "")


def _close(client: Any) -> None:
    try:
        client.disconnect()
    except Exception as exc:  # the socket may already be gone
        log.debug("disconnect failed: %s", exc)
