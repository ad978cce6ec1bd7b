"""GSM 7-bit or UCS-2, how texts split, and the bytes each part carries."""

from __future__ import annotations

import pytest

from infsched_sms.encoding import (
    Coding,
    concatenation_header,
    encode,
    gsm7_septets,
    wire_parts,
)


def test_gsm7_when_every_character_fits() -> None:
    encoded = encode("Hello [world] €5 {ok} ~^|\\")
    assert encoded.coding is Coding.GSM7
    assert encoded.count == 1


def test_ucs2_when_one_character_does_not() -> None:
    assert encode("Hello Привет").coding is Coding.UCS2
    assert encode("Hello 🙂").coding is Coding.UCS2


def test_forcing_gsm7_on_foreign_text_is_an_error_not_a_substitution() -> None:
    with pytest.raises(ValueError, match="outside the GSM 7-bit alphabet: 'П"):
        encode("Привет", "gsm7")


@pytest.mark.parametrize(
    ("text", "coding", "sizes"),
    [
        ("a" * 160, Coding.GSM7, [160]),
        ("a" * 161, Coding.GSM7, [153, 8]),
        ("a" * 306, Coding.GSM7, [153, 153]),
        ("Ж" * 70, Coding.UCS2, [70]),
        ("Ж" * 71, Coding.UCS2, [67, 4]),
    ],
)
def test_split_sizes(text: str, coding: Coding, sizes: list[int]) -> None:
    encoded = encode(text)
    assert encoded.coding is coding
    assert [len(p) for p in encoded.parts] == sizes
    assert "".join(encoded.parts) == text


def test_extension_characters_cost_two_septets_and_are_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10  # 164 septets: two parts, the € opening the second
    encoded = encode(text)
    assert [len(gsm7_septets(p)) for p in encoded.parts] == [152, 12]
    assert encoded.parts[1].startswith("€")


def test_surrogate_pairs_are_never_split() -> None:
    text = "x" * 66 + "🙂" + "y" * 10
    encoded = encode(text)
    assert encoded.parts[0] == "x" * 66
    assert encoded.parts[1].startswith("🙂")


def test_septets_use_gsm_codes_and_the_escape() -> None:
    assert gsm7_septets("@A€") == bytes([0x00, 0x41, 0x1B, 0x65])
    assert gsm7_septets("ü{") == bytes([0x7E, 0x1B, 0x28])


def test_wire_parts_carry_a_concatenation_header_each() -> None:
    parts = wire_parts(encode("Ж" * 100), reference=0x2A)
    assert [p[:6] for p in parts] == [bytes([5, 0, 3, 0x2A, 2, 1]), bytes([5, 0, 3, 0x2A, 2, 2])]
    assert parts[0][6:].decode("utf-16-be") == "Ж" * 67
    assert len(parts[0]) == 140
    assert wire_parts(encode("hi"), reference=1) == [b"hi"]


def test_concatenation_header_bounds() -> None:
    with pytest.raises(ValueError, match="bad concatenation header"):
        concatenation_header(256, 2, 1)
    with pytest.raises(ValueError, match="bad concatenation header"):
        concatenation_header(1, 2, 3)
