"""Phone numbers out of text that is logged or stored.

Providers and phones echo the destination number in their errors ("The 'To' number
+7 701 234-56-78 is not valid"), and kopir never writes a subscriber's number in clear, so every
such text goes through ``scrub_numbers`` first. The one rule for what a number looks like lives
here; ``smsgw.http.scrub`` and ``smsgw.queuemodel.scrub_error`` add only their length limits.
"""

from __future__ import annotations

import re

_SEP = "[\\s.\\-\u2010-\u2015]"
"""One character between a number's digits: white space, a dot, a hyphen or dash."""
_AREA = rf"\(\d{{1,5}}\){_SEP}{{0,3}}"
_NUMBER = rf"\+?(?:{_AREA})?\d(?:{_SEP}{{0,3}}(?:{_AREA})?\d)*"
"""Digits with up to three separators between them (``+7 - 701``), and area codes in
parentheses anywhere but at the end (``+7 (701) 234-56-78``, ``(555) 123-4567``,
``+49 (0)30 1234567``), so a status in parentheses after a number (``+77012345678 (21211)``)
stays readable."""
_DATE = (
    r"(?<!\d)(?:\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|[12]\d|3[01])\.(?:0[1-9]|1[0-2])\.\d{4})"
    rf"(?:[T ]\d\d:\d\d(?::\d\d)?)?(?!{_SEP}?[\d(])"
)
"""An ISO (``2024-06-22``) or dotted (``22.06.2024``) date, with a time perhaps: kept."""
_DIGITS = re.compile(f"(?P<date>{_DATE})|{_NUMBER}")
MIN_DIGITS = 7


def _mask(match: re.Match[str]) -> str:
    found = match.group()
    if match.group("date") or sum(c.isdigit() for c in found) < MIN_DIGITS:
        return found
    return "[number]"


def scrub_numbers(text: str) -> str:
    """``text`` with every phone number in it (a run of 7 or more digits, perhaps with up to
    three spaces, dots or dashes between them and area codes in parentheses) replaced by
    ``[number]``, the whole of it; dates are kept."""
    return _DIGITS.sub(_mask, text)
