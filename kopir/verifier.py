"""The offline verifier: one self-contained HTML page that checks signed links in a browser.

Theory of operation
-------------------
A citizen opens the page (saved from ``kopir verifier --out``, or from the web app's
``/verify``) with no network, pastes an SMS or a link, and reads a verdict in Kazakh, Russian
or English (DESIGN.md §6, "Offline verifier"). The page is built here from three static files
in ``kopir/static``: the template ``verifier.html``, the style ``verifier.css``, and the scripts
``verifier.js`` (signed link v1 parsing and verification, DESIGN.md §5.2, with an Ed25519
fallback for browsers without WebCrypto Ed25519) and ``verifier.page.js`` (texts and form).

The trust root is parsed with ``signing.parse_trust_root`` before anything is written, so a
bad one is refused here with the parser's reason. It is embedded as a JSON data block whose
``<``, ``>`` and ``&`` are written as ``\\u003c`` and so on: no key name can close the script
element. The page loads nothing: its Content-Security-Policy allows no source at all except
the inline script and style, named by their SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from functools import cache
from importlib import resources
from string import Template

from signing import SigningError, TrustRoot, parse_trust_root

STATIC_FILES = ("verifier.html", "verifier.css", "verifier.js", "verifier.page.js")


class VerifierError(Exception):
    """The verifier page cannot be built (a bad trust root, or a broken installation)."""


@cache
def _static(name: str) -> str:
    try:
        return (resources.files("kopir") / "static" / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise VerifierError(
            f"kopir/static/{name} is missing ({exc.strerror or exc}); reinstall kopir"
        ) from None


def _script() -> str:
    script = _static("verifier.js") + "\n" + _static("verifier.page.js")
    if "</script" in script.lower() or "<!--" in script:
        raise VerifierError("kopir/static/verifier*.js would end its script element; fix it")
    return script


def _style() -> str:
    style = _static("verifier.css")
    if "</style" in style.lower():
        raise VerifierError("kopir/static/verifier.css would end its style element; fix it")
    return style


def _source_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy() -> str:
    """The page's policy, also fit to send as a ``Content-Security-Policy`` header for it."""
    return (
        f"default-src 'none'; script-src {_source_hash(_script())}; "
        f"style-src {_source_hash(_style())}; base-uri 'none'; form-action 'none'"
    )


def embed_json(value: object) -> str:
    """JSON that is inert inside a ``<script type="application/json">`` element."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def load_trust(trust_json: bytes) -> TrustRoot:
    """The trust root to embed, or a ``VerifierError`` that says what is wrong with it."""
    try:
        return parse_trust_root(trust_json)
    except SigningError as exc:
        raise VerifierError(
            f"cannot build the verifier page from this trust root: {exc}; give the publisher's "
            "trust.json (kopir trust init writes one)"
        ) from None


def render_verifier(trust_json: bytes, now_label: str | None = None) -> str:
    """The offline verifier page for this trust root, as one HTML document.

    ``now_label`` (for example ``2026-01-05 13:00 UTC``) is shown as the page's making time.
    """
    root = load_trust(trust_json)
    data = {"root": root.to_json(), "sha256": hashlib.sha256(trust_json).hexdigest()}
    made = ""
    if now_label is not None:
        label = html.escape(now_label)
        made = f'<p><span data-text="made">Page made: </span><time>{label}</time></p>'
    page = Template(_static("verifier.html"))
    return page.substitute(
        csp=content_security_policy(),
        style=_style(),
        script=_script(),
        trust=embed_json(data),
        made=made,
    )
