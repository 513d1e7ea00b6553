"""Test support shipped with desync-core, for the core and for plugins.

``desync_core.testing.contracts`` holds the store contract suites; plugins subclass
them. Requires the ``desync-core[testing]`` extra (pytest).
"""

from __future__ import annotations

from desync_core.testing.contracts import (
    ArchiveFormatContract,
    ChunkStoreContract,
    IndexStoreContract,
    LocalDirectoryRaw,
    PrunableChunkStoreContract,
    WritableChunkStoreContract,
    local_get_raw,
    local_put_raw,
    open_chunk_store,
    open_index_store,
    sample_chunk,
)
from desync_core.testing.encryption import (
    ENCRYPTION_EXTENSIONS,
    ENCRYPTION_OPTION_SETS,
    OTHER_ENCRYPTION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_KEY_ID,
    encrypted_context,
    write_store_options,
)

__all__ = [
    "ENCRYPTION_EXTENSIONS",
    "ENCRYPTION_OPTION_SETS",
    "OTHER_ENCRYPTION_KEY",
    "TEST_ENCRYPTION_KEY",
    "TEST_KEY_ID",
    "ArchiveFormatContract",
    "ChunkStoreContract",
    "IndexStoreContract",
    "LocalDirectoryRaw",
    "PrunableChunkStoreContract",
    "WritableChunkStoreContract",
    "encrypted_context",
    "local_get_raw",
    "local_put_raw",
    "open_chunk_store",
    "open_index_store",
    "sample_chunk",
    "write_store_options",
]
