"""A chunk store keeping every chunk as ``<dir>/<id><ext>`` in one flat directory.

Only the five byte-level primitives are implemented; chunk semantics (key layout,
encoding, listing, pruning) come from ``KeyValueChunkStore``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from desync_core.plugin_api import KeyValueChunkStore, StoreLocation, StoreOptions


class FlatChunkStore(KeyValueChunkStore):
    """``flat:///abs/dir``: chunk files directly in ``/abs/dir``."""

    # Capabilities (docs/plugin-hooks.md): on this machine, safe in forked workers,
    # and its chunk files may be read directly by extract's batched fast path.
    is_local = True
    fork_safe = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.directory = location.url.path or "/"

    def _path(self, key: str) -> str:
        # "abcd/abcd….cacnk" -> "<dir>/abcd….cacnk"
        return os.path.join(self.directory, key.partition("/")[2])

    def local_chunk_file(self, hex_id: str) -> str | None:
        return f"{self.directory}/{hex_id}{self.codec.extension}"

    def _read(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def _write(self, key: str, data: bytes | bytearray | memoryview) -> None:
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(key))
        except BaseException:
            os.unlink(tmp)
            raise

    def _exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def _list(self) -> Iterator[str]:
        for name in sorted(os.listdir(self.directory)):
            if not name.startswith("."):
                yield f"{name[:4]}/{name}"

    def _delete(self, key: str) -> None:
        os.unlink(self._path(key))
