"""The Python API: every command of the CLI as a function a program can import and call.

Example::

    from desync_core import api

    index = api.make("disk.img", "disk.caibx", store="/srv/store")
    api.extract("disk.caibx", "copy.img", stores=["/srv/store"])
    for chunk in api.read_index("disk.caibx"):
        print(chunk.start, chunk.size, chunk.id.hex())
    print(api.verify("/srv/store").ok)

Every function accepts the same locations as the CLI (local paths, ``-``, and any URL
scheme an installed plugin handles) and reads the configuration file like the CLI
does unless a :class:`~desync_core.context.Context` is passed (``ctx=``). Results are
frozen dataclasses (:mod:`desync_core.api.results`); errors are the core's
:class:`~desync_core.errors.DesyncError` subclasses, never ``SystemExit``. Each call
runs the same ``desync_core.ops`` function as its command. ``docs/python-api.md``
has a tested example of each.

=================  ===========================================================
command            call
=================  ===========================================================
make               :func:`make` → Index
extract            :func:`extract` → ExtractStats
cat                :func:`cat` → bytes written
tar / untar        :func:`tar` → TarResult, :func:`untar` → UntarResult
mtree              :func:`mtree` → iterator of MtreeEntry
verify             :func:`verify` → VerifyResult
verify-index       :func:`verify_index` → VerifyIndexResult
prune              :func:`prune` → PruneResult
cache              :func:`cache` → CacheResult
chop               :func:`chop` → ChopResult
info               :func:`info` → InfoResult
inspect-chunks     :func:`inspect_chunks` → InspectChunksResult
chunk-server       :func:`chunk_server` → Server (plugin desync-store-http)
index-server       :func:`index_server` → Server (plugin desync-store-http)
=================  ===========================================================
"""

from __future__ import annotations

from desync_core.api import results as _results
from desync_core.api._base import (
    cat,
    chunk_boundaries,
    context,
    extract,
    make,
    open_store,
    read_index,
    write_index,
)
from desync_core.api.indexes import info, inspect_chunks, verify_index
from desync_core.api.results import *  # noqa: F403 -- the result types, named once in their __all__
from desync_core.api.servers import chunk_server, index_server
from desync_core.api.stores import cache, chop, prune, verify
from desync_core.api.trees import mtree, tar, untar

__all__ = [
    *_results.__all__,
    "cache",
    "cat",
    "chop",
    "chunk_boundaries",
    "chunk_server",
    "context",
    "extract",
    "index_server",
    "info",
    "inspect_chunks",
    "make",
    "mtree",
    "open_store",
    "prune",
    "read_index",
    "tar",
    "untar",
    "verify",
    "verify_index",
    "write_index",
]
