"""``-s "A|B|C"``: failover groups (``store.md`` §3.3)."""

from __future__ import annotations

import threading
from typing import Any

from desync_core.errors import (
    ChunkInvalidError,
    ChunkMissingError,
    StoreError,
)
from desync_core.stores.chunk import Chunk


class FailoverGroup:
    """``-s "A|B|C"``: members holding the same chunks; switch on errors (§3.3).

    A missing chunk is an answer, not a failure: it is returned at once. Any other
    error makes the next member active (round-robin) and retries, at most once per
    member.
    """

    def __init__(self, members: list[Any]) -> None:
        self.members = members
        self._active = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"members": self.members, "_active": self._active}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        last: BaseException | None = None
        for _ in range(len(self.members)):
            with self._lock:
                index = self._active
            member = self.members[index]
            try:
                return getattr(member, method)(*args)
            except ChunkMissingError:
                raise
            except (StoreError, ChunkInvalidError, OSError) as exc:
                last = exc
                with self._lock:
                    if self._active == index:  # others may have switched already
                        self._active = (index + 1) % len(self.members)
        assert last is not None
        raise last

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self._call("get_chunk", chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return bool(self._call("has_chunk", chunk_id))

    def close(self) -> None:
        for m in self.members:
            m.close()

    def __str__(self) -> str:
        return "|".join(str(m) for m in self.members)


