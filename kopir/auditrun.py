"""``kopir audit``'s run: fetch through a Source, apply the checks of ``kopir.audit``, probe.

Theory of operation
-------------------
:func:`run_audit` reads the trust root, then ``list.json`` and every version ``1..N`` of the
history with their signatures, then the log checkpoint and proofs, and finally probes the
relays of the current list. Each step hands bytes to the pure checks in ``kopir.audit`` and
collects the :class:`~kopir.audit.Check` values into one :class:`~kopir.audit.Report`.

Log inclusion needs a version's index in the log. Version N usually sits right after version
N-1, so that index is tried first and only a failed proof makes the run read the entries to
find it; a version beyond the checkpoint but present in the log is noted, not a finding (the
next checkpoint must include it).

:class:`AuditState` is the auditor's memory in its state dir: the newest checkpoint accepted
per log (``audit.json``), and through ``signing.ListState`` the newest list per publisher, as
``kopir verify list`` keeps it. A checkpoint that contradicts the remembered one never replaces
it; it is saved under ``evidence/``, so the auditor holds two signed notes that prove the log
was rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import signing
from kopir.audit import (
    ADVICE,
    MAX_VERSIONS,
    Check,
    Report,
    Version,
    check_consistency,
    check_current,
    check_inclusion,
    check_link,
    check_probe,
    check_trust,
    check_version,
    entry_relay,
    finding,
    load_anchor,
    missing_findings,
    noted,
    passed,
    verify_checkpoint,
)
from kopir.auditsource import AuditError, Source
from proxylist import Relay, probe_relays
from signing import note, strictjson, tlog
from signing.canonical import canonical_json
from signing.fileio import read_bytes, write_atomic

MAX_SCAN = 100_000
"""At most this many log entries are read to find where a version sits in the log."""


def _parse_state(data: bytes) -> dict[str, str]:
    """``audit.json``: ``{"logs": {log id: signed checkpoint note}}``; FormatError otherwise."""
    obj = strictjson.loads_object(data)
    extra = sorted(set(obj) - {"logs"})
    if extra:
        raise signing.FormatError(f"unknown field {extra[0][:40]!r}")
    logs = obj.get("logs")
    if not isinstance(logs, dict):
        raise signing.FormatError("'logs' is not an object" if "logs" in obj else "no 'logs'")
    for log_id, text in logs.items():
        if not isinstance(text, str):
            raise signing.FormatError(f"the checkpoint of {log_id[:80]!r} is not a string")
        note.parse_checkpoint(note.parse_note(text).text)
    return logs


class AuditState:
    """The newest checkpoint accepted per log, in ``<state>/audit.json``, and kept evidence."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "audit.json"
        self.lists = signing.ListState(self.dir)

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            return _parse_state(read_bytes(self.path, "audit state"))
        except signing.SigningError as exc:
            raise AuditError(
                f"audit state {self.path} is damaged ({exc}); move it aside to start afresh"
            ) from None

    def checkpoint(self, log_id: str) -> note.Checkpoint | None:
        text = self._load().get(log_id)
        return None if text is None else note.parse_checkpoint(note.parse_note(text).text)

    def remember(self, log_id: str, signed: bytes) -> None:
        logs = self._load()
        logs[log_id] = signed.decode("utf-8")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, canonical_json({"logs": logs}))

    def keep_evidence(self, signed: bytes) -> Path:
        folder = self.dir / "evidence"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"checkpoint-{hashlib.sha256(signed).hexdigest()[:16]}.note"
        write_atomic(path, signed)
        return path


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    probe: bool = True
    probe_timeout: float = 10.0
    concurrency: int = 50


async def run_audit(
    source: Source,
    anchor: tuple[bytes, str] | None,
    state: AuditState,
    now: float,
    options: Options | None = None,
) -> Report:
    """Audit ``source`` against ``anchor`` (trust root bytes and where they came from)."""
    options = options or Options()
    root = (anchor[0], load_anchor(*anchor)) if anchor else None
    label = anchor[1] if anchor else f"{source.where} itself (not independent: pass --trust)"
    published = await source.read("trust.json")
    kids = root[1].keys if root else ()
    files = await source.signatures("trust.json", [k.public_key.hex_id for k in kids])
    if published is not None and published != (root[0] if root else None):
        files = await _trust_signatures(source, published, files)
    trust, checks = check_trust(root, published, files, now)
    if trust is None:
        return Report(source.where, label, tuple(checks))
    versions, current, list_checks = await _audit_lists(source, trust, state, now)
    checks += list_checks
    checks += await _audit_log(source, trust, versions, state, now)
    if current is not None and options.probe:
        checks += await _audit_relays(current, options)
    return Report(source.where, label, tuple(checks))


async def _trust_signatures(
    source: Source, published: bytes, files: dict[str, bytes]
) -> dict[str, bytes]:
    """Signatures by the keys the published root names (a new root's own keys sign it too)."""
    try:
        keys = signing.parse_trust_root(published).keys
    except signing.FormatError:
        return files
    more = await source.signatures("trust.json", [k.public_key.hex_id for k in keys])
    return {**files, **more}


async def _audit_lists(
    source: Source, trust: signing.TrustRoot, state: AuditState, now: float
) -> tuple[list[Version], signing.ListDocument | None, list[Check]]:
    data = await source.read("list.json")
    if data is None:
        return [], None, [finding("lists", "list-missing", "the publisher serves no list.json")]
    kids = [k.public_key.hex_id for k in trust.keys if "lists" in k.roles]
    sigs = await source.signatures("list.json", kids)
    current, checks = check_version(None, "list.json", data, sigs, trust, now)
    doc = current.document
    if doc is None:
        return [], None, checks
    versions, history = await _history(source, trust, doc.version, data, kids, now)
    checks += history
    checks += check_current(doc, data, now, _last_seen(state, doc.publisher))
    if not checks:
        _accept(state, doc, data)
        first = versions[0].number if versions else doc.version
        checks.append(
            passed(
                "lists",
                f"versions {first}-{doc.version} each meet the lists "
                f"threshold ({trust.threshold['lists']}) and chain by previous",
            )
        )
    return versions, doc, checks


async def _history(
    source: Source,
    trust: signing.TrustRoot,
    newest: int,
    current: bytes,
    kids: Sequence[str],
    now: float,
) -> tuple[list[Version], list[Check]]:
    versions: list[Version] = []
    checks: list[Check] = []
    missing: list[int] = []
    previous: Version | None = None
    first = max(1, newest - MAX_VERSIONS + 1)
    if first > 1:
        checks.append(noted("lists", f"only the newest {MAX_VERSIONS} versions were checked"))
    for number in range(first, newest + 1):
        name = f"lists/versions/{number}.json"
        data = await source.read(name)
        if data is None:
            missing.append(number)
            if number != newest:
                previous = None
                continue
            name, data = "list.json", current
        elif number == newest and data != current:
            checks.append(finding("lists", "current-mismatch", f"list.json is not {name}"))
        sigs = await source.signatures(name, kids)
        version, found = check_version(number, name, data, sigs, trust, now)
        checks += found + check_link(previous, version)
        versions.append(version)
        previous = version
    return versions, checks + missing_findings(missing)


def _last_seen(state: AuditState, publisher: str) -> tuple[int, str] | None:
    try:
        return state.lists.last_seen(publisher)
    except signing.SigningError as exc:
        raise AuditError(f"{exc}; move it aside to start afresh") from None


def _accept(state: AuditState, doc: signing.ListDocument, data: bytes) -> None:
    try:
        state.lists.accept(doc.publisher, doc.version, data)
    except (OSError, signing.SigningError) as exc:
        raise AuditError(f"cannot write the audit state in {state.dir}: {exc}") from None


async def _audit_log(
    source: Source,
    trust: signing.TrustRoot,
    versions: Sequence[Version],
    state: AuditState,
    now: float,
) -> list[Check]:
    data = await source.read("log/checkpoint")
    if data is None:
        return [finding("log", "checkpoint-missing", "the publisher serves no log checkpoint")]
    try:
        checkpoint, key = verify_checkpoint(data, trust, now)
    except (signing.FormatError, signing.VerificationError) as exc:
        return [finding("log", "bad-checkpoint", f"log/checkpoint: {exc}")]
    checks = [
        passed(
            "log",
            f"checkpoint of {checkpoint.origin}, size {checkpoint.size}, signed by "
            f"log key {key.name} ({key.public_key.hex_id})",
        )
    ]
    log_id = f"{checkpoint.origin} {key.public_key.hex_id}"
    checks.append(await _consistency(source, state, log_id, checkpoint, data))
    checks += await _inclusions(source, versions, checkpoint)
    checks += _log_directory(source, checkpoint, key)
    return checks


async def _consistency(
    source: Source, state: AuditState, log_id: str, checkpoint: note.Checkpoint, data: bytes
) -> Check:
    old = state.checkpoint(log_id)
    if old is None:
        state.remember(log_id, data)
        return noted(
            "log",
            f"first audit of this log: checkpoint size {checkpoint.size} "
            f"remembered in {state.path}; later audits prove the log only grew",
        )
    proof = None
    if 0 < old.size < checkpoint.size:
        proof = await source.read(f"log/proof/consistency?old={old.size}&new={checkpoint.size}")
    check = check_consistency(old, checkpoint, proof)
    if check.ok:
        if checkpoint.size > old.size:
            state.remember(log_id, data)
        return check
    kept = state.keep_evidence(data)
    return replace(
        check,
        detail=f"{check.detail}; the note served now is kept in {kept}, "
        f"the one seen before in {state.path}",
    )


async def _inclusions(
    source: Source, versions: Sequence[Version], checkpoint: note.Checkpoint
) -> list[Check]:
    if not versions:
        return []
    index_of: dict[bytes, int] | None = None
    guess = versions[0].number - 1
    unproven: list[Version] = []
    for version in versions:
        index: int | None = guess
        proven = await _proves(source, version.leaf, guess, checkpoint)
        if not proven:
            if index_of is None:
                index_of = await _scan(source, 0, min(checkpoint.size, MAX_SCAN))
            index = index_of.get(version.leaf)
            proven = index is not None and await _proves(source, version.leaf, index, checkpoint)
        if not proven or index is None:
            unproven.append(version)
            continue
        guess = index + 1
    if not unproven:
        return [
            passed(
                "log",
                f"all {len(versions)} versions are proven included in the "
                f"checkpoint (size {checkpoint.size})",
            )
        ]
    tail = await _scan(source, checkpoint.size, checkpoint.size + len(unproven) + 8)
    return [
        noted(
            "log",
            f"version {v.number} is logged after the checkpoint (size "
            f"{checkpoint.size}); audit again after the next checkpoint",
        )
        if v.leaf in tail
        else finding(
            "log",
            "not-logged",
            f"version {v.number} is not included in the log at checkpoint size {checkpoint.size}",
        )
        for v in unproven
    ]


async def _proves(source: Source, leaf: bytes, index: int, checkpoint: note.Checkpoint) -> bool:
    if not 0 <= index < checkpoint.size:
        return False
    proof = await source.read(f"log/proof/inclusion?index={index}&size={checkpoint.size}")
    return proof is not None and check_inclusion(leaf, index, checkpoint, proof)


async def _scan(source: Source, start: int, stop: int) -> dict[bytes, int]:
    """Leaf hash -> index of entries ``start..stop-1``, stopping at the first one missing."""
    found: dict[bytes, int] = {}
    for index in range(start, stop):
        entry = await source.read(f"log/entries/{index}")
        if entry is None:
            break
        found.setdefault(tlog.leaf_hash(entry), index)
    return found


def _log_directory(
    source: Source, checkpoint: note.Checkpoint, key: signing.TrustKey
) -> list[Check]:
    """With the log directory at hand: recompute every entry and check every stored checkpoint."""
    try:
        store = source.log_store()
    except signing.SigningError as exc:
        return [finding("log", "log-damaged", str(exc))]
    if store is None:
        return []
    if store.origin != checkpoint.origin:
        return [
            finding(
                "log",
                "bad-checkpoint",
                f"the checkpoint is of {checkpoint.origin}, the log directory is {store.origin}",
            )
        ]
    report = store.audit(key.public_key)
    if report.ok:
        return [
            passed(
                "log",
                f"log directory: {report.size} entries rehashed, "
                f"{report.checkpoints} stored checkpoint(s) consistent",
            )
        ]
    return [
        finding("log", f.kind if f.kind in ADVICE else "log-damaged", f"log directory: {f.detail}")
        for f in report.findings
    ]


async def _audit_relays(doc: signing.ListDocument, options: Options) -> list[Check]:
    relays: list[Relay] = []
    checks: list[Check] = []
    for i, entry in enumerate(doc.proxies):
        try:
            relays.append(entry_relay(entry))
        except ValueError as exc:
            checks.append(finding("relay", "bad-entry", f"entry #{i}: {exc}"))
    results = await probe_relays(
        relays, timeout=options.probe_timeout, concurrency=options.concurrency
    )
    return checks + [check_probe(r) for r in results]
