"""``kopir list probe|build|show``: the prober and the list builder from the command line.

``probe`` checks every relay in ``[publisher]`` and prints a table (exit 1 if any is down);
``build`` probes, makes version N+1 when the healthy set changed or the list nears expiry,
signs it (the online key, ``--key``, or none: sign later with ``kopir sign list``) and logs it;
``show`` prints a person's summary of a list document. The work is done in ``proxylist``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import signing
from kopir.config import Config, ConfigError, PublisherRelayConfig, load_config
from kopir.output import CommandFailed, emit
from proxylist import STAGES, PortResult, ProbeResult, Relay, Stage
from proxylist.build import ListPolicy, ListStore, Published, publish
from proxylist.errors import BuildError
from relay.dc import parse_host_port
from signing.canonical import parse_rfc3339
from signing.fileio import read_bytes

# -- config to model ------------------------------------------------------------------------


def _relay_from(config: Config, index: int, entry: PublisherRelayConfig) -> Relay:
    where = f"{config.path}: [[publisher.relays]] #{index + 1}"
    if entry.name:
        where += f" ({entry.name!r})"
    for key in ("name", "server", "port", "key"):
        if not getattr(entry, key):
            raise ConfigError(f"{where}: {key} is missing")
    try:
        key_bytes = bytes.fromhex(entry.key)
    except ValueError:
        key_bytes = b""
    if len(key_bytes) != 16:
        raise ConfigError(f"{where}: key must be 32 hex characters (the relay's 16-byte key)")
    if not entry.domain.isascii() or not entry.server.isascii() or " " in entry.server:
        raise ConfigError(f"{where}: server and domain must be plain ASCII host names")
    try:
        return Relay(
            name=entry.name,
            server=entry.server.lower(),
            port=entry.port,
            key=key_bytes,
            mode=entry.mode,
            domain=entry.domain or None,
            alt_ports=tuple(entry.alt_ports),
            tags=tuple(entry.tags),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None


def _local_relays(config: Config) -> list[Relay]:
    """``[relay]``'s own secrets as list entries, under ``[publisher] local_relay``."""
    host, relay = config.publisher.local_relay.strip().lower(), config.relay
    if not host or not relay.secrets:
        return []
    try:
        ports = [parse_host_port(a)[1] for a in relay.listen]
    except ValueError as exc:
        raise ConfigError(f"{config.path}: [relay] listen: {exc}") from None
    mode = next(m for m in ("ee", "dd", "classic") if m in relay.modes)
    out = []
    for index, secret in enumerate(relay.secrets):
        try:
            key = bytes.fromhex(secret.secret)
            out.append(
                Relay(
                    name=f"local:{secret.name}",
                    server=host,
                    port=ports[0],
                    key=key,
                    mode=mode,
                    domain=relay.tls_domain if mode == "ee" else None,
                    alt_ports=tuple(ports[1:]),
                )
            )
        except (ValueError, IndexError):
            raise ConfigError(
                f"{config.path}: [[relay.secrets]] #{index + 1} cannot be listed as local_relay: "
                "it needs a 32-hex-character secret and [relay] a listen address"
            ) from None
    return out


def publisher_relays(config: Config) -> tuple[Relay, ...]:
    """Every relay the publisher probes; a bad entry is a ``ConfigError`` naming it."""
    relays = [_relay_from(config, i, e) for i, e in enumerate(config.publisher.relays)]
    relays += _local_relays(config)
    names = [r.name for r in relays]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"{config.path}: [[publisher.relays]] names repeat: {', '.join(twice)}")
    if not relays:
        raise ConfigError(
            f"{config.path}: no relays to probe: add [[publisher.relays]], or a "
            "[[relay.secrets]] with [publisher] local_relay set"
        )
    return tuple(relays)


def list_policy(config: Config) -> ListPolicy:
    pub = config.publisher
    try:
        return ListPolicy(pub.name, pub.list_lifetime, pub.renew_before)
    except BuildError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None


def _probe(config: Config, relays: Sequence[Relay]) -> list[ProbeResult]:
    from proxylist.prober import probe_relays  # asyncio and sockets only when probing

    pub = config.publisher
    if pub.probe_concurrency < 1:
        raise ConfigError(f"{config.path}: [publisher] probe_concurrency must be at least 1")
    return asyncio.run(
        probe_relays(relays, timeout=pub.probe_timeout, concurrency=pub.probe_concurrency)
    )


# -- probe ----------------------------------------------------------------------------------


def _stage_cell(port: PortResult, stage: Stage) -> str:
    """``ok``, ``FAIL <why>``, ``-`` (not reached after a failure) or ``skip`` (not for this
    mode: a dd or classic relay has no tls-hmac stage)."""
    for result in port.stages:
        if result.stage == stage:
            return "ok" if result.ok else f"FAIL {result.detail}".strip()
    failed = port.failed_stage
    return "-" if failed and STAGES.index(stage) > STAGES.index(failed) else "skip"


def _rtt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f} ms"


def probe_table(results: Sequence[ProbeResult]) -> str:
    """One row per relay and port: the outcome of each stage and the connect RTT."""
    rows = [("relay", "port", *STAGES, "rtt")]
    for result in results:
        for i, port in enumerate(result.ports):
            name = result.relay.name if i == 0 else ""
            cells = [_stage_cell(port, s) for s in STAGES]
            rows.append((name, str(port.port), *cells, _rtt(port.rtt_ms)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    healthy = sum(r.ok for r in results)
    lines.append(f"{healthy} of {len(results)} relays healthy")
    return "\n".join(line.rstrip() for line in lines)


def result_json(result: ProbeResult) -> dict[str, Any]:
    relay = result.relay
    ports = [
        {
            "port": p.port,
            "ok": p.ok,
            "rtt_ms": p.rtt_ms,
            "stages": [
                {"stage": s.stage, "ok": s.ok, "detail": s.detail, "elapsed_ms": s.elapsed_ms}
                for s in p.stages
            ],
        }
        for p in result.ports
    ]
    return {"name": relay.name, "server": relay.server, "mode": relay.mode, "ok": result.ok,
            "ports": ports}  # fmt: skip


def list_probe(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    results = _probe(config, publisher_relays(config))
    healthy = sum(r.ok for r in results)
    emit(
        args.json,
        probe_table(results),
        {"healthy": healthy, "total": len(results), "relays": [result_json(r) for r in results]},
    )
    return 0 if healthy == len(results) else 1


# -- build ----------------------------------------------------------------------------------


def _signing_key(args: argparse.Namespace, config: Config) -> signing.SecretKey | None:
    if args.no_sign:
        return None
    if args.key:
        return signing.load_secret_key(Path(args.key))
    online = config.in_data(config.signing.key)
    return signing.load_secret_key(online) if online.exists() else None


def _log(args: argparse.Namespace, config: Config) -> signing.LogStore | None:
    if args.no_log:
        return None
    key = config.in_data(config.log.key) if config.log.key else None
    return signing.LogStore.open_or_create(config.in_data(config.log.dir), config.log.origin, key)


def _build_summary(done: Published, results: Sequence[ProbeResult]) -> str:
    build = done.build
    counts = f"{build.healthy} healthy of {build.relays} relays"
    if build.changed:
        lines = [f"list v{build.document.version} written: {counts} ({build.reason})"]
    else:
        lines = [f"list unchanged (v{build.document.version}): {counts}"]
    for result in results:
        if not result.ok:
            why = "; ".join(_failure(p) for p in result.ports) or "not probed"
            lines.append(f"  down: {result.relay.name} ({why})")
    lines.append(f"  {done.path}")
    if done.signed_by:
        lines.append(f"  signed by {', '.join(done.signed_by)}")
    else:
        lines.append(f"  unsigned: sign it offline with kopir sign list {done.path} --key KEY")
    if done.log_index is not None:
        lines.append(f"  transparency log entry {done.log_index}")
    return "\n".join(lines)


def _failure(port: PortResult) -> str:
    stage = port.failed_stage
    detail = next((s.detail for s in port.stages if s.stage == stage), "")
    return f"{port.port}: {stage} {detail}".strip()


def list_build(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    relays, policy = publisher_relays(config), list_policy(config)
    key = _signing_key(args, config)
    log = _log(args, config)
    store = ListStore(config.in_data(config.publisher.dir))
    results = _probe(config, relays)
    done = publish(store, relays, results, policy, time.time(), key=key, log=log)
    build = done.build
    emit(
        args.json,
        _build_summary(done, results),
        {"changed": build.changed, "reason": build.reason, "version": build.document.version,
         "healthy": build.healthy, "total": build.relays, "path": str(done.path),
         "signed_by": list(done.signed_by), "log_index": done.log_index,
         "relays": [result_json(r) for r in results]},
    )  # fmt: skip
    return 0


# -- show -----------------------------------------------------------------------------------


def _mode(secret: str) -> str:
    """ee or dd from the secret's prefix; a bare 16-byte key is classic."""
    return "classic" if len(secret) == 32 else secret[:2]


def _entry_line(entry: dict[str, Any]) -> str:
    parts = [f"{entry['server']}:{entry['port']}", _mode(entry["secret"])]
    if entry["domain"]:
        parts.append(entry["domain"])
    if entry["rtt_ms"] is not None:
        parts.append(f"rtt {entry['rtt_ms']} ms")
    parts.append(f"ports tried {','.join(map(str, entry['ports_tried'])) or '-'}")
    if entry["tags"]:
        parts.append(f"tags {','.join(entry['tags'])}")
    return "  " + "  ".join(parts)


def _signature_notes(path: Path, digest: str) -> list[dict[str, Any]]:
    notes = []
    for sig_path in signing.signature_files(path).values():
        try:
            sig = signing.load_signature(sig_path)
        except signing.SigningError:
            notes.append({"file": sig_path.name, "key_id": None, "matches": False})
            continue
        matches = f"sha256={digest}" in sig.trusted_comment
        notes.append({"file": sig_path.name, "key_id": sig.hex_id, "matches": matches})
    return notes


def _expiry(expires: str, now: float) -> str:
    left = parse_rfc3339(expires, "expires") - now
    return "EXPIRED" if left <= 0 else f"in {left / 3600:.1f} h"


def list_show(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else _configured_list(args)
    data = read_bytes(path, "list")
    try:
        doc = signing.parse_list(data)
    except signing.FormatError as exc:
        raise CommandFailed(f"{path} is not a kopir list: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    sigs = _signature_notes(path, digest)
    lines = [
        f"{doc.publisher} list version {doc.version} ({path})",
        f"  issued {doc.issued}, expires {doc.expires} ({_expiry(doc.expires, time.time())})",
        f"  sha256 {digest}",
        f"  previous {doc.previous or 'none (first version)'}",
        f"{len(doc.proxies)} proxies:",
        *(_entry_line(e) for e in doc.proxies),
        "signatures (check them with kopir verify list): "
        + (", ".join(f"{s['key_id']}{'' if s['matches'] else ' (STALE)'}" for s in sigs) or "none"),
    ]
    emit(args.json, "\n".join(lines), {**doc.to_json(), "sha256": digest, "signatures": sigs})
    return 0


def _configured_list(args: argparse.Namespace) -> Path:
    config = load_config(Path(args.config))
    return ListStore(config.in_data(config.publisher.dir)).path


# -- parsers --------------------------------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> Any:
    """Register ``kopir list ...``; return its sub-parsers so other modules can add actions."""
    lists = sub.add_parser("list", help="probe relays, build and show list versions")
    actions = lists.add_subparsers(dest="action", required=True)
    probe = actions.add_parser(
        "probe", parents=[common], help="probe every [publisher] relay (exit 1 if any is down)"
    )
    probe.add_argument("-c", "--config", default="config.toml", help="config file ([publisher])")
    probe.set_defaults(func=list_probe)

    build = actions.add_parser(
        "build", parents=[common], help="probe, then write list version N+1 if it is due"
    )
    build.add_argument("-c", "--config", default="config.toml", help="config file ([publisher])")
    build.add_argument(
        "--key", help="secret key to sign with (default: [signing] key, if the file exists)"
    )
    build.add_argument(
        "--no-sign", action="store_true", help="write unsigned; sign later with kopir sign list"
    )
    build.add_argument("--no-log", action="store_true", help="do not append to the [log]")
    build.set_defaults(func=list_build)

    show = actions.add_parser("show", parents=[common], help="summarise a list document")
    show.add_argument("file", nargs="?", help="list.json (default: the configured current list)")
    show.add_argument("-c", "--config", default="config.toml", help="config file ([publisher])")
    show.set_defaults(func=list_show)
    return actions
