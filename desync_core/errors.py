"""The error hierarchy of desync.

Every error a user can cause derives from :class:`DesyncError`; the CLI prints its
message on one line (``Error: <message>``) and exits with the class's ``exit_code``.
Anything else escaping a command is a bug and gets a traceback (exit 70).

Integrity errors are deliberately *not* store errors: a corrupt chunk must never be
swallowed by code that treats "missing" as recoverable.
"""

from __future__ import annotations

from typing import ClassVar


class DesyncError(Exception):
    """Base class of every error a user can cause."""

    exit_code: ClassVar[int] = 1


class UsageError(DesyncError):
    """Bad arguments, options, URLs or configuration."""

    exit_code: ClassVar[int] = 2


class ConfigError(UsageError):
    """The configuration file or a store option is invalid."""


class PluginError(DesyncError):
    """A plugin is missing, broken, or conflicts with another."""

    exit_code: ClassVar[int] = 3


class UnknownSchemeError(PluginError):
    """No installed plugin handles a location's URL scheme."""


class PluginConflictError(PluginError):
    """Two plugins claim the same scheme, format or command."""


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import."""


class StoreError(DesyncError):
    """A chunk or index store failed."""

    exit_code: ClassVar[int] = 4


class ChunkMissingError(StoreError, LookupError):
    """A chunk is not in the store."""

    def __init__(self, chunk_id: bytes, store: object = None) -> None:
        self.chunk_id = chunk_id
        self.store = store
        where = f" {store}" if store is not None else ""
        super().__init__(f"chunk {chunk_id.hex()} missing from store{where}")


class IndexNotFoundError(StoreError, FileNotFoundError):
    """An index file is not in the index store."""


class StoreReadOnlyError(StoreError):
    """A write was attempted on a store that does not support writing."""


class OperationNotSupportedError(StoreError):
    """The store cannot do this (e.g. prune an HTTP store)."""


class StorePermissionError(StoreError, PermissionError):
    """The store refused access (HTTP 401/403, EACCES, ...)."""


class StoreConnectionError(StoreError, ConnectionError):
    """A transient transport failure; the only kind of error that is retried."""


class StoreTimeoutError(StoreConnectionError, TimeoutError):
    """A request to a store timed out."""


class IntegrityError(DesyncError):
    """Data does not match its hash."""

    exit_code: ClassVar[int] = 5


class ChunkInvalidError(IntegrityError):
    """A chunk's content does not match its id, or cannot be decoded."""

    def __init__(
        self,
        chunk_id: bytes,
        actual_id: bytes | None = None,
        cause: str | None = None,
        *,
        store: object = None,
    ) -> None:
        self.chunk_id = chunk_id
        self.actual_id = actual_id
        self.store = store
        if actual_id is not None:
            msg = f"chunk id {chunk_id.hex()} does not match its hash {actual_id.hex()}"
        else:
            msg = f"invalid chunk {chunk_id.hex()}: {cause}"
        if store is not None:
            msg += f" (store {store})"
        super().__init__(msg)


class SeedInvalidError(IntegrityError):
    """A seed's data does not match its index."""


class FormatError(DesyncError):
    """A file is not in the expected format."""

    exit_code: ClassVar[int] = 6


class IndexFormatError(FormatError):
    """An index file (.caibx/.caidx) is malformed or truncated."""


class ArchiveFormatError(FormatError):
    """An archive (catar, tar) is malformed, truncated or hostile."""


class OperationCancelledError(DesyncError):
    """The operation was interrupted (SIGINT/SIGTERM)."""

    exit_code: ClassVar[int] = 130

    def __init__(self, message: str = "interrupted") -> None:
        super().__init__(message)


#: Exit code for a genuine bug (an exception that is not a DesyncError).
BUG_EXIT_CODE = 70


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps, outermost first: causes, contexts, a ``reason``
    attribute and exceptions among the arguments (requests → urllib3 → socket/ssl), so
    a transport can name the innermost cause (a refused connection, a TLS failure)."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        for nxt in (getattr(e, "reason", None), e.__cause__, e.__context__,
                    *(a for a in e.args if isinstance(a, BaseException))):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return out

__all__ = [
    "BUG_EXIT_CODE",
    "ArchiveFormatError",
    "ChunkInvalidError",
    "ChunkMissingError",
    "ConfigError",
    "DesyncError",
    "FormatError",
    "IndexFormatError",
    "IndexNotFoundError",
    "IntegrityError",
    "OperationCancelledError",
    "OperationNotSupportedError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "SeedInvalidError",
    "StoreConnectionError",
    "StoreError",
    "StorePermissionError",
    "StoreReadOnlyError",
    "StoreTimeoutError",
    "UnknownSchemeError",
    "UsageError",
    "exception_chain",
]
