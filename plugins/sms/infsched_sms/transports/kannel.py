"""The ``kannel`` transport: Kannel's HTTP sendsms interface (smsbox).

One GET per message to ``/cgi-bin/sendsms`` with the sendsms-user's
username and password, ``to``, ``from``, the text in UTF-8 (``charset``)
and ``coding`` 0 (GSM 7-bit) or 2 (UCS-2).  Kannel splits a long text
into concatenated parts itself, so the sendsms-user needs ``max-messages``
at least the number of parts (``infsched sms encode`` shows it) and
``concatenation = true``.

Kannel's sendsms has no client reference that it would deduplicate on;
the job key goes as ``ref`` in the ``dlr-url`` (when one is configured), so
delivery reports name the job.  ``validity`` is in minutes.

Kannel answers 503 ("Temporal failure, try again later") when its queue
is full or the sendsms-user is over its limit: a `ThrottledError` (with the
answer's ``Retry-After``, if any), so the job waits again without an
attempt counted, and the rest of the batch is not sent (httpcall.py).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence

from infsched_sms.encoding import Coding
from infsched_sms.message import SmsMessage
from infsched_sms.transports.base import send_each
from infsched_sms.transports.httpcall import request

log = logging.getLogger("infsched.sms.kannel")

#: Kannel's coding parameter: 0 = 7-bit (GSM), 2 = UCS-2.
KANNEL_CODING = {Coding.GSM7: 0, Coding.UCS2: 2}
#: Delivered, failed, buffered, submitted to the SMSC, rejected by the SMSC.
DEFAULT_DLR_MASK = 31


class KannelTransport:
    name = "kannel"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        dlr_url: str | None = None,
        dlr_mask: int = DEFAULT_DLR_MASK,
        smsc: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.username = username
        self.password = password
        self.dlr_url = dlr_url
        self.dlr_mask = dlr_mask
        self.smsc = smsc
        self.timeout = timeout

    def __repr__(self) -> str:  # never the password
        return f"KannelTransport(url={self.url!r}, username={self.username!r})"

    def params(self, message: SmsMessage) -> dict[str, str]:
        """The sendsms query parameters for `message`."""
        params = {
            "username": self.username,
            "password": self.password,
            "to": message.to,
            "from": message.sender,
            "text": message.text,
            "charset": "UTF-8",
            "coding": str(KANNEL_CODING[message.encoded.coding]),
        }
        if message.validity_minutes is not None:
            params["validity"] = str(message.validity_minutes)
        if message.delivery_report:
            params["dlr-mask"] = str(self.dlr_mask)
            if self.dlr_url:
                joiner = "&" if "?" in self.dlr_url else "?"
                ref = urllib.parse.quote(message.reference, safe=":.-_")
                params["dlr-url"] = f"{self.dlr_url}{joiner}ref={ref}"
        if self.smsc:
            params["smsc"] = self.smsc
        return params

    def send(self, message: SmsMessage) -> None:
        query = urllib.parse.urlencode(self.params(message))
        answer = request(
            "GET", f"{self.url}?{query}", timeout=self.timeout, gateway=f"kannel {self.url}"
        )
        log.info(
            "SMS %s -> %s (%d part%s, ref %s) accepted by kannel: %s",
            message.sender,
            message.to,
            message.encoded.count,
            "" if message.encoded.count == 1 else "s",
            message.reference,
            answer.body.strip(),
        )

    def send_many(self, messages: Sequence[SmsMessage]) -> list[BaseException | None]:
        return send_each(self.send, messages)

    def close(self) -> None:
        pass
