"""Public poster pages, made once and served again until they must change.

Theory of operation
-------------------
Anyone may ask for the poster of a batch named in ``[web] poster_batches``, as often as they
like. Making one is dear: the distribution ring picks the batch's relays and records the
hand-out in the distribution record (a SQLite write), then every link is signed (Ed25519) and
drawn as a QR code. So the web app makes a public batch's page once, keeps it here, and serves
the same bytes again until one of two things happens:

- **The published list changes.** A page is tagged with the SHA-256 of ``list.json`` as it
  was read just before the page was made. Other bytes (or a list that appears or goes away)
  make the page stale. The bytes, not the version number or the file's mtime: a list copied
  back from a backup or written twice within the file system's clock tick is still told apart.
- **Half the link expiry has passed.** A page made at ``made`` carries links that expire no
  sooner than ``made + [signing] link_expiry`` (``exp`` is rounded up to the hour). It is
  served only while ``made <= now < made + link_expiry / 2``, so every link handed out still
  has at least half its life left. A clock that went back before ``made`` makes it stale too.

Only the batches named when the cache is made can be kept (:class:`PosterCache` refuses any
other), so it holds at most one page per public batch; the operator's posters (any batch,
count or pool) never come here. A page that cannot be made (no list, no key: the caller's
503) is not kept, so the next request tries again. Requests for one batch take turns on one
lock, so concurrent first requests make the page once: the first makes it, the rest find it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def list_digest(path: Path) -> str | None:
    """SHA-256 (hex) of the list at ``path``; ``None`` when there is none (``OSError`` else)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Kept(Generic[T]):
    """A page and what it was made from."""

    page: T
    list_digest: str | None
    """SHA-256 (hex) of the ``list.json`` read before the page was made; ``None``: no list."""
    made: float
    """The time its links were signed at; they expire ``link_expiry`` later."""

    def fresh(self, list_digest: str | None, now: float, max_age: float) -> bool:
        """The page may be served at ``now``, with the list whose digest is ``list_digest``."""
        return list_digest == self.list_digest and self.made <= now < self.made + max_age


class PosterCache(Generic[T]):
    """One kept page per public batch (see the module docstring for when it is made again)."""

    def __init__(self, batches: Iterable[str], max_age: float) -> None:
        self.max_age = max_age
        """How long a page is served after it was made: half the link expiry."""
        self._locks = {batch: asyncio.Lock() for batch in batches}
        self._kept: dict[str, Kept[T]] = {}

    async def page(
        self,
        batch: str,
        now: float,
        list_digest: Callable[[], Awaitable[str | None]],
        make: Callable[[float], Awaitable[T]],
    ) -> T:
        """The kept page of ``batch``, or a new one from ``make(now)`` (kept only if it is made).

        ``list_digest`` is read under the batch's lock, just before the check, so a new page is
        tagged with the list it was made from (or an older one: then it is only made again)."""
        lock = self._locks.get(batch)
        if lock is None:
            raise KeyError(f"poster batch {batch!r} is not public, so its page is not kept")
        async with lock:
            digest = await list_digest()
            kept = self._kept.get(batch)
            if kept is not None and kept.fresh(digest, now, self.max_age):
                return kept.page
            page = await make(now)
            self._kept[batch] = Kept(page, digest, now)
            return page
