"""Fixtures shared by every test package."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.cli import run_kopir_process

RunKopir = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def run_kopir() -> RunKopir:
    """The ``run_kopir_process`` helper, as a fixture (usable from fixtures of any scope)."""
    return run_kopir_process
