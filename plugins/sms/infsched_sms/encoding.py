"""How a text travels as SMS: GSM 7-bit or UCS-2, and into how many parts.

GSM 03.38: a text whose every character is in the GSM 7-bit default
alphabet (or its extension table, which costs two septets: an escape and
the character) goes as GSM-7, 160 septets in one SMS or 153 per part when
concatenated (the 6-byte user data header takes the rest).  Anything else
goes as UCS-2 (UTF-16): 70 units in one SMS, 67 per part.  A part never
splits an escape sequence or a surrogate pair.
"""

from __future__ import annotations

import enum

import attrs

# The GSM 03.38 default alphabet, in code order.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters reached through the escape (0x1B): each costs two septets.
GSM7_EXTENSION = "\f^{}\\[~]|€"

_BASIC = frozenset(GSM7_BASIC) - {"\x1b"}
_EXTENSION = frozenset(GSM7_EXTENSION)

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


class Coding(enum.Enum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@attrs.frozen
class Encoded:
    """A text's coding and its parts, as the SMSC will carry them."""

    coding: Coding
    parts: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.parts)


def fits_gsm7(text: str) -> bool:
    return all(ch in _BASIC or ch in _EXTENSION for ch in text)


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in _EXTENSION else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _parts(text: str, single: int, per_part: int, gsm7: bool) -> tuple[str, ...]:
    cost = _gsm7_cost if gsm7 else _ucs2_cost
    if sum(cost(ch) for ch in text) <= single:
        return (text,)
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        c = cost(ch)
        if used + c > per_part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += c
    if current:
        parts.append("".join(current))
    return tuple(parts)


def encode(text: str, coding: str = "auto") -> Encoded:
    """Choose the coding (``auto``: GSM-7 when it fits) and split into parts.

    Asking for ``gsm7`` with characters outside the GSM alphabet is an error
    rather than a silent substitution: the recipient would read something else.
    """
    if coding not in {"auto", "gsm7", "ucs2"}:
        raise ValueError(f"coding {coding!r} is not one of auto, gsm7, ucs2")
    gsm7 = fits_gsm7(text)
    if coding == "gsm7" and not gsm7:
        bad = sorted({ch for ch in text if ch not in _BASIC and ch not in _EXTENSION})
        raise ValueError(f"text has characters outside the GSM 7-bit alphabet: {''.join(bad)!r}")
    if coding == "ucs2" or not gsm7:
        return Encoded(Coding.UCS2, _parts(text, UCS2_SINGLE, UCS2_PART, gsm7=False))
    return Encoded(Coding.GSM7, _parts(text, GSM7_SINGLE, GSM7_PART, gsm7=True))
