"""The signing commands end to end, through the real ``kopir`` command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from signing import tlog
from tests.cli import kopir

SECRET = "ee" + "0123456789abcdef" * 2 + b"example.com".hex()
URL = f"tg://proxy?server=relay.example.org&port=443&secret={SECRET}"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three operators' keys and a trust root (lists threshold 2) signed by alice."""
    home = tmp_path_factory.mktemp("ops")
    for name in ("alice", "bob", "carol"):
        assert kopir("keys", "generate", "--name", name, "--out", home / "keys").returncode == 0
    keys = [f"--key={home}/keys/{n}.pub" for n in ("alice", "bob", "carol")]
    result = kopir(
        "trust", "init", "--out", home / "trust.json", *keys, "--threshold-lists", "2",
        "--sign", home / "keys/alice.key",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return home


def signed_link(ops: Path, *extra: str) -> str:
    result = kopir("sign", "link", URL, "--key", ops / "keys/alice.key", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_sign_and_verify_link(ops: Path) -> None:
    link = signed_link(ops, "--expires", "72h")
    assert link.startswith("https://t.me/proxy?server=relay.example.org&port=443&secret=ee")
    ok = kopir("verify", "link", link, "--trust", ops / "trust.json")
    assert ok.returncode == 0 and "valid: signed by alice" in ok.stdout
    bad = kopir(
        "verify", "link", link.replace("port=443", "port=8443"), "--trust", ops / "trust.json"
    )
    assert bad.returncode == 1
    assert "bad-signature" in bad.stderr and "Traceback" not in bad.stderr


def test_tg_scheme_and_json_output(ops: Path) -> None:
    link = signed_link(ops, "--scheme", "tg")
    assert link.startswith("tg://proxy?")
    result = kopir("verify", "link", link, "--trust", ops / "trust.json", "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["valid"] is True
    assert data["links"][0]["key"] == "alice"


def test_usage_errors_exit_2(ops: Path) -> None:
    assert kopir("verify", "link", "x").returncode == 2  # no --trust
    assert kopir("verify", "nonsense", "x", "--trust", ops / "trust.json").returncode == 2
    assert (
        kopir("sign", "link", URL, "--key", ops / "keys/alice.key", "--expires", "soon").returncode
        == 2
    )


def test_verify_sms_finds_every_link_in_cyrillic_text(ops: Path) -> None:
    good = signed_link(ops)
    forged = good.replace("relay.example.org", "evil.example.org")
    text = f"Сәлем! Прокси:{good}, резерв «{forged}».\nҚосылыңыз."
    result = kopir("verify", "sms", text, "--trust", ops / "trust.json", "--json")
    assert result.returncode == 1
    links = json.loads(result.stdout)["links"]
    assert [entry["link"] for entry in links] == [good, forged]
    assert [entry["valid"] for entry in links] == [True, False]
    assert links[1]["reason"] == "bad-signature"
    only_good = kopir("verify", "sms", "-", "--trust", ops / "trust.json", input=f"Прокси: {good}")
    assert only_good.returncode == 0 and "valid" in only_good.stdout
    none = kopir("verify", "sms", "Сәлем, ешқандай сілтеме жоқ", "--trust", ops / "trust.json")
    assert none.returncode == 1 and "no proxy link" in none.stderr


def test_verify_link_reports_unknown_and_revoked_keys(ops: Path, tmp_path: Path) -> None:
    assert kopir("keys", "generate", "--name", "mallory", "--out", tmp_path).returncode == 0
    foreign = kopir("sign", "link", URL, "--key", tmp_path / "mallory.key").stdout.split()[-1]
    result = kopir("verify", "link", foreign, "--trust", ops / "trust.json")
    assert result.returncode == 1 and "unknown-key" in result.stderr
    shutil.copy(ops / "trust.json", tmp_path / "trust.json")
    revoke = kopir(
        "trust", "revoke", "--trust", tmp_path / "trust.json", "--key", "alice",
        "--at", "2020-01-01T00:00:00Z", "--sign", ops / "keys/bob.key",
    )  # fmt: skip
    assert revoke.returncode == 0, revoke.stderr
    assert (tmp_path / "trust.json.v1").exists()  # the old version is kept
    result = kopir("verify", "link", signed_link(ops), "--trust", tmp_path / "trust.json")
    assert result.returncode == 1 and "revoked-key" in result.stderr


def test_list_threshold_rollback_and_tamper_via_cli(ops: Path, tmp_path: Path) -> None:
    from signing.listdoc import ListDocument

    state = tmp_path / "state"

    def publish(version: int) -> Path:
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        path = folder / "list.json"
        doc = ListDocument("ops", version, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", ())
        path.write_bytes(doc.encode())
        return path

    v1, v2 = publish(1), publish(2)
    kopir("sign", "list", v1, "--key", ops / "keys/alice.key")
    check = kopir("verify", "list", v1, "--trust", ops / "trust.json", "--state", state)
    assert check.returncode == 1 and "1 of 2 required signatures valid, 1 short" in check.stderr
    kopir("sign", "list", v1, "--key", ops / "keys/carol.key")
    assert (
        kopir("verify", "list", v1, "--trust", ops / "trust.json", "--state", state).returncode == 0
    )
    for key in ("alice", "bob"):
        kopir("sign", "list", v2, "--key", ops / f"keys/{key}.key")
    assert (
        kopir("verify", "list", v2, "--trust", ops / "trust.json", "--state", state).returncode == 0
    )
    back = kopir("verify", "list", v1, "--trust", ops / "trust.json", "--state", state)
    assert back.returncode == 1 and "rollback" in back.stderr
    v2.write_bytes(v2.read_bytes().replace(b'"version":2', b'"version":3'))
    tampered = kopir("verify", "list", v2, "--trust", ops / "trust.json", "--state", state)
    assert tampered.returncode == 1


def test_trust_rotation_via_cli(ops: Path, tmp_path: Path) -> None:
    shutil.copy(ops / "trust.json", tmp_path / "v1.json")
    for name in ("dave", "erin"):
        kopir("keys", "generate", "--name", name, "--out", tmp_path)
    new = tmp_path / "v2.json"
    add = kopir(
        "trust", "add-key", "--trust", tmp_path / "v1.json", "--out", new,
        "--key", tmp_path / "dave.pub", "--key", tmp_path / "erin.pub", "--roles", "root,lists",
        "--sign", tmp_path / "dave.key",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    only_new = kopir("verify", "trust", new, "--trust", tmp_path / "v1.json")
    assert only_new.returncode == 1 and "previous version 1" in only_new.stderr
    assert kopir("trust", "sign", "--trust", new, "--key", ops / "keys/alice.key").returncode == 0
    accepted = kopir("verify", "trust", new, "--trust", tmp_path / "v1.json")
    assert accepted.returncode == 0, accepted.stderr
    assert "version 2" in accepted.stdout


def _append(log: Path, *files: Path, key: Path | None = None) -> None:
    extra = ["--key", str(key)] if key else []
    result = kopir("log", "append", "--log", log, *files, *extra)
    assert result.returncode == 0, result.stderr


def _entries(tmp_path: Path, count: int, tag: str = "") -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"entry{tag}{i}.json"
        path.write_text(f'{{"version":{i},"tag":"{tag}"}}')
        paths.append(path)
    return paths


def test_log_append_checkpoint_prove_and_verify(tmp_path: Path) -> None:
    log = tmp_path / "log"
    files = _entries(tmp_path, 5)
    _append(log, *files[:3])
    old_note = kopir("log", "checkpoint", "--log", log).stdout
    lines = old_note.split("\n")
    assert lines[:2] == ["kopir.example/log", "3"] and lines[3] == ""
    assert lines[4].startswith("\u2014 kopir.example/log ")
    (tmp_path / "old.note").write_text(old_note)
    _append(log, *files[3:])
    again = kopir("log", "append", "--log", log, files[0])
    assert "already logged" in again.stdout
    (tmp_path / "new.note").write_text(kopir("log", "checkpoint", "--log", log).stdout)
    pub = log / "log.pub"

    proof = kopir("log", "prove", "--log", log, "--entry", files[1], "--out", tmp_path / "inc")
    assert proof.returncode == 0 and proof.stdout.startswith("kopir-inclusion-proof/1")
    inc = kopir(
        "log", "verify", "--pub", pub, "--proof", tmp_path / "inc",
        "--checkpoint", tmp_path / "new.note", "--entry", files[1],
    )  # fmt: skip
    assert inc.returncode == 0, inc.stderr
    wrong = kopir(
        "log", "verify", "--pub", pub, "--proof", tmp_path / "inc",
        "--checkpoint", tmp_path / "new.note", "--entry", files[2],
    )  # fmt: skip
    assert wrong.returncode == 1

    kopir("log", "prove", "--log", log, "--old", "3", "--out", tmp_path / "cons")
    cons = kopir(
        "log", "verify", "--pub", pub, "--proof", tmp_path / "cons",
        "--checkpoint", tmp_path / "new.note", "--old-checkpoint", tmp_path / "old.note",
    )  # fmt: skip
    assert cons.returncode == 0, cons.stderr
    audit = kopir("log", "verify", "--log", log, "--checkpoint", tmp_path / "old.note")
    assert audit.returncode == 0 and "5 entries" in audit.stdout


def test_log_verify_rejects_a_rewritten_earlier_entry(tmp_path: Path) -> None:
    log = tmp_path / "log"
    files = _entries(tmp_path, 4)
    _append(log, *files[:2])
    remembered = tmp_path / "auditor.note"
    remembered.write_text(kopir("log", "checkpoint", "--log", log).stdout)
    # The operator rewrites entry 1 consistently (entry file and leaf hash), hides the old
    # checkpoint, and carries on.
    forged = b'{"version":1,"tag":"forged"}'
    (log / "entries" / "000000000001").write_bytes(forged)
    leaves = bytearray((log / "leaves").read_bytes())
    leaves[32:64] = tlog.leaf_hash(forged)
    (log / "leaves").write_bytes(bytes(leaves))
    for note in (log / "checkpoints").iterdir():
        note.unlink()
    _append(log, *files[2:])
    assert kopir("log", "checkpoint", "--log", log).returncode == 0
    result = kopir("log", "verify", "--log", log, "--checkpoint", remembered, "--json")
    assert result.returncode == 1
    kinds = [f["kind"] for f in json.loads(result.stdout)["findings"]]
    assert kinds == ["inconsistent"]
    assert "rewritten" in result.stderr


def test_log_verify_detects_an_entry_changed_under_its_hash(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _append(log, *_entries(tmp_path, 3))
    (log / "entries" / "000000000000").write_bytes(b"changed")
    result = kopir("log", "verify", "--log", log)
    assert result.returncode == 1 and "rewritten-entry" in result.stderr


def test_log_verify_rejects_split_view(tmp_path: Path) -> None:
    honest, other = tmp_path / "honest", tmp_path / "other"
    _append(honest, *_entries(tmp_path, 2, "a"))
    _append(other, *_entries(tmp_path, 2, "b"), key=honest / "log.key")
    kopir("log", "checkpoint", "--log", honest)
    (tmp_path / "other.note").write_text(kopir("log", "checkpoint", "--log", other).stdout)
    result = kopir("log", "verify", "--log", honest, "--checkpoint", tmp_path / "other.note")
    assert result.returncode == 1
    assert "split-view" in result.stderr and "size 2" in result.stderr


def test_log_checkpoint_refuses_to_sign_a_second_root_for_a_size(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _append(log, *_entries(tmp_path, 2))
    assert kopir("log", "checkpoint", "--log", log).returncode == 0
    (log / "entries" / "000000000001").write_bytes(b"x")
    leaves = bytearray((log / "leaves").read_bytes())
    leaves[32:64] = tlog.leaf_hash(b"x")
    (log / "leaves").write_bytes(bytes(leaves))
    result = kopir("log", "checkpoint", "--log", log)
    assert result.returncode == 1 and "rewritten" in result.stderr


def test_verify_list_remembers_by_default_and_no_state_opts_out(ops: Path, tmp_path: Path) -> None:
    from signing.listdoc import ListDocument

    paths = []
    for version in (1, 2):
        path = tmp_path / f"v{version}" / "list.json"
        path.parent.mkdir()
        doc = ListDocument("ops", version, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", ())
        path.write_bytes(doc.encode())
        for key in ("alice", "bob"):
            kopir("sign", "list", path, "--key", ops / f"keys/{key}.key")
        paths.append(path)
    env = {"KOPIR_STATE_DIR": str(tmp_path / "state")}
    trust = ops / "trust.json"
    assert kopir("verify", "list", paths[1], "--trust", trust, env=env).returncode == 0
    assert (tmp_path / "state" / "lists.json").exists()
    old = kopir("verify", "list", paths[0], "--trust", trust, env=env)
    assert old.returncode == 1 and "rollback" in old.stderr
    assert (
        kopir("verify", "list", paths[0], "--trust", trust, "--no-state", env=env).returncode == 0
    )


def test_verify_sms_takes_a_long_text_that_cannot_be_a_file_name(ops: Path) -> None:
    good = signed_link(ops)
    # Over 255 bytes before the link, as a real SMS in Kazakh easily is: no file has such a
    # name, so it is the text, and neither a traceback nor "File name too long".
    text = "Сәлем! Интернет өшірілді, бірақ Telegram осы прокси арқылы ашылады. " * 4 + good
    assert len(text.split("/")[0].encode()) > 255
    result = kopir("verify", "sms", text, "--trust", ops / "trust.json")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "Traceback" not in result.stderr
