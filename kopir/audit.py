"""The auditor's checks: what a publisher published, verified from the published bytes alone.

Theory of operation
-------------------
An audit reads a publisher's material through a :class:`~kopir.auditsource.Source` and turns
it into :class:`Check` values, one per thing checked; a check that fails is a *finding*, with a
``kind`` a machine can match and a line for a person saying what to do (DESIGN.md §1
"Auditors", §5.4-§5.6):

1. **trust**: the trust root the auditor brought (``--trust``) anchors everything. The one the
   publisher serves must be that root, or its successor signed by a threshold of the anchor's
   root keys and of its own (TUF rotation, ``signing.verify_trust_root``).
2. **lists**: every version ``lists/versions/1..N.json`` (N from ``list.json``) must meet the
   ``lists`` threshold at the time it was issued, so a key revoked later does not condemn the
   history; a version missing from the history is a finding.
3. **chain**: version 1 has no ``previous``; every later one names the SHA-256 of the exact
   bytes of the one before, so history cannot be rewritten without breaking the chain.
4. **log**: the checkpoint must be signed by the trust root's ``log`` keys, and every version
   must be proven included in it (RFC 9162 inclusion proofs). The auditor remembers the newest
   checkpoint it accepted in its state dir (``audit.json``); a later checkpoint of the same
   size with another root is a split view, a smaller one a rollback, and a larger one must come
   with a consistency proof. A conflicting note is kept beside the state as evidence.
5. **relay**: every relay in the current list is probed like a client would dial it; a server
   that fails the fake-TLS HMAC does not hold the listed secret: a look-alike.

The checks themselves are plain functions of bytes, the trust root and ``now``;
:func:`kopir.auditrun.run_audit` fetches, probes and keeps the auditor's state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import signing
from kopir.auditsource import AuditError
from proxylist import ProbeResult, Relay, relay_from_link
from signing import note, tlog
from signing.canonical import parse_rfc3339

MAX_VERSIONS = 10_000
"""At most this many of the newest versions are checked in one audit."""

ADVICE = {
    "trust-missing": "the publisher must serve trust.json; ask the operators for it",
    "trust-malformed": "this is not a kopir trust root; ask the operators for a good copy",
    "trust-threshold": "too few of its root keys signed this trust root: do not rely on it",
    "trust-expired": "the operators must sign a new trust root; verifiers now refuse this one",
    "trust-rollback": "the publisher serves an older trust root than yours: keep using yours",
    "trust-conflict": "two different trust roots claim one version: keep both, tell the operators",
    "trust-gap": "get each trust root version in between and audit with the newest you verified",
    "signature-malformed": "a signature file is damaged; the publisher should re-sign",
    "list-missing": "the publisher serves no list.json; ask the operators why",
    "list-malformed": "this is not a kopir list document; treat it as forged",
    "version-mismatch": "a history file holds another version than its name says; ask why",
    "current-mismatch": "list.json differs from its copy in the history: ask the operators why",
    "unknown-key": "no key the trust root names signed this list: treat it as forged, keep a "
    "copy and tell the operators; do not pass its links on",
    "revoked-key": "it was signed after its key was revoked: treat it as forged",
    "threshold": "too few valid signatures by trusted keys: treat this version as forged",
    "expired": "the publisher must issue a fresh list; verifiers refuse an expired one",
    "missing-version": "the publisher must keep every version it published; ask for it",
    "chain-broken": "history was rewritten or a version forged: keep both versions as "
    "evidence and tell the operators",
    "publisher-changed": "one publisher's history names another publisher: ask the operators why",
    "rollback": "the publisher serves an older list than one you audited before: a replay",
    "checkpoint-missing": "the publisher must serve a signed log checkpoint; ask for it",
    "bad-checkpoint": "the checkpoint is not signed by the trust root's log key: do not trust it",
    "split-view": "the log shows different histories of one size: keep both notes (in the "
    "state dir) as proof and publish them; the log was rewritten",
    "inconsistent": "the log no longer extends the one you saw: an entry was rewritten; keep "
    "both notes (in the state dir) as proof and publish them",
    "log-rollback": "the log serves an older checkpoint than one you saw: a stale or forked log",
    "not-logged": "this version is not in the transparency log: it may be a targeted forgery",
    "rewritten-entry": "a log entry no longer matches its hash: the log dir was tampered with",
    "log-damaged": "the log directory is damaged; the publisher must restore it",
    "bad-entry": "this list entry is not a usable proxy; the publisher must fix or drop it",
    "unreachable": "the relay did not answer; if it stays down the publisher should drop it",
    "look-alike": "this server does not hold the listed secret: it is not the operators' relay "
    "(a look-alike) or its secret changed; do not pass this link on, tell the operators",
    "no-dc": "the relay does not complete the MTProto handshake (wrong secret, or no route to "
    "Telegram); tell the operators",
}


@dataclass(frozen=True)
class Check:
    """One thing the audit checked."""

    area: str
    """``trust``, ``lists``, ``chain``, ``log`` or ``relay``."""
    ok: bool
    kind: str
    """``ok``, ``note``, or a finding: a key of :data:`ADVICE`."""
    detail: str
    advice: str = ""


def passed(area: str, detail: str) -> Check:
    return Check(area, True, "ok", detail)


def noted(area: str, detail: str, advice: str = "") -> Check:
    return Check(area, True, "note", detail, advice)


def finding(area: str, kind: str, detail: str) -> Check:
    return Check(area, False, kind, detail, ADVICE.get(kind, ""))


@dataclass(frozen=True)
class Report:
    source: str
    trust: str
    """Where the trust root came from."""
    checks: tuple[Check, ...]

    @property
    def findings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "source": self.source,
            "trust": self.trust,
            "findings": len(self.findings),
            "checks": [c.__dict__ for c in self.checks],
        }

    def lines(self) -> list[str]:
        out = [f"kopir audit of {self.source}", f"trust root: {self.trust}"]
        for c in self.checks:
            label = "FINDING" if not c.ok else c.kind
            out.append(f"{label:8} {c.area:6} {c.detail}")
            if c.advice:
                out.append(f"{'':15} what to do: {c.advice}")
        n = len(self.findings)
        out.append("clean: no findings" if not n else f"{n} finding{'s' * (n != 1)}")
        return out


# -- trust ----------------------------------------------------------------------------------


def parse_signatures(
    files: Mapping[str, bytes], name: str
) -> tuple[list[signing.Signature], list[Check]]:
    """The signature files that parse, and a finding for each that does not."""
    good: list[signing.Signature] = []
    bad: list[Check] = []
    for kid, data in sorted(files.items()):
        try:
            good.append(signing.parse_signature(data.decode("utf-8")))
        except (UnicodeDecodeError, signing.FormatError) as exc:
            bad.append(finding("lists", "signature-malformed", f"{name}.{kid}.minisig: {exc}"))
    return good, bad


def load_anchor(data: bytes, label: str) -> signing.TrustRoot:
    """The auditor's own trust root; an error here is the auditor's to fix (exit 2)."""
    try:
        return signing.parse_trust_root(data)
    except signing.FormatError as exc:
        raise AuditError(f"{label} is not a kopir trust root: {exc}") from None


def check_trust(
    anchor: tuple[bytes, signing.TrustRoot] | None,
    published: bytes | None,
    signature_files: Mapping[str, bytes],
    now: float,
) -> tuple[signing.TrustRoot | None, list[Check]]:
    """The trust root to audit with, and what was found about the one the publisher serves."""
    sigs, checks = parse_signatures(signature_files, "trust.json")
    checks = [replace(c, area="trust") for c in checks]
    if published is None:
        return (anchor[1] if anchor else None), [
            *checks,
            finding("trust", "trust-missing", "the publisher serves no trust.json"),
        ]
    if anchor is None:
        try:
            root = signing.parse_trust_root(published)
        except signing.FormatError as exc:
            return None, [*checks, finding("trust", "trust-malformed", f"trust.json: {exc}")]
        return root, [*checks, _verify_trust(published, sigs, now, None)]
    return _trust_against_anchor(anchor, published, sigs, now, checks)


def _trust_against_anchor(
    anchor: tuple[bytes, signing.TrustRoot],
    published: bytes,
    sigs: Sequence[signing.Signature],
    now: float,
    checks: list[Check],
) -> tuple[signing.TrustRoot, list[Check]]:
    anchor_bytes, anchor_root = anchor
    if published == anchor_bytes:
        return anchor_root, [*checks, _verify_trust(published, sigs, now, None)]
    check = _verify_trust(published, sigs, now, anchor)
    if not check.ok:
        return anchor_root, [*checks, check]
    return signing.parse_trust_root(published), [*checks, check]


def _verify_trust(
    data: bytes,
    sigs: Sequence[signing.Signature],
    now: float,
    anchor: tuple[bytes, signing.TrustRoot] | None,
) -> Check:
    previous, previous_data = (anchor[1], anchor[0]) if anchor else (None, None)
    try:
        root = signing.verify_trust_root(data, sigs, now, previous, previous_data)
    except signing.VerificationError as exc:
        return finding("trust", f"trust-{exc.reason}", f"trust.json: {exc}")
    except signing.FormatError as exc:
        return finding("trust", "trust-malformed", f"trust.json: {exc}")
    what = f"trust.json version {root.version}, signed by its root keys, valid until {root.expires}"
    if previous is not None:
        what += f"; it follows your version {previous.version} (signed by its root keys too)"
    return passed("trust", what)


# -- list versions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One list version as read: its hashes and, if it parsed, the document."""

    number: int
    sha256: str
    leaf: bytes
    """Its RFC 9162 leaf hash, what the log holds for it."""
    document: signing.ListDocument | None = field(default=None, hash=False)


def check_version(
    number: int | None,
    name: str,
    data: bytes,
    signature_files: Mapping[str, bytes],
    trust: signing.TrustRoot,
    now: float,
) -> tuple[Version, list[Check]]:
    """Parse one version and check its signatures at the time it was issued."""
    version = Version(number or 0, hashlib.sha256(data).hexdigest(), tlog.leaf_hash(data))
    try:
        doc = signing.parse_list(data)
    except signing.FormatError as exc:
        return version, [finding("lists", "list-malformed", f"{name}: {exc}")]
    version = replace(version, number=number or doc.version, document=doc)
    sigs, checks = parse_signatures(signature_files, name)
    if number is not None and doc.version != number:
        checks.append(finding("lists", "version-mismatch", f"{name} holds version {doc.version}"))
    at = min(parse_rfc3339(doc.issued, "issued"), now)
    try:
        signing.verify_list(data, sigs, trust, at)
    except signing.VerificationError as exc:
        kind = _signature_kind(exc, sigs, trust, at)
        none = "" if sigs else " (no signature by the trust root's lists keys was found)"
        checks.append(finding("lists", kind, f"{name} (version {doc.version}): {exc}{none}"))
    return version, checks


def _signature_kind(
    exc: signing.VerificationError,
    sigs: Sequence[signing.Signature],
    trust: signing.TrustRoot,
    at: float,
) -> str:
    if exc.reason != "threshold":
        return exc.reason
    if not sigs:
        return "unknown-key"  # a web site shows only the trusted keys' signature files
    keys = [trust.by_key_id.get(s.key_id) for s in sigs]
    if any(k is None or "lists" not in k.roles for k in keys):
        return "unknown-key"
    if any(k is not None and not k.active(at) for k in keys):
        return "revoked-key"
    return "threshold"


def check_link(previous: Version | None, current: Version) -> list[Check]:
    """``current.previous`` must be the SHA-256 of ``previous``'s bytes (v1: none at all)."""
    doc = current.document
    if doc is None:
        return []
    if current.number == 1 and doc.previous is not None:
        return [finding("chain", "chain-broken", "version 1 names a previous version")]
    if previous is None or current.number == 1:
        return []
    if doc.previous != previous.sha256:
        return [
            finding(
                "chain",
                "chain-broken",
                f"version {current.number} names previous {doc.previous}, but version "
                f"{previous.number} has SHA-256 {previous.sha256}",
            )
        ]
    if previous.document is not None and previous.document.publisher != doc.publisher:
        return [
            finding(
                "chain",
                "publisher-changed",
                f"version {current.number} is by {doc.publisher!r}, version {previous.number} "
                f"by {previous.document.publisher!r}",
            )
        ]
    return []


def check_current(
    doc: signing.ListDocument, data: bytes, now: float, last_seen: tuple[int, str] | None
) -> list[Check]:
    """The current list: not expired, and not older than one this auditor saw before."""
    checks = []
    if now >= parse_rfc3339(doc.expires, "expires"):
        checks.append(
            finding("lists", "expired", f"list.json (version {doc.version}) expired {doc.expires}")
        )
    digest = hashlib.sha256(data).hexdigest()
    if last_seen is not None and (
        doc.version < last_seen[0] or (doc.version == last_seen[0] and digest != last_seen[1])
    ):
        checks.append(
            finding(
                "lists",
                "rollback",
                f"list.json is version {doc.version} ({digest[:16]}...), but an earlier audit "
                f"saw version {last_seen[0]} ({last_seen[1][:16]}...)",
            )
        )
    return checks


def missing_findings(missing: Sequence[int]) -> list[Check]:
    """One finding per run of consecutive missing versions."""
    runs: list[list[int]] = []
    for n in missing:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [
        finding(
            "lists",
            "missing-version",
            f"version {a} is missing from lists/versions/"
            if a == b
            else f"versions {a}-{b} are missing from lists/versions/",
        )
        for a, b in runs
    ]


# -- log ----------------------------------------------------------------------------------


def verify_checkpoint(
    data: bytes, trust: signing.TrustRoot, now: float
) -> tuple[note.Checkpoint, signing.TrustKey]:
    """The checkpoint, if a threshold of the trust root's ``log`` keys signed it."""
    checkpoint = note.parse_checkpoint(note.parse_note(data).text)
    good = []
    for key in (k for k in trust.keys if "log" in k.roles and k.active(now)):
        try:
            note.verify_note(data, checkpoint.origin, key.public_key.key)
            good.append(key)
        except signing.VerificationError:
            continue
    need = trust.threshold["log"]
    if len(good) < need or not good:
        raise signing.VerificationError(
            "bad-checkpoint",
            f"signed by {len(good)} of the {need} log key(s) the trust root requires "
            f"(origin {checkpoint.origin})",
        )
    return checkpoint, good[0]


def check_consistency(old: note.Checkpoint, new: note.Checkpoint, proof: bytes | None) -> Check:
    """Does ``new`` extend ``old``, the checkpoint remembered from an earlier audit?"""
    sizes = f"size {old.size} seen before, size {new.size} now"
    if old.size == new.size:
        if old.root == new.root:
            return passed("log", f"same checkpoint as the last audit (size {new.size})")
        return finding(
            "log",
            "split-view",
            f"two checkpoints of size {new.size} with different "
            "roots: the one seen before and the one served now",
        )
    if old.size > new.size:
        return finding("log", "log-rollback", f"{sizes}: the log went back")
    if old.size == 0:
        return passed("log", f"the log grew from empty to size {new.size}")
    try:
        if proof is None:
            raise signing.VerificationError("bad-proof", "the log serves no consistency proof")
        parsed = tlog.parse_consistency_proof(proof)
        if (parsed.old_size, parsed.new_size) != (old.size, new.size):
            raise signing.FormatError("the proof is for other sizes")
        tlog.verify_consistency(old.size, new.size, old.root, new.root, parsed.hashes)
    except (signing.FormatError, signing.VerificationError) as exc:
        return finding("log", "inconsistent", f"{sizes}, not proven an extension: {exc}")
    return passed("log", f"{sizes}: consistent (the log only grew)")


def check_inclusion(leaf: bytes, index: int, checkpoint: note.Checkpoint, proof: bytes) -> bool:
    try:
        parsed = tlog.parse_inclusion_proof(proof)
        if (parsed.index, parsed.size) != (index, checkpoint.size):
            return False
        tlog.verify_inclusion(leaf, index, checkpoint.size, parsed.hashes, checkpoint.root)
    except (signing.FormatError, signing.VerificationError):
        return False
    return True


# -- relays ---------------------------------------------------------------------------------


def entry_relay(entry: Mapping[str, Any]) -> Relay:
    """The relay a list entry points at (key and domain from its secret); ``ValueError``."""
    if entry["type"] != "proxy":
        raise ValueError(f"type {entry['type']!r} is not an MTProto proxy")
    query = urlencode({"server": entry["server"], "port": entry["port"], "secret": entry["secret"]})
    relay = relay_from_link(f"tg://proxy?{query}", f"{entry['server']}:{entry['port']}")
    if relay.domain != entry["domain"]:
        raise ValueError(f"its domain field says {entry['domain']!r}, its secret {relay.domain!r}")
    return relay


def check_probe(result: ProbeResult) -> Check:
    relay = result.relay
    where = f"{relay.server}:{relay.port} ({relay.mode})"
    port = result.ports[0]
    failed = port.failed_stage
    if failed is None:
        return passed(
            "relay",
            f"{where}: ok, {' '.join(s.stage for s in port.stages)}, rtt {port.rtt_ms or 0:.0f} ms",
        )
    why = next(s.detail for s in port.stages if not s.ok)
    kind = {"connect": "unreachable", "tls-hmac": "look-alike"}.get(failed, "no-dc")
    return finding("relay", kind, f"{where}: failed at {failed} ({why})")
