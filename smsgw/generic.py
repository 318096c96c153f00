"""The generic ``http`` backend: one configured HTTP request per SMS, built from templates.

Theory of operation
-------------------
An operator whose SMS provider is not built in describes its API in ``[sms.http]``: the
method, the URL, headers, a body template, the body type (``form`` or ``json``), the status
codes that mean success, and where the provider's message id sits in a JSON reply (a dotted
path such as ``messages.0.id``; numbers index lists).

Templates hold placeholders: ``{to}`` (E.164, with ``+``), ``{to_digits}`` (without it),
``{text}``, ``{id}`` (the queue's message id, for providers that take an idempotency key) and
``{encoding}`` (``gsm7`` or ``ucs2``). ``compile_template`` splits a template once, at start-up,
into literal pieces and placeholders; an unknown placeholder is a ``ProviderError`` naming it and
the ones that exist. Nothing is ever evaluated: rendering only inserts values, escaped for where
they go:

- in the URL, percent-encoded (``quote(safe="")``); never in the scheme, host or port, so a
  value can never choose where the request goes;
- in a form body, form-encoded (``quote_plus``);
- in a JSON body, as JSON: inside a string literal (``"text": "Code {text}"``) the escaped
  characters, elsewhere (``{"to": {to}}``) a whole quoted string. A JSON template is checked at
  start-up by rendering it with awkward values and parsing the result.

Every ``{name}`` whose name is made of ASCII letters, digits and ``_`` is a placeholder; other
braces (a JSON object's) are literal text.

Replies (``generic_result``, a plain function): a success status with a valid id is
``accepted``; 429 and 5xx are ``retry``, with ``Retry-After`` when the provider sends one and
otherwise the worker's backoff; 401 and 403 are ``failed`` with "bad credentials"; any other
status is ``failed`` with the start of the body, scrubbed of numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, quote_plus

from smsgw.backend import OutgoingSms, SendResult
from smsgw.http import (
    BAD_CREDENTIALS,
    PROVIDER_ID,
    HttpBackend,
    ProviderError,
    Request,
    parse_json,
    retry_after,
    scrub,
)
from smsgw.queue import normalize_provider_id

Quoting = Literal["url", "form", "json"]
PLACEHOLDERS = ("to", "to_digits", "text", "id", "encoding")
METHODS = ("GET", "POST", "PUT", "PATCH")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ID_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}
_AWKWARD = {
    "to": "+77012345678",
    "to_digits": "77012345678",
    "text": 'q"b\\s/\n\t\u0000{text}ё😀',
    "id": "1",
    "encoding": "ucs2",
}


@dataclass(frozen=True)
class Piece:
    text: str
    """Literal text, or the placeholder's name."""
    placeholder: bool = False
    in_string: bool = False
    """JSON only: the placeholder sits inside a string literal."""


@dataclass(frozen=True)
class Template:
    """A compiled template: ``render`` fills in the placeholders, escaped for ``quoting``."""

    pieces: tuple[Piece, ...]
    quoting: Quoting

    @property
    def names(self) -> set[str]:
        return {p.text for p in self.pieces if p.placeholder}

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(
            _escape(values[p.text], self.quoting, p.in_string) if p.placeholder else p.text
            for p in self.pieces
        )


def _escape(value: str, quoting: Quoting, in_string: bool) -> str:
    if quoting == "url":
        return quote(value, safe="")
    if quoting == "form":
        return quote_plus(value, safe="")
    whole = json.dumps(value, ensure_ascii=False)
    return whole[1:-1] if in_string else whole


def compile_template(text: str, quoting: Quoting, where: str) -> Template:
    """Split ``text`` into literals and placeholders; ``ProviderError`` for an unknown one."""
    pieces: list[Piece] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            raise ProviderError(f"{where}: unknown placeholder {{{name}}}; use one of {known}")
        in_string = quoting == "json" and _inside_json_string(text, match.start())
        pieces += [Piece(text[pos : match.start()]), Piece(name, True, in_string)]
        pos = match.end()
    pieces.append(Piece(text[pos:]))
    template = Template(tuple(p for p in pieces if p.text or p.placeholder), quoting)
    if quoting == "json":
        _check_json(template, where)
    return template


def _inside_json_string(text: str, index: int) -> bool:
    """Whether ``text[index]`` is inside a JSON string literal (quotes and escapes counted)."""
    inside = escaped = False
    for char in text[:index]:
        if escaped:
            escaped = False
        elif char == "\\" and inside:
            escaped = True
        elif char == '"':
            inside = not inside
    return inside


def _check_json(template: Template, where: str) -> None:
    try:
        json.loads(template.render(_AWKWARD))
    except ValueError as exc:
        raise ProviderError(
            f"{where} is not JSON once filled in ({exc.args[0].split(':')[0]}); write it as "
            'JSON with placeholders as values or inside strings, e.g. {"to": {to}, "text": {text}}'
        ) from None


def find_id(reply: Any, path: str) -> str | None:
    """The provider's message id at ``path`` (``a.0.b``) in a JSON reply, or None."""
    value = reply
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isascii() and step.isdigit():
            index = int(step)
            value = value[index] if index < len(value) else None
        else:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and PROVIDER_ID.fullmatch(value) else None


def generic_result(
    message_id: int,
    status: int,
    header: str | None,
    body: bytes,
    *,
    success: Iterable[int],
    id_path: str,
    name: str = "http",
) -> SendResult:
    """What a reply to the configured request means."""
    if status in success:
        if not id_path:
            return SendResult(message_id, "accepted", f"{name}-{message_id}")
        found = find_id(parse_json(body), id_path)
        if found is None:
            error = f"{name}: HTTP {status} but no message id at {id_path!r} in the reply"
            return SendResult(message_id, "failed", error=error)
        return SendResult(message_id, "accepted", normalize_provider_id(found))
    after = retry_after(header) if header is not None else None
    if status == 429:
        return SendResult(message_id, "retry", error=f"{name}: throttled", retry_after=after)
    if status >= 500:
        return SendResult(message_id, "retry", error=f"{name}: HTTP {status}", retry_after=after)
    if status in (401, 403):
        return SendResult(message_id, "failed", error=f"{name}: {BAD_CREDENTIALS}")
    excerpt = scrub(body[:200].decode("utf-8", "replace").strip())
    return SendResult(message_id, "failed", error=f"{name}: HTTP {status}: {excerpt}")


def split_url(url: str, where: str) -> tuple[str, Template]:
    """The fixed ``scheme://host:port`` of a URL template, and its path template."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ProviderError(f"{where}: the URL must start with http:// or https://, got {url!r}")
    authority, _, path = rest.partition("/")
    host = authority.split("?")[0]
    if not host or "{" in host or "}" in host:
        raise ProviderError(f"{where}: the URL needs a fixed host (no placeholder before the path)")
    fixed = f"{scheme}://{host}"
    return fixed, compile_template(url[len(fixed) :], "url", where)


class GenericHttpBackend(HttpBackend):
    """One templated HTTP request per SMS (``[sms.http]``); see the module docstring."""

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        body: str = "",
        body_type: Literal["json", "form"] = "json",
        success: Iterable[int] = (200, 201, 202),
        id_path: str = "",
        **options: Any,
    ) -> None:
        base, self.path = split_url(url, "[sms.http] url")
        super().__init__(base, **options)
        self.method = _method(method)
        self.body = compile_template(body, body_type, "[sms.http] body") if body else None
        if self.body is not None and self.method == "GET":
            raise ProviderError("[sms.http] a GET request has no body: put placeholders in the url")
        self.headers = _headers(headers or {})
        if self.body is not None:
            self.headers.setdefault("Content-Type", _CONTENT_TYPES[body_type])
        self.success = frozenset(success)
        if not self.success or not all(100 <= s <= 599 for s in self.success):
            raise ProviderError("[sms.http] success must list HTTP status codes, e.g. [200, 201]")
        if id_path and not _ID_PATH.fullmatch(id_path):
            raise ProviderError(f"[sms.http] id_path {id_path!r} is not a dotted path like a.0.id")
        self.id_path = id_path

    def __repr__(self) -> str:
        return f"GenericHttpBackend({self.method} {self.base_url!r})"

    def _request(self, sms: OutgoingSms) -> Request:
        values = {
            "to": sms.to,
            "to_digits": sms.to.lstrip("+"),
            "text": sms.text,
            "id": str(sms.message_id),
            "encoding": "ucs2" if sms.data_coding == 0x08 else "gsm7",
        }
        data = self.body.render(values).encode("utf-8") if self.body is not None else None
        path = self.path.render(values)
        return Request(path, headers=self.headers, method=self.method, data=data)

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        return generic_result(
            message_id, status, header, body, success=self.success, id_path=self.id_path
        )


def _method(method: str) -> str:
    if method.upper() not in METHODS:
        raise ProviderError(f"[sms.http] method must be one of {', '.join(METHODS)}")
    return method.upper()


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not name or any(c in name + value for c in "\r\n\0"):
            raise ProviderError(f"[sms.http] header {name!r}: names and values must be one line")
    return dict(headers)
