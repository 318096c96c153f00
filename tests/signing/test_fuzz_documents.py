"""Fuzz tests for the canonical JSON, list and trust root parsers (STYLE.md §9)."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.canonical import canonical_json, parse_canonical
from signing.errors import FormatError
from signing.listdoc import ListDocument, parse_list
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot, parse_trust_root
from tests.signing.fuzzhelpers import (
    ANY_CHAR,
    DAYS,
    FUZZ,
    HOURS,
    KEY,
    MONTHS,
    SIGNATURE,
    TRUST,
    YEARS,
    check_public_key,
    check_signature,
    refused,
)

OTHER = SecretKey(bytes.fromhex("0102030405060708"), bytes(range(32, 64)))


# --- canonical JSON documents -------------------------------------------------------------


class Raw(str):
    """A JSON token written verbatim, for numbers Python cannot hold (1e400) and the like."""


RAW_TOKENS = st.sampled_from(
    ["1e400", "-1e400", "1E999", "1e-400", "-0", "-0.0", "1.0", "1e5", "01", "1.", ".5"]
    + ["NaN", "Infinity", "-Infinity", "1" * 4400, "true ", "nul", '"\\ud800"', '"\\udc00x"']
).map(Raw)
INTERESTING_STRINGS = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "２０２６-01-01T00:00:00Z",
        "2026-01-01T00:00:00+00:00",
        "kopir-list/1",
        "kopir-trust/1",
        "0" * 64,
        "g" * 64,
        "00" * 16,
        "00 11",
        KEY.public_key.line,
        KEY.public_key.line + "\n",
        KEY.public_key.text(),
        OTHER.public_key.line,
        "root",
        "lists",
        "links",
        "log",
        "",
    ]
)
UNICODE_DIGITS = st.characters(categories=["Nd"])
TIMES = st.one_of(
    INTERESTING_STRINGS,
    st.tuples(YEARS, MONTHS, DAYS, HOURS).map(
        lambda t: "{:04d}-{:02d}-{:02d}T{:02d}:00:00Z".format(*t)
    ),
    st.from_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", fullmatch=True),
    st.text(UNICODE_DIGITS, min_size=4, max_size=4).map(lambda y: y + "-01-01T00:00:00Z"),
)
TRICKY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "key": st.sampled_from(
        [
            KEY.public_key.line + "\n",
            KEY.public_key.text(),
            KEY.public_key.text().rstrip("\n"),
            " " + KEY.public_key.line,
            OTHER.public_key.line,
            KEY.public_key.line.rstrip("="),
        ]
    ),
    "previous": st.sampled_from(["g" * 64, "AB" * 32, "0" * 63, " " * 64, "٠" * 64])
    | st.text(string.hexdigits + "xg", min_size=64, max_size=64),
    "secret": st.sampled_from(["", "00 11", "ABCD", "0" * 33, "0x00", "\u0660\u0660"]),
    "port": st.sampled_from([0, 65536, -1, 1.0, True, "443"]),
    "ports_tried": st.lists(st.sampled_from([0, -1, 65536, 10**20, True, 443]), max_size=3),
    "version": st.sampled_from([0, -1, 1.0, True, 2**63, 10**30, "1"]),
    "roles": st.lists(st.sampled_from(["root", "lists", "links", "log", "x"]), max_size=5),
    "threshold": st.dictionaries(
        st.sampled_from(["root", "lists", "links", "log", "x"]),
        st.sampled_from([0, 1, 2, 3, True, 1.0, None]),
    ),
    "rtt_ms": st.sampled_from([-1, 0, 1e308, -0.0, True, Raw("1e400"), Raw("-1e999")]),
    "name": st.sampled_from(["", "k", "old", " ", "\u212a"]),
}
for _time_field in ("expires", "issued", "last_ok", "revoked"):
    TRICKY_FIELDS[_time_field] = TIMES
FIELD_NAMES = st.sampled_from(
    ["format", "version", "expires", "issued", "previous", "proxies", "publisher", "keys"]
    + ["threshold", "key", "name", "roles", "revoked", "port", "secret", "tags", "type"]
    + ["root", "lists", "links", "log", "domain", "last_ok", "ports_tried", "rtt_ms", "server"]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-2, 70000),
    st.floats(),
    st.text(ANY_CHAR, max_size=12),
    INTERESTING_STRINGS,
    RAW_TOKENS,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(FIELD_NAMES | st.text(ANY_CHAR, max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)


def render(value: Any, ascii_only: bool = False, sort: bool = True) -> str:
    """JSON text in canonical layout, where ``Raw`` tokens go in verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = sorted(value.items()) if sort else list(value.items())
        body = ",".join(f"{render(k, ascii_only)}:{render(v, ascii_only, sort)}" for k, v in items)
        return "{" + body + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, ascii_only, sort) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


@st.composite
def rendered(draw: st.DrawFn, value: Any) -> bytes:
    text = render(value, ascii_only=draw(st.booleans()), sort=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


ENTRY = {
    "domain": "example.com",
    "last_ok": None,
    "port": 443,
    "ports_tried": [443],
    "rtt_ms": 12.5,
    "secret": "00" * 16,
    "server": "relay.example",
    "tags": ["a"],
    "type": "ee",
}
LIST_DATA = ListDocument(
    "pub", 1, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", (ENTRY,), None
).encode()
LIST_DATA_2 = ListDocument(
    "pub", 7, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", (ENTRY, ENTRY), "ab" * 32
).encode()
TRUST_DATA = TRUST.encode()
TRUST_DATA_2 = TrustRoot(
    3,
    "2099-01-01T00:00:00Z",
    (
        TrustKey("k", KEY.public_key, frozenset({"root", "lists", "links", "log"})),
        TrustKey("old", OTHER.public_key, frozenset({"lists"}), "2026-06-01T00:00:00Z"),
    ),
    {"root": 1, "lists": 2, "links": 1, "log": 1},
).encode()
DOCUMENTS = [LIST_DATA, LIST_DATA_2, TRUST_DATA, TRUST_DATA_2]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*path, i))
    return found


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _tricky_paths(obj: Any) -> list[tuple[Any, ...]]:
    return [p for p in _paths(obj) if p and p[-1] in TRICKY_FIELDS]


def _json_op(draw: st.DrawFn, obj: Any) -> Any:
    """Replace, delete or add one value somewhere in a decoded document."""
    tricky = _tricky_paths(obj)
    use_tricky = draw(st.booleans())
    if tricky and use_tricky:
        path = draw(st.sampled_from(tricky))
        _set(obj, path, draw(TRICKY_FIELDS[path[-1]]))
        return obj
    path = draw(st.sampled_from(_paths(obj)))
    if not path:
        return draw(JSON_VALUES) if draw(st.integers(0, 9)) == 0 else obj
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    op = draw(st.integers(0, 2))
    if op == 0:
        del parent[path[-1]]
    elif op == 1 and isinstance(parent, dict):
        parent[draw(FIELD_NAMES | st.text(ANY_CHAR, max_size=6))] = draw(JSON_VALUES)
    elif op == 1:
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return obj


def _canonical_bytes(obj: Any) -> bytes:
    """Canonical layout of an object that may hold raw tokens or lone surrogates."""
    return render(obj).encode("utf-8", "surrogatepass")


def _bytes_op(draw: st.DrawFn, data: bytes) -> bytes:
    pos = draw(st.integers(0, len(data)))
    op = draw(st.integers(0, 4))
    if op == 0:
        return data[:pos] + draw(st.binary(min_size=1, max_size=3)) + data[pos:]
    if op == 1:
        return data[:pos] + data[pos + draw(st.integers(1, 4)) :]
    if op == 2:
        return (
            data[:pos]
            + bytes([draw(st.sampled_from(b' \n"\\{}[],:0123456789e.-'))])
            + data[pos + 1 :]
        )
    if op == 3:  # splice in a copy of another part (duplicate keys, entries...)
        lo = draw(st.integers(0, len(data)))
        hi = draw(st.integers(lo, min(len(data), lo + 80)))
        return data[:pos] + data[lo:hi] + data[pos:]
    return data[:pos]


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(DOCUMENTS))
    if draw(st.booleans()):
        obj = json.loads(data)
        for _ in range(draw(st.integers(1, 3))):
            obj = _json_op(draw, obj)
        return _canonical_bytes(obj) if draw(st.integers(0, 3)) else draw(rendered(obj))
    for _ in range(draw(st.integers(1, 3))):
        data = _bytes_op(draw, data)
    return data


def check_canonical(data: bytes) -> None:
    obj = refused(FormatError, lambda: parse_canonical(data, "x"))
    if obj is None:
        return
    assert isinstance(obj, dict)
    assert canonical_json(obj) == data
    assert json.loads(data) == obj


def _ascii_times(*times: str | None) -> None:
    for t in times:
        assert t is None or t.isascii(), f"non-ASCII time {t!r} accepted"


def check_list(data: bytes) -> None:
    doc = refused(FormatError, lambda: parse_list(data))
    if doc is None:
        return
    assert doc.encode() == data
    assert doc.version >= 1
    _ascii_times(doc.issued, doc.expires, *(p["last_ok"] for p in doc.proxies))
    if doc.previous is not None:
        assert len(doc.previous) == 64 and set(doc.previous) <= set("0123456789abcdef")


def check_trust(data: bytes) -> None:
    root = refused(FormatError, lambda: parse_trust_root(data))
    if root is None:
        return
    assert root.encode() == data
    assert root.version >= 1 and root.keys
    _ascii_times(root.expires, *(k.revoked for k in root.keys))


DOC_CHECKS = pytest.mark.parametrize(
    "check", [check_canonical, check_list, check_trust], ids=["canonical", "list", "trust"]
)


@DOC_CHECKS
@FUZZ
@given(data=st.binary(max_size=300))
def test_documents_random_bytes(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@FUZZ
@given(data=JSON_VALUES.flatmap(rendered))
def test_documents_random_json(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@settings(FUZZ, max_examples=400)
@given(data=mutated_documents())
def test_documents_mutations(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@FUZZ
@given(data=st.data())
def test_documents_with_one_tricky_field(
    check: Callable[[bytes], None], data: st.DataObject
) -> None:
    obj = json.loads(data.draw(st.sampled_from(DOCUMENTS), label="document"))
    path = data.draw(st.sampled_from(_tricky_paths(obj)), label="path")
    _set(obj, path, data.draw(TRICKY_FIELDS[path[-1]], label="value"))
    check(_canonical_bytes(obj))


def test_valid_documents_are_accepted() -> None:
    assert parse_list(LIST_DATA).encode() == LIST_DATA
    assert parse_list(LIST_DATA_2).encode() == LIST_DATA_2
    assert parse_trust_root(TRUST_DATA).encode() == TRUST_DATA
    assert parse_trust_root(TRUST_DATA_2).encode() == TRUST_DATA_2
    assert check_public_key(KEY.public_key.text()) == KEY.public_key
    assert check_signature(SIGNATURE.text()) == SIGNATURE


# --- regressions: minimal inputs the fuzzers found --------------------------------------
# Each pins a library bug that was open when this file was written (see the fuzz report).


@pytest.mark.parametrize(
    "data", [b'{"a":1e400}', b'{"a":-1e400}', b'{"a":"\\ud800"}', b'{"\\udc00":1}']
)
def test_canonical_refuses_values_it_cannot_re_encode(data: bytes) -> None:
    # json.loads gives inf or a lone surrogate; canonical_json then raises ValueError or
    # UnicodeEncodeError outside parse_canonical's try block.
    with pytest.raises(FormatError):
        parse_canonical(data, "x")


def test_list_with_out_of_range_number_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        parse_list(LIST_DATA.replace(b'"rtt_ms":12.5', b'"rtt_ms":1e400'))


@pytest.mark.parametrize("key", [KEY.public_key.line + "\n", KEY.public_key.text()])
def test_trust_root_key_must_be_the_bare_base64_line(key: str) -> None:
    # PublicKey.parse also reads whole key files, so the root parses but does not re-encode.
    data = TRUST_DATA.replace(json.dumps(KEY.public_key.line).encode(), json.dumps(key).encode())
    root = refused(FormatError, lambda: parse_trust_root(data))
    assert root is None or root.encode() == data


@pytest.mark.parametrize("when", ["２０９９-01-01T00:00:00Z", "٢٠٩٩-01-01T00:00:00Z"])
def test_document_times_must_be_ascii(when: str) -> None:
    # The RFC 3339 pattern uses \d, which matches any Unicode decimal digit.
    for parse, data in ((parse_list, LIST_DATA), (parse_trust_root, TRUST_DATA)):
        with pytest.raises(FormatError):
            parse(data.replace(b"2099-01-01T00:00:00Z", when.encode()))


def test_list_previous_must_be_a_hex_digest() -> None:
    data = LIST_DATA.replace(b'"previous":null', b'"previous":"' + b"g" * 64 + b'"')
    with pytest.raises(FormatError):
        parse_list(data)
