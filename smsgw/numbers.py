"""Phone numbers: normalisation to E.164, encryption at rest, keyed references, the key file.

Theory of operation (DESIGN.md §2 "seizure of the publisher", §6 smsgw "Subscribers")
-----------------------------------------------------------------------------------
A subscriber's number is the one secret the SMS side holds about a citizen, so it exists in
clear only in memory, for as long as it takes to send a message.

Normalisation. ``normalize`` parses what a person typed (``8 701 234 56 78``,
``+7 (701) 234-56-78``, ``77012345678``...) with ``phonenumbers``, using a default region for
numbers written without ``+``, and returns E.164 (``+77012345678``). It rejects what cannot
receive an SMS (fixed lines, toll-free, premium rate...). Every refusal is a ``SubscriberError``
whose message says why, never what: the caller adds where (``line 12: ...``).

Keys. One 32-byte master secret lives in a key file of its own, away from the database, so
a seized database alone reveals nothing. HKDF-SHA256 derives two independent keys from it:

- the *encryption* key: AES-256-GCM, blob = nonce (12 random bytes) ‖ ciphertext ‖ tag, with
  the associated data ``b"kopir-subscriber-v1"``, so a blob from another kopir table will not
  open here;
- the *index* key: HMAC-SHA256. ``ref(number)`` is the hex HMAC of the E.164 text. It is the
  database's lookup key and the only identifier that may appear in logs (``short_ref``: its
  first 12 hex digits). The number space is small (about 10^10 per country), so an unkeyed
  hash would be reversed by enumeration; the HMAC key is what prevents that.

``check_value`` is the HMAC of a fixed label: the store records it so that opening a database
with the wrong key file fails at once instead of mixing data under two keys.

Key file. 32 raw bytes, mode 0600. ``create_key_file`` writes a temporary file and hard-links
it into place, so a crash never leaves half a key and an existing key is never replaced (losing
it makes every stored number unreadable). ``load_key_file`` refuses a file that group or others
may access, like ssh does, and says the command that fixes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shlex
import stat
from pathlib import Path

import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

from smsgw.errors import KeyFileError, SubscriberError

__all__ = [
    "ASSOCIATED_DATA",
    "KEY_SIZE",
    "NumberKey",
    "create_key_file",
    "load_key_file",
    "normalize",
]

KEY_SIZE = 32
"""Bytes in the master secret and in each derived key."""

ASSOCIATED_DATA = b"kopir-subscriber-v1"
"""AES-GCM associated data of every encrypted number."""

NONCE_SIZE = 12
TAG_SIZE = 16
MAX_INPUT_CHARS = 64
"""Longer text is refused before parsing: no spelling of a phone number needs more."""

_LETTER = re.compile(r"[^\W\d_]")
_INFO_ENCRYPT = b"kopir-subscriber-v1 encryption"
_INFO_INDEX = b"kopir-subscriber-v1 index"
_CHECK_LABEL = b"kopir-subscriber-v1 key check"

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "not a valid phone number (unknown country code)",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "not a valid phone number (too short)",
    NumberParseException.TOO_SHORT_NSN: "not a valid phone number (too short)",
    NumberParseException.TOO_LONG: "not a valid phone number (too long)",
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short",  # a local number without its area code
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}
# Valid numbers of these types cannot receive an SMS (or would cost the sender money).
_NOT_FOR_SMS = {
    PhoneNumberType.FIXED_LINE: "a fixed-line number",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
    PhoneNumberType.PAGER: "a pager number",
}


def normalize(raw: str, default_region: str = "KZ", *, check: bool = True) -> str:
    """The E.164 form of ``raw`` (``"+77012345678"``), or ``SubscriberError`` saying why not.

    ``default_region`` applies to numbers written without ``+``. With ``check=False`` the
    number is only parsed and formatted, not validated: that is for *finding* a number already
    stored (a ``STOP`` must work even if a newer numbering plan no longer lists it).
    """
    number = _parse(raw, default_region)
    if check:
        _validate(raw, number, default_region)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse(raw: str, default_region: str) -> phonenumbers.PhoneNumber:
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise SubscriberError("the default region must be a country code such as KZ or RU")
    if len(raw) > MAX_INPUT_CHARS:
        raise SubscriberError("not a valid phone number (too long)")
    try:
        return phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "not a phone number")
    # Raised outside the handler: the parser's exception must not travel along as the context.
    raise SubscriberError(reason)


def _validate(raw: str, number: phonenumbers.PhoneNumber, default_region: str) -> None:
    if number.extension:
        raise SubscriberError("not a valid phone number (has an extension)")
    if _LETTER.search(raw):  # phonenumbers reads letters as keypad digits (1-800-FLOWERS)
        raise SubscriberError("not a valid phone number (contains letters)")
    length = phonenumbers.is_possible_number_with_reason(number)
    if length in _LENGTH_REASONS:
        raise SubscriberError(f"not a valid phone number ({_LENGTH_REASONS[length]})")
    kind = phonenumbers.number_type(number)  # UNKNOWN exactly when the number is not valid
    if kind == PhoneNumberType.UNKNOWN:
        raise SubscriberError(f"not a valid phone number ({_where(number, default_region)})")
    if kind in _NOT_FOR_SMS:
        raise SubscriberError(f"cannot receive SMS ({_NOT_FOR_SMS[kind]})")


def _where(number: phonenumbers.PhoneNumber, default_region: str) -> str:
    code = number.country_code
    if phonenumbers.country_code_for_region(default_region) == code:
        return f"invalid for region {default_region}"
    return f"invalid for country code +{code}"


class NumberKey:
    """The two keys derived from one master secret: AES-256-GCM for numbers, HMAC for refs."""

    __slots__ = ("_aead", "_index")

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_SIZE:
            raise KeyFileError(f"a subscriber key is {KEY_SIZE} bytes, not {len(master)}")
        self._aead = AESGCM(_derive(master, _INFO_ENCRYPT))
        self._index = hmac.new(_derive(master, _INFO_INDEX), digestmod=hashlib.sha256)

    def encrypt(self, e164: str) -> bytes:
        """nonce ‖ ciphertext ‖ tag of the number; a fresh random nonce every time."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, e164.encode("utf-8"), ASSOCIATED_DATA)

    def decrypt(self, blob: bytes) -> str:
        """The number that ``encrypt`` sealed; ``KeyFileError`` if this key did not seal it."""
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise KeyFileError("encrypted subscriber data is damaged (too short)")
        try:
            plain = self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], ASSOCIATED_DATA)
        except InvalidTag:
            raise KeyFileError(
                "the subscriber key does not open this data: wrong key file?"
            ) from None
        return plain.decode("utf-8")

    def ref(self, e164: str) -> str:
        """The keyed reference of a number: 64 hex digits, stable for one key and number."""
        return self._mac(e164.encode("utf-8"))

    def short_ref(self, e164: str) -> str:
        """The first 12 hex digits of ``ref``: what log lines show."""
        return self.ref(e164)[:12]

    def check_value(self) -> str:
        """The HMAC of a fixed label: tells whether a store was made with this key."""
        return self._mac(_CHECK_LABEL)

    def _mac(self, message: bytes) -> str:
        state = self._index.copy()
        state.update(message)
        return state.hexdigest()

    def __repr__(self) -> str:
        return f"NumberKey(check={self.check_value()[:8]}...)"


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(master)


def create_key_file(path: str | Path) -> NumberKey:
    """Write a new random key to ``path`` (mode 0600) and return it; never replaces a file."""
    path = Path(path)
    master = secrets.token_bytes(KEY_SIZE)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_new(tmp, master)
        os.link(tmp, path)  # unlike rename, fails instead of replacing an existing key
        _fsync_dir(path.parent)
    except FileExistsError:
        raise KeyFileError(f"key file {path} already exists; it was left as it is") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return NumberKey(master)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode argument above is reduced by the umask, never raised
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_key_file(path: str | Path) -> NumberKey:
    """The key in ``path``; ``KeyFileError`` if it is missing, too open or the wrong size."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror or exc}") from None
    try:
        _check_mode(path, os.fstat(fd))
        data = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_SIZE:
        size = f"{len(data)} bytes" if len(data) <= KEY_SIZE else f"more than {KEY_SIZE} bytes"
        raise KeyFileError(f"key file {path} holds {size}, not {KEY_SIZE}: not a subscriber key")
    return NumberKey(data)


def _check_mode(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is open to group or others (mode {mode:04o}); "
            f"run: chmod 600 {shlex.quote(str(path))}"
        )
