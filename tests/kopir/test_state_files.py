"""kopir's own state files (``audit.json``, ``publisher.json``) and a damaged ``log.json`` from
the command line: refused with kopir's own error (or, for the publisher, treated as nothing
distributed), never a traceback. The fuzz mutator is the one of tests/signing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given

import smsgw
from kopir.auditrun import AuditState
from kopir.auditsource import AuditError
from kopir.config import load_config
from kopir.publisher import Publisher
from signing import note
from signing.canonical import canonical_json
from signing.logstore import LogStore
from tests.cli import kopir
from tests.signing.test_state_files import DEEP, FUZZ, mutated_json

ORIGIN = "kopir.example/log"


@pytest.fixture(scope="module")
def signed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = LogStore.create(tmp_path_factory.mktemp("log"), ORIGIN)
    store.append([b"entry"])
    return store.checkpoint().decode("utf-8")


# --- audit.json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (DEEP, "nested deeper than 32"),  # was RecursionError
        ('{"logs":{"a":NaN}}', "NaN is not allowed"),
        ('{"logs":{"a":1e400}}', "too large"),
        ('{"logs":{"a":["x"]}}', "the checkpoint of 'a' is not a string"),
        ('{"logs":[]}', "'logs' is not an object"),
        ("{}", "no 'logs'"),
        ('{"logs":{},"x":1}', "unknown field 'x'"),
        ('{"logs":{"a":"no note"}}', "note has no blank line"),
    ],
)
def test_a_damaged_audit_json_is_an_audit_error_naming_it(
    tmp_path: Path, state: str, message: str
) -> None:
    (tmp_path / "audit.json").write_text(state)
    with pytest.raises(AuditError) as info:
        AuditState(tmp_path).checkpoint(ORIGIN)
    assert str(info.value).startswith(f"audit state {tmp_path / 'audit.json'} is damaged (")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_audit_json_as_written_reads_back(tmp_path: Path, signed_checkpoint: str) -> None:
    state = AuditState(tmp_path)
    state.remember("log-a", signed_checkpoint.encode())
    checkpoint = AuditState(tmp_path).checkpoint("log-a")
    assert checkpoint is not None and checkpoint.size == 1


@FUZZ
@given(data=mutated_json({"logs": {"log-a": "NOTE", "log-b": "NOTE"}}))
def test_fuzz_audit_json_refuses_only_with_audit_error(
    tmp_path: Path, signed_checkpoint: str, data: bytes
) -> None:
    note_json = json.dumps(signed_checkpoint).encode()
    (tmp_path / "audit.json").write_bytes(data.replace(b'"NOTE"', note_json))
    state = AuditState(tmp_path)
    try:
        found = [state.checkpoint(log_id) for log_id in ("log-a", "log-b", "")]
    except AuditError as exc:
        assert "\n" not in str(exc)
        return
    assert all(c is None or isinstance(c, note.Checkpoint) for c in found)
    state.remember("log-c", signed_checkpoint.encode())  # what it read can be written back


# --- publisher.json ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Publisher:
    path = tmp_path_factory.mktemp("publisher") / "config.toml"
    path.write_text(
        "[[publisher.relays]]\n"
        'name = "a"\nserver = "relay1.example.org"\nport = 443\n'
        'key = "0123456789abcdef0123456789abcdef"\ndomain = "example.com"\n'
    )
    made = Publisher(
        load_config(path), key=None, log_store=None, number_key=smsgw.NumberKey(bytes(32))
    )
    made.state_path.parent.mkdir(parents=True, exist_ok=True)
    return made


@pytest.mark.parametrize(
    "state",
    [
        '{"version": Infinity, "epoch": 1}',  # was OverflowError
        '{"version": 3, "epoch": NaN}',
        "[" * 5000 + "]" * 5000,  # was RecursionError (DEEP is above the size cap)
        '{"version": "3", "epoch": 1}',  # was read as [3, 1]
        '{"version": 3.7, "epoch": 1}',  # was read as [3, 1]
        '{"version": true, "epoch": 0}',  # was read as [1, 0]
        '{"version": 3}',
        "[3, 1]",
    ],
)
def test_a_damaged_publisher_json_counts_as_nothing_distributed(
    publisher: Publisher, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.state_path.write_text(state)
    with caplog.at_level(logging.WARNING, logger="kopir.publisher"):
        assert publisher._last() is None
    assert f"publisher state {publisher.state_path} is damaged (" in caplog.text


def test_publisher_json_as_written_reads_back(publisher: Publisher) -> None:
    publisher.state_path.write_bytes(json.dumps({"version": 3, "epoch": 2}).encode())
    assert publisher._last() == [3, 2]
    publisher.state_path.unlink()
    assert publisher._last() is None


@FUZZ
@given(data=mutated_json({"version": 3, "epoch": 20000}))
def test_fuzz_publisher_json_never_raises(publisher: Publisher, data: bytes) -> None:
    publisher.state_path.write_bytes(data)
    last = publisher._last()
    if last is not None:
        assert all(isinstance(x, int) and not isinstance(x, bool) for x in last)
        assert len(last) == 2 and last[0] >= 1 and last[1] >= 0


# --- kopir log checkpoint on a damaged log.json --------------------------------------------


@pytest.mark.parametrize(
    "meta",
    [
        '{"key":"log.key","origin":true}',
        '{"key":"log.key","origin":[null]}',
        '{"key":"/","origin":"o"}',
        DEEP,
    ],
)
def test_cli_log_checkpoint_on_a_damaged_log_json_says_one_line(tmp_path: Path, meta: str) -> None:
    LogStore.create(tmp_path / "log", ORIGIN)
    (tmp_path / "log" / "log.json").write_text(meta)
    result = kopir("log", "checkpoint", "--log", tmp_path / "log")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"kopir: {tmp_path / 'log' / 'log.json'} is damaged: ")
    assert result.stdout == ""
    # the log itself is fine once log.json is: nothing else was touched
    (tmp_path / "log" / "log.json").write_bytes(
        canonical_json({"key": "log.key", "origin": ORIGIN})
    )
    assert kopir("log", "checkpoint", "--log", tmp_path / "log").returncode == 0
