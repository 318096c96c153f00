"""Strict JSON for the small state files kopir keeps on disk (``log.json``, ``lists.json``...).

``json.loads`` accepts more than JSON: ``NaN``, ``Infinity`` and ``-Infinity``, numbers such
as ``1e400`` that become infinite floats, duplicate keys (the last one wins) and strings with
lone surrogates that no file name or UTF-8 text can hold; and nesting deep enough raises
``RecursionError``. A state file is read back by code that expects plain values, so each of
those turns into an ``OverflowError``, a ``TypeError`` or a crash far from the file.

:func:`loads` refuses all of it with a ``FormatError`` whose message says what is wrong (the
caller names the file). Unlike ``signing.canonical.parse_canonical`` it does not demand the
canonical byte form: a state file is not signed, and one saved again by an editor (with a
final newline, say) is still the same state. Callers check the types and keys they expect.
"""

from __future__ import annotations

import json
import re
from typing import Any

from signing.canonical import no_constants, no_duplicate_keys
from signing.errors import FormatError

MAX_DEPTH = 32
"""Arrays and objects nested deeper than this are refused (state files nest two levels)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise FormatError(f"the number {text[:40]} is too large")
    return value


def loads(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly; raise ``FormatError`` (a ``SigningError``) otherwise.

    Refused: bytes that are not UTF-8, text that is not JSON, ``NaN``/``Infinity``, numbers
    too large for a float or with more digits than Python converts, duplicate keys, strings
    with lone surrogates, and nesting deeper than :data:`MAX_DEPTH`.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("not UTF-8") from None
    try:
        obj = json.loads(
            text,
            object_pairs_hook=no_duplicate_keys,
            parse_constant=no_constants,
            parse_float=_finite,
        )
    except FormatError:
        raise
    except RecursionError:
        raise FormatError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and int() of a number with too many digits
        raise FormatError(f"not valid JSON ({_one_line(exc)})") from None
    _check_values(obj)
    return obj


def loads_object(data: bytes) -> dict[str, Any]:
    """:func:`loads`, and the value must be a JSON object."""
    obj = loads(data)
    if not isinstance(obj, dict):
        raise FormatError(f"expected a JSON object, got {_kind(obj)}")
    return obj


def _check_values(obj: Any) -> None:
    """Depth and strings, walked without recursion (so any depth is safe to look at)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise FormatError("a string holds a lone surrogate (not valid Unicode)")
        elif isinstance(value, list | dict):
            if depth > MAX_DEPTH:
                raise FormatError(f"nested deeper than {MAX_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


__all__ = ["MAX_DEPTH", "loads", "loads_object"]
