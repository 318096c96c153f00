"""Tests of the SMS queue's file: opening it, sharing it, a killed worker, two workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from smsgw.errors import QueueError
from smsgw.queue import SCHEMA_VERSION, Outcome, Queue, State
from tests.smsgw.queuehelpers import NOW, drive, new, ref

ROOT = Path(__file__).resolve().parents[2]


# --- opening and sharing the file ----------------------------------------------------------------


def test_the_file_is_in_wal_mode_and_a_second_opener_sees_the_same_queue(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with Queue(path) as worker, Queue(path) as cli:
        mid = worker.enqueue(new(), NOW)
        assert cli.counts()[State.QUEUED] == 1
        claimed = cli.claim(5, NOW)
        assert [m.id for m in claimed] == [mid]
        assert worker.claim(5, NOW) == []  # the claim is visible to the other connection
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with Queue(path) as reopened:
        assert reopened.get(mid).state is State.SENDING


def test_opening_garbage_says_it_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 100)
    with pytest.raises(QueueError, match="not an SQLite database") as caught:
        Queue(path)
    assert str(path) in str(caught.value)


def test_opening_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE t (x)")
    raw.close()
    with pytest.raises(QueueError, match="not a kopir SMS queue"):
        Queue(path)


def test_a_version_1_file_gains_the_early_receipt_table(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with Queue(path) as q:
        mid = drive(q, State.SENDING)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE early_receipt")
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    with Queue(path) as q:
        assert q.delivered_by_provider_id("9", NOW + 1) is False
        q.accepted(mid, "9", NOW + 2)
        assert q.get(mid).state is State.DELIVERED
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw.close()


def test_opening_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    Queue(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(QueueError, match="schema version 99.*upgrade kopir"):
        Queue(path)


def test_opening_in_a_missing_directory_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="does not exist; create it"):
        Queue(tmp_path / "no" / "queue.db")
    with pytest.raises(QueueError, match="names a file") as caught:
        Queue(tmp_path)
    assert str(tmp_path) in str(caught.value)


_PERMISSION_CHECK = """
import sys
from pathlib import Path
from smsgw.errors import QueueError
from smsgw.queue import Queue

folder = Path(sys.argv[1])
path = folder / "queue.db"
Queue(path).close()
path.chmod(0o444)
try:
    Queue(path)
    raise SystemExit("opened a read-only queue")
except QueueError as exc:
    assert "may not read and write it; fix its owner or mode" in str(exc), exc
path.chmod(0o644)
folder.chmod(0o555)
try:
    Queue(path)
    raise SystemExit("opened a queue in a read-only folder")
except QueueError as exc:
    assert "may not create files in" in str(exc) and str(path) in str(exc), exc
finally:
    folder.chmod(0o755)
Queue(path).close()
print("ok")
"""
# Root ignores file modes through these two capabilities; drop them so root is checked too.
_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
           "--bounding-set=-dac_override,-dac_read_search"]  # fmt: skip


def test_opening_without_permission_says_what_to_fix(tmp_path: Path) -> None:
    prefix = _NO_DAC if os.geteuid() == 0 else []
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _PERMISSION_CHECK, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --- a worker killed with SIGKILL ----------------------------------------------------------------

WORKER = r"""
import os, sys, time
from smsgw.queue import Queue

path, sent, window, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
now = 1_800_000_000.0
fd = os.open(sent, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
with Queue(path) as q:
    while batch := q.claim(window, now):
        for m in batch:
            os.write(fd, b"%d\n" % m.id)  # the fake "send": the provider has it now
            time.sleep(pause)
            q.accepted(m.id, "%X" % (m.id * 7919), now)
"""
TOTAL = 2000
WINDOW = 20


def start_worker(db: Path, sent: Path, pause: float) -> subprocess.Popen[bytes]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(db), str(sent), str(WINDOW), str(pause)],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def sent_ids(sent: Path) -> list[int]:
    return [int(line) for line in sent.read_text().split()] if sent.exists() else []


def in_flight_and_sent(observer: Queue, sent: Path) -> set[int]:
    """Ids the (stopped) worker sent but has not recorded as accepted."""
    return {m.id for m in map(observer.get, set(sent_ids(sent))) if m.state is State.SENDING}


def stop_mid_flight(worker: subprocess.Popen[bytes], observer: Queue, sent: Path) -> None:
    """Freeze the worker at a moment it has sent a message it has not recorded, then kill it.

    SIGSTOP only picks the moment; the kill is SIGKILL, wherever the worker was (even inside
    a commit), and the test reads the state after it from a fresh connection.
    """
    deadline = time.monotonic() + 60
    try:
        while len(sent_ids(sent)) < TOTAL // 3:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert sum(observer.counts().values()) == TOTAL  # the CLI's view, worker running
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while True:
            worker.send_signal(signal.SIGSTOP)
            if in_flight_and_sent(observer, sent):
                break
            worker.send_signal(signal.SIGCONT)
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.003)
    finally:
        worker.kill()  # SIGKILL
        assert worker.wait(10) == -signal.SIGKILL
        if worker.stderr:
            worker.stderr.close()


def test_a_killed_worker_resends_at_most_its_window(tmp_path: Path) -> None:
    db, sent = tmp_path / "queue.db", tmp_path / "sent"
    with Queue(db) as observer:
        observer.enqueue_many((new(ref(n)) for n in range(TOTAL)), NOW)
        stop_mid_flight(start_worker(db, sent, pause=0.001), observer, sent)

    with Queue(db) as q:  # a fresh start after the crash
        counts = q.counts()
        assert 0 < counts[State.ACCEPTED] < TOTAL
        sending = {m.id for m in map(q.get, range(1, TOTAL + 1)) if m.state is State.SENDING}
        assert 1 <= len(sending) <= WINDOW
        sent_before = set(sent_ids(sent))
        assert q.recover(NOW + 1) == len(sending)

        second = start_worker(db, sent, pause=0)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()

        assert q.counts() == {**dict.fromkeys(State, 0), State.ACCEPTED: TOTAL}
        times_sent = Counter(sent_ids(sent))
        assert set(times_sent) == set(range(1, TOTAL + 1))
        twice = {mid for mid, n in times_sent.items() if n > 1}
        assert max(times_sent.values()) == 2
        assert twice == sending & sent_before
        assert 1 <= len(twice) <= WINDOW
        for mid in sending:
            assert [a.outcome for a in q.attempts(mid)] == [Outcome.INTERRUPTED, Outcome.ACCEPTED]
    print(f"\nkilled worker: {len(sending)} in flight, {len(twice)} sent twice (window {WINDOW})")


def test_two_workers_at_once_never_claim_the_same_message(tmp_path: Path) -> None:
    db, sent = tmp_path / "queue.db", tmp_path / "sent"
    with Queue(db) as q:
        q.enqueue_many((new(ref(n)) for n in range(TOTAL)), NOW)
        workers = [start_worker(db, sent, pause=0.0002) for _ in range(2)]
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err.decode()  # no "database is locked" either
        assert q.counts()[State.ACCEPTED] == TOTAL
    assert sorted(sent_ids(sent)) == list(range(1, TOTAL + 1))


# --- timings (printed, never asserted) -----------------------------------------------------------


@pytest.mark.slow
def test_timings(tmp_path: Path) -> None:
    batch = [new(ref(n)) for n in range(100_000)]
    with Queue(tmp_path / "queue.db") as q:
        start = time.perf_counter()
        assert q.enqueue_many(batch, NOW) == (100_000, 0)
        added = time.perf_counter() - start
        start = time.perf_counter()
        assert q.enqueue_many(batch, NOW) == (0, 100_000)
        skipped = time.perf_counter() - start
        start = time.perf_counter()
        done = 0
        while done < 20_000:
            for m in q.claim(100, NOW):
                q.accepted(m.id, str(m.id), NOW)
                done += 1
        sending = time.perf_counter() - start
    print(
        f"\nenqueue_many 100,000 new: {added:.2f} s; 100,000 existing: {skipped:.2f} s;"
        f" claim(100)+accepted: {done / sending:,.0f} messages/s"
    )
