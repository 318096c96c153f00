"""Signed links v1: every field is covered, and every failure has its named reason."""

from __future__ import annotations

import base64
import time

import pytest

from signing.errors import VerificationError
from signing.link import format_exp, parse_link, sign_link, verify_link
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot

NOW = 1_790_000_000.0  # 2026-09-21
SECRET = "ee0123456789abcdef0123456789abcdef" + b"example.com".hex()
URL = f"tg://proxy?server=Relay.Example.org&port=443&secret={SECRET}"
ROLES = frozenset({"root", "lists", "links"})


def make_root(*keys: TrustKey) -> TrustRoot:
    threshold = {"root": 1, "lists": 1, "links": 1, "log": 1}
    return TrustRoot(1, "2099-01-01T00:00:00Z", keys, threshold)


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture(scope="module")
def root(key: SecretKey) -> TrustRoot:
    return make_root(TrustKey("alice", key.public_key, ROLES))


@pytest.fixture(scope="module")
def signed(key: SecretKey) -> str:
    return sign_link(URL, key, NOW + 72 * 3600).url()


def reason(url: str, root: TrustRoot, now: float = NOW) -> str:
    with pytest.raises(VerificationError) as info:
        verify_link(url, root, now)
    return info.value.reason


def test_signed_link_verifies_and_is_canonical(signed: str, root: TrustRoot) -> None:
    assert signed.startswith("https://t.me/proxy?server=relay.example.org&port=443&secret=ee01")
    link = verify_link(signed, root, NOW)
    assert link.server == "relay.example.org" and link.port == 443 and link.secret == SECRET
    assert link.exp == format_exp(NOW + 72 * 3600)
    tg = link.url("tg")
    assert tg.startswith("tg://proxy?") and verify_link(tg, root, NOW) == link


def test_parameter_order_and_name_case_do_not_matter(signed: str, root: TrustRoot) -> None:
    head, query = signed.split("?")
    params = query.split("&")
    shuffled = "&".join(reversed(params)).replace("server=", "SERVER=")
    assert verify_link(f"{head}?{shuffled}", root, NOW) == verify_link(signed, root, NOW)


def test_base64url_secret_is_the_same_secret(key: SecretKey, root: TrustRoot) -> None:
    raw = bytes.fromhex(SECRET)
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert b64.startswith("7")  # as Telegram clients expect for an ee secret
    link = sign_link(f"https://t.me/proxy?server=h.example&port=443&secret={b64}", key, NOW + 3600)
    assert link.secret == SECRET
    verify_link(link.url().replace(SECRET, b64), root, NOW)


def test_message_is_the_documented_text(key: SecretKey) -> None:
    link = sign_link(URL, key, NOW + 3600)
    expected = (
        f"kopir-link-v1\nproxy\nrelay.example.org\n443\n{SECRET}\n{link.exp}\n{link.kid}\n"
    ).encode()
    assert link.message() == expected
    key.public_key.verifier.verify(base64.urlsafe_b64decode(link.sig + "=="), expected)


@pytest.mark.parametrize(
    ("field", "new"),
    [
        ("server", "evil.example.org"),
        ("port", "444"),
        ("secret", "ee" + "11" * 16 + b"example.com".hex()),
        ("exp", "2099010100"),
    ],
)
def test_changing_a_signed_field_fails(signed: str, root: TrustRoot, field: str, new: str) -> None:
    link = parse_link(signed)
    old = {"server": link.server, "port": str(link.port), "secret": link.secret, "exp": link.exp}
    changed = signed.replace(f"{field}={old[field]}", f"{field}={new}")
    assert changed != signed
    assert reason(changed, root) == "bad-signature"


def test_changing_the_signature_fails(signed: str, root: TrustRoot) -> None:
    link = parse_link(signed)
    raw = bytearray(base64.urlsafe_b64decode(link.sig + "=="))
    raw[10] ^= 1
    new_sig = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert reason(signed.replace(link.sig or "", new_sig), root) == "bad-signature"


def test_changing_kid_gives_unknown_key(signed: str, root: TrustRoot) -> None:
    link = parse_link(signed)
    other = SecretKey.generate()
    other_kid = base64.urlsafe_b64encode(other.key_id).rstrip(b"=").decode()
    changed = signed.replace(f"kid={link.kid}", f"kid={other_kid}")
    assert reason(changed, root) == "unknown-key"


def test_kid_of_another_trusted_key_fails_signature(key: SecretKey, signed: str) -> None:
    other = SecretKey.generate()
    root = make_root(
        TrustKey("alice", key.public_key, ROLES), TrustKey("bob", other.public_key, ROLES)
    )
    link = parse_link(signed)
    other_kid = base64.urlsafe_b64encode(other.key_id).rstrip(b"=").decode()
    assert reason(signed.replace(f"kid={link.kid}", f"kid={other_kid}"), root) == "bad-signature"


def test_expired_link(signed: str, root: TrustRoot) -> None:
    assert reason(signed, root, now=NOW + 73 * 3600) == "expired"


def test_key_missing_from_trust_root(signed: str) -> None:
    stranger = make_root(TrustKey("mallory", SecretKey.generate().public_key, ROLES))
    assert reason(signed, stranger) == "unknown-key"


def test_key_without_links_role_is_unknown(key: SecretKey, signed: str) -> None:
    root = make_root(TrustKey("alice", key.public_key, frozenset({"root", "lists"})))
    assert reason(signed, root) == "unknown-key"


def test_revoked_key(key: SecretKey, signed: str) -> None:
    revoked = make_root(TrustKey("alice", key.public_key, ROLES, "2026-01-01T00:00:00Z"))
    assert reason(signed, revoked) == "revoked-key"
    later = make_root(TrustKey("alice", key.public_key, ROLES, "2099-01-01T00:00:00Z"))
    verify_link(signed, later, NOW)  # revocation scheduled in the future: still valid


@pytest.mark.parametrize("name", ["server", "port", "secret", "kid", "exp", "sig"])
def test_duplicated_parameter_is_malformed(signed: str, root: TrustRoot, name: str) -> None:
    value = signed.split(f"{name}=")[1].split("&")[0]
    assert reason(f"{signed}&{name}={value}", root) == "malformed"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/proxy?server=a&port=1&secret=" + "00" * 16,
        "tg://proxy?server=a&port=0&secret=" + "00" * 16,
        "tg://proxy?server=a&port=0443&secret=" + "00" * 16,
        "tg://proxy?server=a&port=443&secret=" + "00" * 15,
        "tg://proxy?server=a&port=443&secret=ee" + "00" * 16,
        "tg://proxy?server=a&port=443&secret=ee" + "00" * 16 + "2f2f",
        "tg://proxy?server=a b&port=443&secret=" + "00" * 16,
        "tg://proxy?server=a&port=443&secret=" + "00" * 16 + "&foo=1",
        "tg://proxy?server=a&port=443&secret=" + "00" * 16 + "#frag",
        "tg://proxy?server=a&port=443",
        "tg://proxy?server=a&port=443&secret=" + "00" * 16 + "&kid=AAAAAAAAAAA",
        "tg://socks?server=a&port=1080&user=u",
        "tg://proxy?server=%ff&port=443&secret=" + "00" * 16,
    ],
)
def test_malformed_links(url: str, root: TrustRoot) -> None:
    assert reason(url, root) == "malformed"


def test_unsigned_link_is_malformed_for_verification(root: TrustRoot) -> None:
    assert reason(URL, root) == "malformed"


def test_bad_exp_kid_sig_are_malformed(signed: str, root: TrustRoot) -> None:
    link = parse_link(signed)
    assert reason(signed.replace(f"exp={link.exp}", "exp=2026023012"), root) == "malformed"
    assert reason(signed.replace(f"kid={link.kid}", "kid=short"), root) == "malformed"
    assert reason(signed.replace(f"sig={link.sig}", "sig=" + "A" * 85), root) == "malformed"
    # The same bytes in non-canonical base64url (padding bits set) are refused too.
    assert reason(signed.replace(f"sig={link.sig}", f"sig={link.sig[:-1]}B"), root) == "malformed"
    assert reason(signed.replace(f"kid={link.kid}", f"kid={link.kid[:-1]}B"), root) == "malformed"


def test_socks_links_sign_user_and_pass(key: SecretKey, root: TrustRoot) -> None:
    link = sign_link("tg://socks?server=s.example&port=1080&user=me&pass=p%40ss", key, NOW + 60)
    assert link.secret == "me:p@ss"
    url = link.url("tg")
    assert "pass=p%40ss" in url
    assert verify_link(url, root, NOW) == link
    assert reason(url.replace("user=me", "user=you"), root) == "bad-signature"


def test_expiry_rounds_up_to_whole_hours() -> None:
    assert format_exp(0) == "1970010100"
    assert format_exp(1) == "1970010101"
    assert format_exp(3600) == "1970010101"


def test_real_clock_round_trip(key: SecretKey, root: TrustRoot) -> None:
    signed = sign_link(URL, key, time.time() + 3600).url()
    assert verify_link(signed, root, time.time()).server == "relay.example.org"
