"""Where ``kopir audit`` reads a publisher's published material: a data dir or a web site.

Theory of operation
-------------------
The auditor asks for files by their public *name*, the path the web app serves them under
(``trust.json``, ``list.json``, ``lists/versions/3.json``, ``log/checkpoint``,
``log/entries/7``, ``log/proof/inclusion?index=2&size=8``, ...). A :class:`Source` answers
with the bytes, or ``None`` when the publisher does not have that file; it raises
:class:`SourceError` only when it cannot tell (a network failure, an HTTP 500, a file larger
than :data:`MAX_BYTES`), because then the audit cannot reach a verdict at all.

- :class:`DirSource` maps names onto a data dir as ``kopir run`` lays it out (``trust.json``,
  ``lists/``, ``public/checkpoint``) and answers the log routes from the ``log/`` directory
  with ``signing.LogStore``, exactly as the web app does.
- :class:`UrlSource` fetches ``<base>/<name>`` from the web app (``kopir.web``) with aiohttp,
  with a timeout per request and the same size cap; proofs are asked for in their text form
  (``&format=text``). Any 4xx answer means "not there": the audit reports what is missing.

Signature files are found by :meth:`Source.signatures`: a directory lists every
``<name>.<KEYID>.minisig`` beside a document, whoever signed it; a web site cannot be listed,
so only the key ids the caller names (the trust root's keys) are asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import aiohttp

import signing

MAX_BYTES = 16 * 1024 * 1024
"""The largest file the auditor reads; a list of thousands of relays is well under 1 MiB."""
_CHUNK = 65536
_INCLUSION = re.compile(
    r"log/proof/inclusion\?index=(0|[1-9][0-9]{0,18})&size=(0|[1-9][0-9]{0,18})"
)
_CONSISTENCY = re.compile(
    r"log/proof/consistency\?old=(0|[1-9][0-9]{0,18})&new=(0|[1-9][0-9]{0,18})"
)
_ENTRY = re.compile(r"log/entries/(0|[1-9][0-9]{0,18})")


class AuditError(Exception):
    """The audit cannot be run (bad arguments, an unreadable trust root or state, no source)."""


class SourceError(AuditError):
    """The source could not answer (network, server error, oversized file)."""


class Source(Protocol):
    where: str
    """The URL or directory, for messages."""

    async def read(self, name: str) -> bytes | None: ...

    async def signatures(self, name: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        """``<name>.<KEYID>.minisig`` files by key id (hex, as minisign prints it)."""
        ...

    def log_store(self) -> signing.LogStore | None:
        """The log directory itself, when the source has one (a data dir)."""
        ...

    async def close(self) -> None: ...


class DirSource:
    """A publisher's data dir (``kopir run``'s layout)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.where = str(self.dir)
        if not self.dir.is_dir():
            raise AuditError(f"{self.dir} is not a directory; give a publisher's data dir or URL")
        self._log: signing.LogStore | None = None

    def _path(self, name: str) -> Path | None:
        if name.startswith(("trust.json", "lists/")):
            return self.dir / name
        if name.startswith("list.json"):
            return self.dir / "lists" / name
        if name == "log/checkpoint":
            return self.dir / "public" / "checkpoint"
        return None

    async def read(self, name: str) -> bytes | None:
        path = self._path(name)
        if path is not None:
            return _read_file(path)
        return self._log_route(name)

    async def signatures(self, name: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        path = self._path(name)
        if path is None or not path.parent.is_dir():
            return {}
        found: dict[str, bytes] = {}
        for key_id, sig in signing.signature_files(path).items():
            data = _read_file(sig)
            if data is not None:
                found[key_id] = data
        return found

    def log_store(self) -> signing.LogStore | None:
        if self._log is None and (self.dir / "log" / "log.json").exists():
            self._log = signing.LogStore(self.dir / "log")
        return self._log

    def _log_route(self, name: str) -> bytes | None:
        try:
            store = self.log_store()
            if store is None:
                return None
            if match := _ENTRY.fullmatch(name):
                index = int(match.group(1))
                return store.entry(index) if index < store.size else None
            if match := _INCLUSION.fullmatch(name):
                index, size = map(int, match.groups())
                return store.inclusion(index, size).text().encode("ascii")
            if match := _CONSISTENCY.fullmatch(name):
                old, new = map(int, match.groups())
                return store.consistency(old, new).text().encode("ascii")
        except signing.SigningError:
            return None  # the web app answers such a request with a 4xx
        return None

    async def close(self) -> None:
        return None


def _read_file(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise SourceError(f"{path} is larger than {MAX_BYTES} bytes; it is not a kopir file")
    return data


class UrlSource:
    """A publisher's web app, ``<base>/<name>`` over HTTP(S)."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.where = self.base
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def read(self, name: str) -> bytes | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = self.base + name
        if name.startswith("log/proof/"):
            url += "&format=text"  # the web app answers JSON unless asked for the text form
        try:
            async with self._session.get(url, max_redirects=5) as response:
                if 400 <= response.status < 500:
                    return None  # not published, or a request the publisher refuses
                if response.status != 200:
                    raise SourceError(f"{url} answered HTTP {response.status}; try again later")
                return await _read_body(response, url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            raise SourceError(f"cannot fetch {url}: {reason}") from None

    async def signatures(self, name: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for kid in sorted(set(key_ids)):
            data = await self.read(f"{name}.{kid}.minisig")
            if data is not None:
                found[kid] = data
        return found

    def log_store(self) -> signing.LogStore | None:
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_body(response: aiohttp.ClientResponse, url: str) -> bytes:
    if (response.content_length or 0) > MAX_BYTES:
        raise SourceError(f"{url} is larger than {MAX_BYTES} bytes; it is not a kopir file")
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > MAX_BYTES:
            raise SourceError(f"{url} is larger than {MAX_BYTES} bytes; it is not a kopir file")
    return bytes(body)


def open_source(where: str, timeout: float = 30.0) -> Source:
    """A :class:`UrlSource` for ``http(s)://``, else a :class:`DirSource`."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", where):
        if not where.lower().startswith(("http://", "https://")):
            raise AuditError(f"--from {where}: only http:// and https:// URLs, or a directory")
        return UrlSource(where, timeout)
    return DirSource(Path(where))


__all__ = [
    "MAX_BYTES",
    "AuditError",
    "DirSource",
    "Source",
    "SourceError",
    "UrlSource",
    "open_source",
]
