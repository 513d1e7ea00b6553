"""The local directory chunk store and index store (``store.md`` §2).

Writes go to a temporary file in the chunk's prefix directory (``.tmp-cacnk.<n>``),
then are renamed into place, so a final name never holds a partial chunk. Temporary
files are ignored by reads, verify and prune (prune deletes stale ones).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from desync_core.errors import (
    StoreError,
    StorePermissionError,
)
from desync_core.location import StoreLocation
from desync_core.stores.base import KeyValueChunkStore, WritableIndexStore, check_index_name
from desync_core.stores.options import StoreOptions

TMP_PREFIX = ".tmp-cacnk"


def atomic_write(path: str, data: bytes | bytearray | memoryview, mode: int = 0o644) -> None:
    """Write ``path`` via a temporary file in the same directory and a rename."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory or ".", f".{name}.{secrets.randbits(32)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalChunkStore(KeyValueChunkStore):
    """Chunks in a local directory, casync layout: ``<base>/<4hex>/<id>.cacnk``."""

    is_local = True
    fork_safe = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = location.path
        #: Set on cache stores: a read refreshes the chunk's mtime (age-based cleanup).
        self.touch_on_read = False

    def local_chunk_file(self, hex_id: str) -> str | None:
        if self.touch_on_read:
            return None  # reads must go through _read (it refreshes the mtime)
        return f"{self.base}/{hex_id[:4]}/{hex_id}{self.codec.extension}"

    def _path(self, key: str) -> str:
        return os.path.join(self.base, key)

    def _read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise StorePermissionError(f"reading {path}: {exc.strerror}") from exc
        except IsADirectoryError as exc:
            raise StoreError(f"reading {path}: is a directory") from exc
        except OSError as exc:
            raise StoreError(f"reading {path}: {exc.strerror or exc}") from exc
        if self.touch_on_read:
            with contextlib.suppress(OSError):
                os.utime(path)
        return data

    def _write(self, key: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}.{secrets.randbits(32)}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                # Like casync, a missing store (or prefix) directory is created.
                os.makedirs(directory, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except StoreError:
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, PermissionError):
                raise StorePermissionError(f"writing {path}: {exc.strerror}") from exc
            raise StoreError(f"writing {path}: {exc.strerror or exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def _list(self) -> Iterator[str]:
        try:
            prefixes = sorted(os.scandir(self.base), key=lambda e: e.name)
        except FileNotFoundError:
            raise StoreError(f"store {self.base} does not exist") from None
        except NotADirectoryError:
            raise StoreError(f"store {self.base} is not a directory") from None
        except OSError as exc:
            raise StoreError(f"listing store {self.base}: {exc.strerror or exc}") from exc
        for prefix in prefixes:
            if not prefix.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(prefix.path))
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                raise StoreError(f"listing {prefix.path}: {exc.strerror or exc}") from exc
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    yield f"{prefix.name}/{entry.name}"

    def _delete(self, key: str) -> None:
        os.unlink(self._path(key))

    def chunk_path(self, chunk_id: bytes) -> str:
        """The file holding a chunk (it may not exist)."""
        return self._path(self.key(chunk_id))

    def remove_stale_temp_files(self) -> int:
        """Delete leftover ``.tmp-cacnk*`` files; returns how many."""
        removed = 0
        for key in self._list():
            if key.partition("/")[2].startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    self._delete(key)
                    removed += 1
        return removed

    def prune(self, keep: set[bytes]) -> int:
        self.remove_stale_temp_files()
        return super().prune(keep)


class LocalIndexStore(WritableIndexStore):
    """Index files in a local directory."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = location.path

    def _path(self, name: str) -> str:
        return os.path.join(self.base, check_index_name(name))

    def get_index(self, name: str) -> bytes:
        """The index file, read header first and bounded by what the header allows
        (:func:`~desync_core.index.read_index_file`): a blob stored under an index
        name fails after its header instead of being read whole."""
        from desync_core.index import read_index_file

        return read_index_file(self._path(name))

    def has_index(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def store_index(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if not os.path.isdir(self.base):
            raise StoreError(f"cannot write index {path}: directory {self.base} does not exist")
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise StoreError(f"writing index {path}: {exc.strerror or exc}") from exc


__all__ = ["LocalChunkStore", "LocalIndexStore", "atomic_write"]
