"""Store interfaces that transports (local, HTTP, S3, SFTP...) implement.

Capabilities are subclasses: :class:`ChunkStore` (read) ⊂ :class:`WritableChunkStore`
⊂ :class:`PrunableChunkStore`; :class:`IndexStore` ⊂ :class:`WritableIndexStore`.

Transports deal in *stored* bytes and never retry, cache, fail over or verify: those
live once, in :mod:`desync_core.stores.wrappers`. Most transports only need to
subclass a key-value base by what they can do: :class:`ReadOnlyKeyValueChunkStore`
(``_read``), :class:`WritableKeyValueChunkStore` (+ ``_write``) or
:class:`KeyValueChunkStore` (+ ``_list``, ``_delete``; prune and ``verify -r``).

Stores pickle as their configuration (location and options) and reconnect lazily, so
they can be handed to worker processes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from desync_core.errors import (
    ChunkMissingError,
    IndexNotFoundError,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    UsageError,
)
from desync_core.location import StoreLocation, parse_location
from desync_core.stores.chunk import Chunk, ChunkCodec
from desync_core.stores.options import StoreOptions

_HEX64 = re.compile(r"[0-9a-f]{64}")


def chunk_key(chunk_id: bytes, extension: str) -> str:
    """The casync layout key of a chunk: ``abcd/abcd…ef.cacnk`` (``store.md`` §2)."""
    h = chunk_id.hex()
    return f"{h[:4]}/{h}{extension}"


def parse_chunk_key(key: str, extension: str) -> bytes | None:
    """The chunk id of a key of exactly the form ``<4hex>/<id><extension>``, else None."""
    prefix, sep, name = key.partition("/")
    if not sep or "/" in name:
        return None
    if extension:
        if not name.endswith(extension):
            return None
        name = name[: -len(extension)]
    if not _HEX64.fullmatch(name) or prefix != name[:4]:
        return None
    return bytes.fromhex(name)


def _reopen(cls: type[ChunkStore] | type[IndexStore], location: str,
            options: StoreOptions) -> Any:
    return cls.from_location(parse_location(location), options)


class ChunkStore(ABC):
    """A readable chunk store.

    Args:
        location: where the store is.
        options: its options (compression, timeouts, TLS...).
    """

    # -- capabilities: what the fast paths of ``ops/`` may rely on ----------------------
    # Declared by the store, never inferred from its type, so a plugin's store gets
    # every fast path it declares. Defaults are the safe choice for a remote store.

    #: On this machine: fetches are CPU-bound, so ``extract``/``make`` use about one
    #: thread per CPU instead of ``-n`` requests in flight.
    is_local = False
    #: The store object may be used in forked worker processes: it holds no
    #: connections, threads or locks (a fork would share or break them). ``extract``
    #: forks its first phase only when every store (and seed) declares this.
    fork_safe = False
    #: :meth:`get_chunk` returns the stored bytes in :attr:`codec` (the key-value bases
    #: do), so verified reads may decode them straight into the caller's buffer.
    returns_stored_bytes = False
    #: Looking one chunk up costs a request of its own (an object store's HEAD) while
    #: one :meth:`PrunableChunkStore.iter_chunk_ids` request lists many: writers list
    #: the store once, in the background, instead of looking up every chunk when the
    #: store is small enough (:mod:`desync_core.stores.presence`).
    lookup_by_listing = False

    def local_chunk_file(self, hex_id: str) -> str | None:
        """A local file holding the chunk's stored bytes in :attr:`codec`, which
        ``extract`` may read directly instead of calling :meth:`get_chunk` (None: not
        a plain local file; the default). Only a path is computed: the file need not
        exist (a read that fails falls back to :meth:`get_chunk`)."""
        return None

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        self.location = location
        self.options = options or StoreOptions()
        #: How chunks are stored: compression, then encryption (``store.md`` §2).
        self.codec = ChunkCodec.for_options(self.options)

    @classmethod
    def from_location(cls, location: StoreLocation, options: StoreOptions) -> ChunkStore:
        """Open the store at ``location`` (the factory registered for its scheme)."""
        return cls(location, options)

    @abstractmethod
    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """Read a chunk (not verified: the core's VerifyingStore does that).

        Raises:
            ChunkMissingError: the chunk is not in the store (never return empty data).
        """

    @abstractmethod
    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the store holds the chunk."""

    def get_chunks(self, chunk_ids: Iterable[bytes]) -> Iterator[tuple[bytes, Chunk | None]]:
        """Read several chunks; yields ``None`` for missing ones, in request order."""
        for chunk_id in chunk_ids:
            try:
                yield chunk_id, self.get_chunk(chunk_id)
            except ChunkMissingError:
                yield chunk_id, None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; calling it twice is harmless."""

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return str(self.location)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.location)!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and str(other.location) == str(self.location)
            and other.options == self.options
        )

    def __hash__(self) -> int:
        return hash((type(self), str(self.location)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (type(self), str(self.location), self.options))


class WritableChunkStore(ChunkStore):
    """A chunk store that accepts new chunks."""

    @abstractmethod
    def store_chunk(self, chunk: Chunk) -> None:
        """Store a chunk. Must be atomic (no partial object is ever visible under the
        final name) and idempotent; two writers of one chunk must both succeed."""


class PrunableChunkStore(WritableChunkStore):
    """A chunk store that can list and delete chunks."""

    @abstractmethod
    def iter_chunk_ids(self) -> Iterator[bytes]:
        """Every chunk id in the store (chunks of this store's format only)."""

    @abstractmethod
    def remove_chunk(self, chunk_id: bytes) -> None:
        """Delete a chunk; a missing chunk raises ChunkMissingError."""

    def prune(self, keep: set[bytes]) -> int:
        """Delete every chunk not in ``keep``; returns how many were deleted."""
        doomed = [cid for cid in self.iter_chunk_ids() if cid not in keep]
        for chunk_id in doomed:
            try:
                self.remove_chunk(chunk_id)
            except ChunkMissingError:
                pass
        return len(doomed)


def os_error(exc: OSError, store: object, action: str, chunk_id: bytes | None = None) -> StoreError:
    """A core error for an OS error of a store (not-found is handled by the caller).

    The message names the store and the chunk, never just the errno text: "extracting
    out: Is a directory" blamed the output for a directory inside the store.
    """
    what = f" chunk {chunk_id.hex()}" if chunk_id is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    msg = f"store {store}: {action}{what}: {reason}"
    if isinstance(exc, PermissionError):
        return StorePermissionError(msg)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return StoreConnectionError(msg)
    return StoreError(msg)


class ReadOnlyKeyValueChunkStore(ChunkStore):
    """Chunk reads over byte-level primitives on keys like ``abcd/abcd….cacnk``.

    A read-only transport implements :meth:`_read` (and, if it has a cheaper way
    than reading, :meth:`_exists`). Keys are relative to the store's base. OS errors
    other than not-found become :class:`StoreError` naming the store and the chunk.
    """

    returns_stored_bytes = True

    @abstractmethod
    def _read(self, key: str) -> bytes:
        """The object's bytes; raise FileNotFoundError if it does not exist."""

    def _exists(self, key: str) -> bool:
        """Whether the object exists (default: read it)."""
        try:
            self._read(key)
        except FileNotFoundError:
            return False
        return True

    def key(self, chunk_id: bytes) -> str:
        """The key of a chunk in this store's format."""
        return chunk_key(chunk_id, self.codec.extension)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        try:
            raw = self._read(self.key(chunk_id))
        except FileNotFoundError:
            raise ChunkMissingError(chunk_id, self) from None
        except OSError as exc:
            raise os_error(exc, self, "reading", chunk_id) from None
        return Chunk(chunk_id, encoded=raw, codec=self.codec)

    def has_chunk(self, chunk_id: bytes) -> bool:
        try:
            return self._exists(self.key(chunk_id))
        except OSError as exc:
            raise os_error(exc, self, "looking up", chunk_id) from None


class WritableKeyValueChunkStore(ReadOnlyKeyValueChunkStore, WritableChunkStore):
    """A key-value chunk store that also writes: adds :meth:`_write`."""

    @abstractmethod
    def _write(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Create or replace the object atomically (never a partial object under
        ``key``: write a temporary object and rename, or use a conditional put)."""

    def store_chunk(self, chunk: Chunk) -> None:
        try:
            self._write(self.key(chunk.id), chunk.encoded(self.codec))
        except OSError as exc:
            raise os_error(exc, self, "storing", chunk.id) from None


class KeyValueChunkStore(WritableKeyValueChunkStore, PrunableChunkStore):
    """A key-value chunk store that also lists and deletes (``prune``, ``verify -r``).

    Subclasses implement :meth:`_read`, :meth:`_write`, :meth:`_exists`, :meth:`_list`
    and :meth:`_delete`; keys are relative to the store's base.
    """

    @abstractmethod
    def _list(self) -> Iterator[str]:
        """Every key in the store (any shape; non-chunk keys are filtered out)."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Delete the object; raise FileNotFoundError if it does not exist."""

    def iter_chunk_ids(self) -> Iterator[bytes]:
        ext = self.codec.extension
        try:
            for key in self._list():
                chunk_id = parse_chunk_key(key, ext)
                if chunk_id is not None:
                    yield chunk_id
        except OSError as exc:
            raise os_error(exc, self, "listing") from None

    def remove_chunk(self, chunk_id: bytes) -> None:
        try:
            self._delete(self.key(chunk_id))
        except FileNotFoundError:
            raise ChunkMissingError(chunk_id, self) from None
        except OSError as exc:
            raise os_error(exc, self, "removing", chunk_id) from None


class IndexStore(ABC):
    """A place holding index files by name (a directory, an HTTP path, a bucket prefix)."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        self.location = location
        self.options = options or StoreOptions()

    @classmethod
    def from_location(cls, location: StoreLocation, options: StoreOptions) -> IndexStore:
        """Open the index store at ``location``."""
        return cls(location, options)

    @abstractmethod
    def get_index(self, name: str) -> bytes:
        """The bytes of index file ``name``.

        Raises:
            IndexNotFoundError: there is no such index.
        """

    def iter_index(self, name: str) -> Iterator[bytes | bytearray | memoryview]:
        """The bytes of index ``name`` in pieces as they arrive (default: all of
        :meth:`get_index` at once).

        Readers check the header first and stop reading at the first thing that cannot
        be an index, so a store that can stream should override this: then a blob or a
        huge object given as an index costs a few KB, not its size. Closing the
        iterator early must release the transfer.

        Raises:
            IndexNotFoundError: there is no such index (on the first piece).
        """
        yield self.get_index(name)

    def has_index(self, name: str) -> bool:
        """Whether index ``name`` exists."""
        try:
            self.get_index(name)
        except IndexNotFoundError:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __str__(self) -> str:
        return str(self.location)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (type(self), str(self.location), self.options))


class WritableIndexStore(IndexStore):
    """An index store that accepts new index files."""

    @abstractmethod
    def store_index(self, name: str, data: bytes) -> None:
        """Write index ``name`` atomically."""


def check_index_name(name: str) -> str:
    """Reject index names that are not plain file names (``..``, slashes, empty)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"invalid index name {name!r}")
    return name


__all__ = [
    "ChunkStore",
    "IndexStore",
    "KeyValueChunkStore",
    "PrunableChunkStore",
    "ReadOnlyKeyValueChunkStore",
    "WritableChunkStore",
    "WritableIndexStore",
    "WritableKeyValueChunkStore",
    "check_index_name",
    "chunk_key",
    "os_error",
    "parse_chunk_key",
]
