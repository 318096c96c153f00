"""A kopir data directory for the bot's tests: the example config with three relay secrets,
brought up once by ``kopir run --once`` (relay on loopback, probed, list v1 signed and logged,
the two test subscribers), then copied for each test so tests never share state."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from kopir.bot import Sources
from kopir.config import Config, load_config
from kopir.publisher import Publisher
from kopir.setup import prepare
from kopir.smscmd import number_key
from kopir.web import StatusHistory
from tests.cli import kopir
from tests.kopir.test_run import example_config

ADMIN = 100
CITIZEN = 200
SECRETS = {
    "a": "0123456789abcdef0123456789abcdef",
    "b": "fedcba9876543210fedcba9876543210",
    "c": "00112233445566778899aabbccddeeff",
}
THRESHOLD = 1_000_000
"""User ids up to this are established accounts in these tests; above it, new."""


@pytest.fixture(scope="session")
def bot_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bot-site")
    path = example_config(folder)
    tables = "".join(
        f'\n[[relay.secrets]]\nname = "{name}"\nsecret = "{secret}"\n'
        for name, secret in SECRETS.items()
    )
    path.write_text(path.read_text() + tables)
    done = kopir("run", "-c", path, "--once")
    assert done.returncode == 0, done.stderr
    assert "probed 3 relays: 3 healthy; list v1 (new)" in done.stdout, done.stdout
    return folder


def site_config(template: Path, tmp_path: Path, base_url: str = "", **bot: object) -> Config:
    """A private copy of the template site, with ``[bot]`` set for the test."""
    folder = tmp_path / "site"
    shutil.copytree(template, folder)
    config = load_config(folder / "config.toml")
    settings = {
        "token": "123456:TEST-TOKEN",
        "admins": [ADMIN],
        "new_account_threshold": THRESHOLD,
        "poll_timeout": 1.0,
        "language": "en",
        **({"base_url": base_url} if base_url else {}),
        **bot,
    }
    return dataclasses.replace(config, bot=dataclasses.replace(config.bot, **settings))


def bot_sources(config: Config) -> Sources:
    """What ``kopir bot run`` gives the bot: the online key, a status history, and publisher
    rounds that record into it."""
    setup = prepare(config)
    history = StatusHistory(10)
    publisher = Publisher(
        config, key=setup.key, log_store=setup.log, number_key=number_key(config),
        on_round=lambda report, now: history.record_probe(report.results, now),
    )  # fmt: skip
    return Sources(history, publisher.round, setup.key)
