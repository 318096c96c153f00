"""proxylist's costs, measured in one run: probing, per-recipient assignment with signed links,
and QR codes.

- ``probes_per_s``: full-path probes (TCP connect, fake-TLS ClientHello and the server's HMAC,
  obfuscated2 init, ``req_pq_multi`` and ``resPQ``) of a local relay at concurrency 100,
  in wall-clock time. The relay runs as ``kopir relay serve`` in its own process and the fake
  DC (``tests.relay.fakedc.FakeDC``) in this one; ``relay_cpu_ms_per_probe`` is the relay's
  own CPU time (``/proc/PID/stat``) per probe, and ``prober_cpu_ms_per_probe`` this process's
  (the fake DC's answers included).
- ``assign_1m_cpu_s``: CPU seconds to give 1,000,000 recipients their ``k`` = 2 relays each from
  a 50-relay keyed hash ring (``proxylist.Ring``, one epoch), and ``assign_with_links_1m_cpu_s``
  the same plus each recipient's signed link text (``proxylist.LinkBook``; target: under 60 s
  on one core). A signed link names the relay and the expiry hour, not the recipient, so
  the book signs each relay's link once per hour: ``links_signed`` says how many signatures
  the run made, ``signed_links_per_s`` how many links recipients got per CPU second, and
  ``raw_signs_per_s`` the rate of signing distinct links, for scale.
- ``recorded_assign_per_s``: ``proxylist.Distributor.assign_many`` on 100,000 recipients, with
  the rate limit and the cohort record in SQLite, as a campaign does it.
- ``qr_png_per_s``: QR codes per CPU second, text to PNG bytes, for distinct signed links
  (target: at least 300).

Run from anywhere (``--quick`` shrinks every count, for CI):

    python bench/list_bench.py [--quick] [--recipients 1000000] [--probes 3000] [--qr 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.relay, which is not installed

import procstat  # noqa: E402

from proxylist import Distributor, LinkBook, Relay, Ring, probe_relays  # noqa: E402
from proxylist.qr import encode, png  # noqa: E402
from signing import SecretKey, sign_link  # noqa: E402
from tests.relay.fakedc import FakeDC  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "example.com"
NOW = time.time()
RELAYS = 50
K = 2
CONFIG = """\
[relay]
listen = ["127.0.0.1:0"]
modes = ["ee", "dd"]
tls_domain = "{domain}"
mask_host = "127.0.0.1"
mask_port = 9
metrics_listen = ""
[relay.dc]
"2" = "127.0.0.1:{dc_port}"
[relay.limits]
max_connections = 5000
[[relay.secrets]]
name = "bench"
secret = "{key}"
"""
LISTENING = re.compile(r"relay listening on 127\.0\.0\.1:(\d+)")


class BenchError(Exception):
    """The relay or a peer misbehaved; the message says what was seen."""


@contextlib.asynccontextmanager
async def relay_process(key: bytes, dc_port: int, work: Path) -> AsyncIterator[tuple[int, int]]:
    """``kopir relay serve`` on a free port; yields (pid, port) and stops it on the way out."""
    config = work / "relay.toml"
    config.write_text(CONFIG.format(domain=DOMAIN, dc_port=dc_port, key=key.hex()))
    command = [sys.executable, "-m", "kopir.cli", "relay", "serve", "-c", str(config)]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode(errors="replace")
        match = LISTENING.match(line)
        if not match:
            assert proc.stderr is not None
            error = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            raise BenchError(f"the relay did not start: {line.strip()!r} {error}")
        yield proc.pid, int(match[1])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def probes(count: int, concurrency: int) -> dict[str, float]:
    key = os.urandom(16)
    with tempfile.TemporaryDirectory(prefix="list-bench-") as work:
        async with FakeDC("echo") as dc, relay_process(key, dc.port, Path(work)) as (pid, port):
            relay = Relay("local", HOST, port, key, "ee", DOMAIN)
            await probe_relays([relay], timeout=10, concurrency=1)  # warm up both sides
            relay_cpu, own_cpu, wall = (
                procstat.usage(pid).total,
                time.process_time(),
                time.perf_counter(),
            )
            results = await probe_relays([relay] * count, timeout=30, concurrency=concurrency)
            wall = time.perf_counter() - wall
            own_cpu = time.process_time() - own_cpu
            relay_cpu = procstat.usage(pid).total - relay_cpu
    failed = [r for r in results if not r.ok]
    if failed:
        port = failed[0].ports[0]
        raise BenchError(f"{len(failed)} of {count} probes failed, first at {port.stages}")
    return {
        "probes": count,
        "probe_concurrency": concurrency,
        "probes_per_s": count / wall,
        "relay_cpu_ms_per_probe": relay_cpu * 1000 / count,
        "prober_cpu_ms_per_probe": own_cpu * 1000 / count,
    }


def relays() -> list[Relay]:
    return [
        Relay(f"r{i:02d}", f"relay{i:02d}.example.org", 443, os.urandom(16), "ee", DOMAIN)
        for i in range(RELAYS)
    ]


def assignments(recipients: int) -> dict[str, float]:
    fleet, key, secret = relays(), SecretKey.generate(), os.urandom(32)
    ids = [f"+7701{i:07d}" for i in range(recipients)]
    start = time.process_time()
    ring = Ring.build(secret, [r.name for r in fleet], epoch=0)
    sets = ring.assign_many(ids, K)
    assigned = time.process_time() - start
    book = LinkBook(key, fleet, lifetime=72 * 3600)
    links = [book.links(names, NOW) for names in sets]
    total = time.process_time() - start
    if len(links) != recipients or any(len(set(s)) != K for s in links):
        raise BenchError("a recipient did not get k distinct signed links")
    return {
        "recipients": recipients,
        "assign_1m_cpu_s": assigned * 1_000_000 / recipients,
        "assign_with_links_1m_cpu_s": total * 1_000_000 / recipients,
        "links_signed": book.signed,
        "signed_links_per_s": recipients * K / total,
        "raw_signs_per_s": raw_signs(key, fleet),
    }


def raw_signs(key: SecretKey, fleet: list[Relay], count: int = 2000) -> float:
    """Distinct links signed per CPU second (each port makes a distinct link)."""
    texts = [
        f"tg://proxy?server={r.server}&port={1 + i}&secret={r.secret_hex}"
        for i, r in zip(range(count), fleet * (count // len(fleet) + 1), strict=False)
    ]
    start = time.process_time()
    for text in texts:
        sign_link(text, key, NOW + 72 * 3600)
    return count / (time.process_time() - start)


def recorded(recipients: int) -> dict[str, float]:
    names = [r.name for r in relays()]
    ids = [f"+7702{i:07d}" for i in range(recipients)]
    with tempfile.TemporaryDirectory(prefix="list-bench-") as work:
        pools = {"established": names[:40], "new": names[40:]}
        with Distributor(Path(work) / "record.db", os.urandom(32), pools, k=K) as record:
            start = time.process_time()
            record.assign_many(ids, "established", NOW)
            spent = time.process_time() - start
    return {"recorded_recipients": recipients, "recorded_assign_per_s": recipients / spent}


def qr_codes(count: int) -> dict[str, float]:
    key, fleet = SecretKey.generate(), relays()
    texts = [
        sign_link(
            f"tg://proxy?server={fleet[i % RELAYS].server}&port={1 + i}"
            f"&secret={fleet[i % RELAYS].secret_hex}",
            key,
            NOW + 72 * 3600,
        ).url("tg")
        for i in range(count)
    ]
    start = time.process_time()
    images = [png(encode(text)) for text in texts]
    spent = time.process_time() - start
    if not all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images):
        raise BenchError("a QR code is not a PNG")
    return {"qr_codes": count, "qr_png_per_s": count / spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for CI")
    parser.add_argument("--recipients", type=int, help="recipients to assign (1,000,000)")
    parser.add_argument("--probes", type=int, help="probes of the local relay (3,000)")
    parser.add_argument("--concurrency", type=int, default=100, help="probes in flight")
    parser.add_argument("--recorded", type=int, help="recipients through the record (100,000)")
    parser.add_argument("--qr", type=int, help="QR PNGs to render (1,000)")
    args = parser.parse_args()
    quick = args.quick
    figures: dict[str, float] = {}
    figures |= asyncio.run(probes(args.probes or (300 if quick else 3000), args.concurrency))
    figures |= assignments(args.recipients or (100_000 if quick else 1_000_000))
    figures |= recorded(args.recorded or (10_000 if quick else 100_000))
    figures |= qr_codes(args.qr or (200 if quick else 1000))
    for name, value in figures.items():
        whole = name.endswith("_per_s") or float(value).is_integer()
        form = "{:.0f}" if whole else "{:.3f}"
        print(f"{name}: {form.format(value)}")


if __name__ == "__main__":
    main()
