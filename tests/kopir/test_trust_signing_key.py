"""``kopir trust init|add-key|revoke|sign`` only sign with keys that ``kopir verify trust`` would
count: a key the trust root does not trust for its own ``root`` role is refused before anything
is written, so a refused command leaves ``trust.json``, its archive and its signatures exactly as
they were. A valid key short of the threshold still writes, and says how many more are needed.
All through the real command line, with keys made by ``kopir keys generate``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli import kopir

NAMES = ("alice", "bob", "carol", "dave", "log", "mallory")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``NAME.pub`` and ``.key`` for everyone, and the README's trust root (version 2) in
    ``readme/``, made once; each name's key id, and ``dir``, where they are."""
    home = tmp_path_factory.mktemp("keys")
    ids = {"dir": str(home)}
    for name in NAMES:
        made = kopir("keys", "generate", "--name", name, "--out", home, "--json")
        assert made.returncode == 0, made.stderr
        ids[name] = str(json.loads(made.stdout)["key_id"])
    trust = home / "readme" / "trust.json"
    trust.parent.mkdir()
    _ok(
        "trust", "init", "--out", trust,
        *(f"--key={home / n}.pub" for n in ("alice", "bob", "carol")),
        "--log-key", home / "log.pub", "--threshold-lists", "2", "--sign", home / "alice.key",
    )  # fmt: skip
    _ok(
        "trust", "add-key", "--trust", trust, "--key", home / "dave.pub",
        "--roles", "lists,links", "--sign", home / "alice.key",
    )  # fmt: skip
    return ids


def _pub(keys: dict[str, str], name: str) -> Path:
    return Path(keys["dir"]) / f"{name}.pub"


def _sec(keys: dict[str, str], name: str) -> Path:
    return Path(keys["dir"]) / f"{name}.key"


def _ok(*args: str | Path) -> str:
    result = kopir(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _readme_root(keys: dict[str, str], folder: Path) -> Path:
    """A copy of the README's trust root in ``folder``: version 1 has alice, bob and carol with
    every operator role and one root signature to suffice, plus the log key; version 2 adds
    dave for lists and links. Both signed by alice; version 1 kept as ``trust.json.v1``."""
    for name, data in _files(Path(keys["dir"]) / "readme").items():
        (folder / name).write_bytes(data)
    return folder / "trust.json"


def _refused(result: subprocess.CompletedProcess[str], key_id: str) -> str:
    """The one stderr line of a refused command, which names the key."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "refused" in line and key_id in line and "nothing written" in line
    return line


def test_add_key_signed_by_a_lists_only_key_changes_nothing(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    result = kopir(
        "trust", "add-key", "--trust", trust, "--key", _pub(keys, "mallory"),
        "--sign", _sec(keys, "dave"),
    )  # fmt: skip
    line = _refused(result, keys["dave"])
    assert "dave" in line and "links, lists only, not root" in line
    assert _files(tmp_path) == before  # no version 3, no trust.json.v2, no signature
    assert result.stdout == ""
    still = kopir("verify", "trust", trust, "--trust", tmp_path / "trust.json.v1")
    assert still.returncode == 0, still.stderr


def test_add_key_to_out_signed_by_a_lists_only_key_writes_no_out(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "x.json"
    result = kopir(
        "trust", "add-key", "--trust", trust, "--key", _pub(keys, "mallory"),
        "--sign", _sec(keys, "dave"), "--out", out,
    )  # fmt: skip
    _refused(result, keys["dave"])
    assert not out.exists()
    assert _files(tmp_path) == before


def test_one_bad_key_among_good_ones_refuses_the_whole_command(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    result = kopir(
        "trust", "revoke", "--trust", trust, "--key", "bob",
        "--sign", _sec(keys, "alice"), "--sign", _sec(keys, "mallory"),
    )  # fmt: skip
    assert "not listed" in _refused(result, keys["mallory"])
    assert _files(tmp_path) == before


def test_trust_sign_with_an_unknown_key_writes_no_signature(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    result = kopir("trust", "sign", "--trust", trust, "--key", _sec(keys, "mallory"))
    assert "not listed" in _refused(result, keys["mallory"])
    assert not list(tmp_path.glob(f"*{keys['mallory']}*"))
    assert _files(tmp_path) == before


def test_trust_sign_with_a_lists_only_key_writes_no_signature(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    result = kopir("trust", "sign", "--trust", trust, "--key", _sec(keys, "dave"))
    assert "not root" in _refused(result, keys["dave"])
    assert _files(tmp_path) == before


def test_init_signed_by_the_log_key_writes_nothing(keys: dict[str, str], tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    result = kopir(
        "trust", "init", "--out", trust, "--key", _pub(keys, "alice"),
        "--log-key", _pub(keys, "log"), "--sign", _sec(keys, "log"),
    )  # fmt: skip
    assert "log only, not root" in _refused(result, keys["log"])
    assert _files(tmp_path) == {}


def test_a_revoked_root_key_is_refused(keys: dict[str, str], tmp_path: Path) -> None:
    trust = _readme_root(keys, tmp_path)
    _ok(
        "trust", "revoke", "--trust", trust, "--key", "alice", "--at", "2020-01-01T00:00:00Z",
        "--sign", _sec(keys, "bob"),
    )  # fmt: skip
    before = _files(tmp_path)
    result = kopir(
        "trust", "add-key", "--trust", trust, "--key", _pub(keys, "mallory"),
        "--sign", _sec(keys, "alice"),
    )  # fmt: skip
    assert "revoked 2020-01-01T00:00:00Z" in _refused(result, keys["alice"])
    assert _files(tmp_path) == before


def test_valid_keys_short_of_the_threshold_write_and_say_how_many_more(
    keys: dict[str, str], tmp_path: Path
) -> None:
    trust = _readme_root(keys, tmp_path)
    raised = kopir(
        "trust", "add-key", "--trust", trust, "--key", _pub(keys, "mallory"),
        "--threshold-root", "2", "--sign", _sec(keys, "alice"),
    )  # fmt: skip
    assert raised.returncode == 0, raised.stderr
    assert "wrote" in raised.stdout and "version 3" in raised.stdout
    assert "needs 1 more signature(s) from the new version 3: 1 of 2" in raised.stdout
    assert f"run kopir trust sign --trust {trust} --key" in raised.stdout
    assert "bob or carol" in raised.stdout
    short = kopir("verify", "trust", trust, "--trust", tmp_path / "trust.json.v2")
    assert short.returncode == 1 and "1 of 2 required signatures valid" in short.stderr

    signed = kopir("trust", "sign", "--trust", trust, "--key", _sec(keys, "carol"), "--json")
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["missing"] == []
    done = kopir("verify", "trust", trust, "--trust", tmp_path / "trust.json.v2")
    assert done.returncode == 0, done.stderr


def test_the_readme_rotation_end_to_end(keys: dict[str, str], tmp_path: Path) -> None:
    """README "Trust root": init, add dave for lists and links, revoke bob, carol signs too,
    and version 3 verifies against version 2. Dave, who may sign lists, may not sign it."""
    trust = _readme_root(keys, tmp_path)
    before = _files(tmp_path)
    by_dave = kopir(
        "trust", "revoke", "--trust", trust, "--key", "bob", "--sign", _sec(keys, "dave")
    )
    _refused(by_dave, keys["dave"])
    assert _files(tmp_path) == before

    revoked = _ok(
        "trust", "revoke", "--trust", trust, "--key", "bob", "--sign", _sec(keys, "alice")
    )
    assert "needs" not in revoked
    signed = _ok("trust", "sign", "--trust", trust, "--key", _sec(keys, "carol"))
    assert signed.strip() == f"wrote {trust}.{keys['carol']}.minisig"
    assert sorted(p.name for p in tmp_path.glob("trust.json*.minisig")) == sorted(
        [
            f"trust.json.{keys['alice']}.minisig",
            f"trust.json.{keys['carol']}.minisig",
            f"trust.json.v1.{keys['alice']}.minisig",
            f"trust.json.v2.{keys['alice']}.minisig",
        ]
    )
    for new, anchor in (("trust.json.v2", "trust.json.v1"), ("trust.json", "trust.json.v2")):
        ok = kopir("verify", "trust", tmp_path / new, "--trust", tmp_path / anchor)
        assert ok.returncode == 0, ok.stderr
