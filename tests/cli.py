"""Run the real ``kopir`` command line in a child process, the way a person or a script would,
so exit codes, stdout and stderr are the real ones."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


def run_kopir_process(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kopir.cli ARGS...`` and return the finished process (never raises on exit).

    ``env`` is added to a copy of this process's environment from which every ``KOPIR_*``
    variable was removed, so a developer's own ``KOPIR_KEY_PASSPHRASE`` never leaks into a
    test. The child's stdio is UTF-8 whatever the locale. Without ``input`` the child's stdin
    is ``/dev/null``: not a terminal, so kopir never waits on a prompt.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
    child_env["PYTHONIOENCODING"] = "utf-8"
    child_env["XDG_STATE_HOME"] = STATE_HOME  # verifier state never lands in the real home
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kopir.cli", *(os.fspath(a) for a in args)],
        env=child_env,
        cwd=Path(cwd) if cwd is not None else None,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


kopir = run_kopir_process
STATE_HOME = tempfile.mkdtemp(prefix="kopir-test-state-")
atexit.register(shutil.rmtree, STATE_HOME, True)
