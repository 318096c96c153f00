"""Crash safety: SIGKILL the SMS worker mid-campaign, restart it, and count what the SMSC got.

The worker is the real CLI (``kopir sms campaign``, ``[sms] backend = "smpp"``) in a child
process; the SMSC is the scripted one, on loopback in a thread of this process, recording every
submit_sm and sending a delivery receipt right after each submit_sm_resp. It kills the worker
with SIGKILL the moment a chosen submit arrives, before answering it: that worker has a whole
window claimed (``sending``), part of it already accepted by the SMSC but not yet recorded.
Running the same campaign again must finish the job with every message accepted exactly once in
the queue (and, by its receipt, ``delivered``), and at the SMSC every (recipient, part)
submitted once, except the messages of that one window (DESIGN.md §6 smsgw, "Queue").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from smsgw import Queue, State, load_key_file
from smsgw.compose import link_message
from smsgw.queue import Outcome
from tests.cli import STATE_HOME, run_kopir_process
from tests.smsgw.smsc import Script, Sm, Submitted, threaded_smsc

SUBSCRIBERS = 5_000
PARTS = 2  # the link message is two GSM-7 parts: 10,000 messages
KILL_AT = 3_025
"""The submit on whose arrival the worker is killed: after some thousands were accepted."""
WINDOW = 50
"""``[sms] window``: the messages the worker claims at a time, so the most it can have in flight."""
URL = (
    "https://t.me/proxy?server=relay.example.kz&port=443&secret=ee"
    + "0123456789abcdef" * 2
    + "7777772e676f6f676c652e636f6d"
)


def numbers() -> list[str]:
    return [f"+7701{n:07d}" for n in range(1_000_000, 1_000_000 + SUBSCRIBERS)]


def write_config(folder: Path, port: int) -> Path:
    config = folder / "config.toml"
    config.write_text(
        f'[sms]\nbackend = "smpp"\nwindow = {WINDOW}\nretry_delay = "1s"\n'
        f'[sms.smpp]\nhost = "127.0.0.1"\nport = {port}\nsystem_id = "kopir"\n'
        'password = "env:SMPP_PASSWORD"\nwindow = 10\n'
    )
    return config


def campaign_args(folder: Path, config: Path) -> list[str]:
    links = folder / "links.txt"
    return ["sms", "campaign", "--links", str(links), "--name", "crash", "-c", str(config)]


def start_worker(args: list[str], folder: Path, run: int) -> subprocess.Popen[bytes]:
    """The CLI as ``run_kopir_process`` runs it, but not waited for; output goes to files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
    env.update(PYTHONIOENCODING="utf-8", XDG_STATE_HOME=STATE_HOME, SMPP_PASSWORD="secret")
    with (folder / f"out{run}").open("wb") as out, (folder / f"err{run}").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "kopir.cli", *args, "-vv"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip


def part_of(sm: Sm) -> int:
    """The part number from the concatenation UDH (IEI 0x00: ref, total, seq), else 1."""
    if sm.esm_class & 0x40:
        udh = sm.short_message[1 : 1 + sm.short_message[0]]
        assert udh[:2] == b"\x00\x03", udh
        return udh[4]
    return 1


def signed_link(folder: Path) -> str:
    """``URL`` signed by a key the campaign's trust root (``data/trust.json``) names: the
    campaign sends only links that verify."""
    for args in (
        ("keys", "generate", "--name", "ops", "--out", folder),
        (
            "trust",
            "init",
            "--out",
            folder / "data/trust.json",
            "--key",
            folder / "ops.pub",
            "--sign",
            folder / "ops.key",
        ),
        ("sign", "link", URL, "--key", folder / "ops.key"),
    ):
        done = run_kopir_process(*args)
        assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def prepare(folder: Path, config: Path) -> None:
    (folder / "data").mkdir(exist_ok=True)
    link = signed_link(folder)
    assert link_message(link).count == PARTS
    (folder / "links.txt").write_text(link + "\n")
    csv = folder / "people.csv"
    csv.write_text("number,language\n" + "".join(f"{n},kk\n" for n in numbers()))
    imported = run_kopir_process("sms", "subscribers", "import", "--csv", csv, "-c", config)
    assert imported.returncode == 0, imported.stderr
    assert f"{SUBSCRIBERS} added" in imported.stdout


def test_sigkill_mid_campaign_then_restart_sends_each_part_once_but_one_window(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    worker: list[subprocess.Popen[bytes]] = []

    def kill_mid_window(submit: Submitted) -> None:
        if submit.number == KILL_AT:
            worker[0].send_signal(signal.SIGKILL)

    script = Script(password="secret", receipts=True, on_submit=kill_mid_window, drop_on=KILL_AT)
    with threaded_smsc(script) as (smsc, submits):
        config = write_config(tmp_path, smsc.port)
        prepare(tmp_path, config)
        args = campaign_args(tmp_path, config)

        worker.append(start_worker(args, tmp_path, 1))
        assert worker[0].wait(timeout=60) == -signal.SIGKILL, (tmp_path / "err1").read_text()
        at_kill = queue_counts(tmp_path)
        done = at_kill[State.ACCEPTED] + at_kill[State.DELIVERED]
        assert done >= 2_000
        assert 1 <= at_kill[State.SENDING] <= WINDOW  # one window in flight, no more

        script.on_submit, script.drop_on = None, None
        restart = start_worker([*args, "--json"], tmp_path, 2)
        assert restart.wait(timeout=60) == 0, (tmp_path / "err2").read_text()
        report = json.loads((tmp_path / "out2").read_text())
        assert report["accepted"] == SUBSCRIBERS * PARTS - done
        got = submits()

    duplicates = check_smsc(got)
    interrupted = check_queue(tmp_path, at_kill[State.SENDING])
    assert duplicates <= at_kill[State.SENDING] <= WINDOW
    assert set(duplicated_keys(got)) <= interrupted  # only the interrupted window came twice
    print(f"\nSIGKILL at submit {KILL_AT}: {duplicates} duplicate submits (bound {WINDOW})")
    record_property("duplicates", duplicates)
    check_no_number_in_output(tmp_path)


def queue_counts(folder: Path) -> dict[State, int]:
    with Queue(folder / "data/sms/queue.db") as queue:
        return queue.counts()


def check_smsc(got: list[Submitted]) -> int:
    """Every (recipient, part) reached the SMSC; returns how many submits were repeats."""
    per_key = Counter((s.sm.destination_addr, part_of(s.sm)) for s in got)
    expected = {(n.removeprefix("+"), p) for n in numbers() for p in range(1, PARTS + 1)}
    assert set(per_key) == expected
    assert max(per_key.values()) <= 2
    assert any(count == 2 for count in per_key.values())  # the killed window was sent again
    return len(got) - len(expected)


def duplicated_keys(got: list[Submitted]) -> list[tuple[str, int]]:
    per_key = Counter((s.sm.destination_addr, part_of(s.sm)) for s in got)
    return [key for key, count in per_key.items() if count > 1]


def check_queue(folder: Path, in_flight: int) -> set[tuple[str, int]]:
    """Every message once, accepted and delivered; returns (number, part) of the interrupted."""
    key = load_key_file(folder / "data/keys/subscribers.key")
    by_ref = {key.ref(n): n.removeprefix("+") for n in numbers()}
    with Queue(folder / "data/sms/queue.db") as queue:
        counts = queue.counts()
        assert counts[State.DELIVERED] == SUBSCRIBERS * PARTS == sum(counts.values())
        rows = [queue.get(i) for i in range(1, SUBSCRIBERS * PARTS + 1)]  # ids count from 1
        assert {m.campaign for m in rows} == {"crash"}
        assert len({(m.recipient_ref, m.part) for m in rows}) == len(rows)
        again = [m for m in rows if m.attempts > 1]
        assert len(again) == in_flight and all(m.attempts == 2 for m in again)
        for message in again:
            first, second = queue.attempts(message.id)
            assert (first.outcome, second.outcome) == (Outcome.INTERRUPTED, Outcome.ACCEPTED)
    return {(by_ref[m.recipient_ref], m.part) for m in again}


def check_no_number_in_output(folder: Path) -> None:
    output = "".join((folder / name).read_text() for name in ("out1", "err1", "out2", "err2"))
    assert "requeued" in output  # the restart said what it recovered: the scan saw real logs
    digits = re.sub(r"[^0-9]", "", output)  # spaced or dashed spellings too
    leaked = [n for n in numbers() if n[-10:] in digits]
    assert not leaked, f"{len(leaked)} phone numbers appear in the worker's output"
