"""Signing: minisign-compatible keys, signed links and lists, the trust root, and the
transparency log. Depends on nothing else in kopir."""

from signing.errors import FormatError, KeyFileError, SigningError, VerificationError
from signing.keyfiles import (
    PASSPHRASE_ENV,
    generate_key_pair,
    load_public_key,
    load_secret_key,
    load_signature,
    save_signature,
    signature_files,
)
from signing.link import Link, format_exp, parse_link, sign_link, verify_link
from signing.listdoc import (
    ListDocument,
    ListState,
    ListVerdict,
    parse_list,
    sign_list,
    signature_name,
    verify_list,
)
from signing.logstore import AuditReport, Finding, LogError, LogStore
from signing.minisign import PublicKey, SecretKey, Signature, parse_signature, sign, verify
from signing.trust import (
    ROLES,
    TrustKey,
    TrustRoot,
    parse_trust_root,
    sign_trust_root,
    verify_trust_root,
)

__all__ = [
    "PASSPHRASE_ENV",
    "ROLES",
    "AuditReport",
    "Finding",
    "FormatError",
    "KeyFileError",
    "Link",
    "ListDocument",
    "ListState",
    "ListVerdict",
    "LogError",
    "LogStore",
    "PublicKey",
    "SecretKey",
    "Signature",
    "SigningError",
    "TrustKey",
    "TrustRoot",
    "VerificationError",
    "format_exp",
    "generate_key_pair",
    "load_public_key",
    "load_secret_key",
    "load_signature",
    "parse_link",
    "parse_list",
    "parse_signature",
    "parse_trust_root",
    "save_signature",
    "sign",
    "sign_link",
    "sign_list",
    "sign_trust_root",
    "signature_files",
    "signature_name",
    "verify",
    "verify_link",
    "verify_list",
    "verify_trust_root",
]
