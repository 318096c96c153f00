"""SMS through the queue to Net::SMPP's SMSC on loopback: unthrottled rate, throttled accuracy.

It runs the product's path: messages enqueued in ``smsgw.queue`` (``Queue.enqueue_many``,
10,000 a transaction; ``enqueue_msgs_per_s``), then a ``smsgw.worker.Worker`` claiming windows
of them (``--window``, the ``[sms] window``; the SMPP window is ``--smpp-window``), decrypting
each number just in time, and sending them through ``SmppBackend`` (smpplib in its I/O thread)
to the real Net::SMPP example SMSC (``/usr/share/doc/libnet-smpp-perl/examples/smsc.pl``,
DESIGN.md §9), which this script starts and stops itself. The SMSC listens on localhost:9900
(hard-coded in the script; it takes no port option), so the port must be free.

In one run, against one SMSC process:
- unthrottled: ``--messages`` single-part messages with the throughput limit off;
  ``unthrottled_msgs_per_s`` is messages accepted per wall-clock second of the drain.
- throttled: ``--limit`` messages/s for about ``--seconds``; ``throttled_rate_ratio`` is the
  achieved rate divided by the limit (1.0 is exact; the target is within 2%).
- import: ``--subscribers`` numbers from a CSV through ``SubscriberStore.import_csv``, as
  ``kopir sms subscribers import`` does (validate, encrypt, HMAC, insert).
CPU seconds (utime+stime from /proc, DESIGN.md §10) are given for this process and for the
SMSC's per-connection child, with each one's share of the wall time, so a run shows which side
was the limit: the Perl SMSC is single-threaded, and when its share comes close to 1, it is;
this process (the worker's loop and the SMPP I/O thread share one GIL) likewise.

    python bench/sms_bench.py [--messages 100000] [--limit 200] [--seconds 15]
                              [--subscribers 100000] [--window 50] [--smpp-window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import procstat

from smsgw import NewMessage, NumberKey, Queue, State, SubscriberStore, create_key_file, segment
from smsgw.smpp import SmppBackend, SmppSettings
from smsgw.worker import StepReport, Worker

SMSC_PL = Path("/usr/share/doc/libnet-smpp-perl/examples/smsc.pl")
PORT = 9900
TEXT = "Telegram proxy: https://t.me/proxy?server=relay.example.kz&port=443&secret=dd" + "ab" * 16
ENQUEUE_BATCH = 10_000


def out(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)


# -- CPU seconds from /proc ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0.0 if it has gone)."""
    try:
        return procstat.usage(pid).total
    except OSError:
        return 0.0


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (smsc.pl forks one per connection)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


# -- the SMSC --------------------------------------------------------------------------------


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def perl_smsc(folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """smsc.pl in its own process group, killed (children too) on the way out."""
    if not SMSC_PL.exists():
        sys.exit("sms_bench: Net::SMPP's example SMSC is missing: apt-get install libnet-smpp-perl")
    if port_open(PORT):
        sys.exit(f"sms_bench: port {PORT} is taken (another SMSC?); stop it and run again")
    with (folder / "smsc.out").open("wb") as stdout:
        proc = subprocess.Popen(
            ["perl", str(SMSC_PL)], stdout=stdout, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, cwd=folder, start_new_session=True,
        )  # fmt: skip
    try:
        for _ in range(200):
            if proc.poll() is not None or port_open(PORT):
                break
            time.sleep(0.05)
        if proc.poll() is not None or not port_open(PORT):
            sys.exit("sms_bench: smsc.pl did not start listening on port 9900 within 10 s")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def submits_seen(folder: Path) -> int:
    """submit_sm PDUs the SMSC's children printed (flushed when a child exits on unbind)."""
    text = (folder / "smsc.out").read_text(errors="replace")
    return sum(1 for line in text.splitlines() if line.endswith(":submit_sm"))


# -- the runs --------------------------------------------------------------------------------


def enqueue(queue: Queue, key: NumberKey, campaign: str, count: int, first: int) -> float:
    """Queue ``count`` single-part messages to distinct numbers; returns the seconds taken."""
    message = segment(TEXT)
    assert message.count == 1, "the bench text must fit one SMS"
    part = message.parts[0]
    start = time.perf_counter()
    for offset in range(0, count, ENQUEUE_BATCH):
        numbers = [
            f"+7701{first + i:07d}" for i in range(offset, min(count, offset + ENQUEUE_BATCH))
        ]
        rows = (
            NewMessage(campaign, key.ref(n), key.encrypt(n), 1, 1, part.body, part.udh,
                       message.data_coding, part.esm_class, part.text)
            for n in numbers
        )  # fmt: skip
        queue.enqueue_many(rows, time.time())
    return time.perf_counter() - start


async def send(
    queue: Queue, key: NumberKey, settings: SmppSettings, window: int, smsc: int
) -> tuple[StepReport, float, float, float]:
    """Drain the queue through the SMSC: (report, wall s, our CPU s, the SMSC child's CPU s)."""
    worker = Worker(queue, key, SmppBackend(settings), window=window, retry_delay=1.0)
    before = set(children(smsc))
    await worker.start()
    try:
        child = max(set(children(smsc)) - before, default=0)  # forked for our connection
        smsc_before, cpu_before = cpu_seconds(child), time.process_time()
        start = time.perf_counter()
        report = await worker.drain(max_steps=10_000_000)
        wall = time.perf_counter() - start
        ours, theirs = time.process_time() - cpu_before, cpu_seconds(child) - smsc_before
    finally:
        await worker.stop()  # unbind: the child exits (and flushes its stdout)
    return report, wall, ours, theirs


def import_subscribers(folder: Path, key: NumberKey, count: int) -> float:
    """Seconds to import ``count`` valid numbers from a CSV into a new subscriber store."""
    csv = folder / "subscribers.csv"
    csv.write_text("number,language\n" + "".join(f"8702{i:07d},kk\n" for i in range(count)))
    start = time.perf_counter()
    with SubscriberStore(folder / "subscribers.db", key) as store:
        report = store.import_csv(csv, "ru", "new", "bench", time.time())
    seconds = time.perf_counter() - start
    if report.added != count:
        sys.exit(f"sms_bench: imported {report.added} of {count} subscribers ({report.bad[:1]})")
    return seconds


def check_all_accepted(queue: Queue, expected: int) -> None:
    counts = queue.counts()
    if counts[State.ACCEPTED] + counts[State.DELIVERED] != expected:
        sys.exit(f"sms_bench: not every message was accepted: {dict(counts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="unthrottled messages")
    parser.add_argument("--limit", type=float, default=200.0, help="throttled run: messages/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="throttled run: length")
    parser.add_argument("--subscribers", type=int, default=100_000, help="import: CSV rows")
    parser.add_argument("--window", type=int, default=50, help="[sms] window: claimed at once")
    parser.add_argument("--smpp-window", type=int, default=10, help="[sms.smpp] window")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sms-bench-") as tmp:
        folder = Path(tmp)
        key = create_key_file(folder / "subscribers.key")
        settings = SmppSettings("localhost", PORT, "kopir", "secret", window=args.smpp_window)
        throttled = max(1, round(args.limit * args.seconds))
        with Queue(folder / "queue.db") as queue, perl_smsc(folder) as smsc:
            enqueue_s = enqueue(queue, key, "unthrottled", args.messages, 0)
            out("messages", args.messages)
            out("enqueue_msgs_per_s", f"{args.messages / enqueue_s:.0f}")
            report, wall, ours, theirs = asyncio.run(
                send(queue, key, settings, args.window, smsc.pid)
            )
            check_all_accepted(queue, args.messages)
            out("unthrottled_msgs_per_s", f"{report.accepted / wall:.0f}")
            out("unthrottled_s", f"{wall:.2f}")
            out("unthrottled_worker_cpu_s", f"{ours:.2f}")
            out("unthrottled_worker_cpu_share", f"{ours / wall:.2f}")
            out("unthrottled_smsc_cpu_s", f"{theirs:.2f}")
            out("unthrottled_smsc_cpu_share", f"{theirs / wall:.2f}")
            smsc_cpu = theirs

            enqueue(queue, key, "throttled", throttled, args.messages)
            limited = SmppSettings("localhost", PORT, "kopir", "secret", window=args.smpp_window,
                                   throughput=args.limit)  # fmt: skip
            report, wall, ours, theirs = asyncio.run(
                send(queue, key, limited, args.window, smsc.pid)
            )
            check_all_accepted(queue, args.messages + throttled)
            out("throttled_limit_per_s", f"{args.limit:g}")
            out("throttled_msgs", report.accepted)
            out("throttled_s", f"{wall:.2f}")
            out("throttled_rate_ratio", f"{report.accepted / wall / args.limit:.4f}")
            out("throttled_smsc_cpu_s", f"{theirs:.2f}")
            out("smsc_cpu_s", f"{smsc_cpu + theirs:.2f}")
            time.sleep(0.2)  # the children flush their output as they exit on unbind
            out("smsc_submits_received", submits_seen(folder))
        seconds = import_subscribers(folder, key, args.subscribers)
        out("import_subscribers", args.subscribers)
        name = (
            "import_100k_subscribers_s" if args.subscribers == 100_000 else "import_subscribers_s"
        )
        out(name, f"{seconds:.2f}")


if __name__ == "__main__":
    main()
