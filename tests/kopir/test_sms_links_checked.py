"""``kopir sms send --link`` and ``kopir sms campaign --links`` send only links that verify
against the config's trust root (``[signing] trust``): one bad link refuses the whole command,
with one line per bad link saying why, and nothing is queued or written to the outbox."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import signing
from smsgw.compose import LINK_TEMPLATE
from smsgw.outbox import read_outbox
from tests.cli import kopir

ROOT = Path(__file__).resolve().parents[2]
URL = "tg://proxy?server=relay.example.org&port=443&secret=dd" + "ab" * 16
NUMBER = "+77012345678"


@dataclass(frozen=True)
class Site:
    folder: Path
    config: Path
    links: dict[str, str]
    """A good link, and one of each kind of bad link, by name."""

    @property
    def outbox(self) -> Path:
        return self.folder / "data/sms/outbox"

    def sent(self) -> tuple[int, dict[str, int]]:
        """(outbox files, queue messages per state) as they are now."""
        status = kopir("sms", "status", "-c", self.config, "--json")
        assert status.returncode == 0, status.stderr
        return len(read_outbox(self.outbox)), json.loads(status.stdout)["states"]


def link_message_text(link: str) -> str:
    return LINK_TEMPLATE.format(link=link)


def _ok(*args: str | Path) -> str:
    done = kopir(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    folder = tmp_path_factory.mktemp("sms-links")
    shutil.copy(ROOT / "config.example.toml", folder / "config.toml")
    config, data = folder / "config.toml", folder / "data"
    data.mkdir()
    for name in ("ops", "old", "stranger"):
        _ok("keys", "generate", "--name", name, "--out", folder)
    trust = data / "trust.json"  # where [signing] trust of the example config points
    _ok("trust", "init", "--out", trust, "--key", folder / "ops.pub", "--key", folder / "old.pub",
        "--sign", folder / "ops.key")  # fmt: skip
    _ok("trust", "revoke", "--trust", trust, "--key", "old", "--sign", folder / "ops.key")

    def signed(key: str) -> str:
        return _ok("sign", "link", URL, "--key", folder / f"{key}.key").split()[-1]

    good = signed("ops")
    assert "&port=443&" in good
    ops_key = signing.load_secret_key(folder / "ops.key")
    links = {
        "good": good,
        "malformed": "garbage",
        "unsigned": URL,
        "bad signature": good.replace("&port=443&", "&port=444&"),
        "unknown key": signed("stranger"),
        "expired": signing.sign_link(URL, ops_key, time.time() - 7200).url("tme"),
        "revoked key": signed("old"),
    }
    people = folder / "people.csv"
    people.write_text("number,language\n87011111111,kk\n87012222222,ru\n")
    assert "2 added" in _ok("sms", "subscribers", "import", "--csv", people, "-c", config)
    return Site(folder, config, links)


BAD = ["malformed", "unsigned", "bad signature", "unknown key", "expired", "revoked key"]


@pytest.mark.parametrize("kind", BAD)
def test_sms_send_refuses_a_bad_link_and_queues_nothing(site: Site, kind: str) -> None:
    before = site.sent()
    result = kopir("sms", "send", "--to", NUMBER, "--link", site.links[kind], "-c", site.config)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"kopir: --link: {kind}"), result.stderr
    assert result.stderr.endswith("; nothing sent\n") and result.stderr.count("\n") == 1
    assert "7012345678" not in result.stderr + result.stdout
    assert site.sent() == before


@pytest.mark.parametrize("kind", BAD)
def test_sms_campaign_refuses_a_file_with_a_bad_link_and_queues_nothing(
    site: Site, kind: str
) -> None:
    links = site.folder / f"links-{kind.replace(' ', '-')}.txt"
    links.write_text(f"{site.links['good']}\n\n{site.links[kind]}\n")
    before = site.sent()
    result = kopir("sms", "campaign", "--links", links, "--instructions", "-c", site.config)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"kopir: {links} line 3: {kind}"), lines[0]
    trust = site.folder / "data/trust.json"
    assert lines[1] == f"kopir: 1 of 2 links do not verify against {trust}; nothing sent"
    assert "70111" not in result.stderr and "70122" not in result.stderr
    assert site.sent() == before


def test_sms_campaign_names_every_bad_link(site: Site) -> None:
    links = site.folder / "links-all-bad.txt"
    links.write_text("".join(site.links[kind] + "\n" for kind in ["good", *BAD]))
    before = site.sent()
    result = kopir("sms", "campaign", "--links", links, "-c", site.config, "--json")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(BAD) + 1
    for n, (line, kind) in enumerate(zip(lines[:-1], BAD, strict=True), 2):
        assert line.startswith(f"kopir: {links} line {n}: {kind}"), line
    error = json.loads(result.stdout)
    assert [b["where"] for b in error["bad_links"]] == [f"{links} line {n}" for n in range(2, 8)]
    assert site.sent() == before


def test_sms_campaign_with_a_missing_links_file_is_one_line(site: Site) -> None:
    before = site.sent()
    missing = site.folder / "nosuch.txt"
    result = kopir("sms", "campaign", "--links", missing, "-c", site.config)
    assert result.returncode == 2
    assert result.stderr == f"kopir: cannot read links file {missing}: No such file or directory\n"
    assert site.sent() == before


def test_sms_send_without_a_trust_root_refuses_the_link(tmp_path: Path, site: Site) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    result = kopir("sms", "send", "--to", NUMBER, "--link", site.links["good"],
                   "-c", tmp_path / "config.toml")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("kopir: cannot check the links: cannot read trust root ")
    assert str(tmp_path / "data/trust.json") in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "data/sms").exists()  # no queue, no outbox


def test_only_properly_signed_links_go_out(site: Site) -> None:
    files, _ = site.sent()
    send = ("sms", "send", "--to", NUMBER, "-c", site.config, "--link")
    assert kopir(*send, site.links["unsigned"]).returncode == 1
    sent = kopir(*send, site.links["good"])
    assert sent.returncode == 0, sent.stderr
    links = site.folder / "links-good.txt"
    links.write_text(f"{site.links['good']}\n{site.links['expired']}\n")
    campaign = ("sms", "campaign", "--links", links, "--name", "good", "-c", site.config, "--json")
    assert kopir(*campaign).returncode == 1
    links.write_text(site.links["good"] + "\n")
    done = kopir(*campaign)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == 2 * 2  # two subscribers, two parts each
    outbox = read_outbox(site.outbox)  # by queue id: each message's parts in turn
    assert len(outbox) == files + 2 + 2 * 2
    assert "".join(str(r["text"]) for r in outbox[files:]) == 3 * link_message_text(
        site.links["good"]
    )
