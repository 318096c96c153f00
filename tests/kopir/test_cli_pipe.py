"""``kopir ... | head``: when the reader of stdout goes away, the command ends quietly with
status 141 (128 + SIGPIPE), the way Unix tools do, never with a traceback.

The commands run in real child processes (``python -m kopir.cli``, as ``tests.cli`` runs them)
with stdout a real pipe: either read a little and then closed while the command still has far
more than a pipe buffer (64 KiB) to write, or closed before the command starts, so only the
final flush of Python's buffer meets the closed pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kopir import cli
from tests.cli import STATE_HOME

SECRETS = 100
"""Enough relay secrets that ``relay links --qr`` prints several hundred KiB."""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipe") / "config.toml"
    lines = ["[relay]", 'listen = ["127.0.0.1:8443"]']
    for n in range(SECRETS):
        lines += ["[[relay.secrets]]", f'name = "r{n}"', f'secret = "{n:032x}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start(*args: str | os.PathLike[str], stdout: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
    env.update(PYTHONIOENCODING="utf-8", XDG_STATE_HOME=STATE_HOME)
    return subprocess.Popen(
        [sys.executable, "-m", "kopir.cli", *(os.fspath(a) for a in args)],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
    )


def links(config: Path, *more: str) -> list[str | os.PathLike[str]]:
    return ["relay", "links", "-c", config, "--host", "relay.example.org", *more]


def test_the_whole_output_is_big_enough_to_fill_a_pipe(config: Path) -> None:
    proc = start(*links(config, "--qr"), stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(out) > 4 * 65536 and f"r{SECRETS - 1} (".encode() in out


def test_a_reader_that_stops_early_ends_the_command_quietly(config: Path) -> None:
    """``kopir relay links ... --qr | head -2``: the reader goes while kopir is still writing."""
    with start(*links(config, "--qr"), stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(200)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == cli.EXIT_STDOUT_CLOSED
    assert "Traceback" not in err and "Broken pipe" not in err
    assert err == ""


@pytest.mark.parametrize(
    "args",
    [
        ["relay", "links", "-c", "{config}", "--host", "relay.example.org"],
        ["relay", "secret"],
        ["relay", "links", "-c", "{config}.missing", "--json"],  # the error is on stdout too
    ],
)
def test_a_reader_gone_before_the_final_flush(config: Path, args: list[str]) -> None:
    """Output smaller than Python's buffer is written only when kopir flushes at the end."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = start(*(a.format(config=config) for a in args), stdout=write_end)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert proc.returncode == cli.EXIT_STDOUT_CLOSED


def test_a_broken_pipe_that_is_not_stdouts_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket's EPIPE while stdout is fine is a bug to see, not a reader who left."""

    def peer_gone(argv: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_main", peer_gone)
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        # Set here, not in a fixture: pytest points sys.stdout at its capture for each phase.
        monkeypatch.setattr(sys, "stdout", stream)
        with pytest.raises(BrokenPipeError):
            cli.main([])
        os.close(read_end)
        read_end = -1
        assert cli.main([]) == cli.EXIT_STDOUT_CLOSED
    finally:
        monkeypatch.undo()
        if read_end >= 0:
            os.close(read_end)
        stream.close()
