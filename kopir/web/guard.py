"""What every request passes through: limits, same-origin, refusals as pages, security headers.

Theory of operation
-------------------
A handler that will not answer raises :class:`Refused` with a status and a reason a person can
act on. The :func:`guard` middleware turns it, ``public``'s ``BadRequest`` and ``NotPublished``,
and aiohttp's own 404, 405 and 413 (bodies over ``MAX_BODY``) into the response: the reason as
plain text, or as an HTML page for the pages people open in a browser (``HTML_PATHS``), or the
login form for a browser that is not logged in. Anything else is a bug: logged, and answered
with a 500 that names nothing internal. :func:`query`, :func:`same_origin` and
:func:`form_field` are the checks handlers run on what a request carries.

Every response carries the security headers (:func:`security_headers`): a CSP of
``default-src 'none'`` that allows only this site's stylesheet, plus SHA-256 hashes of the
inline ``<style>``/``<script>`` blocks of the two self-contained pages we serve (the poster
and the offline verifier); ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``, ``nosniff``
and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from kopir.web import pages, public

log = logging.getLogger("kopir.web")

MAX_BODY = 16 * 1024
HTML_PATHS = ("/", "/verify", "/poster", "/status", "/login", "/logout")
BASE_CSP = {
    "default-src": "'none'",
    "style-src": "'self'",
    "img-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}
_INLINE = re.compile(r"<(style|script)(?:\s[^>]*)?>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request is answered with ``status`` and ``reason`` (always 4xx or 503)."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str] | None = None,
        login: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.headers = dict(headers or {})
        self.login = login
        """Answer with the login form (a browser that is not logged in)."""


def inline_hashes(html: str) -> dict[str, list[str]]:
    """CSP source hashes of a page's inline ``<style>`` and ``<script>`` blocks, by directive."""
    found: dict[str, list[str]] = {}
    for tag, content in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(content.encode()).digest()).decode()
        found.setdefault(f"{tag.lower()}-src", []).append(f"'sha256-{digest}'")
    return found


def csp(extra: Mapping[str, list[str]] | None = None) -> str:
    policy = dict(BASE_CSP)
    for directive, sources in (extra or {}).items():
        base = policy.get(directive, "'none'").replace("'none'", "").strip()
        policy[directive] = " ".join(filter(None, [base, *sorted(set(sources))]))
    return "; ".join(f"{k} {v}" for k, v in policy.items())


def security_headers(response: web.StreamResponse) -> None:
    """Add the headers every response carries (a handler's own CSP and caching are kept)."""
    response.headers.setdefault("Content-Security-Policy", csp())
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if response.status >= 400:
        response.headers["Cache-Control"] = "no-store"
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


def html(body: str, status: int = 200, inline: bool = False) -> web.Response:
    """An HTML response; ``inline`` allows the page's own inline blocks by hash."""
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    if inline:
        response.headers["Content-Security-Policy"] = csp(inline_hashes(body))
    return response


ASK = {"WWW-Authenticate": 'Bearer realm="kopir operator"'}


def query(request: web.Request) -> dict[str, str]:
    """The query string, each name at most once (a repeated name is ambiguous: 400)."""
    given = request.query
    if len(set(given.keys())) != len(given):
        raise Refused(400, "a query parameter is given twice")
    return dict(given)


def same_origin(request: web.Request) -> None:
    """Refuse a form posted from another site. Browsers say where a request comes from in
    ``Sec-Fetch-Site``; with our ``no-referrer`` policy their ``Origin`` is ``null``."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin", "null")
    foreign = origin != "null" and origin.partition("://")[2] != request.host
    if site not in (None, "same-origin", "none") or foreign:
        raise Refused(403, "a form from another site cannot log in or out here")


async def form_field(request: web.Request, name: str) -> str:
    try:
        form = await request.post()
    except web.HTTPException:
        raise  # 413: the body is too large
    except Exception:  # the body is the client's: any way it fails to parse is its mistake
        reason = "the form could not be read; send application/x-www-form-urlencoded UTF-8"
        raise Refused(400, reason) from None
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise Refused(400, f"the form needs a {name} field")
    return value


# -- errors -----------------------------------------------------------------------------------

_REASONS = {
    404: "no such page here; see / for what this site serves",
    405: "this method is not allowed here",
    413: f"the request body is too large (at most {MAX_BODY} bytes)",
}


def _refusal(request: web.Request, refused: Refused) -> web.Response:
    """The error response: the reason as plain text, or as a page for browser routes."""
    title = _phrase(refused.status)
    if refused.login:
        response = html(pages.login(refused.reason), status=refused.status)
    elif request.path in HTML_PATHS:
        response = html(pages.error(refused.status, title, refused.reason), status=refused.status)
    else:
        text = f"{refused.status} {title}: {refused.reason}\n"
        response = web.Response(text=text, status=refused.status, content_type="text/plain")
    response.headers.update(refused.headers)
    return response


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _from_http(exc: web.HTTPException) -> Refused:
    keep = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return Refused(exc.status, _REASONS.get(exc.status, exc.reason), keep)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as exc:
        return _refusal(request, exc)
    except public.BadRequest as exc:
        return _refusal(request, Refused(400, str(exc)))
    except public.NotPublished as exc:
        return _refusal(request, Refused(404, str(exc)))
    except web.HTTPException as exc:
        return _refusal(request, _from_http(exc))
    except Exception:
        log.exception("web: %s %s failed", request.method, request.path)
        text = "500 Internal Server Error: a bug in kopir; the operator's log has the details\n"
        return web.Response(text=text, status=500, content_type="text/plain")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    security_headers(response)
