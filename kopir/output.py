"""How commands talk to people and to machines: one place for ``--json`` and exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


class CommandFailed(Exception):
    """A command could not do its work; the message is one line for stderr."""

    def __init__(self, message: str, code: int = EXIT_INVALID, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.data = data or {}


def emit(as_json: bool, human: str, data: dict[str, Any]) -> None:
    """Print ``human`` text, or ``data`` as one JSON object with ``--json``."""
    if as_json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
    elif human:
        print(human)


def warn(message: str) -> None:
    print(f"kopir: {message}", file=sys.stderr)
