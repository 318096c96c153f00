"""``kopir trust init|add-key|revoke|sign``: manage the trust root."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import signing
from kopir.config import Duration, duration_arg
from kopir.output import EXIT_USAGE, CommandFailed, emit
from kopir.signcmd import signatures_for
from signing.canonical import rfc3339
from signing.fileio import read_bytes, write_atomic
from signing.trust import check_thresholds, count_signers, trusted_comment

DEFAULT_ROLES = frozenset({"root", "lists", "links"})


def _trust_key(pub_path: str, roles: frozenset[str]) -> signing.TrustKey:
    path = Path(pub_path)
    return signing.TrustKey(path.stem, signing.load_public_key(path), roles)


# The roots whose ``root`` keys count towards a trust root, each with how to name it: the root
# itself and, for a rotation, the version it replaces (``verify_trust_root``'s TUF rule).
Judges = list[tuple[str, signing.TrustRoot]]


def _signers(key_files: list[str], judges: Judges, now: float) -> list[signing.SecretKey]:
    """Load every ``--sign`` key and refuse, before anything is written, one whose signature
    ``kopir verify trust`` would not count: not an active ``root`` key of any of ``judges``."""
    keys = []
    for key_file in key_files:
        key = signing.load_secret_key(Path(key_file))
        if not any(_counts(root, key.key_id, now) for _, root in judges):
            raise CommandFailed(_refusal(key_file, key, judges), code=EXIT_USAGE)
        keys.append(key)
    return keys


def _counts(root: signing.TrustRoot, key_id: bytes, now: float) -> bool:
    try:
        root.key(key_id, "root", now)
    except signing.VerificationError:
        return False
    return True


def _refusal(key_file: str, key: signing.SecretKey, judges: Judges) -> str:
    """One line: which key, and what each judging root does and does not trust it for."""
    names: set[str] = set()
    by_reason: dict[str, list[str]] = {}
    for label, root in judges:
        found = root.by_key_id.get(key.key_id)
        if found is None:
            reason = "not listed"
        else:
            names.add(found.name)
            if "root" in found.roles:
                reason = f"revoked {found.revoked}"
            else:
                reason = f"trusted for {', '.join(sorted(found.roles))} only, not root"
        by_reason.setdefault(reason, []).append(label)
    who = f" ({', '.join(sorted(names))})" if names else ""
    detail = "; ".join(f"{' and '.join(labels)}: {r}" for r, labels in by_reason.items())
    return (
        f"refused: {key_file}: key {key.hex_id}{who} cannot sign the trust root ({detail}); "
        "nothing written"
    )


def _sign(path: Path, data: bytes, key: signing.SecretKey) -> Path:
    signature = signing.sign_trust_root(data, key)
    out = path.with_name(signing.signature_name(path.name, signature))
    signing.save_signature(out, signature)
    return out


def _write_signed(path: Path, data: bytes, keys: list[signing.SecretKey]) -> list[Path]:
    for stale in signing.signature_files(path).values():
        stale.unlink()
    write_atomic(path, data)
    return [_sign(path, data, key) for key in keys]


def _checked(root: signing.TrustRoot) -> signing.TrustRoot:
    try:
        check_thresholds(root)
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=EXIT_USAGE) from None
    return root


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


def _missing(path: Path, judges: Judges, now: float) -> list[dict[str, Any]]:
    """For each judging root whose ``root`` threshold the signatures now beside ``path`` do
    not meet: how many it has, needs, and whose keys could add the rest."""
    data = read_bytes(path, "trust root")
    signatures = signatures_for(path)
    missing = []
    for label, root in judges:
        holders = [k for k in root.keys if "root" in k.roles]
        good, _ = count_signers(data, signatures, holders, trusted_comment(data), now)
        need = root.threshold["root"]
        if len(good) < need:
            others = [k.name for k in holders if k.active(now) and k.name not in good]
            missing.append({"from": label, "have": len(good), "need": need, "keys": others})
    return missing


def _missing_lines(path: Path, missing: list[dict[str, Any]]) -> list[str]:
    return [
        f"needs {m['need'] - m['have']} more signature(s) from {m['from']}: "
        f"{m['have']} of {m['need']}; run kopir trust sign --trust {path} --key KEY "
        f"(the secret key of {' or '.join(m['keys']) or 'a root key'})"
        for m in missing
    ]


def _summary(
    args: argparse.Namespace,
    path: Path,
    root: signing.TrustRoot,
    sigs: list[Path],
    missing: list[dict[str, Any]],
) -> None:
    lines = [f"wrote {path}: version {root.version}, expires {root.expires}"]
    lines += [
        f"  {k.name} {k.public_key.hex_id} {','.join(sorted(k.roles))}"
        + (f" revoked {k.revoked}" if k.revoked else "")
        for k in root.keys
    ]
    lines += [f"signed: {s}" for s in sigs] or ["not signed yet: run kopir trust sign"]
    lines += _missing_lines(path, missing)
    data: dict[str, Any] = {
        "trust": str(path),
        "version": root.version,
        "signatures": [str(s) for s in sigs],
        "missing": missing,
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
        raise CommandFailed("the same key was given twice", code=EXIT_USAGE)
    now = time.time()
    judges: Judges = [(f"the new {path.name} version 1", _checked(root))]
    signers = _signers(args.sign or [], judges, now)
    sigs = _write_signed(path, root.encode(), signers)
    _summary(args, path, root, sigs, _missing(path, judges, now))
    return 0


def _current(args: argparse.Namespace) -> tuple[Path, signing.TrustRoot]:
    """``--trust`` and the current root it holds."""
    path = Path(args.trust)
    return path, signing.parse_trust_root(read_bytes(path, "trust root"))


def _successor(args: argparse.Namespace, current: signing.TrustRoot) -> signing.TrustRoot:
    expires = rfc3339(time.time() + args.expires)
    return signing.TrustRoot(current.version + 1, expires, current.keys, dict(current.threshold))


def _finish(
    args: argparse.Namespace, path: Path, current: signing.TrustRoot, root: signing.TrustRoot
) -> int:
    """Write ``root``, the version after ``path``'s, signed by ``--sign``: to ``--out``, or in
    place after archiving the current version. Nothing is written if a check fails."""
    out = Path(args.out) if args.out else path
    if args.threshold_lists:
        root = replace(root, threshold={**root.threshold, "lists": args.threshold_lists})
    if args.threshold_root:
        root = replace(root, threshold={**root.threshold, "root": args.threshold_root})
    now = time.time()
    judges: Judges = [
        (f"{path.name} version {current.version}", current),
        (f"the new version {root.version}", _checked(root)),
    ]
    signers = _signers(args.sign or [], judges, now)
    if out == path:
        _archive(path)
    sigs = _write_signed(out, root.encode(), signers)
    _summary(args, out, root, sigs, _missing(out, judges, now))
    return 0


def trust_add_key(args: argparse.Namespace) -> int:
    path, current = _current(args)
    root = _successor(args, current)
    roles = frozenset(r.strip() for r in args.roles.split(","))
    if not roles <= set(signing.ROLES):
        raise CommandFailed(f"--roles takes some of {', '.join(signing.ROLES)}", code=EXIT_USAGE)
    try:
        for pub in args.key:
            root = root.with_key(_trust_key(pub, roles))
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=EXIT_USAGE) from None
    return _finish(args, path, current, root)


def trust_revoke(args: argparse.Namespace) -> int:
    path, current = _current(args)
    root = _successor(args, current)
    when = args.at or rfc3339(time.time())
    try:
        root = root.with_revoked(args.key, when)
    except signing.FormatError as exc:
        raise CommandFailed(str(exc), code=EXIT_USAGE) from None
    return _finish(args, path, current, root)


def _previous(path: Path, root: signing.TrustRoot) -> tuple[str, signing.TrustRoot] | None:
    """The version ``root`` replaced, if it was archived beside it as ``<name>.v<N-1>``."""
    archived = path.with_name(f"{path.name}.v{root.version - 1}")
    if root.version == 1 or not archived.exists():
        return None
    previous = signing.parse_trust_root(read_bytes(archived, "trust root"))
    if previous.version != root.version - 1:
        return None
    return f"{archived.name} version {previous.version}", previous


def trust_sign(args: argparse.Namespace) -> int:
    """Add signatures to an existing root, each from a key that root's own ``root`` keys or
    (when archived beside it) the previous version's include; refuse any other."""
    path = Path(args.trust)
    data = read_bytes(path, "trust root")
    root = signing.parse_trust_root(data)
    judges: Judges = [(f"{path.name} version {root.version}", root)]
    previous = _previous(path, root)
    if previous is not None:
        judges.append(previous)
    now = time.time()
    signers = _signers(args.key, judges, now)
    sigs = [_sign(path, data, key) for key in signers]
    missing = _missing(path, judges, now)
    emit(
        args.json,
        "\n".join([f"wrote {s}" for s in sigs] + _missing_lines(path, missing)),
        {"signatures": [str(s) for s in sigs], "missing": missing},
    )
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
