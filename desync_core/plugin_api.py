"""The public surface for plugin authors: everything a plugin may import from the core.

A plugin (in this repository or a third party's) imports from here and from
:mod:`desync_core.testing` (contract suites, fixtures) only; the rest of the core's
layout may change between releases, this module does not lose names. A test of the
core fails when a plugin package in this repository imports anything else.

Names are resolved lazily (PEP 562): importing this module costs nothing at
``desync --help``, and a plugin's entry-point module may import hook markers and
registries from it without pulling in numpy, zstandard or the stores.

What is here, by job (``docs/plugin-hooks.md`` describes each):

* hooks: :data:`hookimpl`, :data:`hookspec`, :data:`PROJECT`; registries
  (:class:`Registry`, :class:`CommandRegistry`, :class:`Command`,
  :func:`get_registries`);
* stores: the bases by capability (:class:`ChunkStore`, :class:`WritableChunkStore`,
  :class:`PrunableChunkStore`, the key-value bases
  :class:`ReadOnlyKeyValueChunkStore`, :class:`WritableKeyValueChunkStore`,
  :class:`KeyValueChunkStore`, :class:`IndexStore`, :class:`WritableIndexStore`), key
  helpers, :func:`os_error`; :class:`StoreOptions`, :func:`environment_ca_bundle`;
  :func:`call_with_retries`;
  :class:`VerifyingStore`;
* chunks: :class:`Chunk`, :class:`ChunkCodec`, :func:`compress`, :func:`decompress`,
  :data:`MAX_CHUNK_SIZE`; digests; :class:`Index`; random access to a blob
  (:class:`ChunkLayout`, :class:`ChunkCache`);
* errors: the whole :mod:`desync_core.errors` hierarchy;
* locations and configuration: :class:`StoreLocation`, :func:`parse_location`,
  :func:`split_index_location`, :class:`Context`, :func:`load_config`,
  :func:`glob_match`, :func:`location_matches`;
* commands and servers: the shared flag helpers (``add_store_flags``…),
  :func:`validate_server_flags`, :func:`error_text`, :func:`run_cli`;
* archive formats: :class:`ArchiveFormat`, :class:`ArchiveOptions`, :class:`Node`,
  the catar encoder/decoder pieces and the xattr helpers; an archive's entry table
  (:func:`build_tree`, :class:`TreeEntry`, :func:`tree_lookup`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers (at run time: __getattr__)
    from desync_core.archive.base import (  # noqa: F401
        DIR_END,
        ArchiveFormat,
        ArchiveOptions,
        DirEnd,
        Node,
        NodeStream,
        Payload,
        display,
    )
    from desync_core.archive.catar import (  # noqa: F401
        CatarDecoder,
        write_blocks,
    )
    from desync_core.archive.xattrs import (  # noqa: F401
        XATTR_ACL_ACCESS,
        XATTR_ACL_DEFAULT,
        XATTR_CAPABILITY,
        XATTR_SELINUX,
        acl_access_xattr,
        acl_default_xattr,
        classify,
        parse_acl_xattr,
    )
    from desync_core.archivetree import (  # noqa: F401
        TreeEntry,
        build_tree,
    )
    from desync_core.archivetree import lookup as tree_lookup  # noqa: F401
    from desync_core.batchhash import chunk_digests  # noqa: F401
    from desync_core.cli import run as run_cli  # noqa: F401
    from desync_core.cli.options import (  # noqa: F401
        ListAction,
        add_bool,
        add_cache,
        add_server_flags,
        add_store_flags,
        add_store_list,
        add_store_single,
        validate_server_flags,
    )
    from desync_core.config import (  # noqa: F401
        Config,
        glob_match,
        load_config,
        location_matches,
    )
    from desync_core.context import (  # noqa: F401
        Context,
        error_text,
        opening_context,
    )
    from desync_core.digest import (  # noqa: F401
        SHA256,
        SHA512_256,
        Digest,
    )
    from desync_core.errors import (  # noqa: F401
        BUG_EXIT_CODE,
        ArchiveFormatError,
        ChunkInvalidError,
        ChunkMissingError,
        ConfigError,
        DesyncError,
        FormatError,
        IndexFormatError,
        IndexNotFoundError,
        IntegrityError,
        OperationCancelledError,
        OperationNotSupportedError,
        PluginConflictError,
        PluginError,
        PluginLoadError,
        SeedInvalidError,
        StoreConnectionError,
        StoreError,
        StorePermissionError,
        StoreReadOnlyError,
        StoreTimeoutError,
        UnknownSchemeError,
        UsageError,
        exception_chain,
    )
    from desync_core.index import (  # noqa: F401
        Index,
        read_index_file,
        read_index_stream,
    )
    from desync_core.location import (  # noqa: F401
        StoreLocation,
        index_options_key,
        parse_location,
        split_index_location,
    )
    from desync_core.markers import (  # noqa: F401
        PROJECT,
        hookimpl,
        hookspec,
    )
    from desync_core.plugins import (  # noqa: F401
        get_registries,
    )
    from desync_core.rangeread import (  # noqa: F401
        ChunkCache,
        ChunkLayout,
    )
    from desync_core.registry import (  # noqa: F401
        Command,
        CommandRegistry,
        Registry,
    )
    from desync_core.storefile import read_store_file  # noqa: F401
    from desync_core.stores.base import (  # noqa: F401
        ChunkStore,
        IndexStore,
        KeyValueChunkStore,
        PrunableChunkStore,
        ReadOnlyKeyValueChunkStore,
        WritableChunkStore,
        WritableIndexStore,
        WritableKeyValueChunkStore,
        check_index_name,
        chunk_key,
        os_error,
        parse_chunk_key,
    )
    from desync_core.stores.chunk import (  # noqa: F401
        COMPRESSED,
        MAX_CHUNK_SIZE,
        UNCOMPRESSED,
        Chunk,
        ChunkCodec,
        compress,
        decompress,
    )
    from desync_core.stores.options import (  # noqa: F401
        StoreOptions,
        environment_ca_bundle,
    )
    from desync_core.stores.swappable import (  # noqa: F401
        SwappableStore,
    )
    from desync_core.stores.wrappers import (  # noqa: F401
        VerifyingStore,
        call_with_retries,
    )

_EXPORTS: dict[str, str] = {
    # hooks and registries
    "PROJECT": "desync_core.markers",
    "hookimpl": "desync_core.markers",
    "hookspec": "desync_core.markers",
    "Command": "desync_core.registry",
    "CommandRegistry": "desync_core.registry",
    "Registry": "desync_core.registry",
    "get_registries": "desync_core.plugins",
    # stores
    "ChunkStore": "desync_core.stores.base",
    "IndexStore": "desync_core.stores.base",
    "KeyValueChunkStore": "desync_core.stores.base",
    "PrunableChunkStore": "desync_core.stores.base",
    "ReadOnlyKeyValueChunkStore": "desync_core.stores.base",
    "WritableChunkStore": "desync_core.stores.base",
    "WritableIndexStore": "desync_core.stores.base",
    "WritableKeyValueChunkStore": "desync_core.stores.base",
    "check_index_name": "desync_core.stores.base",
    "chunk_key": "desync_core.stores.base",
    "os_error": "desync_core.stores.base",
    "parse_chunk_key": "desync_core.stores.base",
    "StoreOptions": "desync_core.stores.options",
    "environment_ca_bundle": "desync_core.stores.options",
    "VerifyingStore": "desync_core.stores.wrappers",
    "SwappableStore": "desync_core.stores.swappable",
    "call_with_retries": "desync_core.stores.wrappers",
    # chunks, digests, indexes
    "COMPRESSED": "desync_core.stores.chunk",
    "UNCOMPRESSED": "desync_core.stores.chunk",
    "MAX_CHUNK_SIZE": "desync_core.stores.chunk",
    "Chunk": "desync_core.stores.chunk",
    "ChunkCodec": "desync_core.stores.chunk",
    "compress": "desync_core.stores.chunk",
    "decompress": "desync_core.stores.chunk",
    "Digest": "desync_core.digest",
    "SHA256": "desync_core.digest",
    "SHA512_256": "desync_core.digest",
    "Index": "desync_core.index",
    "chunk_digests": "desync_core.batchhash",
    "read_index_stream": "desync_core.index",
    "read_index_file": "desync_core.index",
    # random access to a blob
    "ChunkCache": "desync_core.rangeread",
    "ChunkLayout": "desync_core.rangeread",
    # errors
    **{name: "desync_core.errors" for name in (
        "BUG_EXIT_CODE", "ArchiveFormatError", "ChunkInvalidError", "ChunkMissingError",
        "ConfigError", "DesyncError", "FormatError", "IndexFormatError",
        "IndexNotFoundError", "IntegrityError", "OperationCancelledError",
        "OperationNotSupportedError", "PluginConflictError", "PluginError",
        "PluginLoadError", "SeedInvalidError", "StoreConnectionError", "StoreError",
        "StorePermissionError", "StoreReadOnlyError", "StoreTimeoutError",
        "UnknownSchemeError", "UsageError", "exception_chain")},
    # locations and configuration
    "StoreLocation": "desync_core.location",
    "parse_location": "desync_core.location",
    "split_index_location": "desync_core.location",
    "index_options_key": "desync_core.location",
    "Config": "desync_core.config",
    "glob_match": "desync_core.config",
    "load_config": "desync_core.config",
    "location_matches": "desync_core.config",
    "Context": "desync_core.context",
    "error_text": "desync_core.context",
    "read_store_file": "desync_core.storefile",
    "opening_context": "desync_core.context",
    # commands and servers
    "ListAction": "desync_core.cli.options",
    "add_bool": "desync_core.cli.options",
    "add_cache": "desync_core.cli.options",
    "add_server_flags": "desync_core.cli.options",
    "add_store_flags": "desync_core.cli.options",
    "add_store_list": "desync_core.cli.options",
    "add_store_single": "desync_core.cli.options",
    "validate_server_flags": "desync_core.cli.options",
    # archive formats
    "DIR_END": "desync_core.archive.base",
    "ArchiveFormat": "desync_core.archive.base",
    "ArchiveOptions": "desync_core.archive.base",
    "DirEnd": "desync_core.archive.base",
    "Node": "desync_core.archive.base",
    "NodeStream": "desync_core.archive.base",
    "Payload": "desync_core.archive.base",
    "display": "desync_core.archive.base",
    "CatarDecoder": "desync_core.archive.catar",
    "write_blocks": "desync_core.archive.catar",
    **{name: "desync_core.archive.xattrs" for name in (
        "XATTR_ACL_ACCESS", "XATTR_ACL_DEFAULT", "XATTR_CAPABILITY", "XATTR_SELINUX",
        "acl_access_xattr", "acl_default_xattr", "classify", "parse_acl_xattr")},
    "TreeEntry": "desync_core.archivetree",
    "build_tree": "desync_core.archivetree",
}

#: ``run_cli(argv) -> int``: run a ``desync`` command line in this process.
_ALIASES = {"run_cli": ("desync_core.cli", "run"),
            #: ``tree_lookup(root, path, follow=True)``: an entry of a built tree.
            "tree_lookup": ("desync_core.archivetree", "lookup")}


def __getattr__(name: str) -> Any:
    alias = _ALIASES.get(name)
    if alias is not None:
        value = getattr(importlib.import_module(alias[0]), alias[1])
    else:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted([*_EXPORTS, *_ALIASES])
