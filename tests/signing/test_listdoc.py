"""Signed list documents: threshold 2 of 3, rollback, expiry and tampering."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from signing.errors import FormatError, VerificationError
from signing.listdoc import ListDocument, ListState, parse_list, sign_list, verify_list
from signing.minisign import SecretKey, sign
from signing.trust import TrustKey, TrustRoot

NOW = 1_790_000_000.0  # 2026-09-21
ENTRY = {
    "domain": "example.com",
    "last_ok": "2026-09-20T12:00:00Z",
    "port": 443,
    "ports_tried": [443, 8443],
    "rtt_ms": 41.5,
    "secret": "ee" + "ab" * 16 + b"example.com".hex(),
    "server": "relay1.example.org",
    "tags": ["kz"],
    "type": "ee",
}


def document(version: int, expires: str = "2026-10-01T00:00:00Z", previous: str | None = None):
    return ListDocument(
        "diaspora-ops", version, "2026-09-20T00:00:00Z", expires, (ENTRY,), previous
    ).encode()


@pytest.fixture(scope="module")
def keys() -> list[SecretKey]:
    return [SecretKey.generate() for _ in range(3)]


@pytest.fixture(scope="module")
def root(keys: list[SecretKey]) -> TrustRoot:
    trust_keys = tuple(
        TrustKey(name, k.public_key, frozenset({"root", "lists"}))
        for name, k in zip(("a", "b", "c"), keys, strict=True)
    )
    return TrustRoot(
        1, "2099-01-01T00:00:00Z", trust_keys, {"root": 1, "lists": 2, "links": 1, "log": 1}
    )


def test_document_is_canonical_json() -> None:
    data = document(1)
    assert data.startswith(b'{"expires":"2026-10-01T00:00:00Z","format":"kopir-list/1"')
    assert b" " not in data
    assert parse_list(data).proxies[0] == ENTRY


def test_one_signature_of_two_required_names_the_shortfall(keys, root) -> None:
    data = document(1)
    with pytest.raises(VerificationError) as info:
        verify_list(data, [sign_list(data, keys[0])], root, NOW)
    assert info.value.reason == "threshold"
    assert "1 of 2 required signatures valid, 1 short" in str(info.value)


def test_two_of_three_valid(keys, root) -> None:
    data = document(1)
    verdict = verify_list(data, [sign_list(data, keys[0]), sign_list(data, keys[2])], root, NOW)
    assert verdict.signers == ("a", "c")
    assert verdict.document.version == 1


def test_same_key_twice_counts_once(keys, root) -> None:
    data = document(1)
    sigs = [sign_list(data, keys[1]), sign_list(data, keys[1])]
    with pytest.raises(VerificationError, match="1 of 2"):
        verify_list(data, sigs, root, NOW)


def test_an_invalid_signature_does_not_count_and_is_named(keys, root) -> None:
    data = document(1)
    wrong = sign_list(document(2), keys[1])  # b signed a different version
    with pytest.raises(VerificationError) as info:
        verify_list(data, [sign_list(data, keys[0]), wrong], root, NOW)
    assert "b: trusted comment does not match" in str(info.value)


def test_untrusted_signer_does_not_count(keys, root) -> None:
    data = document(1)
    stranger = SecretKey.generate()
    with pytest.raises(VerificationError, match="not a trusted key"):
        verify_list(data, [sign_list(data, keys[0]), sign_list(data, stranger)], root, NOW)


def test_lower_version_than_last_accepted_is_rollback(keys, root, tmp_path: Path) -> None:
    state = ListState(tmp_path)
    for version in (1, 2):
        data = document(version)
        sigs = [sign_list(data, keys[0]), sign_list(data, keys[1])]
        verdict = verify_list(data, sigs, root, NOW, state.last_seen("diaspora-ops"))
        state.accept("diaspora-ops", verdict.document.version, data)
    again = verify_list(data, sigs, root, NOW, state.last_seen("diaspora-ops"))
    assert again.document.version == 2  # re-checking the accepted list is fine
    old = document(1)
    old_sigs = [sign_list(old, keys[0]), sign_list(old, keys[1])]
    with pytest.raises(VerificationError) as info:
        verify_list(old, old_sigs, root, NOW, ListState(tmp_path).last_seen("diaspora-ops"))
    assert info.value.reason == "rollback"
    other = document(2, expires="2026-10-02T00:00:00Z")
    other_sigs = [sign_list(other, keys[0]), sign_list(other, keys[1])]
    with pytest.raises(VerificationError, match="same version"):
        verify_list(other, other_sigs, root, NOW, state.last_seen("diaspora-ops"))


def test_expired_list_is_rejected(keys, root) -> None:
    data = document(1, expires="2026-09-01T00:00:00Z")
    sigs = [sign_list(data, keys[0]), sign_list(data, keys[1])]
    with pytest.raises(VerificationError) as info:
        verify_list(data, sigs, root, NOW)
    assert info.value.reason == "expired"


@pytest.mark.parametrize("position", [0, 40, 120, -3])
def test_one_changed_byte_is_rejected(keys, root, position: int) -> None:
    data = document(1)
    sigs = [sign_list(data, keys[0]), sign_list(data, keys[1])]
    changed = bytearray(data)
    changed[position] = ord("x") if changed[position] != ord("x") else ord("y")
    with pytest.raises((VerificationError, FormatError)):
        verify_list(bytes(changed), sigs, root, NOW)


def test_changed_digit_in_valid_json_is_a_bad_signature(keys, root) -> None:
    data = document(1)
    sigs = [sign_list(data, keys[0]), sign_list(data, keys[1])]
    changed = data.replace(b'"port":443', b'"port":444')
    assert parse_list(changed).proxies[0]["port"] == 444  # still a well-formed list
    with pytest.raises(VerificationError) as info:
        verify_list(changed, sigs, root, NOW)
    assert info.value.reason == "threshold"
    assert "bad-signature" in str(info.value) or "does not match" in str(info.value)


def test_signature_trusted_comment_binds_version_and_hash(keys) -> None:
    data = document(7)
    sig = sign_list(data, keys[0])
    digest = hashlib.sha256(data).hexdigest()
    assert sig.prehashed
    assert sig.trusted_comment == (
        f"kopir-list version=7 expires=2026-10-01T00:00:00Z sha256={digest}"
    )


def test_plain_minisign_signature_with_other_comment_does_not_count(keys, root) -> None:
    data = document(1)
    plain = [sign(keys[0], data, "timestamp:1"), sign(keys[1], data, "timestamp:1")]
    with pytest.raises(VerificationError, match="0 of 2"):
        verify_list(data, plain, root, NOW)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"format":"kopir-list/1"}',
        document(1).replace(b'"version":1', b'"version": 1'),
        document(1).replace(b'"version":1', b'"version":true'),
        document(1).replace(b'"previous":null', b'"previous":"abc"'),
        document(1).replace(b'"type":"ee"', b'"type":"ee","extra":1'),
    ],
)
def test_malformed_documents(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_list(data)


def test_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "lists.json").write_text("{not json")
    with pytest.raises(Exception, match="damaged"):
        ListState(tmp_path).last_seen("x")
