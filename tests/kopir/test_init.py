"""``kopir init``: a config from the packaged example and a data dir with every key, made once
and then only ever kept."""

from __future__ import annotations

import json
import re
import shutil
import stat
from importlib import resources
from pathlib import Path

import pytest

import signing
from kopir.config import load_config
from kopir.setup import prepare
from signing.minisign import parse_secret_key
from tests.cli import kopir

ROOT = Path(__file__).resolve().parents[2]

# Every file init makes, relative to the data dir, with the mode it must have.
FILES = {
    "keys/publisher.key": 0o600,
    "keys/publisher.pub": 0o644,
    "log/log.key": 0o600,
    "log/log.pub": 0o644,
    "keys/distribution.key": 0o600,
    "keys/subscribers.key": 0o600,
    "trust.json": 0o644,
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_packaged_example_is_the_repo_example() -> None:
    packaged = resources.files("kopir").joinpath("config.example.toml")
    assert packaged.read_text(encoding="utf-8") == (ROOT / "config.example.toml").read_text()
    link = ROOT / "kopir/config.example.toml"
    assert link.is_symlink() and link.resolve() == (ROOT / "config.example.toml").resolve()


def test_init_makes_every_file_with_its_mode(tmp_path: Path) -> None:
    result = kopir("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert mode(data) == 0o700 and mode(tmp_path / "config.toml") == 0o600
    for name, wanted in FILES.items():
        assert mode(data / name) == wanted, name
    assert mode(data / "keys") == 0o700
    assert re.fullmatch(r"[0-9a-f]{64}\n", (data / "keys/distribution.key").read_text())
    assert len((data / "keys/subscribers.key").read_bytes()) == 32
    secret = parse_secret_key((data / "keys/publisher.key").read_text())
    assert not secret.encrypted
    key_id = signing.load_public_key(data / "keys/publisher.pub").hex_id
    assert f"key id: {key_id}" in result.stdout
    assert result.stdout.rstrip().endswith("next:   kopir run -c config.toml")
    assert result.stdout.count("  made  ") == len(FILES) + 4  # config, data dir, log, relay secret


def test_the_config_loads_and_names_the_data_dir_and_a_relay_secret(tmp_path: Path) -> None:
    assert kopir("init", cwd=tmp_path).returncode == 0
    config = load_config(tmp_path / "config.toml")
    assert config.data_dir == tmp_path / "data"
    assert [s.name for s in config.relay.secrets] == ["default"]
    assert re.fullmatch(r"[0-9a-f]{32}", config.relay.secrets[0].secret)
    links = kopir("relay", "links", "-c", tmp_path / "config.toml", "--json")
    assert links.returncode == 0, links.stderr
    assert config.relay.secrets[0].secret in links.stdout
    other = tmp_path / "other"
    other.mkdir()
    assert kopir("init", cwd=other).returncode == 0
    assert load_config(other / "config.toml").relay.secrets[0].secret != (
        config.relay.secrets[0].secret
    )


def test_the_trust_root_names_the_new_key_for_lists_links_and_root(tmp_path: Path) -> None:
    assert kopir("init", cwd=tmp_path).returncode == 0
    data = tmp_path / "data"
    root = signing.parse_trust_root((data / "trust.json").read_bytes())
    publisher = signing.load_public_key(data / "keys/publisher.pub")
    log = signing.load_public_key(data / "log/log.pub")
    roles = {k.public_key.key_id: k.roles for k in root.keys}
    assert roles == {publisher.key_id: {"root", "lists", "links"}, log.key_id: {"log"}}
    signature = data / f"trust.json.{publisher.hex_id}.minisig"
    assert signature.exists()
    verdict = kopir("verify", "trust", data / "trust.json", "--trust", data / "trust.json")
    assert verdict.returncode == 0, verdict.stderr


def test_a_second_init_keeps_every_key_byte_for_byte_and_says_so(tmp_path: Path) -> None:
    assert kopir("init", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path)
    again = kopir("init", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert snapshot(tmp_path) == before
    assert "  made  " not in again.stdout
    assert again.stdout.count("  kept  ") == len(FILES) + 3  # config, data dir, log
    assert "no relay secret was added" in again.stdout


def test_json_output(tmp_path: Path) -> None:
    result = kopir("init", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    items = {item["what"]: item for item in out["items"]}
    assert set(items) == {
        "config",
        "data_dir",
        "signing_key",
        "signing_public_key",
        "log",
        "log_key",
        "log_public_key",
        "trust_root",
        "distribution_secret",
        "subscriber_key",
    }
    assert all(item["made"] for item in items.values())
    assert items["signing_key"]["mode"] == "0600" and items["data_dir"]["mode"] == "0700"
    assert items["signing_key"]["note"] == "not encrypted"
    assert out["key_id"] == signing.load_public_key(tmp_path / "data/keys/publisher.pub").hex_id
    assert out["relay_secret"] is True and out["next"] == "kopir run -c config.toml"
    again = json.loads(kopir("init", "--json", cwd=tmp_path).stdout)
    assert not any(item["made"] for item in again["items"]) and again["key_id"] == out["key_id"]


def test_init_from_another_working_directory(tmp_path: Path) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = kopir("init", "--config", site / "config.toml", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (site / "data/keys/publisher.key").exists() and not (elsewhere / "data").exists()
    assert 'dir = "data"' in (site / "config.toml").read_text()  # moves with its config
    assert load_config(site / "config.toml").data_dir == site / "data"
    outside = kopir("init", "-c", "b/config.toml", "--data", "keep/here", cwd=elsewhere)
    assert outside.returncode == 0, outside.stderr
    config = load_config(elsewhere / "b/config.toml")
    assert config.data_dir == elsewhere / "keep/here"
    assert (elsewhere / "keep/here/trust.json").exists()
    assert "next:   kopir run -c b/config.toml" in outside.stdout


def test_an_existing_config_is_kept_unless_forced_and_then_backed_up(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[data]\ndir = "mine"\n')
    kept = kopir("init", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert config.read_text() == '[data]\ndir = "mine"\n'
    assert (tmp_path / "mine/keys/publisher.key").exists()
    keys = snapshot(tmp_path / "mine")
    conflict = kopir("init", "--data", "elsewhere", cwd=tmp_path)
    assert conflict.returncode == 1 and conflict.stderr.count("\n") == 1
    assert "already exists" in conflict.stderr and "--force-config" in conflict.stderr
    forced = kopir("init", "--force-config", "--data", "mine", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    backups = list(tmp_path.glob("config.toml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == '[data]\ndir = "mine"\n'
    assert load_config(config).relay.secrets and snapshot(tmp_path / "mine") == keys


def test_a_broken_existing_config_is_one_line_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[data\n")
    result = kopir("init", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not valid TOML" in result.stderr
    assert (tmp_path / "config.toml").read_text() == "[data\n" and not (tmp_path / "data").exists()


def test_a_lone_public_key_is_not_silently_paired_with_a_new_secret(tmp_path: Path) -> None:
    assert kopir("init", cwd=tmp_path).returncode == 0
    (tmp_path / "data/keys/publisher.key").unlink()
    result = kopir("init", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "publisher.pub exists but its secret key" in result.stderr
    assert not (tmp_path / "data/keys/publisher.key").exists()


def test_prepare_readies_a_fresh_data_dir_for_kopir_run(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    config = load_config(tmp_path / "config.toml")
    ready = prepare(config)
    made = {item.what for item in ready.report.items if item.made}
    assert {"data_dir", "signing_key", "log", "log_key", "trust_root"} <= made
    assert ready.key.hex_id == ready.report.key_id and ready.log.size == 0
    assert ready.public_dir == tmp_path / "data/public" and ready.public_dir.is_dir()
    assert ready.trust_path == tmp_path / "data/trust.json"
    before = snapshot(tmp_path / "data")
    again = prepare(config)
    assert not any(item.made for item in again.report.items)
    assert again.key.key_id == ready.key.key_id and snapshot(tmp_path / "data") == before


@pytest.mark.slow
def test_with_a_passphrase_the_new_signing_key_is_encrypted(tmp_path: Path) -> None:
    result = kopir("init", "--json", cwd=tmp_path, env={"KOPIR_KEY_PASSPHRASE": "correct horse"})
    assert result.returncode == 0, result.stderr
    items = {item["what"]: item for item in json.loads(result.stdout)["items"]}
    assert items["signing_key"]["note"] == "encrypted"
    key_path = tmp_path / "data/keys/publisher.key"
    assert parse_secret_key(key_path.read_text()).encrypted
    key = signing.load_secret_key(key_path, lambda: b"correct horse")
    root = signing.parse_trust_root((tmp_path / "data/trust.json").read_bytes())
    assert key.key_id in root.by_key_id
    again = kopir("init", cwd=tmp_path)  # no passphrase needed to keep it
    assert again.returncode == 0, again.stderr
    assert f"key id: {key.hex_id}" in again.stdout


def test_force_config_keeps_the_relay_secret_so_handed_out_links_still_work(
    tmp_path: Path,
) -> None:
    assert kopir("init", cwd=tmp_path).returncode == 0
    config = tmp_path / "config.toml"
    (before,) = load_config(config).relay.secrets
    forced = kopir("init", "--force-config", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "kept  relay secret" in forced.stdout, forced.stdout
    (after,) = load_config(config).relay.secrets
    assert after.secret == before.secret


def test_force_config_keeps_the_secret_kopir_run_kept_in_the_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[data]\ndir = "data"\n')
    (tmp_path / "data/keys").mkdir(parents=True)
    kept = tmp_path / "data/keys/relay.secret"
    kept.write_text("00112233445566778899aabbccddeeff")
    kept.chmod(0o600)
    forced = kopir("init", "--force-config", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    (secret,) = load_config(config).relay.secrets
    assert secret.secret == "00112233445566778899aabbccddeeff"
