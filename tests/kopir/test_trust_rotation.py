"""Rotating the trust root in place keeps every old version, signatures included, so the chain
``trust.json.v1 -> trust.json.v2 -> trust.json`` can be verified one step at a time, through
the real ``kopir`` command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import signing
from kopir.signcmd import signatures_for
from tests.cli import kopir


def _key(home: Path, name: str) -> str:
    """Make a key pair ``home/NAME.pub`` and ``.key``; its key id as minisign prints it."""
    result = kopir("keys", "generate", "--name", name, "--out", home, "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["key_id"])


def _ok(*args: str | Path) -> None:
    result = kopir(*args)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, bytes]]:
    """A trust root rotated twice in place (add bob, then revoke him), each version signed
    by alice; the directory, alice's key id, and v1's and v2's signature bytes as first written."""
    home = tmp_path_factory.mktemp("rotation")
    alice, _ = _key(home, "alice"), _key(home, "bob")
    trust = home / "trust.json"
    own = home / f"trust.json.{alice}.minisig"
    sign = ("--sign", home / "alice.key")
    _ok("trust", "init", "--out", trust, "--key", home / "alice.pub", *sign)
    written = {"v1": own.read_bytes()}
    _ok("trust", "add-key", "--trust", trust, "--key", home / "bob.pub", *sign)
    written["v2"] = own.read_bytes()
    _ok("trust", "revoke", "--trust", trust, "--key", "bob", *sign)
    return home, alice, written


def test_every_archived_version_keeps_its_signatures(
    rotated: tuple[Path, str, dict[str, bytes]],
) -> None:
    home, alice, written = rotated
    for version in ("v1", "v2"):
        assert (home / f"trust.json.{version}.{alice}.minisig").read_bytes() == written[version]
    assert sorted(p.name for p in home.glob("*.minisig")) == [
        f"trust.json.{alice}.minisig",
        f"trust.json.v1.{alice}.minisig",
        f"trust.json.v2.{alice}.minisig",
    ]


def test_the_chain_verifies_one_step_at_a_time(
    rotated: tuple[Path, str, dict[str, bytes]],
) -> None:
    home, _, _ = rotated
    first = kopir("verify", "trust", home / "trust.json.v2", "--trust", home / "trust.json.v1")
    assert first.returncode == 0, first.stderr
    assert "version 2" in first.stdout
    second = kopir("verify", "trust", home / "trust.json", "--trust", home / "trust.json.v2")
    assert second.returncode == 0, second.stderr
    assert "version 3" in second.stdout


def test_a_tampered_archived_version_fails(
    rotated: tuple[Path, str, dict[str, bytes]], tmp_path: Path
) -> None:
    home, _, _ = rotated
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    v2 = copy / "trust.json.v2"
    root = signing.parse_trust_root(v2.read_bytes())
    v2.write_bytes(v2.read_bytes().replace(root.expires.encode(), b"2099-01-01T00:00:00Z"))
    assert signing.parse_trust_root(v2.read_bytes()).expires == "2099-01-01T00:00:00Z"
    result = kopir("verify", "trust", v2, "--trust", copy / "trust.json.v1")
    assert result.returncode == 1
    assert "INVALID" in result.stderr and "Traceback" not in result.stderr


def test_a_document_reads_only_its_own_signatures(
    rotated: tuple[Path, str, dict[str, bytes]],
) -> None:
    home, alice, written = rotated
    trust = home / "trust.json"
    assert signing.signature_files(trust) == {alice: home / f"trust.json.{alice}.minisig"}
    assert signing.signature_files(home / "trust.json.v1") == {
        alice: home / f"trust.json.v1.{alice}.minisig"
    }
    (current,) = signatures_for(trust)
    assert current.text().encode() == (home / f"trust.json.{alice}.minisig").read_bytes()
    assert current.text().encode() not in written.values()
