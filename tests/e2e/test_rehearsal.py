"""The shutdown rehearsal (issue 8): the whole path, tested the way the shutdown happened.

Four hosts, each a network namespace this test makes (`tests.e2e.lab`), on one bridge in
10.77.0.0/24 with no way out:

- ``telegram`` (10.77.0.4) runs the tests' fake DC on port 443 (`tests.e2e.dcserver`);
- ``relay`` (10.77.0.3) runs ``kopir relay serve`` on 8443, 9443 and 10443, its ``[relay.dc]``
  pointing every DC at ``telegram``;
- ``publisher`` (10.77.0.5) runs ``kopir run --once`` with the outbox backend: it probes the
  relay, publishes a signed list, and "sends" its test subscriber a signed link;
- ``citizen`` (10.77.0.2) has an nftables firewall that lets out TCP to the relay's port 9443
  and nothing else, as on 5 January 2022 with "one port open". Its client
  (`tests.e2e.citizen`) runs inside the namespace, so the firewall applies to it.

The steps are the tests below, in order; each stands on the fixture's state alone (counters
are compared before and after, never against totals). The fixture tears everything down, even
when a step fails. Without root or ``ip netns`` a developer's run skips; CI fails instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import signing
from kopir.signcmd import find_links
from smsgw.outbox import read_outbox
from tests.cli import kopir
from tests.e2e.lab import Lab, Output, require_lab

OPEN_PORT = 9443
"""The one port the citizen's network lets through, and the relay's main port in the list."""
RELAY_PORTS = (8443, OPEN_PORT, 10443)
DC_PORT = 443
DOMAIN = "example.com"
SUBSCRIBER = "+77010000001"
RELAY = Lab.address("relay")

CITIZEN_FIREWALL = """
table inet citizen {
    counter sent {
    }
    counter allowed {
    }
    counter dropped {
    }
    chain output {
        type filter hook output priority 0; policy drop;
        counter name "sent"
        ct state established,related accept
        ip daddr %(relay)s tcp dport %(port)d counter name "allowed" accept
        counter name "dropped" drop
    }
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
    }
}
"""

METRICS = (
    "import urllib.request as u; "
    "print(u.urlopen('http://127.0.0.1:9464/', timeout=5).read().decode())"
)
"""Read the relay's metrics from inside its namespace (they listen on its loopback)."""


def relay_config(secret: str) -> str:
    listen = ", ".join(f'"{RELAY}:{port}"' for port in RELAY_PORTS)
    dcs = "\n".join(f'"{n}" = "{Lab.address("telegram")}:{DC_PORT}"' for n in range(1, 6))
    return f"""
[relay]
listen = [{listen}]
modes = ["ee", "dd"]
tls_domain = "{DOMAIN}"
mask_host = "127.0.0.1"
mask_port = 8080
metrics_listen = "127.0.0.1:9464"
local_test_dc = false

[[relay.secrets]]
name = "rehearsal"
secret = "{secret}"

[relay.dc]
{dcs}
"""


def publisher_config(secret: str) -> str:
    alt = ", ".join(str(p) for p in RELAY_PORTS if p != OPEN_PORT)
    return f"""
[data]
dir = "data"

[relay]
# kopir run always runs a relay of its own; here it stays on the publisher's loopback, unused.
listen = ["127.0.0.1:8443"]
mask_host = "127.0.0.1"
mask_port = 8080
metrics_listen = ""
local_test_dc = false

[publisher]
name = "rehearsal.kopir"
local_relay = ""
probe_timeout = "5s"

[[publisher.relays]]
name = "abroad-1"
server = "{RELAY}"
port = {OPEN_PORT}
key = "{secret}"
mode = "ee"
domain = "{DOMAIN}"
alt_ports = [{alt}]

[sms]
backend = "outbox"

[web]
listen = "127.0.0.1:8080"
token = ""

[subscribers]
test_numbers = ["{SUBSCRIBER}"]
"""


@dataclass(repr=False)
class Rehearsal:
    lab: Lab
    work: Path
    dc: Output
    relay: Output
    published: Any
    """The finished ``kopir run --once`` (subprocess.CompletedProcess)."""
    dc_after_publish: int
    relayed_after_publish: float

    @property
    def data(self) -> Path:
        return self.work / "publisher/data"

    @property
    def trust(self) -> Path:
        return self.data / "trust.json"

    def dc_connections(self) -> int:
        return self.dc.text().count("DC connection")

    def relay_metrics(self) -> dict[str, float]:
        """Each relay metric summed over its labels, read inside the relay's namespace."""
        done = self.lab.run("relay", "-c", METRICS)
        assert done.returncode == 0, done.stderr
        totals: dict[str, float] = {}
        for line in done.stdout.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                name = series.split("{")[0]
                totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def relay_contacts(self) -> float:
        """Client connections the relay has dealt with in any way."""
        metrics = self.relay_metrics()
        names = ("relay_connections_total", "relay_handshake_failures_total",
                 "relay_masked_total", "relay_refused_total")  # fmt: skip
        return sum(metrics.get(name, 0.0) for name in names)

    def counter(self, name: str) -> int:
        return self.lab.nft_counter("citizen", "citizen", name)

    def citizen(self, *args: str) -> dict[str, Any]:
        """Run the citizen's client in its namespace and return what it printed."""
        done = self.lab.run("citizen", "-m", "tests.e2e.citizen", *args, "--trust", self.trust)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def sms(self) -> str:
        texts: dict[str, str] = {}
        for part in read_outbox(self.data / "sms/outbox"):
            texts[str(part["to_ref"])] = texts.get(str(part["to_ref"]), "") + str(part["text"])
        assert len(texts) == 1, texts  # the one subscriber
        return next(iter(texts.values()))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    require_lab()
    work = tmp_path_factory.mktemp("rehearsal")
    secret = os.urandom(16).hex()
    with Lab(work) as lab:  # closes (processes, namespaces) however the block ends
        lab.build()
        lab.firewall("citizen", CITIZEN_FIREWALL % {"relay": RELAY, "port": OPEN_PORT})
        telegram = Lab.address("telegram")
        dc = lab.start("telegram", "dc", [sys.executable, "-m", "tests.e2e.dcserver",
                                          telegram, str(DC_PORT)])  # fmt: skip
        dc.wait_for("fake DC listening")
        (work / "relay.toml").write_text(relay_config(secret))
        relay = lab.start("relay", "relay", [sys.executable, "-m", "kopir.cli", "relay", "serve",
                                             "-c", str(work / "relay.toml")])  # fmt: skip
        relay.wait_for("relay listening on", count=len(RELAY_PORTS))
        (work / "publisher").mkdir()
        config = work / "publisher/config.toml"
        config.write_text(publisher_config(secret))
        config.chmod(0o600)
        published = lab.run("publisher", "-m", "kopir.cli", "run", "-c", config, "--once")
        state = Rehearsal(lab, work, dc, relay, published, 0, 0.0)
        state.dc_after_publish = state.dc_connections()
        state.relayed_after_publish = state.relay_metrics().get("relay_connections_total", 0.0)
        yield state


def test_1_the_publisher_probes_the_relay_and_publishes_a_signed_list(
    rehearsal: Rehearsal,
) -> None:
    published = rehearsal.published
    assert published.returncode == 0, published.stdout + published.stderr
    assert "probed 1 relays: 1 healthy; list v1 (new)" in published.stdout
    # Each of the relay's three ports was probed through to the DC in the telegram namespace.
    assert rehearsal.dc_after_publish == len(RELAY_PORTS)
    assert rehearsal.relayed_after_publish == len(RELAY_PORTS)

    data = rehearsal.data
    verdict = rehearsal.lab.run("publisher", "-m", "kopir.cli", "verify", "list",
                                data / "lists/list.json", "--trust", rehearsal.trust)  # fmt: skip
    assert verdict.returncode == 0, verdict.stderr
    document = signing.parse_list((data / "lists/list.json").read_bytes())
    [entry] = document.proxies
    assert (entry["server"], entry["port"]) == (RELAY, OPEN_PORT)
    assert entry["ports_tried"] == [OPEN_PORT, *(p for p in RELAY_PORTS if p != OPEN_PORT)]
    assert (data / "public/checkpoint").is_file()


def test_2_the_publisher_sends_the_subscriber_a_signed_link(rehearsal: Rehearsal) -> None:
    text = rehearsal.sms()
    [link] = find_links(text)
    parsed = signing.parse_link(link)
    assert (parsed.server, parsed.port) == (RELAY, OPEN_PORT)
    assert parsed.sig is not None and parsed.kid is not None
    assert SUBSCRIBER[1:] not in json.dumps(read_outbox(rehearsal.data / "sms/outbox"))


def test_3_the_citizen_verifies_the_link_and_reaches_the_dc_through_the_open_port(
    rehearsal: Rehearsal,
) -> None:
    lab, text = rehearsal.lab, rehearsal.sms()
    verdict = lab.run("citizen", "-m", "kopir.cli", "verify", "sms", text,
                      "--trust", rehearsal.trust)  # fmt: skip
    assert verdict.returncode == 0, verdict.stderr
    assert "valid: signed by" in verdict.stdout

    allowed, dc, relayed = (
        rehearsal.counter("allowed"),
        rehearsal.dc_connections(),
        (rehearsal.relay_metrics().get("relay_connections_total", 0.0)),
    )
    outcome = rehearsal.citizen("tap", "--outbox", str(rehearsal.data / "sms/outbox"))
    assert outcome["verified"] and outcome["connected"], outcome
    [port] = outcome["probe"]["ports"]
    assert port["port"] == OPEN_PORT
    assert [(s["stage"], s["ok"]) for s in port["stages"]] == [
        ("connect", True), ("tls-hmac", True), ("dc", True),
    ], port["stages"]  # fmt: skip
    # It went through the firewall's one open port, the relay, and on to Telegram.
    assert rehearsal.counter("allowed") > allowed
    assert rehearsal.dc_connections() == dc + 1
    assert rehearsal.relay_metrics()["relay_connections_total"] == relayed + 1


def test_4_every_other_port_is_dropped_even_the_relays_other_ports(rehearsal: Rehearsal) -> None:
    lab = rehearsal.lab
    # The relay's other ports do work: the publisher, outside the citizen's network, gets
    # through on all three. So what stops the citizen below is its firewall alone.
    probe = lab.run("publisher", "-m", "kopir.cli", "list", "probe", "--json",
                    "-c", rehearsal.work / "publisher/config.toml")  # fmt: skip
    assert probe.returncode == 0, probe.stdout + probe.stderr
    [relay] = json.loads(probe.stdout)["relays"]
    assert {(p["port"], p["ok"]) for p in relay["ports"]} == {(p, True) for p in RELAY_PORTS}

    others = [f"{RELAY}:{p}" for p in RELAY_PORTS if p != OPEN_PORT]
    others += [f"{RELAY}:443", f"{RELAY}:80", f"{Lab.address('telegram')}:{DC_PORT}",
               f"{Lab.address('publisher')}:8080"]  # fmt: skip
    dropped, allowed, dc = (
        rehearsal.counter("dropped"),
        rehearsal.counter("allowed"),
        (rehearsal.dc_connections()),
    )
    outcome = rehearsal.citizen(
        "dial", "--outbox", str(rehearsal.data / "sms/outbox"), "--timeout", "2", "--to", *others
    )
    assert outcome["verified"], outcome
    for target in others:
        # Dropped, not refused: the connection attempt just times out.
        assert outcome["tries"][target] == [
            {"stage": "connect", "ok": False, "detail": "timeout"}
        ], target
    assert rehearsal.counter("dropped") >= dropped + len(others)
    assert rehearsal.counter("allowed") == allowed
    assert rehearsal.dc_connections() == dc


def test_5_a_lookalike_link_from_an_untrusted_key_is_refused_before_connecting(
    rehearsal: Rehearsal,
) -> None:
    lab, work = rehearsal.lab, rehearsal.work
    made = kopir("keys", "generate", "--name", "impostor", "--out", work / "impostor")
    assert made.returncode == 0, made.stderr
    # The impostor's own relay secret, on the address and the open port of the real relay, so
    # that a client which connected anyway would show up in every counter below.
    fake_secret = "ee" + os.urandom(16).hex() + DOMAIN.encode().hex()
    url = f"https://t.me/proxy?server={RELAY}&port={OPEN_PORT}&secret={fake_secret}"
    signed = kopir("sign", "link", url, "--key", work / "impostor/impostor.key")
    assert signed.returncode == 0, signed.stderr
    genuine = rehearsal.sms()
    [real_link] = find_links(genuine)
    lookalike = genuine.replace(real_link, signed.stdout.strip())
    assert lookalike != genuine
    (work / "lookalike.txt").write_text(lookalike, encoding="utf-8")

    sent, contacts, dc = (
        rehearsal.counter("sent"),
        rehearsal.relay_contacts(),
        (rehearsal.dc_connections()),
    )
    verdict = lab.run("citizen", "-m", "kopir.cli", "verify", "sms", lookalike,
                      "--trust", rehearsal.trust)  # fmt: skip
    assert verdict.returncode == 1 and "unknown-key" in verdict.stderr, verdict.stderr
    outcome = rehearsal.citizen("tap", "--sms", str(work / "lookalike.txt"))
    assert outcome == {
        "link": signed.stdout.strip(), "verified": False, "reason": "unknown-key",
        "connected": False,
    }  # fmt: skip
    # Not one packet left the citizen's phone; the relay and the DC saw nothing.
    assert rehearsal.counter("sent") == sent
    assert rehearsal.relay_contacts() == contacts
    assert rehearsal.dc_connections() == dc
