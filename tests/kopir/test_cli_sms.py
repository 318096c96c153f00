"""``kopir sms`` with the outbox backend: a signed link reaches the outbox and still verifies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smsgw.outbox import read_outbox
from tests.cli import kopir

ROOT = Path(__file__).resolve().parents[2]
URL = "tg://proxy?server=relay.example.org&port=443&secret=dd" + "ab" * 16


def test_signed_link_by_sms_to_outbox_verifies(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    cfg = tmp_path / "config.toml"
    assert kopir("keys", "generate", "--name", "ops", "--out", tmp_path).returncode == 0
    (tmp_path / "data").mkdir()  # [signing] trust: the links are checked against it
    kopir("trust", "init", "--out", tmp_path / "data/trust.json", "--key", tmp_path / "ops.pub",
          "--sign", tmp_path / "ops.key")  # fmt: skip
    link = kopir("sign", "link", URL, "--key", tmp_path / "ops.key").stdout.split()[-1]

    sent = kopir("sms", "send", "--to", "8 701 234 56 78", "--link", link, "-c", cfg, "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["parts"] == 2
    outbox = read_outbox(tmp_path / "data/sms/outbox")
    text = "".join(str(r["text"]) for r in outbox)
    assert "7012345678" not in json.dumps(outbox)
    check = kopir("verify", "sms", text, "--trust", tmp_path / "data/trust.json")
    assert check.returncode == 0, check.stderr

    csv = tmp_path / "people.csv"
    csv.write_text("number,language\n87011111111,kk\n87012222222,ru\nnot-a-number\n")
    imported = kopir("sms", "subscribers", "import", "--csv", csv, "-c", cfg)
    assert imported.returncode == 0 and "2 added" in imported.stdout
    assert "line 4: not a phone number" in imported.stderr
    (tmp_path / "links.txt").write_text(link + "\n")
    campaign = kopir("sms", "campaign", "--links", tmp_path / "links.txt", "--instructions",
                     "--name", "c1", "-c", cfg, "--json")  # fmt: skip
    assert campaign.returncode == 0, campaign.stderr
    assert json.loads(campaign.stdout)["accepted"] == 2 * 2 + 2 * 2  # link 2 parts, help 2 parts
    status = json.loads(kopir("sms", "status", "-c", cfg, "--json").stdout)
    assert status["campaigns"]["c1"] == {"delivered": 4}
    assert (
        kopir("sms", "subscribers", "remove", "87011111111", "-c", cfg).stdout.strip() == "removed"
    )
    assert kopir("sms", "subscribers", "purge", "-c", cfg).returncode == 2  # needs --yes
    assert "purged 1" in kopir("sms", "subscribers", "purge", "--yes", "-c", cfg).stdout
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"7011111111" not in data and b"7012345678" not in data, path


def test_bad_number_is_one_clear_line_without_the_number(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    result = kopir("sms", "send", "--to", "12345", "--text", "hi", "-c", tmp_path / "config.toml")
    assert result.returncode == 1
    assert "12345" not in result.stderr and result.stderr.count("\n") == 1


def test_sms_send_through_net_smpp_smsc_exits_0_once_accepted(tmp_path: Path) -> None:
    from tests.smsgw.smsc import perl_smsc

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[sms]\nbackend = "smpp"\n[sms.smpp]\nhost = "127.0.0.1"\nport = 9900\n'
        'system_id = "kopir"\npassword = "env:SMPP_PASSWORD"\nwindow = 5\n'
    )
    missing = kopir("sms", "send", "--to", "+77012345678", "--text", "hi", "-c", cfg)
    assert missing.returncode == 2 and "SMPP_PASSWORD" in missing.stderr
    with perl_smsc(tmp_path) as smsc:
        sent = kopir("sms", "send", "--to", "+77012345678", "--text", "Сәлем " * 20, "-c", cfg,
                     "--json", env={"SMPP_PASSWORD": "secret"})  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["parts"] == 2
    assert smsc.received().count("submit_sm") == 2


def test_sms_send_through_http_providers_on_loopback(tmp_path: Path) -> None:
    from tests.smsgw.fakeproviders import (
        GENERIC_TOKEN,
        TWILIO_SID,
        TWILIO_TOKEN,
        providers_in_thread,
    )

    cfg = tmp_path / "config.toml"
    send = ("sms", "send", "--to", "+77012345678", "--text", "Сәлем", "-c", cfg)
    with providers_in_thread() as fake:
        cfg.write_text(
            f'[sms]\nbackend = "twilio"\n[sms.twilio]\naccount_sid = "{TWILIO_SID}"\n'
            f'auth_token = "env:TWILIO_TOKEN"\nsender = "Kopir"\nbase_url = "{fake.url}"\n'
        )
        missing = kopir(*send)
        assert missing.returncode == 2
        assert (
            missing.stderr
            == f"kopir: {cfg}: [sms.twilio] auth_token names $TWILIO_TOKEN, which is not set\n"
        )
        sent = kopir(*send, "--json", env={"TWILIO_TOKEN": TWILIO_TOKEN})
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["states"] == ["accepted"]
        assert fake.requests[-1].form == {"To": "+77012345678", "From": "Kopir", "Body": "Сәлем"}
        wrong = kopir(*send, env={"TWILIO_TOKEN": "wrong"})
        assert wrong.returncode == 1
        # the last line is the reason; log lines above it name the recipient by ref only
        assert wrong.stderr.splitlines()[-1] == "kopir: not sent: failed (twilio: bad credentials)"
        assert "7012345678" not in wrong.stderr
        fake.respond("throttled")
        later = kopir(*send, "--campaign", "c2", env={"TWILIO_TOKEN": TWILIO_TOKEN})
        assert later.returncode == 1
        assert later.stderr.splitlines()[-1] == "kopir: not sent: queued (twilio: throttled)"

        cfg.write_text(
            f'[sms]\nbackend = "http"\n[sms.http]\nurl = "{fake.url}/generic/send?to={{to}}"\n'
            'headers = { Authorization = "env:SMS_AUTH" }\nbody = \'{"text": {text}}\'\n'
            'id_path = "data.messages.0.id"\n'
        )
        generic = kopir(*send, env={"SMS_AUTH": f"Bearer {GENERIC_TOKEN}"})
        assert generic.returncode == 0, generic.stderr
        assert "via http" in generic.stdout
        last = fake.requests[-1]
        assert (last.query, last.json) == ({"to": "+77012345678"}, {"text": "Сәлем"})
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert b"7012345678" not in path.read_bytes(), path
