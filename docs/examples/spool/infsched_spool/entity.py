"""SpoolEntity: a JSON document to drop into a topic's directory at a given time."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import attrs

from infsched import column, id_field, sharding_key

_TOPIC = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@attrs.define(kw_only=True)
class SpoolEntity:
    """A document due at `due_at`, written to ``<directory>/<topic>/``."""

    id: int | None = id_field()
    due_at: datetime = sharding_key()
    #: The subdirectory it goes to: lower-case letters, digits, ``-`` and ``_``.
    topic: str = column(length=64, index=True)
    payload: dict[str, Any] = column(factory=dict)

    def __attrs_post_init__(self) -> None:
        # Checked when the entity is created, so a bad topic fails in the business's
        # code, not hours later when the job is due.
        if not _TOPIC.match(self.topic):
            raise ValueError(f"SpoolEntity.topic: {self.topic!r} is not a valid topic name")
