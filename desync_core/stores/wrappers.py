"""Store composition (``store.md`` §3): verification, retries, router, failover, cache.

These are the only places where chunks are verified, transient errors retried, and
stores combined; transports stay simple. Every wrapper offers the reading interface
(``get_chunk``, ``has_chunk``, ``close``) and forwards writes where that makes sense.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol, TypeVar

from desync_core.digest import Digest
from desync_core.errors import (
    ChunkInvalidError,
    ChunkMissingError,
    StoreConnectionError,
    StoreError,
    StoreReadOnlyError,
)
from desync_core.stores.chunk import Chunk

T = TypeVar("T")


class ChunkReader(Protocol):
    """What operations read chunks from: a store or a composition of stores."""

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """The chunk; ChunkMissingError if no store has it."""

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is available."""

    def close(self) -> None:
        """Release resources."""


class ChunkWriter(ChunkReader, Protocol):
    """A reader that also stores chunks."""

    def store_chunk(self, chunk: Chunk) -> None:
        """Store a chunk (atomic, idempotent)."""


class _Wrapper:
    """Forwards close/str to the wrapped store."""

    inner: Any

    def close(self) -> None:
        self.inner.close()

    def __str__(self) -> str:
        return str(self.inner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def call_with_retries(fn: Callable[..., T], *args: Any, attempts: int,
                      base_interval: float) -> T:
    """Call ``fn(*args)``, retrying transient errors (:class:`StoreConnectionError`).

    ``attempts`` is the total number of tries (0 or 1: one try); after failed attempt
    *k* it waits ``k * base_interval`` seconds (desync's rule, ``remote.md`` §1).
    """
    attempt = 1
    while True:
        try:
            return fn(*args)
        except StoreConnectionError:
            if attempt >= max(1, attempts):
                raise
            time.sleep(attempt * base_interval)
            attempt += 1


class RetryingStore(_Wrapper):
    """Retries transient errors of a store with :func:`call_with_retries`."""

    def __init__(self, inner: Any, attempts: int, base_interval: float) -> None:
        self.inner = inner
        self.attempts = max(1, attempts)
        self.base_interval = base_interval

    def _retry(self, fn: Callable[..., T], *args: Any) -> T:
        return call_with_retries(fn, *args, attempts=self.attempts,
                                 base_interval=self.base_interval)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self._retry(self.inner.get_chunk, chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._retry(self.inner.has_chunk, chunk_id)

    def store_chunk(self, chunk: Chunk) -> None:
        if not hasattr(self.inner, "store_chunk"):
            raise StoreReadOnlyError(f"store '{self.inner}' does not support writing")
        self._retry(self.inner.store_chunk, chunk)


def unexpected_size(chunk_id: bytes, got: int, want: int) -> ChunkInvalidError:
    """The error for a chunk whose data is not the size its index gives."""
    return ChunkInvalidError(chunk_id, cause=f"unexpected size for chunk {chunk_id.hex()}: "
                             f"{got} bytes instead of {want}")


def read_sized(source: Any, chunk_id: bytes, size: int) -> bytes | bytearray | memoryview:
    """The verified plain data of a chunk that an index says is ``size`` bytes.

    The one size check of every reader that has an index (cat, untar -i, extract's
    careful path, the archive fetcher, mounts): a chunk of another size is an
    :class:`ChunkInvalidError` (the hash check is the source's ``VerifyingStore``).
    """
    data = source.get_chunk(chunk_id).data()
    if len(data) != size:
        raise unexpected_size(chunk_id, len(data), size)
    return data


class VerifyingStore(_Wrapper):
    """Decodes chunks and checks them against their id (unless ``skip_verify``).

    A chunk that cannot be decoded or hashes to another id raises
    :class:`ChunkInvalidError` naming the store. This and :meth:`check` are the one
    place chunks read from stores are hash-checked.

    Args:
        max_size: no chunk decodes to more (the index's largest chunk, when the reader
            has an index): a hostile chunk file is invalid as soon as its output passes
            this, instead of growing to :data:`~desync_core.stores.chunk.MAX_CHUNK_SIZE`
            in every worker.
    """

    def __init__(self, inner: Any, digest: Digest, *, skip_verify: bool = False,
                 max_size: int | None = None) -> None:
        self.inner = inner
        self.digest = digest
        self.skip_verify = skip_verify
        self.max_size = max_size

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        chunk = self.inner.get_chunk(chunk_id)
        if self.skip_verify:
            return chunk  # decoded lazily, only if someone needs the plain data
        try:
            self.check(chunk_id, chunk.data(self.max_size))
        except ChunkInvalidError as exc:
            self._raise_named(chunk_id, exc)
        return chunk

    def get_chunk_into(self, chunk_id: bytes, out: memoryview) -> int:
        """Like :meth:`get_chunk`, but decode the data straight into ``out`` (see
        :meth:`Chunk.data_into`) and verify it there; returns the size.

        For readers that know the size from an index: with ``out`` one byte longer than
        that, no copy is made and oversized data is an error.
        """
        chunk = self.inner.get_chunk(chunk_id)
        try:
            n = chunk.data_into(out)
            if not self.skip_verify:
                self.check(chunk_id, out[:n])
        except ChunkInvalidError as exc:
            self._raise_named(chunk_id, exc)
        return n

    def check(self, chunk_id: bytes, data: bytes | bytearray | memoryview) -> None:
        """Raise :class:`ChunkInvalidError` (naming the store) unless ``data`` hashes to
        ``chunk_id``; nothing with ``skip-verify``. For fast paths that decode stored
        bytes themselves (extract's direct reads)."""
        if self.skip_verify:
            return
        actual = self.digest.sum(data)
        if actual != chunk_id:
            raise ChunkInvalidError(chunk_id, actual, store=self.inner)

    def named(self, chunk_id: bytes, exc: ChunkInvalidError) -> ChunkInvalidError:
        """``exc``, naming this store if it names none (a chunk that failed to decode)."""
        if exc.store is not None:
            return exc
        return ChunkInvalidError(chunk_id, exc.actual_id, str(exc).split(": ", 1)[-1],
                                 store=self.inner)

    def _raise_named(self, chunk_id: bytes, exc: ChunkInvalidError) -> NoReturn:
        """Raise ``exc``, naming this store if it names none (a chunk that failed to
        decode)."""
        named = self.named(chunk_id, exc)
        if named is exc:
            raise exc
        raise named from exc

    def has_chunk(self, chunk_id: bytes) -> bool:
        return bool(self.inner.has_chunk(chunk_id))

    def store_chunk(self, chunk: Chunk) -> None:
        if not hasattr(self.inner, "store_chunk"):
            raise StoreReadOnlyError(f"store '{self.inner}' does not support writing")
        self.inner.store_chunk(chunk)


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


class RouterStore:
    """Several ``-s`` stores queried in order (§3.1).

    A missing chunk moves on to the next store; any other error stops the lookup.
    """

    def __init__(self, stores: list[Any]) -> None:
        if not stores:
            raise ValueError("a router needs at least one store")
        self.stores = stores

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        for store in self.stores:
            try:
                return store.get_chunk(chunk_id)
            except ChunkMissingError:
                continue
        raise ChunkMissingError(chunk_id, self if len(self.stores) > 1 else self.stores[0])

    def has_chunk(self, chunk_id: bytes) -> bool:
        return any(store.has_chunk(chunk_id) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)


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


def iter_members(reader: Any) -> Iterator[Any]:
    """The transports inside a composition (for reporting)."""
    if isinstance(reader, CacheStore):
        yield from iter_members(reader.cache)
        yield from iter_members(reader.router)
    elif isinstance(reader, RouterStore):
        for s in reader.stores:
            yield from iter_members(s)
    elif isinstance(reader, FailoverGroup):
        for m in reader.members:
            yield from iter_members(m)
    elif isinstance(reader, _Wrapper):
        yield from iter_members(reader.inner)
    else:
        yield reader


__all__ = [
    "CacheStore",
    "ChunkReader",
    "ChunkWriter",
    "FailoverGroup",
    "RetryingStore",
    "RouterStore",
    "VerifyingStore",
    "call_with_retries",
    "iter_members",
    "read_sized",
    "unexpected_size",
]
