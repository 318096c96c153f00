"""The verifier tests' shared keys, trust root, rendered page and headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kopir.verifier import render_verifier
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot
from tests.chromium import Browser

SECRET = "ee" + "0123456789abcdef" * 2 + b"example.com".hex()
RELAY = f"https://t.me/proxy?server=relay.example&port=443&secret={SECRET}"
REVOKED = "2024-06-01T00:00:00Z"
THRESHOLDS = {"root": 1, "lists": 1, "links": 1, "log": 1}


@pytest.fixture(scope="module")
def keys() -> dict[str, SecretKey]:
    """alice signs links; bob did until revoked; carol signs lists only; mallory is no one."""
    return {name: SecretKey.generate() for name in ("alice", "bob", "carol", "mallory")}


@pytest.fixture(scope="module")
def root(keys: dict[str, SecretKey]) -> TrustRoot:
    roles = frozenset({"root", "lists", "links"})
    return TrustRoot(
        1,
        "2099-01-01T00:00:00Z",
        (
            TrustKey("alice", keys["alice"].public_key, roles),
            TrustKey("bob", keys["bob"].public_key, frozenset({"links"}), REVOKED),
            TrustKey("carol", keys["carol"].public_key, frozenset({"lists"})),
        ),
        THRESHOLDS,
    )


@pytest.fixture(scope="module")
def page_file(root: TrustRoot, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verifier") / "verify.html"
    path.write_text(render_verifier(root.encode(), "2026-01-05 12:00 UTC"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Any:
    with Browser() as chromium:
        yield chromium
