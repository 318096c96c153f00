"""One finding of ``kopir doctor``: what was checked, how it went, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    """What was checked, e.g. ``config``, ``port 127.0.0.1:8443``, ``dc 2``, ``clock``."""
    status: Status
    detail: str
    """What was found, in one line."""
    fix: str = ""
    """What to do, in one line; empty when the check is ok."""


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)
