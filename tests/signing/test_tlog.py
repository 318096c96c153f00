"""Tests for signing.tlog against a literal RFC 9162 reference and the CT golden vectors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing.errors import FormatError, VerificationError
from signing.tlog import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_PROOF_HASHES,
    ConsistencyProof,
    InclusionProof,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    parse_consistency_proof,
    parse_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.strategies import mutated

PROOF_SPECIAL = "\n\r =+/0123456789aA-"
FUZZ = settings(max_examples=300, deadline=None, database=None)
TREES = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- reference: RFC 9162 §2.1 written out literally, over entries, with list slicing ------


def ref_leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return ref_leaf(d[0])
    k = ref_split(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_split(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def path_len(m: int, n: int) -> int:
    """len(PATH(m, D[0:n])), from the same recursion but without hashing."""
    if n == 1:
        return 0
    k = ref_split(n)
    return 1 + (path_len(m, k) if m < k else path_len(m - k, n - k))


def proof_len(m: int, n: int, b: bool = True) -> int:
    """len(PROOF(m, D[0:n])), from the same recursion but without hashing."""
    if m == n:
        return 0 if b else 1
    k = ref_split(n)
    return 1 + (proof_len(m, k, b) if m <= k else proof_len(m - k, n - k, False))


ENTRIES = [b"entry %d" % i for i in range(2048)]
LEAVES = [ref_leaf(e) for e in ENTRIES]


def flip(h: bytes, bit: int) -> bytes:
    out = bytearray(h)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


# --- golden vectors (google/certificate-transparency, RFC 6962 test data) -----------------

CT_ENTRIES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H96 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H5F = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H6B = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
HBC = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
HCA = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
HD3 = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
H0E = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
CT_INCLUSION = [
    (0, 1, []),
    (0, 8, [H96, H5F, H6B]),
    (5, 8, [HBC, HCA, HD3]),
    (2, 3, [CT_ROOTS[2]]),
    (1, 5, [CT_ROOTS[1], H5F, HBC]),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [H96, H5F, H6B]),
    (6, 8, [H0E, HCA, HD3]),
    (2, 5, [H5F, HBC]),
]


def test_hash_primitives():
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    a, b = LEAVES[0], LEAVES[1]
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_ct_golden_roots():
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    for n, want in enumerate(CT_ROOTS):
        assert root_hash(leaves[:n]).hex() == want


@pytest.mark.parametrize(("index", "size", "want"), CT_INCLUSION)
def test_ct_golden_inclusion(index, size, want):
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    proof = inclusion_proof(leaves, index, size)
    assert [h.hex() for h in proof] == want
    verify_inclusion(leaves[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "want"), CT_CONSISTENCY)
def test_ct_golden_consistency(old, new, want):
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    proof = consistency_proof(leaves, old, new)
    assert [h.hex() for h in proof] == want
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    verify_consistency(old, new, old_root, new_root, proof)


# --- every proof of every small tree against the reference ------------------------------


def check_inclusion(entries: list[bytes], index: int, root: bytes) -> None:
    size = len(entries)
    proof = inclusion_proof(LEAVES, index, size)
    assert proof == ref_path(index, entries)
    leaf = LEAVES[index]
    verify_inclusion(leaf, index, size, proof, root)
    for i in range(len(proof)):
        bad = proof[:i] + [flip(proof[i], 8 * i + index)] + proof[i + 1 :]
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, bad, root)
    reject_inclusion_shapes(entries, index, proof, root)


def reject_inclusion_shapes(entries: list[bytes], index: int, proof: list, root: bytes) -> None:
    size = len(entries)
    leaf = LEAVES[index]
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, proof, flip(root, index))
    with pytest.raises(VerificationError):
        verify_inclusion(LEAVES[size], index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, [*proof, LEAVES[0]], root)
    if proof:
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, proof[:-1], root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, proof[1:], root)
    for other in {0, index - 1, index + 1, size - 1} - {index}:
        if 0 <= other < size:
            with pytest.raises(VerificationError):
                verify_inclusion(leaf, other, size, proof, root)
    # Sizes whose paths have another length cannot accept this proof. (Sizes with the
    # same path shape for this index can: RFC 9162 binds the size through the root.)
    for other in (0, index, index + 1, size - 1, size + 1, 2 * size):
        if other <= index:
            with pytest.raises(FormatError):
                verify_inclusion(leaf, index, other, proof, root)
        elif path_len(index, other) != len(proof):
            with pytest.raises(VerificationError):
                verify_inclusion(leaf, index, other, proof, root)


def check_consistency(entries: list[bytes], old: int, roots: list[bytes]) -> None:
    new = len(entries)
    proof = consistency_proof(LEAVES, old, new)
    assert proof == ref_proof(old, entries)
    verify_consistency(old, new, roots[old], roots[new], proof)
    for i in range(len(proof)):
        bad = proof[:i] + [flip(proof[i], 8 * i + old)] + proof[i + 1 :]
        with pytest.raises(VerificationError):
            verify_consistency(old, new, roots[old], roots[new], bad)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, flip(roots[old], 3), roots[new], proof)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, roots[old], flip(roots[new], 5), proof)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, roots[old], roots[new], [*proof, LEAVES[0]])
    if proof:
        with pytest.raises(VerificationError):
            verify_consistency(old, new, roots[old], roots[new], proof[:-1])
        with pytest.raises(VerificationError):
            verify_consistency(old, new, roots[old], roots[new], proof[1:])
    if old < new:
        # A different old size with another proof length cannot accept this proof.
        for other in {1, old - 1, old + 1, new - 1, new} - {0, old}:
            if proof_len(other, new) != len(proof):
                with pytest.raises(VerificationError):
                    verify_consistency(other, new, roots[old], roots[new], proof)


@pytest.mark.parametrize("size", range(65))
def test_every_proof_of_small_trees_matches_reference(size):
    entries = ENTRIES[:size]
    roots = [ref_mth(entries[:n]) for n in range(size + 1)]
    assert root_hash(LEAVES[:size]) == roots[size]
    for index in range(size):
        check_inclusion(entries, index, roots[size])
    for old in range(1, size + 1):
        check_consistency(entries, old, roots)


@TREES
@given(st.integers(1, 2000), st.data())
def test_random_larger_trees_match_reference(size, data):
    entries = ENTRIES[:size]
    root = ref_mth(entries)
    assert root_hash(LEAVES[:size]) == root
    index = data.draw(st.integers(0, size - 1), label="index")
    check_inclusion(entries, index, root)
    old = data.draw(st.integers(1, size), label="old")
    proof = consistency_proof(LEAVES, old, size)
    assert proof == ref_proof(old, entries)
    verify_consistency(old, size, ref_mth(entries[:old]), root, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="flipped")
        bad = proof[:i] + [flip(proof[i], i)] + proof[i + 1 :]
        with pytest.raises(VerificationError):
            verify_consistency(old, size, ref_mth(entries[:old]), root, bad)


def test_root_of_100k_leaves_matches_level_by_level_reference():
    leaves = [leaf_hash(b"%d" % i) for i in range(100_000)]
    # For 100k leaves the literal recursion is too slow to be a useful check, so split
    # by hand at 65536 (the largest power of two below 100000) and use it on the halves.
    left, right = root_hash(leaves[:65536]), root_hash(leaves[65536:])
    assert root_hash(leaves) == node_hash(left, right)
    proof = inclusion_proof(leaves, 99_999, 100_000)
    verify_inclusion(leaves[99_999], 99_999, 100_000, proof, root_hash(leaves))


# --- argument and edge-case rejections -----------------------------------------------------


def test_builders_reject_out_of_range_arguments():
    for index, size in [(0, 0), (3, 3), (-1, 3), (0, len(LEAVES) + 1), (0, -1)]:
        with pytest.raises(FormatError):
            inclusion_proof(LEAVES, index, size)
    for old, new in [(0, 5), (6, 5), (-1, 5), (1, len(LEAVES) + 1)]:
        with pytest.raises(FormatError):
            consistency_proof(LEAVES, old, new)
    assert consistency_proof(LEAVES, 7, 7) == []
    with pytest.raises(FormatError):
        root_hash([b"not a hash"])


def test_verify_inclusion_rejects_malformed_arguments():
    leaves = LEAVES[:5]
    root, proof = root_hash(leaves), inclusion_proof(leaves, 2, 5)
    verify_inclusion(leaves[2], 2, 5, proof, root)
    bad_calls = [
        (leaves[2][:31], 2, 5, proof, root),
        (leaves[2], 2, 5, proof, root + b"\x00"),
        (leaves[2], 2, 5, [*proof[:-1], proof[-1][:31]], root),
        (leaves[2], 2, 5, [*proof[:-1], bytearray(proof[-1])], root),
        (leaves[2], 5, 5, proof, root),
        (leaves[2], -1, 5, proof, root),
        (leaves[2], 0, 0, [], root),
        (leaves[2], 2, 5, [root] * (MAX_PROOF_HASHES + 1), root),
    ]
    for call in bad_calls:
        with pytest.raises(FormatError):
            verify_inclusion(*call)


def test_verify_consistency_edge_cases():
    r3, r5 = root_hash(LEAVES[:3]), root_hash(LEAVES[:5])
    proof = consistency_proof(LEAVES, 3, 5)
    verify_consistency(3, 5, r3, r5, proof)
    verify_consistency(5, 5, r5, r5, [])
    with pytest.raises(VerificationError, match="split view"):
        verify_consistency(5, 5, r5, r3, [])
    with pytest.raises(VerificationError):
        verify_consistency(5, 5, r5, r5, [r5])
    with pytest.raises(VerificationError):
        verify_consistency(3, 5, r3, r5, [])
    for old, new in [(0, 5), (0, 0), (6, 5), (-1, 5)]:
        with pytest.raises(FormatError):
            verify_consistency(old, new, r3, r5, proof)
    for bad in [(r3[:31], r5, proof), (r3, r5 + b"x", proof), (r3, r5, [proof[0][:-1]])]:
        with pytest.raises(FormatError):
            verify_consistency(3, 5, *bad)


def test_verification_error_reason_is_bad_proof():
    leaves = LEAVES[:4]
    proof = inclusion_proof(leaves, 1, 4)
    with pytest.raises(VerificationError) as info:
        verify_inclusion(leaves[1], 1, 4, proof, EMPTY_ROOT)
    assert info.value.reason == "bad-proof"


# --- text form ------------------------------------------------------------------------------

H_A, H_B = LEAVES[0], LEAVES[1]
B64_A, B64_B = base64.b64encode(H_A).decode(), base64.b64encode(H_B).decode()
VALID_INCLUSION = f"kopir-inclusion-proof/1\nindex 2\nsize 5\n{B64_A}\n{B64_B}\n"
VALID_CONSISTENCY = f"kopir-consistency-proof/1\nold 3\nnew 7\n{B64_A}\n"


def test_text_form_is_exactly_as_documented():
    assert InclusionProof(2, 5, (H_A, H_B)).text() == VALID_INCLUSION
    assert ConsistencyProof(3, 7, (H_A,)).text() == VALID_CONSISTENCY
    assert ConsistencyProof(4, 4, ()).text() == "kopir-consistency-proof/1\nold 4\nnew 4\n"


def test_text_round_trip_of_generated_proofs():
    leaves = LEAVES[:37]
    for i in (0, 5, 36):
        p = InclusionProof(i, 37, tuple(inclusion_proof(leaves, i, 37)))
        assert parse_inclusion_proof(p.text()) == p
        assert parse_inclusion_proof(p.text().encode()) == p
    for m in (1, 16, 30, 37):
        c = ConsistencyProof(m, 37, tuple(consistency_proof(leaves, m, 37)))
        assert parse_consistency_proof(c.text()) == c


BAD_INCLUSION = [
    "",
    "\n",
    VALID_INCLUSION[:-1],
    VALID_INCLUSION + "\n",
    VALID_INCLUSION.replace("\n", "\r\n"),
    VALID_INCLUSION.replace("index 2", "index 02"),
    VALID_INCLUSION.replace("index 2", "index +2"),
    VALID_INCLUSION.replace("index 2", "index -2"),
    VALID_INCLUSION.replace("index 2", "index  2"),
    VALID_INCLUSION.replace("index 2", "index 2 "),
    VALID_INCLUSION.replace("index 2", "index \u0662"),  # ARABIC-INDIC DIGIT TWO
    VALID_INCLUSION.replace("index 2", "index 2_0"),
    VALID_INCLUSION.replace("index 2", "index 5"),  # index must be below size
    VALID_INCLUSION.replace("index 2", "Index 2"),
    VALID_INCLUSION.replace("size 5", "size 5\nsize 5"),
    VALID_INCLUSION.replace("size 5", "size " + "9" * 25),
    VALID_INCLUSION.replace("size 5", "size 18446744073709551616"),
    VALID_INCLUSION.replace("/1", "/2"),
    " " + VALID_INCLUSION,
    "kopir-inclusion-proof/1\nindex 0\n",
    VALID_INCLUSION.replace(B64_A, B64_A.rstrip("=")),
    VALID_INCLUSION.replace(B64_A, B64_A[:-2] + chr(ord(B64_A[-2]) + 1) + "="),
    VALID_INCLUSION.replace(B64_A, base64.b64encode(H_A[:31]).decode()),
    VALID_INCLUSION.replace(B64_A, base64.b64encode(H_A + b"x").decode()),
    VALID_INCLUSION.replace(B64_A, B64_A + " "),
    VALID_INCLUSION.replace(B64_A, ""),
    "kopir-inclusion-proof/1\nindex 0\nsize 1\n" + f"{B64_A}\n" * 65,
    "kopir-consistency-proof/1\nold 3\nnew 7\n",
]
BAD_CONSISTENCY = [
    VALID_CONSISTENCY.replace("old 3", "old 0"),
    VALID_CONSISTENCY.replace("old 3", "old 8"),
    VALID_CONSISTENCY.replace("old 3", "old 03"),
    VALID_CONSISTENCY.replace("new 7", "new"),
    VALID_CONSISTENCY.replace("new 7\n", ""),
    VALID_CONSISTENCY[:-1],
    VALID_INCLUSION,
]


@pytest.mark.parametrize("text", BAD_INCLUSION)
def test_parse_inclusion_rejects(text):
    with pytest.raises(FormatError):
        parse_inclusion_proof(text)


@pytest.mark.parametrize("text", BAD_CONSISTENCY)
def test_parse_consistency_rejects(text):
    with pytest.raises(FormatError):
        parse_consistency_proof(text)


def test_parsers_reject_non_ascii_bytes():
    for data in [b"\xff", VALID_INCLUSION.encode() + b"\x80", "é".encode()]:
        with pytest.raises(FormatError):
            parse_inclusion_proof(data)
        with pytest.raises(FormatError):
            parse_consistency_proof(data)


def test_dataclasses_reject_invalid_values():
    for args in [(5, 5, ()), (-1, 5, ()), (0, 2**64, ()), (0, 1, (b"short",))]:
        with pytest.raises(FormatError):
            InclusionProof(*args)
    for args in [(0, 5, ()), (6, 5, ()), (1, 1, (H_A,) * 65)]:
        with pytest.raises(FormatError):
            ConsistencyProof(*args)


# --- fuzzing the parsers: only FormatError, and nothing accepted but the canonical form -----

PARSERS = [parse_inclusion_proof, parse_consistency_proof]


def assert_strict(parse, data):
    try:
        proof = parse(data)
    except FormatError:
        return
    text = proof.text()
    assert (text.encode() if isinstance(data, bytes) else text) == data


VALID_NUMBERS = st.integers(0, 20).map(str)
NUMBERS = st.one_of(
    VALID_NUMBERS, VALID_NUMBERS, st.sampled_from(["00", "07", "-1", "+1", "1 ", ""])
)
HASH_LINES = st.sampled_from([B64_A] * 3 + [B64_B] * 3 + [B64_A.rstrip("="), B64_B[:-2] + "=="])
SEPARATORS = st.sampled_from(["\n"] * 30 + ["\r\n", "", " ", "\n\n"])
HEADERS = [
    ("kopir-inclusion-proof/1", "index", "size"),
    ("kopir-consistency-proof/1", "old", "new"),
]


@st.composite
def near_proofs(draw):
    """Texts shaped like proofs, so that a good share of them parse."""
    header, first, second = draw(st.sampled_from(HEADERS))
    if draw(st.integers(0, 9)) == 0:
        first, second = second, first
    lines = [header, f"{first} {draw(NUMBERS)}", f"{second} {draw(NUMBERS)}"]
    lines += draw(st.lists(HASH_LINES, max_size=4))
    return "".join(line + draw(SEPARATORS) for line in lines)


@FUZZ
@given(st.text() | st.binary())
def test_fuzz_random_input(data):
    for parse in PARSERS:
        assert_strict(parse, data)


@FUZZ
@given(near_proofs())
def test_fuzz_near_proofs(text):
    for parse in PARSERS:
        assert_strict(parse, text)
        assert_strict(parse, text.encode())


@FUZZ
@given(mutated(VALID_INCLUSION, PROOF_SPECIAL) | mutated(VALID_CONSISTENCY, PROOF_SPECIAL))
def test_fuzz_mutated_valid_proofs(text):
    for parse in PARSERS:
        assert_strict(parse, text)
        assert_strict(parse, text.encode())
