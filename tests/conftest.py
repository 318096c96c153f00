"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import settings

from tests.cli import run_kopir_process

# CI must be repeatable: the same examples every run (a developer's runs still explore).
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

RunKopir = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def run_kopir() -> RunKopir:
    """The ``run_kopir_process`` helper, as a fixture (usable from fixtures of any scope)."""
    return run_kopir_process
