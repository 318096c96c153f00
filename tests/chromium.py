"""Headless Chromium for page tests, driven through the DevTools protocol over a pipe.

Chromium starts with ``--remote-debugging-pipe``: commands go in on its fd 3, answers and events
come out on its fd 4, each a JSON object ended by a NUL byte. No port and no websocket; one
blocking reader with a deadline on every wait, so nothing hangs and no test sleeps for a fixed
time. Outside addresses are unreachable whatever a page does: every request goes to a dead
proxy on loopback and every host name fails to resolve. Loopback itself stays reachable (for a
page a test serves on 127.0.0.1), unless ``goto(..., offline=True)`` turns the page's network off
altogether.

    with Browser() as browser:
        page = browser.new_page()
        page.goto(path.as_uri(), offline=True)
        page.evaluate("document.title")
        page.screenshot(Path("test-artifacts/page.png"))
        assert page.requests() == [path.as_uri()] and page.problems() == []
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
    "--remote-debugging-pipe",
)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _high(fd: int) -> int:
    """The fd moved above 4, so the shell's redirections to fds 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class ChromiumError(Exception):
    """Chromium did not start, answered with an error, died, or did not answer in time."""


class Browser:
    """One headless Chromium with a throwaway profile; close it (or use ``with``)."""

    def __init__(self, executable: str = CHROMIUM, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.mkdtemp(prefix="kopir-chromium-")
        commands_r, self._commands = map(_high, os.pipe())
        self._answers, answers_w = map(_high, os.pipe())
        # bash (dash takes one-digit fds only) puts the pipe ends on fds 3 and 4, then becomes
        # Chromium.
        redirect = f'exec "$0" "$@" 3<&{commands_r} 4>&{answers_w} {commands_r}<&- {answers_w}>&-'
        profile = self._profile
        with open(Path(profile) / "chromium.log", "wb") as log:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", redirect, executable, *FLAGS, f"--user-data-dir={profile}"],
                pass_fds=(commands_r, answers_w),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        os.close(commands_r)
        os.close(answers_w)
        try:
            self.send("Target.setDiscoverTargets", {"discover": False})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise ChromiumError(f"{method}: {answer['error'].get('message')}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def wait_event(self, method: str, session: str | None, start: int = 0) -> dict[str, Any]:
        """The first event ``method`` of ``session`` from ``events[start:]`` on, waiting for it."""
        deadline = time.monotonic() + self.timeout
        index = start
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read(deadline, method))

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._answers], [], [], max(left, 0))
            if not ready:
                raise ChromiumError(f"no answer to {waiting_for} within {self.timeout:.0f} s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise ChromiumError(f"Chromium exited: {self.log()[-2000:]}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(line)
        return message

    def new_page(self, width: int = 800, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        page.send("Emulation.setDeviceMetricsOverride", metrics)
        return page

    def log(self) -> str:
        return (Path(self._profile) / "chromium.log").read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ChromiumError, OSError):
                self.send("Browser.close")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for fd in (self._commands, self._answers):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """One tab, attached through a flat DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self._since = len(browser.events)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str, offline: bool = False) -> None:
        """Load ``url`` and wait for its load event; ``offline`` cuts the page's network first."""
        conditions = {"offline": offline, "latency": 0, "downloadThroughput": -1}
        self.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": -1})
        self._navigate("about:blank")  # so that a URL differing only in its #fragment loads anew
        self._since = len(self.browser.events)
        self._navigate(url)

    def _navigate(self, url: str) -> None:
        start = len(self.browser.events)
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise ChromiumError(f"cannot load {url}: {answer['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, start)

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if it is a promise), or ``ChromiumError``."""
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        answer = self.send("Runtime.evaluate", params)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"JavaScript error: {text}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll a JS expression until it is truthy; its value, or ``ChromiumError`` at timeout."""
        script = (
            f"new Promise((resolve) => {{ const end = Date.now() + {int(timeout * 1000)};"
            f" (function poll() {{ const value = ({expression});"
            " if (value || Date.now() > end) resolve(value); else setTimeout(poll, 20); })(); })"
        )
        value = self.evaluate(script)
        if not value:
            raise ChromiumError(f"still false after {timeout:.0f} s: {expression}")
        return value

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the window too) at ``path``."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def _events(self, method: str) -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in self.browser.events[self._since :]
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def requests(self) -> list[str]:
        """Every URL the page asked for since the last ``goto`` (the page itself included)."""
        return [e["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and browser log errors (CSP violations...)."""
        thrown = self._events("Runtime.exceptionThrown")
        found = [e["exceptionDetails"].get("text", "") for e in thrown]
        found += [
            " ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
            for e in self._events("Runtime.consoleAPICalled")
            if e["type"] in ("error", "assert")
        ]
        found += [
            e["entry"]["text"]
            for e in self._events("Log.entryAdded")
            if e["entry"]["level"] == "error"
        ]
        return found
