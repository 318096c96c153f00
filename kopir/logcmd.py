"""``kopir log append|checkpoint|prove|verify``: the transparency log from the command line."""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import signing
from kopir.output import CommandFailed, emit
from signing import note, tlog
from signing.fileio import read_bytes, write_atomic

DEFAULT_ORIGIN = "kopir.example/log"


def _open(args: argparse.Namespace) -> signing.LogStore:
    return signing.LogStore(Path(args.log))


def log_append(args: argparse.Namespace) -> int:
    key = Path(args.key) if args.key else None
    store = signing.LogStore.open_or_create(Path(args.log), args.origin or DEFAULT_ORIGIN, key)
    if args.origin and args.origin != store.origin:
        raise CommandFailed(f"{args.log} is the log {store.origin!r}, not {args.origin!r}", code=2)
    if key and key.resolve() != store.key_path.resolve():
        raise CommandFailed(f"{args.log} was created with the key {store.key_path}", code=2)
    files = [Path(f) for f in args.files]
    entries = [read_bytes(f, "entry") for f in files]
    results = store.append(entries)
    lines = [
        f"{'appended' if added else 'already logged'} {f} as entry {index}"
        for f, (index, added) in zip(files, results, strict=True)
    ]
    lines.append(f"log size {store.size}, root {base64.b64encode(store.root()).decode()}")
    emit(
        args.json,
        "\n".join(lines),
        {
            "size": store.size,
            "entries": [
                {"file": str(f), "index": i, "added": a}
                for f, (i, a) in zip(files, results, strict=True)
            ],
        },
    )
    return 0


def log_checkpoint(args: argparse.Namespace) -> int:
    store = _open(args)
    key = signing.load_secret_key(Path(args.key)) if args.key else None
    signed = store.checkpoint(key)
    if args.out:
        write_atomic(Path(args.out), signed)
    if args.json:
        emit(True, "", {"size": store.size, "note": signed.decode("utf-8")})
    else:
        sys.stdout.write(signed.decode("utf-8"))
    return 0


def log_prove(args: argparse.Namespace) -> int:
    store = _open(args)
    proof: tlog.InclusionProof | tlog.ConsistencyProof
    if args.old is not None:
        proof = store.consistency(args.old, args.size)
    else:
        index = args.index
        if args.entry:
            index = store.index_of(read_bytes(Path(args.entry), "entry"))
            if index is None:
                raise CommandFailed(f"{args.entry} is not in the log")
        if index is None:
            raise CommandFailed("give --entry FILE, --index I or --old M", code=2)
        proof = store.inclusion(index, args.size)
    text = proof.text()
    if args.out:
        write_atomic(Path(args.out), text.encode("ascii"))
    emit(args.json, text.rstrip("\n"), {"proof": text})
    return 0


def _log_public_key(args: argparse.Namespace, store: signing.LogStore | None) -> signing.PublicKey:
    if args.pub:
        return signing.load_public_key(Path(args.pub))
    if args.trust:
        root = signing.parse_trust_root(read_bytes(Path(args.trust), "trust root"))
        keys = [k for k in root.keys if "log" in k.roles]
        if len(keys) != 1:
            raise CommandFailed(f"{args.trust} names {len(keys)} log keys; pass --pub", code=2)
        return keys[0].public_key
    if store is None:
        raise CommandFailed("give the log's public key with --pub or --trust", code=2)
    return store.public_key()


def _audit(args: argparse.Namespace) -> int:
    store = _open(args)
    public = _log_public_key(args, store)
    extra = [(c, read_bytes(Path(c), "checkpoint")) for c in args.checkpoint or []]
    report = store.audit(public, extra)
    data: dict[str, Any] = {
        "valid": report.ok,
        "size": report.size,
        "checkpoints": report.checkpoints,
        "root": base64.b64encode(report.root).decode(),
        "findings": [{"kind": f.kind, "detail": f.detail} for f in report.findings],
    }
    if not report.ok:
        first = report.findings[0]
        raise CommandFailed(
            f"INVALID: {first.kind}: {first.detail}"
            + (f" (and {len(report.findings) - 1} more)" if len(report.findings) > 1 else ""),
            data=data,
        )
    emit(
        args.json,
        f"valid: {report.size} entries, {report.checkpoints} checkpoints consistent",
        data,
    )
    return 0


def _checkpoint(path: str, public: signing.PublicKey) -> note.Checkpoint:
    data = read_bytes(Path(path), "checkpoint")
    signed = note.parse_note(data)
    origin = note.parse_checkpoint(signed.text).origin
    return note.parse_checkpoint(note.verify_note(data, origin, public.key).text)


def _verify_proof(args: argparse.Namespace) -> int:
    public = _log_public_key(args, None)
    if not args.checkpoint or len(args.checkpoint) != 1:
        raise CommandFailed("proof verification needs exactly one --checkpoint", code=2)
    new = _checkpoint(args.checkpoint[0], public)
    text = read_bytes(Path(args.proof), "proof")
    if args.entry:
        proof = tlog.parse_inclusion_proof(text)
        if proof.size != new.size:
            raise CommandFailed(f"proof is for size {proof.size}, checkpoint has {new.size}")
        leaf = tlog.leaf_hash(read_bytes(Path(args.entry), "entry"))
        tlog.verify_inclusion(leaf, proof.index, proof.size, proof.hashes, new.root)
        human = f"valid: {args.entry} is entry {proof.index} of the log at size {new.size}"
    elif args.old_checkpoint:
        old = _checkpoint(args.old_checkpoint, public)
        cproof = tlog.parse_consistency_proof(text)
        if (cproof.old_size, cproof.new_size) != (old.size, new.size):
            raise CommandFailed("the proof's sizes do not match the checkpoints")
        tlog.verify_consistency(old.size, new.size, old.root, new.root, cproof.hashes)
        human = f"valid: the log at size {new.size} extends the log at size {old.size}"
    else:
        raise CommandFailed("--proof needs --entry FILE or --old-checkpoint FILE", code=2)
    emit(args.json, human, {"valid": True})
    return 0


def log_verify(args: argparse.Namespace) -> int:
    try:
        if args.proof:
            return _verify_proof(args)
        if not args.log:
            raise CommandFailed("give --log DIR, or --proof with checkpoints", code=2)
        return _audit(args)
    except signing.VerificationError as exc:
        raise CommandFailed(
            f"INVALID: {exc}", data={"valid": False, "reason": exc.reason}
        ) from None
    except signing.FormatError as exc:
        raise CommandFailed(f"INVALID: malformed: {exc}", data={"valid": False}) from None


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    log = sub.add_parser("log", help="the transparency log").add_subparsers(
        dest="action", required=True
    )
    app = log.add_parser("append", parents=[common], help="append entries (creates the log)")
    app.add_argument("--log", required=True, help="log directory")
    app.add_argument("files", nargs="+", help="entries, e.g. published list.json files")
    app.add_argument(
        "--origin",
        default="kopir.example/log",
        help="log name, when creating it (default kopir.example/log)",
    )
    app.add_argument("--key", help="log secret key, when creating (default: new DIR/log.key)")
    app.set_defaults(func=log_append)

    chk = log.add_parser("checkpoint", parents=[common], help="print a signed checkpoint")
    chk.add_argument("--log", required=True)
    chk.add_argument("--key", help="log secret key (default: the one the log was made with)")
    chk.add_argument("--out", help="also write the note to this file")
    chk.set_defaults(func=log_checkpoint)

    prv = log.add_parser("prove", parents=[common], help="inclusion or consistency proof")
    prv.add_argument("--log", required=True)
    prv.add_argument("--entry", help="inclusion proof for this file")
    prv.add_argument("--index", type=int, help="inclusion proof for this entry index")
    prv.add_argument("--old", type=int, help="consistency proof from this tree size")
    prv.add_argument("--size", type=int, help="tree size to prove against (default: current)")
    prv.add_argument("--out", help="also write the proof to this file")
    prv.set_defaults(func=log_prove)

    ver = log.add_parser(
        "verify", parents=[common], help="audit a log directory, or check a proof offline"
    )
    ver.add_argument("--log", help="log directory to audit")
    ver.add_argument("--pub", help="the log's public key")
    ver.add_argument("--trust", help="trust root naming the log key (role log)")
    ver.add_argument(
        "--checkpoint",
        action="append",
        help="a signed checkpoint to check (repeat); with --proof: the newer one",
    )
    ver.add_argument("--proof", help="proof file from kopir log prove")
    ver.add_argument("--entry", help="with --proof: the entry the inclusion proof is for")
    ver.add_argument("--old-checkpoint", help="with --proof: the older checkpoint")
    ver.set_defaults(func=log_verify)
