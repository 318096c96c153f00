"""GSM-7 / UCS-2 encoding and segmentation: hand-checked counts and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.errors import EncodingError
from smsgw.segment import ESC, GSM_BASIC, decode, segment

LINK = (
    "https://t.me/proxy?server=relay1.example.org&port=443&secret=ee0123456789abcdef0123456789"
    "abcdef6578616d706c652e636f6d&kid=Rz8xPc6pVCY&exp=2026112511&sig=" + "A" * 86
)

# (text, encoding, parts, units): counted by hand from TS 23.038's tables and limits.
CASES = [
    ("Hello", "gsm7", 1, 5),
    ("a" * 160, "gsm7", 1, 160),
    ("a" * 161, "gsm7", 2, 161),
    ("a" * 306, "gsm7", 2, 306),  # 2 x 153
    ("a" * 307, "gsm7", 3, 307),
    ("a" * 459, "gsm7", 3, 459),  # 3 x 153
    ("€" * 80, "gsm7", 1, 160),  # extension characters cost two septets
    ("€" * 81, "gsm7", 2, 162),
    ("{}[]~|^\\", "gsm7", 1, 16),
    ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", "gsm7", 1, 42),
    ("`", "ucs2", 1, 1),  # the backtick is not GSM-7
    ("я" * 70, "ucs2", 1, 70),
    ("я" * 71, "ucs2", 2, 71),
    ("я" * 134, "ucs2", 2, 134),  # 2 x 67
    ("я" * 135, "ucs2", 3, 135),
    ("Сәлем! Қосылыңыз: ", "ucs2", 1, 18),
    ("Привет", "ucs2", 1, 6),
    ("😀" * 35, "ucs2", 1, 70),  # outside the BMP: two units each
    ("😀" * 36, "ucs2", 2, 72),
    (LINK, "gsm7", 2, len(LINK)),
    ("Прокси: " + LINK, "ucs2", 4, 8 + len(LINK)),
]


@pytest.mark.parametrize(("text", "encoding", "parts", "units"), CASES)
def test_hand_checked_counts(text: str, encoding: str, parts: int, units: int) -> None:
    result = segment(text)
    assert (result.encoding, result.count, result.units) == (encoding, parts, units)
    assert "".join(decode(p) for p in result.parts) == text


def test_a_typical_short_link_is_one_gsm7_segment_and_cyrillic_triples_it() -> None:
    link = (
        "https://t.me/proxy?server=r1.kz&port=443&secret=ee" + "ab" * 16 + "6578616d706c652e636f6d"
    )
    link += "&kid=Rz8xPc6pVCY&exp=2026112511"
    assert len(link) <= 160 and segment(link).count == 1
    assert segment("Сәлем " + link).count >= 2


def test_escape_pair_is_never_split() -> None:
    result = segment("a" * 152 + "€" + "b" * 10)
    first = result.parts[0]
    assert first.body[-1] != ESC
    assert decode(first) == "a" * 152 and decode(result.parts[1]).startswith("€")


def test_surrogate_pair_is_never_split() -> None:
    result = segment("я" * 66 + "😀" + "я" * 10)  # 78 units: two parts
    assert decode(result.parts[0]) == "я" * 66  # 66 + 2 would exceed 67
    assert decode(result.parts[1]) == "😀" + "я" * 10


def test_udh_and_smpp_fields() -> None:
    result = segment("a" * 200, reference=0x42)
    assert [p.udh for p in result.parts] == [
        bytes.fromhex("050003420201"),
        bytes.fromhex("050003420202"),
    ]
    assert all(p.esm_class == 0x40 for p in result.parts)
    assert result.data_coding == 0
    assert segment("я").data_coding == 8 and segment("я").parts[0].udh == b""
    assert segment("x").parts[0].esm_class == 0


def test_forcing_characters_are_reported_once_in_order() -> None:
    assert segment("Hi Қайрат, how are you? Қ").forcing == ("Қ", "а", "й", "р", "т")
    assert segment("plain").forcing == ()


def test_force_options_and_errors() -> None:
    assert segment("plain", force="ucs2").encoding == "ucs2"
    with pytest.raises(EncodingError, match="need UCS-2"):
        segment("Сәлем", force="gsm7")
    with pytest.raises(EncodingError):
        segment("")
    with pytest.raises(EncodingError, match="at most 255"):
        segment("a" * (153 * 255 + 1))
    with pytest.raises(EncodingError, match="surrogate"):
        segment("a\ud800b")


GSM_TEXT = st.text(
    st.sampled_from(sorted(set(GSM_BASIC) | set("^{}\\[~]|€\f"))), min_size=1, max_size=2000
)
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=1000)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(GSM_TEXT | ANY_TEXT)
def test_parts_join_back_and_fit_140_octets(text: str) -> None:
    result = segment(text)
    assert "".join(decode(p) for p in result.parts) == text
    assert all(p.air_octets <= 140 for p in result.parts)
    limit = (160, 153) if result.encoding == "gsm7" else (70, 67)
    assert all(p.units <= (limit[0] if result.count == 1 else limit[1]) for p in result.parts)
    if result.count > 1:
        refs = {p.udh[3] for p in result.parts}
        assert len(refs) == 1
        assert [p.udh[4:] for p in result.parts] == [
            bytes((result.count, i + 1)) for i in range(result.count)
        ]
    assert (result.encoding == "gsm7") == (result.forcing == ())
