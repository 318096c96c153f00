"""Canonical JSON and RFC 3339 times, as used by list documents and trust roots.

Canonical JSON here means: UTF-8, keys sorted, no insignificant white space, no duplicate
keys, no floats that are NaN or infinite. A document is accepted only in its canonical form,
so the bytes that were signed are the only bytes that verify.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from signing.errors import FormatError

_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` that refuses a key given twice."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FormatError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def no_constants(name: str) -> Any:
    """``json.loads``'s ``parse_constant`` that refuses ``NaN`` and ``Infinity``."""
    raise FormatError(f"{name} is not allowed")


def parse_canonical(data: bytes, what: str) -> dict[str, Any]:
    """Parse a canonical JSON object; anything else raises ``FormatError``."""
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=no_constants)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what}: not UTF-8") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: expected a JSON object")
    try:
        canonical = canonical_json(obj)
    except (ValueError, UnicodeEncodeError) as exc:  # 1e400 -> inf, "\ud800" -> lone surrogate
        raise FormatError(f"{what}: holds a value JSON cannot carry ({exc})") from None
    if canonical != data:
        raise FormatError(f"{what}: not in canonical form (sorted keys, no spaces, UTF-8)")
    return obj


def rfc3339(ts: float) -> str:
    """A Unix time as ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, UTC)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object, what: str) -> float:
    """Parse the one RFC 3339 form we write; raise ``FormatError`` otherwise."""
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise FormatError(f"{what}: expected a UTC time like 2026-01-05T00:00:00Z, got {text!r}")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise FormatError(f"{what}: {text!r} is not a real date") from exc


def require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``obj[key]``, checked to be of ``kind`` (bool is never accepted as int)."""
    if key not in obj:
        raise FormatError(f"{what}: missing field {key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise FormatError(f"{what}: field {key!r} has the wrong type")
    if not isinstance(value, kinds):
        raise FormatError(f"{what}: field {key!r} has the wrong type")
    return value


def exact_keys(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise FormatError(f"{what}: unknown field {extra[0]!r}")
