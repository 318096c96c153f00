"""``kopir trust init|add-key|revoke|sign``: manage the trust root."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import signing
from kopir.config import Duration, duration_arg
from kopir.output import CommandFailed, emit
from signing.canonical import rfc3339
from signing.fileio import read_bytes, write_atomic
from signing.trust import check_thresholds

DEFAULT_ROLES = frozenset({"root", "lists", "links"})


def _trust_key(pub_path: str, roles: frozenset[str]) -> signing.TrustKey:
    path = Path(pub_path)
    return signing.TrustKey(path.stem, signing.load_public_key(path), roles)


def _write_signed(path: Path, root: signing.TrustRoot, key_files: list[str]) -> list[Path]:
    try:
        check_thresholds(root)
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=2) from None
    data = root.encode()
    for stale in signing.signature_files(path).values():
        stale.unlink()
    write_atomic(path, data)
    return [_sign(path, data, key_file) for key_file in key_files]


def _sign(path: Path, data: bytes, key_file: str) -> Path:
    key = signing.load_secret_key(Path(key_file))
    signature = signing.sign_trust_root(data, key)
    out = path.with_name(signing.signature_name(path.name, signature))
    signing.save_signature(out, signature)
    return out


def _archive(path: Path) -> Path | None:
    """Keep the version being replaced (and its signatures) as ``<name>.v<N>``."""
    if not path.exists():
        return None
    old = signing.parse_trust_root(read_bytes(path, "trust root"))
    archived = path.with_name(f"{path.name}.v{old.version}")
    write_atomic(archived, read_bytes(path, "trust root"))
    for key_id, sig in signing.signature_files(path).items():
        write_atomic(archived.with_name(f"{archived.name}.{key_id}.minisig"), sig.read_bytes())
    return archived


def _summary(
    args: argparse.Namespace, path: Path, root: signing.TrustRoot, sigs: list[Path]
) -> None:
    lines = [f"wrote {path}: version {root.version}, expires {root.expires}"]
    lines += [
        f"  {k.name} {k.public_key.hex_id} {','.join(sorted(k.roles))}"
        + (f" revoked {k.revoked}" if k.revoked else "")
        for k in root.keys
    ]
    lines += [f"signed: {s}" for s in sigs] or ["not signed yet: run kopir trust sign"]
    data: dict[str, Any] = {
        "trust": str(path),
        "version": root.version,
        "signatures": [str(s) for s in sigs],
    }
    emit(args.json, "\n".join(lines), data)


def trust_init(args: argparse.Namespace) -> int:
    path = Path(args.out)
    if path.exists() and not args.force:
        raise CommandFailed(f"{path} exists; use kopir trust add-key/revoke, or --force")
    keys = [_trust_key(k, DEFAULT_ROLES) for k in args.key]
    keys += [_trust_key(k, frozenset({"log"})) for k in args.log_key or []]
    threshold = {"root": args.threshold_root, "lists": args.threshold_lists, "links": 1, "log": 1}
    expires = rfc3339(time.time() + args.expires)
    root = signing.TrustRoot(1, expires, tuple(keys), threshold)
    if len({k.public_key.key_id for k in keys}) != len(keys):
        raise CommandFailed("the same key was given twice", code=2)
    sigs = _write_signed(path, root, args.sign or [])
    _summary(args, path, root, sigs)
    return 0


def _next_version(args: argparse.Namespace) -> tuple[Path, signing.TrustRoot]:
    path = Path(args.trust)
    root = signing.parse_trust_root(read_bytes(path, "trust root"))
    expires = rfc3339(time.time() + args.expires)
    return path, signing.TrustRoot(root.version + 1, expires, root.keys, dict(root.threshold))


def _finish(args: argparse.Namespace, path: Path, root: signing.TrustRoot) -> int:
    out = Path(args.out) if args.out else path
    if out == path:
        _archive(path)
    if args.threshold_lists:
        root = signing.TrustRoot(
            root.version, root.expires, root.keys, {**root.threshold, "lists": args.threshold_lists}
        )
    if args.threshold_root:
        root = signing.TrustRoot(
            root.version, root.expires, root.keys, {**root.threshold, "root": args.threshold_root}
        )
    sigs = _write_signed(out, root, args.sign or [])
    _summary(args, out, root, sigs)
    return 0


def trust_add_key(args: argparse.Namespace) -> int:
    path, root = _next_version(args)
    roles = frozenset(r.strip() for r in args.roles.split(","))
    if not roles <= set(signing.ROLES):
        raise CommandFailed(f"--roles takes some of {', '.join(signing.ROLES)}", code=2)
    try:
        for pub in args.key:
            root = root.with_key(_trust_key(pub, roles))
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=2) from None
    return _finish(args, path, root)


def trust_revoke(args: argparse.Namespace) -> int:
    path, root = _next_version(args)
    when = args.at or rfc3339(time.time())
    try:
        root = root.with_revoked(args.key, when)
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=2) from None
    return _finish(args, path, root)


def trust_sign(args: argparse.Namespace) -> int:
    path = Path(args.trust)
    data = read_bytes(path, "trust root")
    sigs = [_sign(path, data, key_file) for key_file in args.key]
    emit(args.json, "\n".join(f"wrote {s}" for s in sigs), {"signatures": [str(s) for s in sigs]})
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    trust = sub.add_parser("trust", help="manage the trust root (trust.json)").add_subparsers(
        dest="action", required=True
    )
    init = trust.add_parser("init", parents=[common], help="create a trust root")
    init.add_argument("--out", required=True, help="trust.json to write")
    init.add_argument(
        "--key",
        action="append",
        required=True,
        help="operator public key (roles root, lists, links); repeat",
    )
    init.add_argument("--log-key", action="append", help="log public key (role log)")
    init.add_argument("--threshold-lists", type=int, default=1, help="signatures a list needs")
    init.add_argument("--threshold-root", type=int, default=1, help="signatures the root needs")
    init.add_argument("--sign", action="append", help="secret key to sign with; repeat")
    init.add_argument(
        "--expires",
        type=duration_arg,
        default=Duration(365 * 86400),
        help="validity (default 365d)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=trust_init)

    for name, func, help_text in (
        ("add-key", trust_add_key, "add keys, as the next version"),
        ("revoke", trust_revoke, "revoke a key, as the next version"),
    ):
        cmd = trust.add_parser(name, parents=[common], help=help_text)
        cmd.add_argument("--trust", required=True, help="the current trust.json")
        cmd.add_argument(
            "--out",
            help="where to write the new version (default: in place, "
            "keeping the old one as trust.json.vN)",
        )
        cmd.add_argument("--sign", action="append", help="secret key to sign with; repeat")
        cmd.add_argument("--threshold-lists", type=int, help="new lists threshold")
        cmd.add_argument("--threshold-root", type=int, help="new root threshold")
        cmd.add_argument("--expires", type=duration_arg, default=Duration(365 * 86400))
        cmd.set_defaults(func=func)
        if name == "add-key":
            cmd.add_argument("--key", action="append", required=True, help="public key; repeat")
            cmd.add_argument(
                "--roles", default="lists,links", help="comma-separated roles (default lists,links)"
            )
        else:
            cmd.add_argument("--key", required=True, help="key name or key id to revoke")
            cmd.add_argument("--at", help="revocation time, RFC 3339 (default: now)")

    sig = trust.add_parser("sign", parents=[common], help="add signatures to a trust root")
    sig.add_argument("--trust", required=True)
    sig.add_argument("--key", action="append", required=True, help="secret key; repeat")
    sig.set_defaults(func=trust_sign)
