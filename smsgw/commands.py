"""Inbound SMS commands: PROXY/ПРОКСИ, STOP/СТОП, HELP/КӨМЕК/ПОМОЩЬ. Sans-IO.

Theory of operation
-------------------
A citizen may text a command to the gateway (where the backend receives SMS). ``parse`` reads
the first word, case-insensitively, in Latin, Russian or Kazakh, and guesses the reply
language from the word used. ``CommandHandler.handle`` applies it: STOP deletes the subscriber
at once (nothing else is kept), PROXY asks the caller for a fresh set of links (the text it
returns is the reply; None means the links will come separately, and the reply says so), HELP
or any unknown text gets the help text, in the sender's language: the command word's, else the
subscriber's, else Russian. Replies are rate-limited per sender (keyed reference, never
the number), so a flood of inbound SMS cannot make the gateway spend the operator's SMS.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Command = Literal["proxy", "stop", "help"]
Language = Literal["kk", "ru", "en"]

_WORDS: dict[str, tuple[Command, Language | None]] = {
    "proxy": ("proxy", "en"),
    "прокси": ("proxy", "ru"),
    "stop": ("stop", "en"),
    "стоп": ("stop", "ru"),
    "help": ("help", "en"),
    "помощь": ("help", "ru"),
    "көмек": ("help", "kk"),
    "komek": ("help", "kk"),
}

REPLIES: dict[Command, dict[Language, str]] = {
    "help": {
        "kk": "ПРОКСИ деп жазыңыз: жаңа сілтеме келеді. СТОП деп жазсаңыз, нөміріңіз өшіріледі.",
        "ru": "Напишите ПРОКСИ, чтобы получить новые ссылки. СТОП удалит ваш номер.",
        "en": "Send PROXY for new links. Send STOP to remove your number.",
    },
    "stop": {
        "kk": "Нөміріңіз өшірілді. Енді хабар келмейді.",
        "ru": "Ваш номер удалён. Сообщений больше не будет.",
        "en": "Your number was removed. No more messages will come.",
    },
    "proxy": {
        "kk": "Жаңа сілтемелер жіберіледі.",
        "ru": "Новые ссылки будут отправлены.",
        "en": "New links are on their way.",
    },
}


@dataclass(frozen=True)
class Parsed:
    command: Command
    language: Language | None
    """The language of the word used (None when the word does not tell, e.g. unknown text)."""
    known: bool
    """False when the text was not a command (the reply is then the help text)."""


def parse(text: str) -> Parsed:
    """The command in an inbound SMS; unknown text is a request for help."""
    words = text.strip().split(maxsplit=1)
    word = words[0].casefold().strip(".!?,;:") if words else ""
    found = _WORDS.get(word)
    if found is None:
        return Parsed("help", _guess_language(text), known=False)
    return Parsed(found[0], found[1], known=True)


def _guess_language(text: str) -> Language | None:
    if any(ch in "әғқңөұүһіӘҒҚҢӨҰҮҺІ" for ch in text):
        return "kk"
    if any("\u0400" <= ch <= "\u04ff" for ch in text):
        return "ru"
    return None


class RateLimit:
    """At most one reply per ``interval`` seconds per sender ref; remembers ``size`` senders."""

    def __init__(self, interval: float = 300.0, size: int = 100_000) -> None:
        self.interval, self.size = interval, size
        self._last: OrderedDict[str, float] = OrderedDict()

    def allow(self, ref: str, now: float) -> bool:
        last = self._last.get(ref)
        if last is not None and now - last < self.interval:
            return False
        self._last[ref] = now
        self._last.move_to_end(ref)
        if len(self._last) > self.size:
            self._last.popitem(last=False)
        return True


@dataclass(frozen=True)
class Outcome:
    command: Command
    reply: str | None
    """The reply text, or None when rate-limited."""
    removed: bool = False


class CommandHandler:
    """Applies inbound commands.

    ``remove(number) -> bool`` deletes a subscriber; ``language_of(number)`` gives a known
    subscriber's language (or None); ``request_links(number, language)`` returns the text to
    send in reply to PROXY (fresh links), or None when they will come another way;
    ``ref(number)`` is the keyed reference used for rate limiting.
    """

    def __init__(
        self,
        remove: Callable[[str], bool],
        language_of: Callable[[str], str | None],
        request_links: Callable[[str, Language], str | None],
        ref: Callable[[str], str],
        limit: RateLimit | None = None,
    ) -> None:
        self.remove, self.language_of = remove, language_of
        self.request_links, self.ref = request_links, ref
        self.limit = limit or RateLimit()

    def handle(self, sender: str, text: str, now: float) -> Outcome:
        parsed = parse(text)
        language = _reply_language(parsed.language, self.language_of(sender))
        if parsed.command == "stop":  # always honoured, even when replies are rate-limited
            removed = self.remove(sender)
            reply = REPLIES["stop"][language] if self.limit.allow(self.ref(sender), now) else None
            return Outcome("stop", reply, removed)
        if not self.limit.allow(self.ref(sender), now):
            return Outcome(parsed.command, None)
        if parsed.command == "proxy":
            links = self.request_links(sender, language)
            return Outcome("proxy", links or REPLIES["proxy"][language])
        return Outcome(parsed.command, REPLIES[parsed.command][language])


def _reply_language(word: Language | None, known: str | None) -> Language:
    if word in ("kk", "ru"):
        return word
    if known in ("kk", "ru", "en"):
        return known  # type: ignore[return-value]
    return word or "ru"
