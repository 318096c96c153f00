"""``kopir run``: the main job.

What runs today is the signing half of the publisher: the data directory with the online
signing key, the trust root and the transparency log, and a loop that signs a fresh log
checkpoint into ``<data>/public/`` every ``[log] checkpoint_interval``. The relays, the prober
and list builder, the SMS worker and the web app join this loop as they are built (see the
issues); each is a task started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import signing
from kopir.config import Config
from signing.canonical import rfc3339
from signing.fileio import write_atomic


@dataclass
class Setup:
    key: signing.SecretKey
    trust_path: Path
    log: signing.LogStore
    public_dir: Path


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def prepare(config: Config) -> Setup:
    """Make the data directory ready: key, trust root and log, creating what is missing."""
    data = config.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = config.in_data(config.signing.key)
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signing.generate_key_pair(key_path.parent, key_path.stem, None)
        say(f"created online signing key {key_path} (mode 0600, not encrypted)")
    key = signing.load_secret_key(key_path)
    log_key = config.in_data(config.log.key) if config.log.key else None
    log = signing.LogStore.open_or_create(
        config.in_data(config.log.dir), config.log.origin, log_key
    )
    trust_path = config.in_data(config.signing.trust)
    if not trust_path.exists():
        _initial_trust_root(trust_path, key, log)
        say(f"created trust root {trust_path} naming key {key.hex_id}")
    public = data / "public"
    public.mkdir(exist_ok=True)
    return Setup(key, trust_path, log, public)


def _initial_trust_root(path: Path, key: signing.SecretKey, log: signing.LogStore) -> None:
    keys = (
        signing.TrustKey("publisher", key.public_key, frozenset({"root", "lists", "links"})),
        signing.TrustKey("log", log.public_key(), frozenset({"log"})),
    )
    threshold = {"root": 1, "lists": 1, "links": 1, "log": 1}
    root = signing.TrustRoot(1, rfc3339(time.time() + 365 * 86400), keys, threshold)
    data = root.encode()
    write_atomic(path, data)
    signature = signing.sign_trust_root(data, key)
    signing.save_signature(path.with_name(signing.signature_name(path.name, signature)), signature)


def publish_checkpoint(setup: Setup) -> None:
    note = setup.log.checkpoint()
    write_atomic(setup.public_dir / "checkpoint", note)
    for src in [
        setup.trust_path,
        *setup.trust_path.parent.glob(f"{setup.trust_path.name}.*.minisig"),
    ]:
        write_atomic(setup.public_dir / src.name, src.read_bytes())
    say(f"log {setup.log.origin}: size {setup.log.size}, checkpoint in {setup.public_dir}")


async def run(config: Config, once: bool = False) -> int:
    setup = prepare(config)
    say(f"kopir run: data in {config.data_dir}, signing key {setup.key.hex_id}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while True:
        publish_checkpoint(setup)
        if once:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.log.checkpoint_interval)
        if stop.is_set():
            break
    say("kopir run: stopped")
    sys.stdout.flush()
    return 0
