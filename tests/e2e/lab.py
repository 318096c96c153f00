"""A small network of namespaces for the shutdown rehearsal, and its teardown.

Theory of operation: every host (``citizen``, ``relay``, ``telegram``, ``publisher``) is a
network namespace made by `ip netns add`, with loopback up and one veth ``eth0`` whose other
end sits on a bridge in a further namespace (``net``), so the host's own namespace gains no
interface, route or rule. Addresses are ``10.77.0.N/24`` with no default route: nothing in the
lab can reach beyond it. Names carry this process's id and a random tag, so an earlier run that
crashed, or a colleague's run at the same moment, never collides with this one.

`Lab.close` undoes everything, whatever happened before: it stops the processes the lab
started (SIGTERM, then SIGKILL), kills anything still left in the lab's namespaces (they were
made by this run, so whatever runs there is ours), and deletes the namespaces, which takes the
veths and the bridge with them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "kopir-e2e"
HOSTS = {"citizen": 2, "relay": 3, "telegram": 4, "publisher": 5}
"""Each host's last address byte in 10.77.0.0/24 (IPv6 is off in the lab)."""
SUBNET = "10.77.0"
IPV6_OFF = (
    "for c in all default; do f=/proc/sys/net/ipv6/conf/$c/disable_ipv6; "
    '[ ! -e "$f" ] || echo 1 > "$f"; done'
)


def tool(name: str) -> str:
    """A system tool's path, looked for in the sbin directories too (not on every PATH)."""
    path = os.environ.get("PATH", os.defpath) + ":/usr/sbin:/sbin"
    return shutil.which(name, path=path) or name


IP, NFT = tool("ip"), tool("nft")


def unavailable() -> str | None:
    """Why this machine cannot build the lab (no root, no ``ip netns``, no ``nft``), or None."""
    if os.geteuid() != 0:
        return "the shutdown rehearsal needs root (ip netns add, nft)"
    for path, package in ((IP, "iproute2"), (NFT, "nftables")):
        if not os.path.isabs(path):
            return f"the shutdown rehearsal needs {path} (Debian package {package})"
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-probe"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add does not work here: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True, check=True)
    return None


def require_lab() -> None:
    """Skip without root or ``ip netns`` (a developer's machine); fail instead in CI."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the shutdown rehearsal, but: {reason}", pytrace=False)
    pytest.skip(reason)


def clean_env(state: Path) -> dict[str, str]:
    """This environment without ``KOPIR_*`` (a developer's passphrase never leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
    env.update(PYTHONIOENCODING="utf-8", XDG_STATE_HOME=str(state), PYTHONDONTWRITEBYTECODE="1")
    return env


class Lab:
    """The namespaces, the wiring between them, and the processes started in them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = clean_env(workdir / "state")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- naming --------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @staticmethod
    def address(host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    # -- building ------------------------------------------------------------------------

    def build(self) -> None:
        """Every host on one bridge; loopback up everywhere."""
        switch = self._add_namespace("net")
        self._ip(switch, "link", "add", "br0", "type", "bridge")
        self._ip(switch, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self._add_namespace(host)
            port = f"to-{host}"
            self._ip(
                switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            self._ip(switch, "link", "set", port, "master", "br0", "up")
            self._ip(ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            self._ip(ns, "link", "set", "eth0", "up")

    def _add_namespace(self, host: str) -> str:
        name = self.ns(host)
        _check([IP, "netns", "add", name])
        self.namespaces.append(name)
        # IPv4 only: no IPv6 router solicitations or MLD reports, whose timing is the kernel's,
        # leave a host by themselves (the citizen's firewall counts every packet it sends).
        _check([IP, "netns", "exec", name, "sh", "-c", IPV6_OFF])
        self._ip(name, "link", "set", "lo", "up")
        return name

    @staticmethod
    def _ip(ns: str, *args: str) -> None:
        _check([IP, "-n", ns, *args])

    def firewall(self, host: str, ruleset: str) -> None:
        """Load an nftables ruleset into a host's namespace."""
        _check([IP, "netns", "exec", self.ns(host), NFT, "-f", "-"], stdin=ruleset)

    def nft_counter(self, host: str, table: str, name: str) -> int:
        """Packets a named nftables counter has seen."""
        out = _check([IP, "netns", "exec", self.ns(host), NFT, "list", "counter", "inet",
                      table, name])  # fmt: skip
        words = out.split()
        return int(words[words.index("packets") + 1])

    # -- running -------------------------------------------------------------------------

    def argv(self, host: str, *argv: str) -> list[str]:
        return [IP, "netns", "exec", self.ns(host), *argv]

    def python(self, host: str, *args: str | os.PathLike[str]) -> list[str]:
        """``python ARGS`` (this interpreter, this checkout) inside a host."""
        return self.argv(host, sys.executable, *(os.fspath(a) for a in args))

    def run(
        self,
        host: str,
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run Python (``-m module ...`` or ``-c code ...``) in a host and wait for it."""
        return subprocess.run(
            self.python(host, *args), cwd=cwd or ROOT, env=self.env, capture_output=True,
            encoding="utf-8", stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )  # fmt: skip

    def start(self, host: str, name: str, argv: Sequence[str], cwd: Path | None = None) -> Output:
        """Start a long-running process in a host; its output goes to ``<workdir>/<name>.log``."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                self.argv(host, *argv), cwd=cwd or ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(proc)
        return Output(proc, log)

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, then delete every namespace; raises if something stayed."""
        for proc in reversed(self.processes):
            _stop(proc)
        problems = []
        for name in reversed(self.namespaces):
            for pid in namespace_pids(name):
                _kill(pid)
            done = subprocess.run([IP, "netns", "del", name], capture_output=True, text=True)
            if done.returncode != 0:
                problems.append(f"ip netns del {name}: {done.stderr.strip()}")
        self.namespaces.clear()
        if problems:
            raise RuntimeError("; ".join(problems))


class Output:
    """A started process and the log its stdout and stderr go to."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 30) -> None:
        """Until ``needle`` appears ``count`` times in the log; fails if the process ends."""
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} x{count} within {timeout} s:\n{self.text()}")
            time.sleep(0.05)


def namespace_pids(name: str) -> list[int]:
    done = subprocess.run([IP, "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _check(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
