"""The web app's public routes over real HTTP: files, signatures, log proofs, posters, verifier."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import pytest

import signing
from signing import tlog
from tests.kopir.webhelpers import (
    NOW,
    DataSite,
    Served,
    check_headers,
    check_refusal,
    make_data,
    served,
    site,
    write_config,
)

__all__ = ["served", "site"]  # fixtures, used by name


# -- public files ---------------------------------------------------------------------------


def test_home_explains_kopir_in_three_languages(served: Served) -> None:
    reply = served.get("/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    for lang, words in (("kk", "Сілтемені тексеру"), ("ru", "Проверить ссылку"), ("en", "SMS")):
        assert f'<section lang="{lang}">' in reply.text and words in reply.text
    assert 'href="/verify"' in reply.text and 'href="/style.css"' in reply.text
    assert "<script" not in reply.text and "style=" not in reply.text
    check_headers(reply)
    style = served.get("/style.css")
    assert style.status == 200 and style.headers["Content-Type"].startswith("text/css")


def test_trust_root_and_its_signature_verify(site: DataSite, served: Served) -> None:
    trust = served.get("/trust.json")
    assert trust.status == 200 and trust.headers["Content-Type"].startswith("application/json")
    kid = site.key.hex_id
    sig = served.get(f"/trust.json.{kid}.minisig")
    assert sig.status == 200
    root = signing.parse_trust_root(trust.body)
    signing.verify(site.key.public_key, signing.parse_signature(sig.text), trust.body)
    assert root.link_keys  # the publisher's key is named for links
    check_headers(sig)


def test_every_list_version_and_its_signature_verify(site: DataSite, served: Served) -> None:
    kid = site.key.hex_id
    current = served.get("/list.json")
    assert current.body == site.versions[-1]
    for number, expected in enumerate(site.versions, 1):
        doc = served.get(f"/lists/versions/{number}.json")
        assert doc.status == 200 and doc.body == expected
        assert signing.parse_list(doc.body).version == number
        sig = served.get(f"/lists/versions/{number}.json.{kid}.minisig")
        assert sig.status == 200
        signing.verify(site.key.public_key, signing.parse_signature(sig.text), doc.body)
    sig = served.get(f"/list.json.{kid}.minisig")
    signing.verify(site.key.public_key, signing.parse_signature(sig.text), current.body)
    previous = signing.parse_list(served.get("/lists/versions/2.json").body).previous
    assert previous == hashlib.sha256(site.versions[0]).hexdigest()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/lists/versions/9.json", "no list version 9"),
        ("/lists/versions/01.json", "names are <N>.json"),
        ("/lists/versions/..%2Flist.json", "names are <N>.json"),
        ("/lists/versions/1.json.0000.minisig", "no signature"),
        ("/trust.json.bad.minisig", "signatures are trust.json.<KEYID>.minisig"),
        ("/list.json.ABC.minisig.x", "signatures are list.json.<KEYID>.minisig"),
        ("/log/entries/3", "no entry 3: the log has 3 entries"),
        ("/log/entries/-1", "index must be a whole number"),
        ("/nowhere", "no such page here"),
    ],
)
def test_missing_or_malformed_files_are_404_or_400_with_a_reason(
    served: Served, path: str, words: str
) -> None:
    reply = served.get(path)
    check_refusal(reply)
    assert words in reply.text
    check_headers(reply)


def test_log_checkpoint_is_signed_by_the_log_key_and_entries_match(
    site: DataSite, served: Served
) -> None:
    reply = served.get("/log/checkpoint")
    assert reply.status == 200
    public = site.log.public_key()
    note = signing.note.verify_note(reply.body, site.config.log.origin, public.key)
    checkpoint = signing.note.parse_checkpoint(note.text)
    assert checkpoint.size == 3
    for index, version in enumerate(site.versions):
        assert served.get(f"/log/entries/{index}").body == version
    assert checkpoint.root == tlog.root_hash([tlog.leaf_hash(v) for v in site.versions])


def _hashes(values: object) -> list[bytes]:
    assert isinstance(values, list)
    return [base64.b64decode(v) for v in values]


def test_inclusion_proofs_verify_against_the_checkpoint_root(
    site: DataSite, served: Served
) -> None:
    checkpoint = signing.note.parse_checkpoint(
        signing.note.parse_note(served.get("/log/checkpoint").body).text
    )
    for size in (1, 2, 3):
        for index in range(size):
            proof = served.get(f"/log/proof/inclusion?index={index}&size={size}").json()
            leaf = tlog.leaf_hash(site.versions[index])
            assert base64.b64decode(str(proof["leaf_hash"])) == leaf
            root = base64.b64decode(str(proof["root"]))
            tlog.verify_inclusion(leaf, index, size, _hashes(proof["hashes"]), root)
            if size == checkpoint.size:
                assert root == checkpoint.root
    text = served.get("/log/proof/inclusion?index=1&format=text")
    assert tlog.parse_inclusion_proof(text.body).size == 3  # size defaults to the log's


def test_consistency_proofs_verify_and_tampering_is_caught(served: Served) -> None:
    for old in (1, 2, 3):
        proof = served.get(f"/log/proof/consistency?old={old}&new=3").json()
        old_root = base64.b64decode(str(proof["old_root"]))
        new_root = base64.b64decode(str(proof["new_root"]))
        tlog.verify_consistency(old, 3, old_root, new_root, _hashes(proof["hashes"]))
    proof = served.get("/log/proof/consistency?old=1").json()
    with pytest.raises(signing.VerificationError):
        tlog.verify_consistency(1, 3, bytes(32), base64.b64decode(str(proof["new_root"])),
                                _hashes(proof["hashes"]))  # fmt: skip
    text = served.get("/log/proof/consistency?old=2&new=3&format=text")
    assert tlog.parse_consistency_proof(text.body).old_size == 2


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("inclusion", "give index=N"),
        ("inclusion?index=3", "index must be below size (3)"),
        ("inclusion?index=0&size=4", "size must be 1-3"),
        ("inclusion?index=0&size=0", "size must be 1-3"),
        ("inclusion?index=00", "index must be a whole number"),
        ("inclusion?index=1e3", "index must be a whole number"),
        ("inclusion?index=0&index=1", "given twice"),
        ("inclusion?index=0&format=xml", "format must be json or text"),
        ("consistency?old=0", "old must be 1-3"),
        ("consistency?old=3&new=2", "old must be 1-2"),
        ("consistency?new=3", "give old=N"),
        ("consistency?old=99999999999999999999", "old must be a whole number"),
    ],
)
def test_bad_proof_requests_are_400_with_a_reason(served: Served, query: str, words: str) -> None:
    reply = served.get(f"/log/proof/{query}")
    assert reply.status == 400, reply.text
    assert words in reply.text


def test_before_anything_is_published_files_are_404_saying_why(tmp_path: Path) -> None:
    server = Served(write_config(tmp_path))
    try:
        for path, words in (
            ("/trust.json", "no trust root yet"),
            ("/list.json", "no list yet"),
            ("/lists/versions/1.json", "no list version 1"),
            ("/log/checkpoint", "no signed checkpoint yet"),
            ("/log/entries/0", "no transparency log yet"),
            ("/log/proof/inclusion?index=0", "no transparency log yet"),
        ):
            reply = server.get(path)
            assert reply.status == 404 and words in reply.text, (path, reply.text)
        assert server.get("/verify").status in (404, 503)
    finally:
        server.close()


# -- posters --------------------------------------------------------------------------------


def test_public_poster_batch_has_signed_links_that_verify(site: DataSite, served: Served) -> None:
    reply = served.get("/poster?batch=lobby")  # 6 links; the fleet here has 3 relays
    assert reply.status == 200, reply.text
    check_headers(reply)
    policy = reply.headers["Content-Security-Policy"]
    assert "style-src 'self' 'sha256-" in policy
    trust = signing.parse_trust_root(served.get("/trust.json").body)
    links = sorted(set(_poster_links(reply.text)))
    listed = {p["server"] for p in signing.parse_list(site.versions[-1]).proxies}
    assert len(links) == len(listed) == 3
    for text in links:
        assert signing.verify_link(text, trust, NOW).server in listed
    again = served.get("/poster?batch=lobby")  # the ring gives a batch the same relays
    assert {signing.parse_link(t).server for t in _poster_links(again.text)} == {
        signing.parse_link(t).server for t in links
    }


def _poster_links(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'href="(tg://proxy\?[^"]+)"', page)]


def test_private_poster_batches_need_the_operator(served: Served) -> None:
    served.clock.now += 3600
    refused = served.get("/poster?batch=kitchen")
    assert refused.status == 403 and "not public" in refused.text
    assert "<html" in refused.text  # a page, for a browser
    allowed = served.operator("/poster?batch=kitchen&count=1")
    assert allowed.status == 200 and "tg://proxy" in allowed.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("batch=../x", "batch must be"),
        ("batch=lobby&count=0", "count must be 1-60"),
        ("batch=lobby&count=61", "count must be 1-60"),
        ("batch=lobby&count=x", "count must be a whole number"),
        ("batch=lobby&pool=old", "pool must be established or new"),
    ],
)
def test_bad_poster_requests_are_400(served: Served, query: str, words: str) -> None:
    reply = served.get(f"/poster?{query}")
    assert reply.status == 400 and words in reply.text


def test_poster_index_lists_public_batches(served: Served) -> None:
    reply = served.get("/poster")
    assert reply.status == 200 and 'href="/poster?batch=lobby"' in reply.text


def test_poster_without_a_signing_key_is_a_clear_503(tmp_path: Path) -> None:
    site = make_data(tmp_path)
    site.config.in_data(site.config.signing.key).unlink()
    server = Served(site.config)
    try:
        reply = server.get("/poster?batch=lobby")
        assert reply.status == 503 and "no online signing key" in reply.text
        assert "<html" in reply.text
        check_headers(reply)
    finally:
        server.close()


# -- the verifier ---------------------------------------------------------------------------


def test_verify_serves_the_offline_verifier_with_its_inline_code_hashed(served: Served) -> None:
    reply = served.get("/verify")
    check_headers(reply)
    if reply.status == 503:
        assert "not built" in reply.text
        pytest.fail("kopir.verifier.render_verifier has not landed yet")
    assert reply.status == 200
    policy = reply.headers["Content-Security-Policy"]
    if "<script" in reply.text:
        assert "script-src 'sha256-" in policy
    assert "connect-src" not in policy  # the verifier may fetch nothing
