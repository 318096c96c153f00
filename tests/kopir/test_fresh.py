"""The operator's path from a fresh clone, as the README gives it (``kopir init``, then
``kopir run``), and a SIGTERM in the middle of a campaign."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import signing
import smsgw
from smsgw.outbox import read_outbox
from tests.cli import kopir
from tests.kopir.test_run import example_config, outbox_texts

ROOT = Path(__file__).resolve().parents[2]


def test_fresh_clone_init_then_run(tmp_path: Path) -> None:
    clone = tmp_path / "kopir"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    made = kopir("init", cwd=clone)  # `python -m kopir.cli` in the clone runs the clone's code
    assert made.returncode == 0, made.stderr
    assert "kopir run -c" in made.stdout
    config = clone / "config.toml"
    # The README's ports, moved to free ones: tests run side by side on one machine.
    example_config(tmp_path, config.read_text()).rename(config)

    run = kopir("run", "-c", config, "--once", cwd=clone)
    assert run.returncode == 0, run.stderr
    assert "probed 1 relays: 1 healthy; list v1 (new); queued 4 SMS parts" in run.stdout
    data = clone / "data"
    document = signing.parse_list((data / "lists/list.json").read_bytes())
    assert [(p["server"], p["domain"]) for p in document.proxies] == [("127.0.0.1", "example.com")]
    trusted = ("--trust", data / "trust.json", "--state", tmp_path / "state")
    listed = kopir("verify", "list", data / "lists/list.json", *trusted, cwd=clone)
    assert listed.returncode == 0, listed.stderr
    assert signing.LogStore(data / "log").size == 1
    texts = outbox_texts(data)
    assert len(texts) == 2
    for text in texts.values():
        assert kopir("verify", "sms", text, "--trust", data / "trust.json").returncode == 0
    probe = kopir("list", "probe", "-c", config, cwd=clone)  # the relay is gone with the run
    assert probe.returncode == 1 and "refused" in probe.stdout


def test_sigterm_mid_campaign_leaves_a_consistent_queue_and_a_restart_finishes(
    tmp_path: Path,
) -> None:
    text = (ROOT / "config.example.toml").read_text().replace("window = 50", "window = 10")
    config = example_config(tmp_path, text)
    people = tmp_path / "people.csv"
    with people.open("w", newline="") as out:
        csv.writer(out).writerows([f"+7701{n:07d}", "kk"] for n in range(1000, 4000))
    imported = kopir(
        "sms", "subscribers", "import", "--csv", people, "--pool", "established", "-c", config
    )
    assert imported.returncode == 0, imported.stderr
    total = 2 * (3000 + 2)  # a two-part link message each, the test_numbers included
    outbox = tmp_path / "data/sms/outbox"

    proc = subprocess.Popen(
        [sys.executable, "-m", "kopir.cli", "run", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not outbox.exists() or len(list(outbox.glob("*.json"))) < 20:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    with smsgw.Queue(tmp_path / "data/sms/queue.db") as queue:
        counts = queue.counts()
    assert counts.get(smsgw.State.SENDING, 0) == 0  # nothing left half-sent
    sent = len(read_outbox(outbox))
    assert 0 < sent < total, "the campaign finished before SIGTERM: make it longer"
    assert counts.get(smsgw.State.QUEUED, 0) == total - sent

    again = kopir("run", "-c", config, "--once")
    assert again.returncode == 0, again.stderr
    parts = read_outbox(outbox)
    assert len(parts) == total  # every part once: nothing lost, nothing sent twice
    assert len({(p["to_ref"], p["text"]) for p in parts}) == total
