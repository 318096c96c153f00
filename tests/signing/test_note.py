"""Tests for signing.note: C2SP signed notes and checkpoints, with the Go golden vectors."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.errors import FormatError, VerificationError
from signing.note import (
    MAX_SIGNATURES,
    Checkpoint,
    Note,
    NoteSignature,
    add_signature,
    key_id,
    parse_checkpoint,
    parse_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
    verify_note,
)
from tests.strategies import mutated

NOTE_SPECIAL = ["\n", "\n\n", " ", "—", "— ", "+", "=", "A", "0", "\r", "\x00"]
FUZZ = settings(max_examples=300, deadline=None, database=None)
ROUND_TRIP = settings(max_examples=60, deadline=None, database=None)

# --- golden vectors from golang.org/x/mod/sumdb/note (note.go docs and note_test.go) -------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox3"
    "3WWd1RvMc+QQ=\n"
)
GO_NOTE = GO_TEXT + "\n" + PETER_SIG

# Examples printed in the C2SP specs themselves (signed-note and tlog-checkpoint).
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
    "\n— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMou"
    "FSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhc"
    "yv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def peter_private_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == 1  # Ed25519 algorithm byte
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


PETER = peter_private_key()
PETER_PUB = PETER.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_PUB = OTHER.public_key().public_bytes_raw()


def test_go_golden_signature_is_byte_exact():
    assert sign_note(GO_TEXT, "PeterNeumann", PETER) == GO_NOTE.encode()


def test_go_golden_key_id_and_verifier_key():
    assert key_id("PeterNeumann", PETER_PUB) == bytes.fromhex("c74f20a3")
    assert verifier_key("PeterNeumann", PETER_PUB) == PETER_VKEY
    assert parse_verifier_key(PETER_VKEY) == ("PeterNeumann", PETER_PUB)
    name, pub = parse_verifier_key(ENOCH_VKEY)
    assert (name, key_id(name, pub).hex()) == ("EnochRoot", "af0cfe78")
    assert verifier_key(name, pub) == ENOCH_VKEY


def test_go_golden_note_verifies_and_other_signers_are_ignored():
    note = verify_note(GO_NOTE, "PeterNeumann", PETER_PUB)
    assert note.text == GO_TEXT
    assert note.signatures[0].key_id.hex() == "c74f20a3"
    both = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    verify_note(both, "PeterNeumann", PETER_PUB)
    enoch_name, enoch_pub = parse_verifier_key(ENOCH_VKEY)
    assert verify_note(both.encode(), enoch_name, enoch_pub).signatures[1].name == "EnochRoot"


def test_go_verifier_key_manglings_are_rejected():
    # The same manglings as TestNewVerifier: every proper substring, every byte bumped.
    vkey = PETER_VKEY
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(FormatError):
                    parse_verifier_key(vkey[i:j])
    for i in range(len(vkey)):
        with pytest.raises(FormatError):
            parse_verifier_key(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]:
        with pytest.raises(FormatError):
            parse_verifier_key(bad)


@pytest.mark.parametrize(
    "message",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG.replace("—", "-"),
        GO_TEXT + "\n" + PETER_SIG.replace("— ", "—"),
        GO_TEXT + "\n" + PETER_SIG.replace("Neumann ", "Neumann  "),
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "= \n"),
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"),
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter\u00a0Neumann"),
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann ", " "),
        GO_TEXT + "\n" + "— PeterNeumann AAAAAA==\n",  # 4 bytes: a key id and no signature
        GO_TEXT + "\n" + PETER_SIG.replace("\n", "\r\n"),
        GO_TEXT.replace("\n", "\r\n") + "\n" + PETER_SIG,
        GO_TEXT + "\n" + PETER_SIG + "\n",
        GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1),
        "",
        "\n\n",
        "a\ud800\n\n" + PETER_SIG,
    ],
)
def test_malformed_notes_are_rejected(message):
    with pytest.raises(FormatError):
        parse_note(message)
    with pytest.raises(FormatError):
        verify_note(message, "PeterNeumann", PETER_PUB)


def test_malformed_note_bytes_are_rejected():
    for data in [b"\xff" + GO_NOTE.encode(), GO_NOTE.encode()[:-2], b"\xed\xa0\x80\n\n"]:
        with pytest.raises(FormatError):
            parse_note(data)


def test_signature_limit_is_inclusive():
    note = parse_note(GO_TEXT + "\n" + PETER_SIG * MAX_SIGNATURES)
    assert len(note.signatures) == MAX_SIGNATURES


# --- signing and verifying -----------------------------------------------------------------


def test_tampered_text_fails():
    tampered = GO_NOTE.replace("cryptography", "cryptographY")
    with pytest.raises(VerificationError) as info:
        verify_note(tampered, "PeterNeumann", PETER_PUB)
    assert info.value.reason == "bad-signature"


def test_tampered_signature_fails():
    # Go's own case: four base64 characters inserted in the signature, key id untouched.
    longer = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    note = parse_note(GO_NOTE)
    sig = note.signatures[0]
    flipped = NoteSignature(sig.name, sig.key_id, bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    for message in [longer, Note(GO_TEXT, (flipped,)).encode()]:
        with pytest.raises(VerificationError) as info:
            verify_note(message, "PeterNeumann", PETER_PUB)
        assert info.value.reason == "bad-signature"


def test_any_bad_duplicate_from_the_key_fails():
    # Stricter than Go, which checks only the first signature by a known key.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    verify_note(GO_TEXT + "\n" + PETER_SIG + PETER_SIG, "PeterNeumann", PETER_PUB)
    with pytest.raises(VerificationError, match="bad-signature"):
        verify_note(GO_TEXT + "\n" + PETER_SIG + bad, "PeterNeumann", PETER_PUB)


@pytest.mark.parametrize(
    ("name", "public_key"),
    [("OtherKey", OTHER_PUB), ("PeterNeumann", OTHER_PUB), ("PeterNeumanN", PETER_PUB)],
)
def test_note_from_another_key_is_unknown_key(name, public_key):
    with pytest.raises(VerificationError) as info:
        verify_note(GO_NOTE, name, public_key)
    assert info.value.reason == "unknown-key"


def test_signature_with_right_name_and_id_but_other_key_fails():
    # Only reachable by a key id collision; the note must still not verify.
    forged = NoteSignature("PeterNeumann", key_id("PeterNeumann", PETER_PUB), b"\x00" * 64)
    with pytest.raises(VerificationError, match="bad-signature"):
        verify_note(Note(GO_TEXT, (forged,)).encode(), "PeterNeumann", PETER_PUB)


def test_add_signature_appends_and_replaces_own_signature():
    note = parse_note(GO_NOTE)
    twice = add_signature(note, "other.example/log", OTHER)
    assert [s.name for s in twice.signatures] == ["PeterNeumann", "other.example/log"]
    verify_note(twice.encode(), "other.example/log", OTHER_PUB)
    verify_note(twice.encode(), "PeterNeumann", PETER_PUB)
    stale = Note(GO_TEXT, (NoteSignature("PeterNeumann", bytes.fromhex("c74f20a3"), b"old"),))
    assert add_signature(stale, "PeterNeumann", PETER).encode() == GO_NOTE.encode()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("no newline", "n"),
        ("", "n"),
        ("bell \x07\n", "n"),
        ("ok\n", ""),
        ("ok\n", "a b"),
        ("ok\n", "a+b"),
        ("ok\n", "a\tb"),
        ("ok\n", "a\u2003b"),
        ("ok\n", "a\ud800"),
        ("bad \ud800\n", "n"),
    ],
)
def test_sign_rejects_bad_text_or_name(text, name):
    with pytest.raises(FormatError):
        sign_note(text, name, OTHER)


def test_bad_values_are_rejected_by_constructors():
    with pytest.raises(FormatError):
        Note(GO_TEXT, ()).encode()
    with pytest.raises(FormatError):
        NoteSignature("n", b"abc", b"sig")
    with pytest.raises(FormatError):
        NoteSignature("n", b"abcd", b"")
    with pytest.raises(FormatError):
        key_id("n", b"\x00" * 31)
    with pytest.raises(FormatError):
        verify_note(GO_NOTE, "PeterNeumann", PETER_PUB + b"\x00")


def test_c2sp_spec_examples_parse_and_re_encode():
    for example in [C2SP_NOTE, C2SP_CHECKPOINT]:
        assert parse_note(example).encode() == example.encode()
    checkpoint = parse_checkpoint(parse_note(C2SP_CHECKPOINT).text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\r", min_codepoint=0x0A)
NOTE_TEXTS = st.lists(st.text(TEXT_CHARS.filter(lambda c: c >= " " or c == "\n")), min_size=1)
NAMES = st.text(
    st.characters(codec="utf-8", min_codepoint=0x21).filter(lambda c: not c.isspace() and c != "+"),
    min_size=1,
    max_size=20,
)


@ROUND_TRIP
@given(NOTE_TEXTS, NAMES)
def test_sign_parse_verify_round_trip(lines, name):
    text = "".join(line + "\n" for line in lines)
    signed = sign_note(text, name, OTHER)
    note = verify_note(signed, name, OTHER_PUB)
    assert note.text == text
    assert note.encode() == signed
    assert parse_verifier_key(verifier_key(name, OTHER_PUB)) == (name, OTHER_PUB)


# --- checkpoints ---------------------------------------------------------------------------

ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
CHECKPOINT_TEXT = f"example.org/kopir\n42\n{ROOT_B64}\n"


def test_checkpoint_format_and_round_trip():
    cp = Checkpoint("example.org/kopir", 42, ROOT)
    assert cp.text() == CHECKPOINT_TEXT
    assert parse_checkpoint(CHECKPOINT_TEXT) == cp
    assert parse_checkpoint(CHECKPOINT_TEXT.encode()) == cp
    ext = Checkpoint("example.org/kopir", 0, ROOT, ("extension one", "— two"))
    assert ext.text() == f"example.org/kopir\n0\n{ROOT_B64}\nextension one\n— two\n"
    assert parse_checkpoint(ext.text()) == ext


def test_signed_checkpoint_end_to_end():
    cp = Checkpoint("example.org/kopir", 7, ROOT)
    signed = sign_note(cp.text(), "example.org/kopir", OTHER)
    assert parse_checkpoint(verify_note(signed, "example.org/kopir", OTHER_PUB).text) == cp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        CHECKPOINT_TEXT[:-1],
        CHECKPOINT_TEXT + "\n",
        "example.org/kopir\n42\n",
        f"\n42\n{ROOT_B64}\n",
        f"example.org/kopir\n042\n{ROOT_B64}\n",
        f"example.org/kopir\n-1\n{ROOT_B64}\n",
        f"example.org/kopir\n+1\n{ROOT_B64}\n",
        f"example.org/kopir\n 1\n{ROOT_B64}\n",
        f"example.org/kopir\n1 \n{ROOT_B64}\n",
        f"example.org/kopir\n\u0664\u0662\n{ROOT_B64}\n",
        f"example.org/kopir\n1_000\n{ROOT_B64}\n",
        f"example.org/kopir\n18446744073709551616\n{ROOT_B64}\n",
        f"example.org/kopir\n{'9' * 5000}\n{ROOT_B64}\n",
        f"example.org/kopir\n\n{ROOT_B64}\n",
        f"example.org/kopir\n42\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"example.org/kopir\n42\n{base64.b64encode(ROOT + b'x').decode()}\n",
        f"example.org/kopir\n42\n{ROOT_B64.rstrip('=')}\n",
        f"example.org/kopir\n42\n{ROOT_B64[:-2]}B=\n",
        f"example.org/kopir\n42\n{ROOT_B64} \n",
        CHECKPOINT_TEXT.replace("\n", "\r\n"),
        CHECKPOINT_TEXT + "ext\n\n",
        CHECKPOINT_TEXT + "\x00\n",
        "example.org/\x7f\x01\n42\n" + ROOT_B64 + "\n",
        "\ud800\n42\n" + ROOT_B64 + "\n",
    ],
)
def test_bad_checkpoints_are_rejected(text):
    with pytest.raises(FormatError):
        parse_checkpoint(text)


def test_checkpoint_constructor_rejects_bad_values():
    for args in [
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        ("a", -1, ROOT),
        ("a", 2**64, ROOT),
        ("a", 1, ROOT[:31]),
        ("a", 1, ROOT, ("",)),
        ("a", 1, ROOT, ("x\ny",)),
    ]:
        with pytest.raises(FormatError):
            Checkpoint(*args)
    assert parse_checkpoint(Checkpoint("a", 2**64 - 1, ROOT).text()).size == 2**64 - 1


# --- fuzzing: only FormatError, and whatever is accepted re-encodes to the same bytes -------


def as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def check_parse_note(data: str | bytes) -> None:
    try:
        note = parse_note(data)
    except FormatError:
        return
    assert note.encode() == as_bytes(data)


def check_parse_checkpoint(data: str | bytes) -> None:
    try:
        cp = parse_checkpoint(data)
    except FormatError:
        return
    assert cp.text().encode() == as_bytes(data)


def check_parse_verifier_key(data: str) -> None:
    try:
        name, pub = parse_verifier_key(data)
    except FormatError:
        return
    assert verifier_key(name, pub) == data


ALL_PARSERS = [check_parse_note, check_parse_checkpoint]


@FUZZ
@given(st.text() | st.binary())
def test_fuzz_random_input(data):
    for check in ALL_PARSERS:
        check(data)
    if isinstance(data, str):
        check_parse_verifier_key(data)


@FUZZ
@given(mutated(GO_NOTE + ENOCH_SIG, NOTE_SPECIAL) | mutated(C2SP_CHECKPOINT, NOTE_SPECIAL))
def test_fuzz_mutated_notes(text):
    check_parse_note(text)
    check_parse_note(text.encode())


@FUZZ
@given(mutated(CHECKPOINT_TEXT, NOTE_SPECIAL) | mutated(CHECKPOINT_TEXT + "ext\n", NOTE_SPECIAL))
def test_fuzz_mutated_checkpoints(text):
    check_parse_checkpoint(text)
    check_parse_checkpoint(text.encode())


@FUZZ
@given(mutated(PETER_VKEY, NOTE_SPECIAL) | mutated(ENOCH_VKEY, NOTE_SPECIAL))
def test_fuzz_mutated_verifier_keys(text):
    check_parse_verifier_key(text)


@FUZZ
@given(mutated(GO_NOTE, NOTE_SPECIAL))
def test_fuzz_verify_note_accepts_only_the_signed_text(text):
    try:
        note = verify_note(text, "PeterNeumann", PETER_PUB)
    except (FormatError, VerificationError):
        return
    assert note.text == GO_TEXT
