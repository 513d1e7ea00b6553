"""desync for Python: content-defined chunking and delta distribution, casync-compatible.

The public API is re-exported here; see the README for examples.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: True in the ``desync`` command-line process, which allows process-wide start-up
#: shortcuts that a library must not take (see ``chunker._load_numba_kernel``).
running_cli = False

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
