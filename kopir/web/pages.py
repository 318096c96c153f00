"""The web app's own HTML: the home page in kk/ru/en, login, errors, the poster index (pure).

Theory of operation
-------------------
Pages are built from escaped strings, with no template engine: each function takes values and
returns one complete HTML document. They load exactly one resource, ``/style.css`` from this
site, and carry no script and no inline style, so the Content-Security-Policy can forbid
everything else (``default-src 'none'``). Every text has a ``lang`` attribute; forms have
labels; the status page (``kopir.web.statuspage``) pairs each chart with a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

LANGS = ("kk", "ru", "en")

STYLESHEET = """
* { box-sizing: border-box; }
html { background: #fff; color: #1f2328; }
body { margin: 0 auto; max-width: 60rem; padding: 1rem 1.25rem 3rem;
  font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; line-height: 1.5; }
header { border-bottom: 2px solid #1f2328; margin-bottom: 1rem; }
header nav a { margin-right: 1rem; }
a { color: #0550ae; }
h1 { font-size: 1.6rem; margin: 0.5rem 0; }
h2 { font-size: 1.25rem; margin: 1.5rem 0 0.5rem; }
section { margin-bottom: 1.5rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.25rem; }
th, td { border: 1px solid #8c959f; padding: 0.2rem 0.5rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; }
form.login label { display: block; margin: 0.5rem 0 0.25rem; }
input, button { font: inherit; padding: 0.3rem 0.6rem; }
.error { border-left: 4px solid #cf222e; padding-left: 0.75rem; }
.ok { color: #1a7f37; } .bad { color: #cf222e; }
"""

INTRO = {
    "kk": (
        "Бұл не?",
        "kopir (көпір) мобильді интернет өшірілген, бірақ SMS жұмыс істеп тұрған кезде "
        "Telegram-да байланыста қалуға көмектеседі. Операторлар шетелде Telegram "
        "прокси-серверлерін ұстайды және қол қойылған прокси сілтемелерін SMS арқылы және "
        "плакаттарда таратады.",
        "Сілтемені баспас бұрын оны тексеріңіз: осы сайттағы тексеру беті интернетсіз де "
        "жұмыс істейді және сілтемеге сенімді оператордың қол қойғанын көрсетеді. Қолтаңбасы "
        "жоқ немесе тексеруден өтпеген сілтеме пайдаланушылардың мекенжайларын жинайтын "
        "біреуден болуы мүмкін.",
        "Сілтемені тексеру",
    ),
    "ru": (
        "Что это?",
        "kopir (по-казахски «көпір», «мост») помогает оставаться на связи в Telegram, когда "
        "мобильный интернет отключают, а SMS продолжают работать. Операторы держат "
        "прокси-серверы Telegram за границей и рассылают подписанные ссылки на прокси по SMS "
        "и на плакатах.",
        "Прежде чем нажать на ссылку, проверьте её: страница проверки на этом сайте работает и "
        "без интернета и показывает, подписал ли ссылку доверенный оператор. Ссылка без "
        "подписи или не прошедшая проверку может быть от того, кто собирает адреса "
        "пользователей.",
        "Проверить ссылку",
    ),
    "en": (
        "What is this?",
        "kopir (Kazakh for “bridge”) keeps people reachable on Telegram when mobile internet "
        "is cut but SMS still works. Operators run Telegram proxies abroad and send signed "
        "proxy links by SMS and on posters.",
        "Before you tap a link, check it: the checking page on this site works without "
        "internet and tells you whether a trusted operator signed the link. A link with no "
        "signature, or one that fails the check, may come from someone collecting people’s "
        "addresses.",
        "Check a link",
    ),
}

AUDIT_FILES = (
    ("/trust.json", "the trust root: the operators' keys (and its .minisig signatures)"),
    ("/list.json", "the current signed proxy list"),
    ("/lists/versions/1.json", "every earlier version, by number, with its signatures"),
    ("/log/checkpoint", "the transparency log's signed checkpoint"),
    ("/log/entries/0", "log entries, by index"),
    ("/log/proof/inclusion?index=0", "inclusion proofs (index=I&size=S)"),
    ("/log/proof/consistency?old=1", "consistency proofs (old=M&new=N)"),
)


def document(title: str, body: str, lang: str = "en", nav: bool = True) -> str:
    """A whole page around ``body`` (already HTML)."""
    links = (
        '<nav><a href="/">kopir</a><a href="/verify">verify</a><a href="/status">status</a></nav>'
        if nav
        else ""
    )
    return (
        f'<!DOCTYPE html>\n<html lang="{escape(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/style.css"></head>'
        f"<body><header>{links}<h1>{escape(title)}</h1></header><main>{body}</main>"
        "</body></html>\n"
    )


def home() -> str:
    sections = []
    for lang in LANGS:
        heading, what, check, verify = INTRO[lang]
        sections.append(
            f'<section lang="{lang}"><h2>{escape(heading)}</h2><p>{escape(what)}</p>'
            f'<p>{escape(check)}</p><p><a href="/verify">{escape(verify)}</a></p></section>'
        )
    files = "".join(
        f'<li><a href="{escape(href)}"><code>{escape(href)}</code></a>: {escape(what)}</li>'
        for href, what in AUDIT_FILES
    )
    audit = (
        '<section lang="en"><h2>For auditors</h2><p>Everything published is signed and '
        "logged. Check it with <code>kopir audit --from URL</code>, or the signatures alone "
        f"with the stock <code>minisign</code> tool.</p><ul>{files}</ul></section>"
    )
    return document("kopir · көпір", "".join(sections) + audit, lang="kk")


def login(message: str = "") -> str:
    problem = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    form = (
        f'{problem}<form class="login" method="post" action="/login">'
        '<label for="token">Operator token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required maxlength="512">'
        ' <button type="submit">Log in</button></form>'
        "<p>Scripts may send <code>Authorization: Bearer TOKEN</code> instead.</p>"
    )
    return document("Operator login", form)


def error(status: int, title: str, reason: str) -> str:
    body = f'<p class="error" role="alert">{escape(reason)}</p><p><a href="/">kopir</a></p>'
    return document(f"{status} {title}", body)


def poster_index(public: Sequence[str]) -> str:
    if not public:
        body = (
            "<p>No poster batch is public here. The operator lists the batches anyone may "
            "print in <code>[web] poster_batches</code>.</p>"
        )
    else:
        items = "".join(
            f'<li><a href="/poster?batch={escape(name)}">{escape(name)}</a></li>' for name in public
        )
        body = f"<p>Printable A4 posters of signed proxy links, by batch:</p><ul>{items}</ul>"
    return document("Posters", body)


def table(caption: str, head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A data table; numbers are right-aligned."""
    th = "".join(f'<th scope="col">{escape(h)}</th>' for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v}</td>'
            if isinstance(v, int | float)
            else f"<td>{escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(head)}">no data yet</td></tr>'
    return f"<table><caption>{escape(caption)}</caption><tr>{th}</tr>{body}</table>"
