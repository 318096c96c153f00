"""Exception types of the signing package.

Every error names the offending value (never a secret) and says what to do. The CLI turns
them into one line and an exit code.
"""

from __future__ import annotations


class SigningError(Exception):
    """Base class for every error the signing package raises on purpose."""


class FormatError(SigningError):
    """Input bytes or text do not follow the expected format (key, signature, note, proof...)."""


class KeyFileError(SigningError):
    """A key file cannot be read, decrypted or written."""


class VerificationError(SigningError):
    """A signature, proof or document did not verify.

    ``reason`` is a short machine-readable word (``bad-signature``, ``expired``...), and the
    message explains it to a person.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
