"""NotificationEntity: an email or webhook call to make at a given time."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any

import attrs

from infsched.entities import column, id_field, sharding_key

# Deliberately loose: the SMTP server is the judge; this catches obvious mistakes early.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Channel(enum.Enum):
    EMAIL = "email"
    WEBHOOK = "webhook"


@attrs.define(kw_only=True)
class NotificationEntity:
    """A notification due at `send_at`."""

    id: int | None = id_field()
    send_at: datetime = sharding_key()
    channel: Channel = column()
    #: An email address, or the webhook's URL.
    recipient: str = column(length=512, index=True)
    subject: str | None = column(length=255, default=None)
    body_text: str = column()
    body_html: str | None = column(default=None)
    #: Values for ``$name`` placeholders in subject and bodies (string.Template).
    template_data: dict[str, Any] = column(factory=dict)
    priority: int = column(default=0)

    def __attrs_post_init__(self) -> None:
        if self.channel is Channel.EMAIL and not _EMAIL.match(self.recipient):
            raise ValueError(
                f"NotificationEntity.recipient: {self.recipient!r} is not an email address"
            )
        if self.channel is Channel.WEBHOOK and not self.recipient.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"NotificationEntity.recipient: {self.recipient!r} is not an http(s) URL"
            )
