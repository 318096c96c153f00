"""hypothesis against every web route that takes parameters, over real HTTP on 127.0.0.1:
path segments, query strings, the Authorization and Cookie headers, and the login form. The
server must never answer 5xx; every refusal is a 4xx with a reason; every answer carries the
security headers; and what it accepts is right (proofs verify, files are the published ones).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kopir.web import WebError, parse_listen
from signing import tlog
from tests.kopir.webhelpers import (
    TOKEN,
    DataSite,
    Reply,
    Served,
    check_headers,
    make_data,
)

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# What may appear raw in a request target: printable ASCII but space, '#' and '%' (which the
# strategies below use only to percent-encode arbitrary text).
RAW = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#%?"))
ANY_TEXT = st.text(max_size=40)
SEGMENT = st.one_of(RAW, ANY_TEXT.map(lambda t: quote(t, safe="")))
SMALL = st.integers(-1, 5).map(str)
NUMBERISH = st.one_of(
    SMALL,
    SMALL,
    st.integers(-3, 12).map(str),
    st.integers(0, 2**70).map(str),
    st.sampled_from(["", "00", "01", "1e3", "0x1", " 1", "1.0", "+1", "١"]),
    ANY_TEXT,
)
HEADER_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",)), max_size=80
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> DataSite:
    return make_data(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def served(site: DataSite) -> Iterator[Served]:
    server = Served(site.config)
    yield server
    server.close()


def sane(reply: Reply) -> None:
    """No 5xx; a refusal says why; every response has the security headers."""
    event(f"status {reply.status}")  # --hypothesis-show-statistics shows what was reached
    assert reply.status < 500, (reply.status, reply.text[:300])
    check_headers(reply)
    if reply.status >= 400:
        assert len(reply.text.strip()) > 20, reply.text


def query(params: list[tuple[str, str]]) -> str:
    return urlencode(params, quote_via=quote)


# -- path segments --------------------------------------------------------------------------


# "KID" stands for the signing key's real id (it is random, so the test fills it in).
KEY_IDS = st.sampled_from(["", "", "KID", "KID", "0", "ABC", "kid"])
VERSION_NAMES = st.one_of(
    SEGMENT,
    st.sampled_from(["1.json", "3.json", "2.json.KID.minisig", "2.json.kid.minisig"]),
    st.tuples(SMALL, KEY_IDS, st.sampled_from(["", ".minisig", ".minisig", ".sig"])).map(
        lambda t: f"{t[0]}.json" + (f".{t[1]}{t[2]}" if t[1] or t[2] else "")
    ),
)


@FUZZ
@given(name=VERSION_NAMES)
def test_version_file_names(served: Served, site: DataSite, name: str) -> None:
    name = name.replace("KID", site.key.hex_id).replace("kid", site.key.hex_id.lower())
    reply = served.get(f"/lists/versions/{name}")
    sane(reply)
    if reply.status == 200:
        number = int(name.split(".")[0])
        if name.endswith(".json"):
            assert reply.body == site.versions[number - 1]
        else:
            assert reply.body.startswith(b"untrusted comment:")


@FUZZ
@given(prefix=st.sampled_from(["/trust.json", "/list.json"]), suffix=SEGMENT)
def test_signature_suffixes(served: Served, site: DataSite, prefix: str, suffix: str) -> None:
    reply = served.get(prefix + suffix)
    sane(reply)
    if reply.status == 200 and suffix:
        assert suffix == f".{site.key.hex_id}.minisig"


@FUZZ
@given(index=st.one_of(NUMBERISH.map(lambda t: quote(t, safe="")), RAW))
def test_log_entry_indexes(served: Served, site: DataSite, index: str) -> None:
    reply = served.get(f"/log/entries/{index}")
    sane(reply)
    if reply.status == 200:
        assert reply.body == site.versions[int(index)]


@FUZZ
@given(path=st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)))
def test_any_path(served: Served, path: str) -> None:
    sane(served.get(path))


# -- query strings --------------------------------------------------------------------------

PROOF_PARAMS = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(["index", "size", "old", "new", "format", "x"]), NUMBERISH),
        max_size=4,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "index": NUMBERISH,
            "size": NUMBERISH,
            "old": NUMBERISH,
            "new": NUMBERISH,
            "format": st.sampled_from(["json", "text", "xml", ""]),
        },
    ).map(lambda d: list(d.items())),
    st.tuples(st.integers(0, 4), st.integers(0, 4)).flatmap(
        lambda t: st.sampled_from(
            [[("index", str(t[0])), ("size", str(t[1]))], [("old", str(t[0])), ("new", str(t[1]))]]
        )
    ),
)


@FUZZ
@given(params=PROOF_PARAMS)
def test_inclusion_queries(served: Served, site: DataSite, params: list[tuple[str, str]]) -> None:
    reply = served.get(f"/log/proof/inclusion?{query(params)}")
    sane(reply)
    if reply.status == 200 and reply.headers["Content-Type"].startswith("application/json"):
        proof = reply.json()
        index, size = int(str(proof["index"])), int(str(proof["size"]))
        leaf = tlog.leaf_hash(site.versions[index])
        hashes = [base64.b64decode(h) for h in proof["hashes"]]  # type: ignore[attr-defined]
        root = tlog.root_hash([tlog.leaf_hash(v) for v in site.versions[:size]])
        tlog.verify_inclusion(leaf, index, size, hashes, root)
    elif reply.status == 200:
        tlog.parse_inclusion_proof(reply.body)


@FUZZ
@given(params=PROOF_PARAMS)
def test_consistency_queries(served: Served, site: DataSite, params: list[tuple[str, str]]) -> None:
    reply = served.get(f"/log/proof/consistency?{query(params)}")
    sane(reply)
    if reply.status == 200 and reply.headers["Content-Type"].startswith("application/json"):
        proof = reply.json()
        old, new = int(str(proof["old"])), int(str(proof["new"]))
        leaves = [tlog.leaf_hash(v) for v in site.versions]
        hashes = [base64.b64decode(h) for h in proof["hashes"]]  # type: ignore[attr-defined]
        tlog.verify_consistency(
            old, new, tlog.root_hash(leaves[:old]), tlog.root_hash(leaves[:new]), hashes
        )


POSTER_PARAMS = st.lists(
    st.tuples(
        st.sampled_from(["batch", "count", "pool", "level"]),
        st.one_of(st.sampled_from(["lobby", "kitchen", "new", "established", "1", "60"]), ANY_TEXT),
    ),
    max_size=4,
)


@FUZZ
@given(params=POSTER_PARAMS)
def test_poster_queries(served: Served, params: list[tuple[str, str]]) -> None:
    reply = served.get(f"/poster?{query(params)}")
    sane(reply)
    if reply.status == 200 and dict(params).get("batch"):
        assert dict(params)["batch"] == "lobby" and "tg://proxy" in reply.text
        # a stranger gets the default poster: only the operator chooses count and pool
        assert dict(params).get("count", "6") == "6", params
        assert dict(params).get("pool", "established") == "established", params


# -- headers and the login form -------------------------------------------------------------


@FUZZ
@given(
    path=st.sampled_from(["/status", "/metrics", "/poster?batch=kitchen"]),
    authorization=st.one_of(st.none(), HEADER_VALUE, HEADER_VALUE.map(lambda v: f"Bearer {v}")),
    cookie=st.one_of(st.none(), HEADER_VALUE, HEADER_VALUE.map(lambda v: f"kopir_session={v}")),
)
def test_operator_headers(
    served: Served, path: str, authorization: str | None, cookie: str | None
) -> None:
    served.clock.now += 61  # each example starts with a clean failed-login record
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if cookie is not None:
        headers["Cookie"] = cookie
    reply = served.get(path, headers)
    sane(reply)
    assert reply.status != 200 or authorization == f"Bearer {TOKEN}"


FORM_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/json",
        ]
    ),
    HEADER_VALUE.map(lambda v: f"application/x-www-form-urlencoded; charset={v}"),
    HEADER_VALUE.map(lambda v: f"multipart/form-data; boundary={v}"),
)
ENCODINGS = st.one_of(
    st.none(), st.sampled_from(["gzip", "deflate", "br", "identity"]), HEADER_VALUE
)


@FUZZ
@given(
    kind=st.one_of(FORM_TYPES, HEADER_VALUE),
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(st.tuples(st.sampled_from(["token", "x"]), ANY_TEXT), max_size=3).map(
            lambda fields: query(fields).encode()
        ),
    ),
    origin=st.one_of(st.none(), st.just("null"), HEADER_VALUE),
    encoding=ENCODINGS,
)
def test_login_form(
    served: Served, kind: str, body: bytes, origin: str | None, encoding: str | None
) -> None:
    served.clock.now += 61
    headers = {"Content-Type": kind}
    if origin is not None:
        headers["Origin"] = origin
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    reply = served.request("POST", "/login", headers, body)
    sane(reply)
    assert reply.status != 303  # nobody guesses the token
    assert "Set-Cookie" not in reply.headers


@FUZZ
@given(
    cookie=st.one_of(st.none(), HEADER_VALUE.map(lambda v: f"kopir_session={v}")),
    site_header=st.one_of(st.none(), st.sampled_from(["same-origin", "cross-site"]), HEADER_VALUE),
)
def test_logout(served: Served, cookie: str | None, site_header: str | None) -> None:
    headers = {}
    if cookie is not None:
        headers["Cookie"] = cookie
    if site_header is not None:
        headers["Sec-Fetch-Site"] = site_header
    reply = served.request("POST", "/logout", headers, b"")
    sane(reply)
    assert reply.status in (303, 403)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}, b"token=%ff"),
        ({"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}, b"x"),
        ({"Content-Type": "multipart/form-data; boundary=zz"}, b"--zz\r\nContent-Disposition: "
         b"form-data; name=token; filename=a\r\n\r\nabc\r\n--zz--\r\n"),
    ],
)  # fmt: skip
def test_unreadable_login_forms_are_400(
    served: Served, headers: dict[str, str], body: bytes
) -> None:
    served.clock.now += 61
    reply = served.request("POST", "/login", headers, body)
    assert reply.status == 400 and "form" in reply.text


def test_an_oversized_login_body_is_413(served: Served) -> None:
    reply = served.request(
        "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, b"x" * 100_000
    )
    assert reply.status == 413 and "too large" in reply.text


# -- [web] listen (no HTTP: the parser the web app and the bot's webhook both use) ----------

DIGITISH = st.one_of(
    st.integers(-5, 70000).map(str),
    st.integers(0, 65535).map(str),
    st.sampled_from(["", "0", "00080", "65535", "65536", "²", "١٢", "𝟠𝟘", "٨", "8 0", "0x50"]),
    st.text(st.characters(categories=("Nd", "No")), max_size=8),  # every kind of digit
    st.integers(4000, 6000).map(lambda n: "9" * n),  # past int()'s default digit limit
    ANY_TEXT,
)
HOSTISH = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "[fe80::1%eth0]"]),
    st.sampled_from(["", "[", "]", "[]", "a b", "a\tb", "a\x00", " [::1] "]),
    ANY_TEXT,
)
SEPARATOR = st.sampled_from([":", ":", ":", "]:", "", "::"])
HOST_PORT = st.builds(lambda h, sep, p: f"{h}{sep}{p}", HOSTISH, SEPARATOR, DIGITISH)
NEARLY_RIGHT = st.builds(
    lambda h, p: f"{h}:{p}",
    st.one_of(HOSTISH, st.text(st.characters(codec="ascii"), min_size=1, max_size=20)),
    st.integers(0, 70000),
)
LISTEN = st.one_of(st.text(), HOST_PORT, HOST_PORT, NEARLY_RIGHT)


@settings(max_examples=500, deadline=None)
@given(text=LISTEN)
def test_parse_listen_gives_a_host_and_port_or_a_web_error(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except WebError as exc:
        event("WebError")
        assert "listen must be" in str(exc)
        return
    event("parsed")
    assert isinstance(host, str) and isinstance(port, int)
    assert host and host.isprintable() and not any(c.isspace() or c in "[]" for c in host)
    assert 0 <= port <= 65535
    written = text.strip().rpartition(":")[2]
    assert written.isascii() and written.isdigit() and int(written) == port
    shown = f"[{host}]" if ":" in host else host
    assert parse_listen(f"{shown}:{port}") == (host, port)
