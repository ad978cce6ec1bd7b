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


# -- bytes on the wire (SMPP): the gateway gets each part ready to send --

#: The GSM 7-bit code of each extension character (sent after the 0x1B escape).
_EXTENSION_CODES = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_BASIC_CODES = {ch: code for code, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}

#: SMPP data_coding: 0 is the SMSC's default alphabet (GSM 03.38), 8 is UCS-2.
DATA_CODING = {Coding.GSM7: 0x00, Coding.UCS2: 0x08}
#: esm_class bit saying short_message starts with a user data header.
ESM_CLASS_UDHI = 0x40


def gsm7_septets(text: str) -> bytes:
    """GSM 03.38 codes, one septet per octet (unpacked, as SMPP carries them)."""
    out = bytearray()
    for ch in text:
        if ch in _EXTENSION_CODES:
            out += bytes((0x1B, _EXTENSION_CODES[ch]))
        else:
            out.append(_BASIC_CODES[ch])
    return bytes(out)


def part_payload(part: str, coding: Coding) -> bytes:
    return gsm7_septets(part) if coding is Coding.GSM7 else part.encode("utf-16-be")


def concatenation_header(reference: int, total: int, number: int) -> bytes:
    """The 6-octet user data header of part `number` (from 1) of `total`: IEI 0x00, 8-bit ref."""
    if not 0 <= reference <= 0xFF or not 1 <= number <= total <= 0xFF:
        raise ValueError(f"bad concatenation header: ref {reference}, part {number}/{total}")
    return bytes((0x05, 0x00, 0x03, reference, total, number))


def wire_parts(encoded: Encoded, reference: int) -> list[bytes]:
    """Each part's short_message: a UDH before every part when there are several."""
    if encoded.count == 1:
        return [part_payload(encoded.parts[0], encoded.coding)]
    return [
        concatenation_header(reference, encoded.count, i) + part_payload(part, encoded.coding)
        for i, part in enumerate(encoded.parts, start=1)
    ]
