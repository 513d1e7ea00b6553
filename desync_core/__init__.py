"""desync for Python: content-defined chunking and delta distribution, casync-compatible.

The public API is re-exported here; see the README for examples.
"""

from __future__ import annotations

__version__ = "0.1.0"

from desync_core.errors import (  # noqa: E402
    ChunkInvalidError,
    ChunkMissingError,
    DesyncError,
    IndexFormatError,
    StoreError,
    UsageError,
)
from desync_core.markers import hookimpl  # noqa: E402

__all__ = [
    "ChunkInvalidError",
    "ChunkMissingError",
    "DesyncError",
    "IndexFormatError",
    "StoreError",
    "UsageError",
    "__version__",
    "hookimpl",
]
