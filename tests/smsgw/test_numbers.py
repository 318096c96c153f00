"""smsgw.numbers: normalisation, encryption and refs, the key file."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from smsgw.errors import KeyFileError, SubscriberError
from smsgw.numbers import NumberKey, create_key_file, load_key_file, normalize
from tests.strategies import mutated

WRONG_KEY = "the subscriber key does not open this data: wrong key file?"

VALID = [
    # Kazakh mobiles, as people write them
    ("8 701 234 56 78", "+77012345678"),
    ("+7 (701) 234-56-78", "+77012345678"),
    ("77012345678", "+77012345678"),
    ("87012345678", "+77012345678"),
    ("7012345678", "+77012345678"),
    ("+77012345678", "+77012345678"),
    ("8(701)234-56-78", "+77012345678"),
    ("8-701-234-56-78", "+77012345678"),
    ("  +7 701 234 5678  ", "+77012345678"),
    ("８７０１２３４５６７８", "+77012345678"),  # full-width digits
    ("8 747 123 45 67", "+77471234567"),
    ("8 777 987 65 43", "+77779876543"),
    ("+7 708 000 11 22", "+77080001122"),
    # Russian mobiles (country code 7 too)
    ("+7 916 123-45-67", "+79161234567"),
    ("8 916 123 45 67", "+79161234567"),
    ("+7 (900) 123-45-67", "+79001234567"),
    # foreign numbers with +, and the Kazakh international prefix 8~10
    ("+44 7911 123456", "+447911123456"),
    ("+49 1512 3456789", "+4915123456789"),
    ("+998 90 123 45 67", "+998901234567"),
    ("+996 555 123 456", "+996555123456"),
    ("+1 650 253 0000", "+16502530000"),
    ("810 44 7911 123456", "+447911123456"),
]

INVALID = [
    ("", "not a phone number"),
    ("hello", "not a phone number"),
    ("+", "not a phone number"),
    ("123", "not a valid phone number (too short)"),
    ("+7 701 234", "not a valid phone number (too short)"),
    ("+7 701 234 56 7", "not a valid phone number (too short)"),
    ("+7 701 234 56 78 9", "not a valid phone number (wrong number of digits)"),
    ("1" * 100, "not a valid phone number (too long)"),
    ("+999 123456789", "not a valid phone number (unknown country code)"),
    ("+7 601 234 56 78", "not a valid phone number (invalid for region KZ)"),
    ("+44 7911 12345", "not a valid phone number (invalid for country code +44)"),
    ("+7 701 ABC 56 78", "not a valid phone number (contains letters)"),
    ("+77012345678 ext. 12", "not a valid phone number (has an extension)"),
    ("+7 (701) 234-56-78 доб. 5", "not a valid phone number (has an extension)"),
    ("8 7172 12 34 56", "cannot receive SMS (a fixed-line number)"),
    ("+7 495 123 45 67", "cannot receive SMS (a fixed-line number)"),
    ("+7 800 123 45 67", "cannot receive SMS (a toll-free number)"),
    ("+1 900 555 0123", "cannot receive SMS (a premium-rate number)"),
]


@pytest.mark.parametrize(("raw", "e164"), VALID)
def test_normalize_valid(raw: str, e164: str) -> None:
    assert normalize(raw) == e164
    assert normalize(e164) == e164


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_normalize_invalid_gives_the_reason_not_the_number(raw: str, reason: str) -> None:
    with pytest.raises(SubscriberError) as info:
        normalize(raw)
    assert str(info.value) == reason
    assert not re.search(r"\d{4}", str(info.value))
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_normalize_default_region() -> None:
    assert normalize("8 916 123 45 67", "RU") == "+79161234567"
    assert normalize("07911 123456", "GB") == "+447911123456"
    for region in ("XX", "kz", "+77012345678"):
        with pytest.raises(SubscriberError, match="default region") as info:
            normalize("+77012345678", region)
        assert "7012345678" not in str(info.value)


def test_normalize_without_check_only_formats() -> None:
    """For finding stored numbers: a STOP must work even if the numbering plan changed."""
    assert normalize("+7 601 234 56 78", check=False) == "+76012345678"
    assert normalize("8 7172 12 34 56", check=False) == "+77172123456"
    with pytest.raises(SubscriberError, match="not a phone number"):
        normalize("hello", check=False)


def _check_normalize(text: str) -> None:
    try:
        e164 = normalize(text)
    except SubscriberError as exc:
        assert not re.search(r"\d{4}", str(exc)), "the message must not echo the number"
    else:
        assert re.fullmatch(r"\+[1-9]\d{6,14}", e164)
        assert normalize(e164) == e164


@given(st.text(max_size=80))
def test_normalize_arbitrary_text_only_raises_subscriber_error(text: str) -> None:
    _check_normalize(text)


@given(mutated("+7 (701) 234-56-78", "0123456789+()- .#x8"))
def test_normalize_mutated_numbers_only_raise_subscriber_error(text: str) -> None:
    _check_normalize(text)


# -- NumberKey -----------------------------------------------------------------------------------


@pytest.fixture
def key() -> NumberKey:
    return NumberKey(os.urandom(32))


def test_encrypt_decrypt_round_trip(key: NumberKey) -> None:
    blob = key.encrypt("+77012345678")
    assert key.decrypt(blob) == "+77012345678"
    assert len(blob) == 12 + len("+77012345678") + 16
    assert b"7012345678" not in blob
    assert key.encrypt("+77012345678") != blob  # a fresh nonce each time


def test_layout_matches_the_documented_derivation() -> None:
    """HKDF-SHA256 subkeys, AES-GCM nonce ‖ ct ‖ tag, HMAC-SHA256 refs: recomputed here."""
    master = bytes(range(32))
    key = NumberKey(master)

    def derive(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    blob = key.encrypt("+77012345678")
    aead = AESGCM(derive(b"kopir-subscriber-v1 encryption"))
    assert aead.decrypt(blob[:12], blob[12:], b"kopir-subscriber-v1") == b"+77012345678"
    index = derive(b"kopir-subscriber-v1 index")
    expected = hmac.new(index, b"+77012345678", hashlib.sha256).hexdigest()
    assert key.ref("+77012345678") == expected
    # Pinned: changing the derivation would orphan every store already made.
    assert expected == "8380e16d2c87f57cc6475fbf91b3817fdbd353a2adebba1366fcd9cbc53e0af3"


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])
def test_tampered_blob_is_refused(key: NumberKey, position: int) -> None:
    blob = bytearray(key.encrypt("+77012345678"))
    blob[position] ^= 0x01
    with pytest.raises(KeyFileError) as info:
        key.decrypt(bytes(blob))
    assert str(info.value) == WRONG_KEY


def test_blob_of_another_key_or_too_short_is_refused(key: NumberKey) -> None:
    other = NumberKey(os.urandom(32))
    with pytest.raises(KeyFileError, match="wrong key file"):
        other.decrypt(key.encrypt("+77012345678"))
    with pytest.raises(KeyFileError, match="damaged"):
        key.decrypt(b"\x00" * 27)


def test_ref_stable_and_distinct(key: NumberKey) -> None:
    ref = key.ref("+77012345678")
    assert re.fullmatch(r"[0-9a-f]{64}", ref)
    assert key.ref("+77012345678") == ref
    assert NumberKey(bytes(range(32))).ref("+77012345678") != ref
    assert key.ref("+77012345679") != ref
    assert key.short_ref("+77012345678") == ref[:12]
    assert key.check_value() != ref
    assert key.check_value() != NumberKey(os.urandom(32)).check_value()


def test_repr_shows_no_key_material() -> None:
    master = bytes(range(32))
    text = repr(NumberKey(master))
    assert master.hex() not in text and str(master) not in text
    assert not re.search(r"[0-9a-f]{16}", text)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_master_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(KeyFileError, match="32 bytes"):
        NumberKey(bytes(size))


# -- key file ------------------------------------------------------------------------------------


def test_create_key_file_is_private_and_loads(tmp_path) -> None:
    path = tmp_path / "subscribers.key"
    old_umask = os.umask(0)  # even a careless umask must not make the key readable
    try:
        key = create_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 32
    assert load_key_file(path).ref("+77012345678") == key.ref("+77012345678")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subscribers.key"]


def test_create_key_file_never_overwrites(tmp_path) -> None:
    path = tmp_path / "subscribers.key"
    first = create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path)
    assert path.read_bytes() == before
    assert load_key_file(path).check_value() == first.check_value()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subscribers.key"]


def test_create_key_file_in_missing_directory(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="cannot create key file"):
        create_key_file(tmp_path / "missing" / "subscribers.key")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_a_key_open_to_others(tmp_path, mode: int) -> None:
    path = tmp_path / "my keys" / "subscribers.key"
    path.parent.mkdir()
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert f"chmod 600 '{path}'" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize(("size", "says"), [(0, "0 bytes"), (31, "31 bytes"), (33, "more than")])
def test_load_refuses_wrong_size(tmp_path, size: int, says: str) -> None:
    path = tmp_path / "subscribers.key"
    path.write_bytes(os.urandom(size))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=says):
        load_key_file(path)


def test_load_missing_or_not_a_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="cannot open key file"):
        load_key_file(tmp_path / "nothing.key")
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(directory)
