"""``-c``: reading through a cache, filled with what the router fetched (``store.md`` §3.2)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from desync_core.errors import (
    ChunkInvalidError,
    ChunkMissingError,
    StoreError,
)
from desync_core.stores.chunk import Chunk


class CacheStore:
    """``-c``: read through a writable cache, fill it with what the router fetched (§3.2).

    With ``repair`` (``--cache-repair``, the default) an invalid chunk in the cache is
    treated as missing: it is fetched again and overwrites the bad copy.

    A cache that cannot be written (full, read-only, gone) does not fail the read: the
    cache is an optimisation. One warning goes to ``warn`` (default: stderr) and the
    run goes on without filling the cache.
    """

    def __init__(self, router: Any, cache: Any, *, repair: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        self.router = router
        self.cache = cache
        self.repair = repair
        self.warn = warn or _warn_stderr
        self._writable = True
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        if self._writable:
            try:
                return self.cache.get_chunk(chunk_id)
            except ChunkMissingError:
                pass
            except ChunkInvalidError:
                if not self.repair:
                    raise
            except (StoreError, OSError) as exc:  # unreadable cache: do without it
                self._give_up(f"failed to read from cache {self.cache}: {exc}")
        chunk = self.router.get_chunk(chunk_id)
        if self._writable:
            try:
                self.cache.store_chunk(chunk)
            except (StoreError, OSError) as exc:
                self._give_up(f"failed to store in cache {self.cache}: {exc}")
        return chunk

    def _give_up(self, why: str) -> None:
        """Stop using the cache, with one warning."""
        with self._lock:
            if self._writable:
                self._writable = False
                self.warn(f"Warning: {why}; continuing without the cache")

    def has_chunk(self, chunk_id: bytes) -> bool:
        return bool(self.cache.has_chunk(chunk_id) or self.router.has_chunk(chunk_id))

    def close(self) -> None:
        self.cache.close()
        self.router.close()

    def __str__(self) -> str:
        return f"{self.router} (cache {self.cache})"


def _warn_stderr(message: str) -> None:
    import sys

    sys.stderr.write(message + "\n")


