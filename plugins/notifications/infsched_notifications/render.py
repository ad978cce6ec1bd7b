"""Rendering a notification's subject and bodies from its template data.

``$name`` placeholders (string.Template): unlike str.format, they cannot
reach attributes of the values, so template data cannot leak internals.
A placeholder with no value is left as written rather than failing the job.
"""

from __future__ import annotations

from string import Template
from typing import Any

import attrs

from infsched_notifications.entity import NotificationEntity


@attrs.frozen
class Rendered:
    subject: str
    text: str
    html: str | None


def _fill(template: str, data: dict[str, Any]) -> str:
    return Template(template).safe_substitute({k: str(v) for k, v in data.items()})


def render(entity: NotificationEntity) -> Rendered:
    data = entity.template_data
    return Rendered(
        subject=_fill(entity.subject or "", data),
        text=_fill(entity.body_text, data),
        html=_fill(entity.body_html, data) if entity.body_html is not None else None,
    )
