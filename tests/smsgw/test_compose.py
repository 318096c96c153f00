"""Link messages stay GSM-7 within two parts; instructions go separately, in the right language."""

from __future__ import annotations

import pytest

from smsgw.compose import INSTRUCTIONS, instruction_message, link_message
from smsgw.errors import EncodingError
from smsgw.segment import decode

SIGNED = (
    "https://t.me/proxy?server=relay1.example.org&port=443&secret=ee0123456789abcdef0123456789"
    "abcdef6578616d706c652e636f6d&kid=Rz8xPc6pVCY&exp=2026112511&sig=" + "A" * 86
)


def test_a_signed_link_fits_two_gsm7_parts() -> None:
    message = link_message(SIGNED)
    assert message.encoding == "gsm7" and message.count == 2
    assert "".join(decode(p) for p in message.parts) == "Telegram proxy: " + SIGNED


def test_too_long_or_non_gsm7_links_are_refused_clearly() -> None:
    with pytest.raises(EncodingError, match="at most 2 are allowed"):
        link_message(SIGNED.replace("relay1.example.org", "r" * 200 + ".example.org"))
    with pytest.raises(EncodingError, match="need UCS-2"):
        link_message(SIGNED + "&х=1")


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
def test_instructions_in_each_language(language: str) -> None:
    message = instruction_message(language)
    assert "".join(decode(p) for p in message.parts) == INSTRUCTIONS[language]  # type: ignore[index]
    assert message.encoding == ("gsm7" if language == "en" else "ucs2")
    assert "http" not in INSTRUCTIONS[language]  # type: ignore[index]


def test_kazakh_instructions_use_kazakh_letters() -> None:
    assert set("әғқңөұүһі") & set(INSTRUCTIONS["kk"])
    with pytest.raises(EncodingError):
        instruction_message("de")
