"""The run context: configuration, global flags, and opening stores and indexes.

Everything that turns a location string into a store goes through here, so the config
file, command-line overrides, plugins, retries, verification and composition are
applied the same way by every command and by the Python API.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from desync_core.config import Config
from desync_core.digest import DEFAULT_DIGEST, Digest
from desync_core.errors import (
    ConfigError,
    DesyncError,
    StoreError,
    StoreReadOnlyError,
    UsageError,
)
from desync_core.location import (
    StoreLocation,
    index_options_key,
    parse_group,
    parse_location,
    split_index_location,
)
from desync_core.stores.base import (
    ChunkStore,
    IndexStore,
    PrunableChunkStore,
    WritableChunkStore,
    WritableIndexStore,
)
from desync_core.stores.options import StoreOptions
from desync_core.stores.wrappers import (
    CacheStore,
    ChunkReader,
    FailoverGroup,
    RetryingStore,
    RouterStore,
    VerifyingStore,
    call_with_retries,
)

if TYPE_CHECKING:
    # numpy (behind Index) costs ~0.1 s to import; commands that never read an index
    # (servers, tar, config) should not pay for it.
    from desync_core.index import Index


#: The Context whose ``open_*`` call is running a store factory right now.
_OPENING: ContextVar[Context | None] = ContextVar("desync_opening_context", default=None)


def opening_context() -> Context | None:
    """The :class:`Context` opening the store whose factory is running (None outside).

    Store factories receive only a location and options; one that needs its plugin's
    config section (credentials) reads it with ``opening_context().config_entry(...)``,
    so the file is the one the command loaded (``--config``).
    """
    return _OPENING.get()


def _instantiate(factory: Any, location: StoreLocation, options: StoreOptions,
                 ctx: Context | None = None) -> Any:
    token = _OPENING.set(ctx)
    try:
        return getattr(factory, "from_location", factory)(location, options)
    finally:
        _OPENING.reset(token)


@dataclass
class Context:
    """Global settings of one run and the factories that depend on them.

    Attributes:
        config: the configuration file.
        digest: the ``--digest`` algorithm (used when making indexes).
        digest_explicit: ``--digest`` was given on the command line.
        overrides: store options given as command-line flags; they beat the config.
        concurrency: ``-n``, applied to every store.
        cache_repair: ``--cache-repair`` (replace invalid chunks found in a cache).
    """

    config: Config = field(default_factory=Config)
    digest: Digest = DEFAULT_DIGEST
    digest_explicit: bool = False
    verbose: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 10
    cache_repair: bool = True

    # -- options ----------------------------------------------------------------------

    def store_options(self, location: str) -> StoreOptions:
        """Options for a store location: config entry, then command-line overrides."""
        opts = self.config.options_for(location).with_(**self.overrides, n=self.concurrency)
        opts.validate(location)
        return opts

    def index_store_options(self, location: str) -> StoreOptions:
        """Options for an index location (looked up with the part before the last /)."""
        key = index_options_key(location)
        # Any encryption setting is refused before the options are validated (desync:
        # indexes are always plain; an incomplete setting must not report a key error).
        raw = self.config.options_for(key).with_(**self.overrides)
        if raw.encryption or raw.encryption_key or raw.encryption_algorithm:
            raise ConfigError(
                f'store options for "{location}": encryption is not supported by index stores'
            )
        return self.store_options(key)

    def config_entry(self, section: str, location: str) -> dict[str, Any] | None:
        """The entry of a plugin's config section (``s3-credentials``…) whose glob key
        matches ``location``, checked by the validator the plugin registered.

        Raises:
            ConfigError: the section is malformed, several keys match, or the entry
                is invalid.
        """
        from desync_core.plugins import get_registries

        entry = self.config.section_entry(section, location)
        sections = get_registries().config_sections
        if entry is not None and section in sections:
            sections.get(section).load()(entry, f"{self.config.path}: {section}")
        return entry

    # -- chunk stores -------------------------------------------------------------------

    def open_chunk_store(self, location: str | StoreLocation) -> ChunkStore:
        """Open the transport for one location (no retries or verification)."""
        from desync_core.plugins import get_registries

        loc = parse_location(location) if isinstance(location, str) else location
        reg = get_registries().chunk_stores.get(loc.scheme, what=loc.raw)
        return _instantiate(reg.load(), loc, self.store_options(loc.raw), self)

    def _reader(self, loc: StoreLocation, digest: Digest, max_chunk_size: int | None) -> Any:
        store = self.open_chunk_store(loc)
        retrying = RetryingStore(store, store.options.error_retry,
                                 store.options.error_retry_base_interval)
        return VerifyingStore(retrying, digest, skip_verify=store.options.skip_verify,
                              max_size=max_chunk_size)

    def open_reader(self, spec: str, digest: Digest | None = None, *,
                    max_chunk_size: int | None = None) -> ChunkReader:
        """Open one ``-s`` value (a store or a failover group ``A|B``), verified.

        ``max_chunk_size`` (the index's largest chunk) bounds what a chunk may decode
        to: a hostile chunk file fails there instead of inflating further.
        """
        digest = digest or self.digest
        members = [self._reader(loc, digest, max_chunk_size) for loc in parse_group(spec)]
        return members[0] if len(members) == 1 else FailoverGroup(members)

    def open_source(self, stores: list[str], cache: str | None = None,
                    digest: Digest | None = None, *,
                    max_chunk_size: int | None = None) -> ChunkReader:
        """The store chain of ``-s S1 -s S2 … [-c CACHE]``: a router, behind a cache.

        Readers that have an index pass its ``chunk_size_max`` as ``max_chunk_size``
        (see :meth:`open_reader`).
        """
        if not stores:
            raise UsageError("no store provided")
        digest = digest or self.digest
        readers = [self.open_reader(s, digest, max_chunk_size=max_chunk_size) for s in stores]
        source: ChunkReader = readers[0] if len(readers) == 1 else RouterStore(readers)
        if cache:
            source = CacheStore(source, self.open_cache(cache, digest,
                                                        max_chunk_size=max_chunk_size),
                                repair=self.cache_repair)
        return source

    def open_cache(self, location: str, digest: Digest | None = None, *,
                   max_chunk_size: int | None = None) -> Any:
        """A writable cache store, verified on read; local caches refresh mtimes."""
        store = self.open_chunk_store(location)
        if not isinstance(store, WritableChunkStore):
            raise StoreReadOnlyError(f"store '{location}' does not support writing")
        if hasattr(store, "touch_on_read"):
            store.touch_on_read = True
        retrying = RetryingStore(store, store.options.error_retry,
                                 store.options.error_retry_base_interval)
        return VerifyingStore(retrying, digest or self.digest,
                              skip_verify=store.options.skip_verify, max_size=max_chunk_size)

    def open_writable(self, location: str) -> RetryingStore:
        """A store to write chunks to (``make -s``, ``chop -s``, ``cache -c``)."""
        if "|" in location:
            raise UsageError(f"cannot write to a failover group: {location}")
        store = self.open_chunk_store(location)
        if not isinstance(store, WritableChunkStore):
            raise StoreReadOnlyError(f"store '{location}' does not support writing")
        return RetryingStore(store, store.options.error_retry,
                             store.options.error_retry_base_interval)

    def open_prunable(self, location: str) -> PrunableChunkStore:
        """A store that can list and delete chunks (``prune``)."""
        store = self.open_chunk_store(location)
        if not isinstance(store, PrunableChunkStore):
            raise StoreError(f"store '{location}' does not support pruning")
        return store

    # -- indexes -------------------------------------------------------------------------

    def open_index_store(self, location: str | StoreLocation) -> IndexStore:
        """The index store for a location that names a directory-like place."""
        from desync_core.plugins import get_registries

        loc = parse_location(location) if isinstance(location, str) else location
        reg = get_registries().index_stores.get(loc.scheme, what=loc.raw)
        return _instantiate(reg.load(), loc, self.index_store_options(loc.raw), self)

    def read_index_bytes(self, location: str) -> bytes:
        """The raw bytes of an index location (``-`` reads stdin).

        Every index is read header first and bounded by what it allows
        (:func:`desync_core.index.read_index_stream`): a blob or ``/dev/zero`` given as
        an index fails after 64 bytes; from a remote index store that streams
        (``IndexStore.iter_index``) the download is abandoned there.
        """
        from desync_core.index import PieceReader, read_index_file, read_index_stream
        from desync_core.stores.base import check_index_name

        if location == "-":
            return read_index_stream(sys.stdin.buffer, "stdin")
        base, name = split_index_location(location)
        if base.is_local:
            return read_index_file(os.path.join(base.path, check_index_name(name)), location)
        store = self.open_index_store(base)

        def bounded_read(name: str) -> bytes:
            # Header first, each table item as it arrives: the transfer is abandoned at
            # the first thing that cannot be an index (stores that stream, iter_index).
            pieces = store.iter_index(name)
            try:
                return read_index_stream(PieceReader(pieces), location)  # type: ignore[arg-type]
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

        try:
            return call_with_retries(bounded_read, name, attempts=store.options.error_retry,
                                     base_interval=store.options.error_retry_base_interval)
        finally:
            store.close()

    def read_index(self, location: str) -> Index:
        """Read and validate an index from a file, ``-``, or a remote index store."""
        from desync_core.index import Index

        index = Index.from_bytes(self.read_index_bytes(location),
                                 "stdin" if location == "-" else location)
        if self.digest_explicit and index.digest != self.digest:
            print(
                f"Warning: {location} uses {index.digest.name} chunk ids, not "
                f"{self.digest.name}; using {index.digest.name}",
                file=sys.stderr,
            )
        return index

    def write_index(self, location: str, index: Index) -> None:
        """Write an index atomically to a file, ``-`` (stdout) or a remote index store."""
        data = index.to_bytes()
        if location == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        base, name = split_index_location(location)
        if base.is_local and not os.path.isdir(base.path):
            raise StoreError(f"cannot write {location}: directory {base.path} does not exist")
        store = self.open_index_store(base)
        try:
            if not isinstance(store, WritableIndexStore):
                raise StoreReadOnlyError(f"index store '{base}' does not support writing")
            call_with_retries(store.store_index, name, data, attempts=store.options.error_retry,
                              base_interval=store.options.error_retry_base_interval)
        finally:
            store.close()


def error_text(exc: BaseException) -> str:
    """One line describing an error, for messages."""
    if isinstance(exc, DesyncError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Context", "error_text", "opening_context"]
