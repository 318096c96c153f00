"""minisign-compatible keys and detached signatures (sans-IO).

Theory of operation
-------------------
minisign (https://jedisct1.github.io/minisign/) stores everything as one comment line and one
base64 line:

* public key:  ``"Ed" ‖ key id (8) ‖ Ed25519 public key (32)``;
* secret key:  ``"Ed" ‖ kdf ‖ "B2" ‖ salt (32) ‖ opslimit (8 LE) ‖ memlimit (8 LE) ‖
  (key id ‖ secret key (64) ‖ checksum (32))``, the last part XORed with an scrypt stream when
  kdf is ``"Sc"``; kdf ``00 00`` means unencrypted (``minisign -G -W``);
* signature: four lines, the second ``alg ‖ key id ‖ sig`` where ``alg`` is ``"Ed"`` (raw
  message) or ``"ED"`` (BLAKE2b-512 of the message), and the fourth a global signature over
  ``sig ‖ trusted comment``.

The secret key's 64 bytes are libsodium's layout: the 32-byte seed followed by the public key.
The checksum is BLAKE2b-256 of ``"Ed" ‖ key id ‖ secret key``. minisign 0.11 leaves it zero in
unencrypted keys and does not check it there; we write the real value and accept either.

The scrypt parameters are not stored directly: like libsodium's
``crypto_pwhash_scryptsalsa208sha256``, N, r and p are derived from opslimit and memlimit.

This module only transforms bytes and text. File access lives in ``signing.keyfiles``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signing.errors import FormatError, KeyFileError, VerificationError

KEY_ID_SIZE = 8
SIG_ALG = b"Ed"
SIG_ALG_HASHED = b"ED"
KDF_SCRYPT = b"Sc"
KDF_NONE = b"\x00\x00"
CHK_ALG = b"B2"
UNTRUSTED_PREFIX = "untrusted comment: "
TRUSTED_PREFIX = "trusted comment: "
# libsodium's crypto_pwhash_scryptsalsa208sha256_{OPS,MEM}LIMIT_SENSITIVE, what minisign uses.
OPSLIMIT_SENSITIVE = 33_554_432
MEMLIMIT_SENSITIVE = 1_073_741_824
# A key file may not make us allocate more than this for scrypt (stock files need 1 GiB).
MAX_SCRYPT_MEMORY = 2**31 - 1 - 2**20

_PUBLIC_LEN = 2 + KEY_ID_SIZE + 32
_SECRET_LEN = 2 + 2 + 2 + 32 + 8 + 8 + KEY_ID_SIZE + 64 + 32
_SIG_LEN = 2 + KEY_ID_SIZE + 64
_KEYNUM_SK_LEN = KEY_ID_SIZE + 64 + 32


def b64decode_strict(text: str, length: int, what: str) -> bytes:
    """Standard base64 with padding, exactly ``length`` bytes, nothing else tolerated."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(f"{what}: not valid base64") from exc
    if len(raw) != length or base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what}: expected {length} bytes of canonical base64")
    return raw


def key_id_hex(key_id: bytes) -> str:
    """The key id as minisign prints it: the little-endian uint64 in upper-case hex.

    Stock minisign 0.11 prints it with ``%" PRIX64 "``, without zero padding (PROTOCOLS.md says
    ``%016X``; the tool is what auditors compare against, so we follow the tool).
    """
    return f"{int.from_bytes(key_id, 'little'):X}"


def _single_line(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise FormatError(f"{what} must be a single line")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{what} is not valid UTF-8 text") from None
    return text


def _split_lines(text: str, count: int, what: str) -> list[str]:
    """Split a minisign file into exactly ``count`` lines, each terminated by ``\\n``."""
    if not text.endswith("\n"):
        text += "\n"
    lines = text.split("\n")
    if len(lines) != count + 1 or lines[-1] != "" or "\r" in text:
        raise FormatError(f"{what}: expected exactly {count} lines")
    return lines[:count]


def _comment(line: str, prefix: str, what: str) -> str:
    if not line.startswith(prefix):
        raise FormatError(f"{what}: line should start with {prefix.strip()!r}")
    return line[len(prefix) :]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key with its minisign key id."""

    key_id: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Read a public key file's text, or the bare base64 line (``minisign -P``)."""
        line = text[:-1] if text.endswith("\n") else text
        if "\n" in line:
            comment, line = _split_lines(text, 2, "public key")
            _comment(comment, UNTRUSTED_PREFIX, "public key")
        raw = b64decode_strict(line, _PUBLIC_LEN, "public key")
        if raw[:2] != SIG_ALG:
            raise FormatError("public key: unsupported algorithm (expected Ed25519 'Ed')")
        return cls(raw[2:10], raw[10:])

    @classmethod
    def parse_line(cls, line: str) -> PublicKey:
        """Only the bare base64 line, as stored in ``trust.json``."""
        if "\n" in line or "\r" in line:
            raise FormatError("public key: expected the bare base64 line")
        return cls.parse(line)

    @property
    def line(self) -> str:
        """The base64 line, as in ``minisign -P <line>`` and in ``trust.json``."""
        return base64.b64encode(SIG_ALG + self.key_id + self.key).decode("ascii")

    @property
    def hex_id(self) -> str:
        return key_id_hex(self.key_id)

    def text(self) -> str:
        return f"{UNTRUSTED_PREFIX}minisign public key {self.hex_id}\n{self.line}\n"

    @cached_property
    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.key)


@dataclass(frozen=True)
class SecretKey:
    """A decrypted minisign secret key: key id and the 32-byte Ed25519 seed."""

    key_id: bytes
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(KEY_ID_SIZE), os.urandom(32))

    @cached_property
    def signer(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @cached_property
    def public_key(self) -> PublicKey:
        raw = self.signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.key_id, raw)

    @property
    def hex_id(self) -> str:
        return key_id_hex(self.key_id)

    def _keynum_sk(self) -> bytes:
        sk = self.seed + self.public_key.key
        return (
            self.key_id + sk + hashlib.blake2b(SIG_ALG + self.key_id + sk, digest_size=32).digest()
        )

    def text(
        self,
        passphrase: bytes | None,
        *,
        opslimit: int = OPSLIMIT_SENSITIVE,
        memlimit: int = MEMLIMIT_SENSITIVE,
    ) -> str:
        """The secret key file's text, encrypted with scrypt when a passphrase is given."""
        keynum_sk = self._keynum_sk()
        if passphrase is None:
            head = SIG_ALG + KDF_NONE + CHK_ALG + bytes(48)
            comment = "minisign secret key (unencrypted)"
        else:
            salt = os.urandom(32)
            stream = scrypt_stream(passphrase, salt, opslimit, memlimit, _KEYNUM_SK_LEN)
            keynum_sk = bytes(a ^ b for a, b in zip(keynum_sk, stream, strict=True))
            head = SIG_ALG + KDF_SCRYPT + CHK_ALG + salt
            head += opslimit.to_bytes(8, "little") + memlimit.to_bytes(8, "little")
            comment = "minisign encrypted secret key"
        body = base64.b64encode(head + keynum_sk).decode("ascii")
        return f"{UNTRUSTED_PREFIX}{comment}\n{body}\n"


@dataclass(frozen=True)
class EncryptedSecretKey:
    """A parsed secret key file whose key part is still encrypted (or not, if kdf is none)."""

    encrypted: bool
    salt: bytes
    opslimit: int
    memlimit: int
    keynum_sk: bytes = field(repr=False)

    def decrypt(self, passphrase: bytes | None) -> SecretKey:
        """Decrypt with the passphrase (ignored when the file is unencrypted)."""
        keynum_sk = self.keynum_sk
        if self.encrypted:
            if passphrase is None:
                raise KeyFileError("this secret key is encrypted: a passphrase is needed")
            stream = scrypt_stream(
                passphrase, self.salt, self.opslimit, self.memlimit, _KEYNUM_SK_LEN
            )
            keynum_sk = bytes(a ^ b for a, b in zip(keynum_sk, stream, strict=True))
        key_id, sk, chk = keynum_sk[:8], keynum_sk[8:72], keynum_sk[72:]
        want = hashlib.blake2b(SIG_ALG + key_id + sk, digest_size=32).digest()
        zero_ok = not self.encrypted and chk == bytes(32)
        if not (zero_ok or hmac.compare_digest(want, chk)):
            if self.encrypted:
                raise KeyFileError("wrong passphrase for this secret key")
            raise KeyFileError("secret key checksum mismatch: the file is damaged")
        key = SecretKey(key_id, sk[:32])
        if key.public_key.key != sk[32:]:
            raise KeyFileError("secret key is inconsistent: its public half does not match")
        return key


def parse_secret_key(text: str) -> EncryptedSecretKey:
    """Parse a secret key file; call ``.decrypt(passphrase)`` on the result."""
    lines = _split_lines(text, 2, "secret key")
    _comment(lines[0], UNTRUSTED_PREFIX, "secret key")
    raw = b64decode_strict(lines[1], _SECRET_LEN, "secret key")
    if raw[0:2] != SIG_ALG:
        raise FormatError("secret key: unsupported signature algorithm (expected 'Ed')")
    if raw[2:4] not in (KDF_SCRYPT, KDF_NONE):
        raise FormatError("secret key: unsupported key derivation (expected scrypt or none)")
    if raw[4:6] != CHK_ALG:
        raise FormatError("secret key: unsupported checksum (expected BLAKE2b 'B2')")
    opslimit = int.from_bytes(raw[38:46], "little")
    memlimit = int.from_bytes(raw[46:54], "little")
    encrypted = raw[2:4] == KDF_SCRYPT
    if encrypted:
        scrypt_params(opslimit, memlimit)  # reject absurd parameters before anyone waits
    return EncryptedSecretKey(encrypted, raw[6:38], opslimit, memlimit, raw[54:])


def scrypt_params(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(log2 N, r, p) from opslimit/memlimit, as libsodium's scryptsalsa208sha256 picks them."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if not opslimit < memlimit // 32:
        max_rp = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF)
        p = max_rp // r
    if p < 1 or 128 * r * ((1 << n_log2) + p) > MAX_SCRYPT_MEMORY:
        raise FormatError(
            f"secret key: scrypt limits opslimit={opslimit} memlimit={memlimit} are out of range"
        )
    return n_log2, r, p


def scrypt_stream(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int, n: int) -> bytes:
    n_log2, r, p = scrypt_params(opslimit, memlimit)
    return hashlib.scrypt(passphrase, salt=salt, n=1 << n_log2, r=r, p=p, maxmem=2**31 - 1, dklen=n)


@dataclass(frozen=True)
class Signature:
    """A detached minisign signature."""

    algorithm: bytes
    """``b"ED"`` (prehashed with BLAKE2b-512, the default) or ``b"Ed"`` (legacy, raw message)."""
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes
    untrusted_comment: str = "signature from kopir secret key"

    @property
    def prehashed(self) -> bool:
        return self.algorithm == SIG_ALG_HASHED

    @property
    def hex_id(self) -> str:
        return key_id_hex(self.key_id)

    def text(self) -> str:
        blob = base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii")
        glob = base64.b64encode(self.global_signature).decode("ascii")
        return (
            f"{UNTRUSTED_PREFIX}{self.untrusted_comment}\n{blob}\n"
            f"{TRUSTED_PREFIX}{self.trusted_comment}\n{glob}\n"
        )


def parse_signature(text: str) -> Signature:
    """Parse the four lines of a ``.minisig`` file."""
    lines = _split_lines(text, 4, "signature")
    untrusted = _comment(lines[0], UNTRUSTED_PREFIX, "signature")
    raw = b64decode_strict(lines[1], _SIG_LEN, "signature")
    if raw[:2] not in (SIG_ALG, SIG_ALG_HASHED):
        raise FormatError("signature: unsupported algorithm (expected 'Ed' or 'ED')")
    trusted = _single_line(_comment(lines[2], TRUSTED_PREFIX, "signature"), "trusted comment")
    glob = b64decode_strict(lines[3], 64, "signature (global)")
    return Signature(raw[:2], raw[2:10], raw[10:], trusted, glob, untrusted)


def message_digest(message: bytes) -> bytes:
    """BLAKE2b-512, what ``ED`` signatures sign."""
    return hashlib.blake2b(message, digest_size=64).digest()


def sign(
    key: SecretKey,
    message: bytes,
    trusted_comment: str,
    *,
    prehash: bool = True,
    untrusted_comment: str = "signature from kopir secret key",
) -> Signature:
    """Sign ``message``: prehashed (``ED``) unless ``prehash`` is false."""
    payload = message_digest(message) if prehash else message
    return sign_payload(
        key, payload, trusted_comment, prehash=prehash, untrusted_comment=untrusted_comment
    )


def sign_payload(
    key: SecretKey,
    payload: bytes,
    trusted_comment: str,
    *,
    prehash: bool,
    untrusted_comment: str = "signature from kopir secret key",
) -> Signature:
    """Sign an already-prepared payload: the BLAKE2b-512 digest when ``prehash`` is true."""
    _single_line(trusted_comment, "trusted comment")
    _single_line(untrusted_comment, "untrusted comment")
    sig = key.signer.sign(payload)
    glob = key.signer.sign(sig + trusted_comment.encode("utf-8"))
    alg = SIG_ALG_HASHED if prehash else SIG_ALG
    return Signature(alg, key.key_id, sig, trusted_comment, glob, untrusted_comment)


def verify(
    public: PublicKey,
    signature: Signature,
    message: bytes | None = None,
    digest: bytes | None = None,
) -> None:
    """Check a signature over ``message`` (or over its precomputed BLAKE2b-512 ``digest``).

    Raises ``VerificationError`` with reason ``unknown-key`` when the key ids differ and
    ``bad-signature`` when either signature fails, like ``minisign -V``.
    """
    if signature.key_id != public.key_id:
        raise VerificationError(
            "unknown-key",
            f"signed by key {signature.hex_id}, but the public key is {public.hex_id}",
        )
    if message is None and digest is None:
        raise ValueError("verify() needs the message or its digest")
    if signature.prehashed:
        payload = digest if digest is not None else message_digest(message or b"")
    elif message is None:
        raise VerificationError("bad-signature", "legacy signature needs the whole message")
    else:
        payload = message
    try:
        public.verifier.verify(signature.signature, payload)
    except InvalidSignature:
        raise VerificationError("bad-signature", "signature verification failed") from None
    try:
        comment = signature.trusted_comment.encode("utf-8")
        public.verifier.verify(signature.global_signature, signature.signature + comment)
    except InvalidSignature:
        raise VerificationError("bad-signature", "trusted comment signature failed") from None
