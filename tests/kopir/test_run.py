"""``kopir run`` with the example config on an empty directory, as the README says."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from signing import note
from signing.keyfiles import load_public_key
from tests.cli import kopir

ROOT = Path(__file__).resolve().parents[2]


def test_run_once_sets_up_data_and_publishes_a_signed_checkpoint(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    result = kopir("run", "-c", tmp_path / "config.toml", "--once")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert (data / "keys/publisher.key").stat().st_mode & 0o777 == 0o600
    assert (data / "log/log.key").stat().st_mode & 0o777 == 0o600
    checkpoint = (data / "public/checkpoint").read_bytes()
    public = load_public_key(data / "log/log.pub")
    parsed = note.parse_checkpoint(
        note.verify_note(checkpoint, "kopir.example/log", public.key).text
    )
    assert parsed.size == 0
    trust = kopir("verify", "trust", data / "trust.json", "--trust", data / "trust.json")
    assert trust.returncode == 0, trust.stderr
    again = kopir("run", "-c", tmp_path / "config.toml", "--once")
    assert again.returncode == 0 and "created" not in again.stdout  # nothing re-made


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopir.cli", "run", "-c", str(tmp_path / "config.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "data/public/checkpoint").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "kopir run: stopped" in out
