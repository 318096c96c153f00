"""Message composition: the link message (GSM-7, at most two parts) and the optional
instruction message in the subscriber's language (UCS-2 for Kazakh and Russian).

Why two messages: a single Cyrillic letter turns the whole text into UCS-2, which triples the
part count of a long link (PROTOCOLS.md "Measured lengths"). So the link travels alone in
GSM-7, and the words travel separately. Messages carry proxy data and how to use it, nothing
political: a phone that is searched shows only that.
"""

from __future__ import annotations

from typing import Literal

from smsgw.errors import EncodingError
from smsgw.segment import Segmentation, segment

Language = Literal["kk", "ru", "en"]
LANGUAGES: tuple[Language, ...] = ("kk", "ru", "en")
MAX_LINK_PARTS = 2

LINK_TEMPLATE = "Telegram proxy: {link}"

INSTRUCTIONS: dict[Language, str] = {
    "kk": (
        "Алдыңғы хабардағы сілтемені басыңыз: Telegram проксиді өзі қосады. "
        "Тек сенімді көзден келген сілтемелерді ашыңыз."
    ),
    "ru": (
        "Нажмите на ссылку из предыдущего сообщения: Telegram сам подключит прокси. "
        "Открывайте только ссылки из надёжного источника."
    ),
    "en": (
        "Tap the link in the previous message and Telegram adds the proxy. "
        "Only open links from a source you trust."
    ),
}


def link_message(link: str) -> Segmentation:
    """The link message, refused unless it is GSM-7 in at most two parts."""
    text = LINK_TEMPLATE.format(link=link.strip())
    result = segment(text, force="gsm7")
    if result.count > MAX_LINK_PARTS:
        raise EncodingError(
            f"the link message needs {result.count} SMS parts ({result.units} characters); "
            f"at most {MAX_LINK_PARTS} are allowed: use a shorter host name or secret"
        )
    return result


def instruction_message(language: str) -> Segmentation:
    """The instruction text in ``language`` (kk, ru or en)."""
    if language not in INSTRUCTIONS:
        raise EncodingError(f"no instructions in {language!r}; use kk, ru or en")
    return segment(INSTRUCTIONS[language])
