"""The rehearsal's lab cleans up after itself: a failing step leaves no namespace, interface or
process behind, and the host's own network is never touched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.lab import IP, Lab, require_lab


def host_links() -> str:
    """The host namespace's interfaces, without counters that move by themselves."""
    out = subprocess.run([IP, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return "\n".join(sorted(line.split(" link/")[0] for line in out.splitlines()))


def namespaces() -> str:
    return subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_lab_leaves_nothing_behind_when_a_step_fails(tmp_path: Path) -> None:
    require_lab()
    links = host_links()
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(RuntimeError, match="a step failed"), Lab(tmp_path) as lab:
        lab.build()
        assert all(lab.ns(host) in namespaces() for host in ("net", "citizen", "relay"))
        assert host_links() == links  # the wiring lives in the lab's namespaces only
        # A process that leaves a child of its own in the namespace, as a daemon might.
        sleeper = lab.start(
            "relay", "sleeper", ["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"]
        )
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, sleeper.text()
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        assert running(grandchild)
        raise RuntimeError("a step failed")

    assert lab.tag not in namespaces()
    assert sleeper.proc.poll() is not None
    deadline = time.monotonic() + 10
    while running(grandchild):
        assert time.monotonic() < deadline, f"process {grandchild} outlived the lab"
        time.sleep(0.05)
    assert host_links() == links
