"""``kopir keys``, ``kopir sign`` and ``kopir verify``: thin wrappers over signing."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import signing
from kopir.config import Duration, duration_arg
from kopir.output import CommandFailed, emit, warn
from signing.canonical import rfc3339
from signing.fileio import blake2b_file, read_bytes, read_text
from signing.keyfiles import passphrase_from_env_or_prompt
from signing.minisign import sign_payload

LEGACY_LIMIT = 1 << 30  # like minisign: raw (Ed) signatures are for files under 1 GiB

# A proxy link in free text: stops at white space and at anything outside URL characters, so
# Cyrillic or quotes around it are left out; trailing punctuation is trimmed afterwards.
LINK_PATTERN = re.compile(
    r"(?:https?://(?:t\.me|telegram\.me|telegram\.dog)/(?:proxy|socks)|tg://(?:proxy|socks))"
    r"\?[A-Za-z0-9\-._~%&=:\[\]+/]+",
    re.IGNORECASE,
)


def signatures_for(path: Path) -> list[signing.Signature]:
    """Every ``<path>.<KEYID>.minisig`` beside a document; unreadable ones are reported."""
    found = []
    for sig_path in signing.signature_files(path).values():
        try:
            found.append(signing.load_signature(sig_path))
        except signing.SigningError as exc:
            warn(f"ignoring {sig_path}: {exc}")
    return found


def default_state_dir() -> Path:
    """Where a verifier remembers what it accepted, so a replayed old list is caught."""
    if os.environ.get("KOPIR_STATE_DIR"):
        return Path(os.environ["KOPIR_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "kopir"


def load_trust(path: Path) -> signing.TrustRoot:
    return signing.parse_trust_root(read_bytes(path, "trust root"))


# -- keys ------------------------------------------------------------------------------


def keys_generate(args: argparse.Namespace) -> int:
    passphrase = passphrase_from_env_or_prompt(confirm=True) if args.encrypt else None
    pub, key_path, key = signing.generate_key_pair(Path(args.out), args.name, passphrase)
    emit(
        args.json,
        f"public key:  {pub}\nsecret key:  {key_path} (mode 0600"
        f"{', encrypted' if passphrase else ', NOT encrypted'})\n"
        f"key id:      {key.hex_id}\npublic line: {key.public_key.line}",
        {
            "public": str(pub),
            "secret": str(key_path),
            "key_id": key.hex_id,
            "encrypted": passphrase is not None,
            "public_line": key.public_key.line,
        },
    )
    return 0


# -- sign ------------------------------------------------------------------------------


def sign_link(args: argparse.Namespace) -> int:
    key = signing.load_secret_key(Path(args.key))
    try:
        link = signing.sign_link(args.url, key, time.time() + args.expires)
    except signing.VerificationError as exc:
        raise CommandFailed(f"cannot sign this link: {exc}") from None
    url = link.url(args.scheme)
    if args.json:
        emit(True, "", {"link": url, "key_id": key.hex_id, "exp": link.exp})
    else:
        print(
            f"signed by key {key.hex_id}, valid until {link.exp} UTC (YYYYMMDDHH)", file=sys.stderr
        )
        print(url)
    return 0


def sign_file(args: argparse.Namespace) -> int:
    key = signing.load_secret_key(Path(args.key))
    path = Path(args.file)
    # The same default as minisign: the "hashed" label only on prehashed signatures.
    label = "" if args.legacy else "\thashed"
    comment = args.trusted_comment or f"timestamp:{int(time.time())}\tfile:{path.name}{label}"
    if args.legacy:
        data = read_bytes(path, "file", limit=LEGACY_LIMIT)
        signature = signing.sign(key, data, comment, prehash=False)
    else:
        signature = sign_payload(key, blake2b_file(path), comment, prehash=True)
    out = Path(args.sig) if args.sig else path.with_name(path.name + ".minisig")
    signing.save_signature(out, signature)
    emit(args.json, f"wrote {out}", {"signature": str(out), "key_id": key.hex_id})
    return 0


def sign_list(args: argparse.Namespace) -> int:
    key = signing.load_secret_key(Path(args.key))
    path = Path(args.file)
    data = read_bytes(path, "list")
    signature = signing.sign_list(data, key)
    out = path.with_name(signing.signature_name(path.name, signature))
    signing.save_signature(out, signature)
    emit(args.json, f"wrote {out}", {"signature": str(out), "key_id": key.hex_id})
    return 0


# -- verify ----------------------------------------------------------------------------


def _link_result(text: str, trust: signing.TrustRoot, now: float) -> dict[str, Any]:
    try:
        link = signing.verify_link(text, trust, now)
    except signing.VerificationError as exc:
        return {"link": text, "valid": False, "reason": exc.reason, "detail": exc.detail}
    key = trust.link_keys[link.kid or ""]
    return {
        "link": text,
        "valid": True,
        "key": key.name,
        "key_id": key.public_key.hex_id,
        "expires": rfc3339(link.expires_at),
    }


def _describe(result: dict[str, Any]) -> str:
    if result["valid"]:
        return f"valid: signed by {result['key']} ({result['key_id']}), expires {result['expires']}"
    detail = f" ({result['detail']})" if result["detail"] else ""
    return f"INVALID: {result['reason']}{detail}"


def verify_link(args: argparse.Namespace) -> int:
    trust = load_trust(Path(args.trust))
    result = _link_result(args.arg, trust, time.time())
    _report_links(args, [result])
    return 0 if result["valid"] else 1


def find_links(text: str) -> list[str]:
    """Every proxy link in free text, with sentence punctuation around it removed."""
    return [m.group(0).rstrip(".,;:!?)]'\"") for m in LINK_PATTERN.finditer(text)]


def verify_sms(args: argparse.Namespace) -> int:
    text = _read_text_arg(args.arg)
    trust = load_trust(Path(args.trust))
    links = find_links(text)
    if not links:
        raise CommandFailed("no proxy link found in the text", data={"links": []})
    now = time.time()
    results = [_link_result(link, trust, now) for link in links]
    _report_links(args, results)
    return 0 if all(r["valid"] for r in results) else 1


def verify_qr(args: argparse.Namespace) -> int:
    """Read a QR code image with ``zbarimg`` and verify every proxy link in it."""
    texts = _scan_qr(Path(args.arg))
    trust = load_trust(Path(args.trust))
    links = [link for text in texts for link in find_links(text)]
    if not links:
        raise CommandFailed(f"{args.arg}: the QR code holds no proxy link", data={"links": []})
    now = time.time()
    results = [_link_result(link, trust, now) for link in links]
    _report_links(args, results)
    return 0 if all(r["valid"] for r in results) else 1


def _scan_qr(image: Path) -> list[str]:
    if not image.is_file():
        raise CommandFailed(f"{image}: no such image file", code=2)
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        raise CommandFailed("kopir verify qr reads images with zbarimg: apt-get install zbar-tools")
    try:
        done = subprocess.run(
            [zbarimg, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", str(image)],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{image}: zbarimg took over 60 s") from None
    if done.returncode == 4 or not done.stdout.strip():
        raise CommandFailed(f"{image}: no QR code found in the image")
    if done.returncode != 0:
        raise CommandFailed(f"{image}: zbarimg could not read it (exit {done.returncode})")
    return done.stdout.decode("utf-8", errors="replace").splitlines()


def _read_text_arg(arg: str) -> str:
    """``-`` reads standard input; the name of a readable file reads the file; anything else
    (an SMS text, which may well be longer than a file name can be) is the text itself."""
    if arg == "-":
        return sys.stdin.read()
    try:
        is_file = "\n" not in arg and Path(arg).is_file()
    except OSError:  # for example too long for a file name: then it is text
        is_file = False
    return read_text(Path(arg), "message") if is_file else arg


def _report_links(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    if args.json:
        emit(True, "", {"valid": all(r["valid"] for r in results), "links": results})
        return
    for result in results:
        line = f"{result['link']}\n  {_describe(result)}"
        print(line, file=sys.stdout if result["valid"] else sys.stderr)


def verify_list(args: argparse.Namespace) -> int:
    path = Path(args.arg)
    data = read_bytes(path, "list")
    trust = load_trust(Path(args.trust))
    state = None if args.no_state else signing.ListState(Path(args.state or default_state_dir()))
    doc = signing.parse_list(data)
    last = state.last_seen(doc.publisher) if state else None
    verdict = signing.verify_list(data, signatures_for(path), trust, time.time(), last)
    if state:
        state.accept(doc.publisher, doc.version, data)
    emit(
        args.json,
        f"valid: {doc.publisher} list version {doc.version}, {len(doc.proxies)} proxies, "
        f"expires {doc.expires}, signed by {', '.join(verdict.signers)}",
        {
            "valid": True,
            "publisher": doc.publisher,
            "version": doc.version,
            "expires": doc.expires,
            "signers": list(verdict.signers),
        },
    )
    return 0


def verify_trust(args: argparse.Namespace) -> int:
    path, anchor = Path(args.arg), Path(args.trust)
    data, anchor_data = read_bytes(path, "trust root"), read_bytes(anchor, "trust root")
    previous = signing.parse_trust_root(anchor_data)
    root = signing.verify_trust_root(data, signatures_for(path), time.time(), previous, anchor_data)
    emit(
        args.json,
        f"valid: trust root version {root.version} ({len(root.keys)} keys), expires {root.expires}",
        {"valid": True, "version": root.version, "expires": root.expires},
    )
    return 0


def verify_file(args: argparse.Namespace) -> int:
    path = Path(args.arg)
    sig_path = Path(args.sig) if args.sig else path.with_name(path.name + ".minisig")
    public = signing.load_public_key(Path(args.pub))
    signature = signing.load_signature(sig_path)
    if signature.prehashed:
        signing.verify(public, signature, digest=blake2b_file(path))
    else:
        signing.verify(public, signature, message=read_bytes(path, "file", limit=LEGACY_LIMIT))
    emit(
        args.json,
        f"valid: signed by {public.hex_id}\ntrusted comment: {signature.trusted_comment}",
        {"valid": True, "key_id": public.hex_id, "trusted_comment": signature.trusted_comment},
    )
    return 0


VERIFY = {
    "link": verify_link,
    "sms": verify_sms,
    "qr": verify_qr,
    "list": verify_list,
    "trust": verify_trust,
    "file": verify_file,
}


def verify(args: argparse.Namespace) -> int:
    needs_trust = args.what in ("link", "sms", "qr", "list", "trust")
    if needs_trust and not args.trust:
        raise CommandFailed(f"kopir verify {args.what} needs --trust FILE", code=2)
    if args.what == "file" and not args.pub:
        raise CommandFailed("kopir verify file needs --pub FILE", code=2)
    try:
        return VERIFY[args.what](args)
    except signing.VerificationError as exc:
        raise CommandFailed(
            f"INVALID: {exc}", data={"valid": False, "reason": exc.reason, "detail": exc.detail}
        ) from None
    except signing.FormatError as exc:
        raise CommandFailed(
            f"INVALID: malformed: {exc}",
            data={"valid": False, "reason": "malformed", "detail": str(exc)},
        ) from None


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    keys = sub.add_parser("keys", help="make signing keys").add_subparsers(
        dest="action", required=True
    )
    gen = keys.add_parser("generate", parents=[common], help="new key pair in minisign format")
    gen.add_argument("--name", required=True, help="writes DIR/NAME.pub and DIR/NAME.key")
    gen.add_argument("--out", default=".", help="directory for the key files (default: .)")
    gen.add_argument(
        "--encrypt",
        action="store_true",
        help=f"encrypt the secret key (passphrase from {signing.PASSPHRASE_ENV} or a prompt)",
    )
    gen.set_defaults(func=keys_generate)

    sign = sub.add_parser("sign", help="sign links, files and lists").add_subparsers(
        dest="action", required=True
    )
    link = sign.add_parser("link", parents=[common], help="print a signed proxy link")
    link.add_argument("url", help="tg://proxy?..., https://t.me/proxy?... or tg://socks?...")
    link.add_argument("--key", required=True, help="minisign secret key file")
    link.add_argument(
        "--expires",
        type=duration_arg,
        default=Duration(72 * 3600),
        help="validity, e.g. 72h (default), 90m, 7d",
    )
    link.add_argument(
        "--scheme",
        choices=("tme", "tg"),
        default="tme",
        help="tme: https://t.me/... for SMS (default); tg: tg://... for QR codes",
    )
    link.set_defaults(func=sign_link)
    file = sign.add_parser("file", parents=[common], help="detached minisign signature")
    file.add_argument("file")
    file.add_argument("--key", required=True, help="minisign secret key file")
    file.add_argument("--trusted-comment", help="signed comment (default: timestamp and name)")
    file.add_argument("--sig", help="signature path (default: FILE.minisig)")
    file.add_argument("--legacy", action="store_true", help="sign the raw file (Ed), not its hash")
    file.set_defaults(func=sign_file)
    lst = sign.add_parser("list", parents=[common], help="sign a list.json as LIST.KEYID.minisig")
    lst.add_argument("file")
    lst.add_argument("--key", required=True, help="minisign secret key file")
    lst.set_defaults(func=sign_list)

    ver = sub.add_parser("verify", parents=[common], help="verify links, SMS, lists, trust roots")
    ver.add_argument("what", choices=sorted(VERIFY), help="what ARG is")
    ver.add_argument(
        "arg", help="the link, SMS text (or file, or - for stdin), QR code image, or file"
    )
    ver.add_argument("--trust", help="trust root (trust.json) to verify against")
    ver.add_argument(
        "--state",
        help="verify list: directory remembering the newest version accepted per publisher "
        "(default: $KOPIR_STATE_DIR, else $XDG_STATE_HOME/kopir, else ~/.local/state/kopir)",
    )
    ver.add_argument(
        "--no-state", action="store_true", help="verify list: no rollback check, remember nothing"
    )
    ver.add_argument("--sig", help="verify file: signature (default: FILE.minisig)")
    ver.add_argument("--pub", help="verify file: minisign public key")
    ver.set_defaults(func=verify)
