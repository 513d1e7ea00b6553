"""The typed results of the API calls: frozen dataclasses, one per command.

Chunk ids are ``bytes`` (32 bytes; ``.hex()`` gives the form the CLI prints).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from types import TracebackType

    from desync_core.index import Index

#: A chunk id: the 32-byte digest of the chunk's plain data.
ChunkId = bytes


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`~desync_core.api.verify` found in a store.

    Attributes:
        checked: chunks read and hashed.
        invalid: ids of every bad entry found (corrupt chunks, and entries named like a
            chunk that are not regular files), removed or not, in the order found.
        removed: the ids among ``invalid`` that were deleted (``repair=True``).
        messages: the lines ``desync verify`` prints on stderr, one per bad entry.
    """

    checked: int
    invalid: tuple[ChunkId, ...]
    removed: tuple[ChunkId, ...]
    messages: tuple[str, ...]

    @property
    def remaining(self) -> tuple[ChunkId, ...]:
        """Invalid entries still in the store (``desync verify`` then exits 5)."""
        gone = set(self.removed)
        return tuple(cid for cid in self.invalid if cid not in gone)

    @property
    def ok(self) -> bool:
        """No invalid entry is left in the store."""
        return not self.remaining


@dataclass(frozen=True)
class VerifyIndexResult:
    """A file that matches its index (:func:`~desync_core.api.verify_index`).

    Attributes:
        chunks: chunks hashed and found equal to the index's ids.
        size: bytes checked (the blob's length).
    """

    chunks: int
    size: int


@dataclass(frozen=True)
class PruneResult:
    """What :func:`~desync_core.api.prune` did.

    Attributes:
        deleted: chunks deleted (0 with ``dry_run``).
        kept: distinct chunk ids in the keep set (indexes and keep lists).
        dry_run: nothing was deleted.
        candidates: with ``dry_run``, the ids that would be deleted, sorted (what
            ``prune --dry-run`` prints); empty otherwise.
    """

    deleted: int
    kept: int
    dry_run: bool
    candidates: tuple[ChunkId, ...] = ()


@dataclass(frozen=True)
class CacheResult:
    """What :func:`~desync_core.api.cache` did.

    Attributes:
        wanted: distinct chunks of the indexes (less the ignored ones).
        copied: chunks copied into the cache (the others were there already).
    """

    wanted: int
    copied: int


@dataclass(frozen=True)
class ChopResult:
    """What :func:`~desync_core.api.chop` did.

    Attributes:
        chunks: chunks in the index (every one was hashed and matched).
        stored: chunks written to the store (the others were present or ignored).
    """

    chunks: int
    stored: int


@dataclass(frozen=True)
class InfoResult:
    """``desync info``'s statistics; :meth:`to_dict` gives its JSON object.

    Attributes:
        total: chunks in the index.
        unique: distinct chunks.
        in_store: distinct chunks present in the stores asked.
        in_seed: distinct chunks the seeds provide.
        in_cache: distinct chunks present in the cache.
        not_in_seed_nor_cache: distinct chunks neither seeds nor cache provide.
        size: blob size in bytes.
        dedup_size_not_in_seed: bytes of distinct chunks not in a seed.
        dedup_size_not_in_seed_nor_cache: bytes of distinct chunks in neither.
        dedup_size_not_in_seed_nor_cache_compressed: their stored size, from
            ``chunks_info`` (0 when unknown).
        chunk_size_min, chunk_size_avg, chunk_size_max: the index's chunker parameters.
    """

    total: int
    unique: int
    in_store: int
    in_seed: int
    in_cache: int
    not_in_seed_nor_cache: int
    size: int
    dedup_size_not_in_seed: int
    dedup_size_not_in_seed_nor_cache: int
    dedup_size_not_in_seed_nor_cache_compressed: int
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> InfoResult:
        """From ``desync info``'s JSON keys (``in-store``…)."""
        return cls(**{f.name: int(data[f.name.replace("_", "-")]) for f in fields(cls)})

    def to_dict(self) -> dict[str, int]:
        """``desync info``'s JSON object (same keys, same order)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk of :class:`InspectChunksResult`.

    Attributes:
        id: the chunk id.
        size: plain (uncompressed) size.
        stored_size: size of the chunk's file in the local store asked, when it differs
            from the plain size (compressed and/or encrypted); None otherwise.
    """

    id: ChunkId
    size: int
    stored_size: int | None = None


@dataclass(frozen=True)
class InspectChunksResult:
    """``desync inspect-chunks``: one :class:`ChunkInfo` per index chunk, in order.

    Attributes:
        chunks: the chunks.
        text: the JSON text the command prints (input of ``info(chunks_info=...)``).
    """

    chunks: tuple[ChunkInfo, ...]
    text: str

    def as_json(self) -> list[dict[str, Any]]:
        """The parsed JSON (``id``, ``uncompressed_size``, ``compressed_size``)."""
        import json

        data: list[dict[str, Any]] = json.loads(self.text)
        return data


@dataclass(frozen=True)
class TarResult:
    """What :func:`~desync_core.api.tar` wrote.

    Attributes:
        output: the catar or ``.caidx`` location written.
        index: the archive index (``index=True``), else None.
    """

    output: str
    index: Index | None = None


@dataclass(frozen=True)
class UntarResult:
    """What :func:`~desync_core.api.untar` wrote.

    Attributes:
        target: the directory (or, for ``gnu-tar``, the file) written.
        output_format: the archive format written (``disk``, ``gnu-tar``).
    """

    target: str
    output_format: str


@dataclass(frozen=True)
class MtreeEntry:
    """One entry of :func:`~desync_core.api.mtree`, in archive order.

    Attributes:
        path: path relative to the root, ``/``-separated, raw bytes (``b""``: root).
        type: ``dir``, ``file``, ``link``, ``block``, ``char``, ``fifo`` or ``socket``.
        mode: permission bits (``0o7777`` part of ``st_mode``).
        uid, gid: numeric owner.
        mtime_ns: modification time, ns since the epoch.
        size: file size (regular files; 0 otherwise).
        target: symlink target (links; ``b""`` otherwise).
        digest: hex digest of a regular file's content (``--digest`` algorithm), else
            None.
        line: the line ``desync mtree`` prints for this entry.
    """

    path: bytes
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    target: bytes
    digest: str | None
    line: str


class Server(Protocol):
    """A running chunk or index server (:func:`~desync_core.api.chunk_server`).

    It serves from background threads of this process until :meth:`close`; use it as
    a context manager to close it on leaving the block.
    """

    @property
    def urls(self) -> list[str]:
        """``http(s)://host:port`` of every listener."""

    @property
    def url(self) -> str:
        """The first listener's URL, with a trailing ``/`` (a store location)."""

    @property
    def port(self) -> int:
        """The first listener's port (the real one when port 0 was asked)."""

    def close(self) -> None:
        """Stop listening, finish running requests, close the upstream store."""

    def __enter__(self) -> Server: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


__all__ = [
    "CacheResult",
    "ChopResult",
    "ChunkId",
    "ChunkInfo",
    "InfoResult",
    "InspectChunksResult",
    "MtreeEntry",
    "PruneResult",
    "Server",
    "TarResult",
    "UntarResult",
    "VerifyIndexResult",
    "VerifyResult",
]
