"""The ``desync`` fsspec filesystem: indexes as seekable read-only files, without FUSE.

Registered under fsspec's ``fsspec.specs`` entry point, so after installing the core
(with the ``fsspec`` extra)::

    import fsspec

    fs = fsspec.filesystem("desync", stores=["/srv/store"], cache="/var/cache/desync")
    with fs.open("disk.caibx") as f:   # the blob of a blob index
        f.seek(1 << 20)
        header = f.read(512)           # fetches only the chunks under these bytes
    fs.ls("tree.caidx/sub")            # an archive index is a directory tree
    with fs.open("tree.caidx/sub/data.csv") as f:
        ...

Paths are index locations as the CLI takes them (local paths, or any remote index
location an installed plugin reads, e.g. ``http://host/indexes/x.caibx``), optionally
prefixed with ``desync://``; below a ``.caidx`` come paths inside its archive. Stores
are ``-s`` values (local, remote, failover groups ``A|B``) and ``cache`` a ``-c`` value,
opened through the core's :class:`~desync_core.context.Context` like the CLI does
(config file, retries, hash verification of every chunk).

Reads go through :class:`~desync_core.rangeread.RangeReader`: a read fetches only the
chunks it touches. An archive's entry table is built the first time one of its paths
is used, by decoding its metadata once (file contents are skipped), and kept for the
life of the filesystem instance, as are opened indexes and store connections
(:meth:`DesyncFileSystem.close` releases them).
"""

from __future__ import annotations

import datetime
import errno
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import stringify_path

from desync_core.archivetree import TreeEntry, build_tree, lookup
from desync_core.config import load_config
from desync_core.context import Context
from desync_core.index import Index
from desync_core.rangeread import DEFAULT_CACHE_BYTES, RangeReader

#: What names an archive index (the part of a path after it is inside the archive).
ARCHIVE_SUFFIX = ".caidx"
#: Index files a local directory listing shows.
INDEX_SUFFIXES = (".caibx", ARCHIVE_SUFFIX)


def _read_only(path: str) -> NoReturn:
    raise OSError(errno.EROFS, "the desync filesystem is read-only", path)


def _not_found(path: str) -> NoReturn:
    raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)


@dataclass
class _Opened:
    """An index with its store chain and range reader (one per index location)."""

    index: Index
    source: Any
    reader: RangeReader


class DesyncFileSystem(AbstractFileSystem):  # fsspec has no type information
    """Read-only fsspec filesystem over desync/casync indexes and their stores.

    Args:
        stores: store locations the chunks are read from, asked in order (``-s``).
        store: one store location (added after ``stores``).
        cache: a writable cache store location (``-c``).
        config: the desync config file (default ``~/.config/desync/config.json``).
        concurrency: chunks fetched in parallel by one read (``-n``).
        cache_bytes: bound of each index's in-memory LRU of decoded chunks.
        ctx: a ready :class:`~desync_core.context.Context` (instead of ``config`` and
            ``concurrency``).
    """

    protocol = "desync"
    root_marker = ""

    def __init__(self, stores: list[str] | tuple[str, ...] | str | None = None, *,
                 store: str | None = None, cache: str | None = None,
                 config: str | None = None, concurrency: int = 10,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, ctx: Context | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ctx is None:  # what the CLI and the Python API start from
            ctx = Context(config=load_config(config), concurrency=concurrency)
        self.ctx = ctx
        spec = [stores] if isinstance(stores, str) else list(stores or [])
        self.stores: list[str] = spec + ([store] if store else [])
        self.cache: str | None = cache
        self.cache_bytes = cache_bytes
        self._lock = threading.RLock()
        self._indexes: dict[str, tuple[tuple[int, int, int] | None, Index]] = {}
        self._opened: dict[str, _Opened] = {}
        self._trees: dict[str, TreeEntry] = {}
        self._retired: list[_Opened] = []

    # -- paths ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        for prefix in ("desync://", "desync::"):
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        stripped = path.rstrip("/")
        return stripped or ("/" if path.startswith("/") else "")

    @staticmethod
    def split(path: str) -> tuple[str, str | None]:
        """``(index location, path inside the archive)``; the second is None unless
        ``path`` is or lies below a ``.caidx`` (then ``""`` for the archive's root)."""
        parts = path.split("/")
        for i, part in enumerate(parts):
            if part.endswith(ARCHIVE_SUFFIX) and part != ARCHIVE_SUFFIX:
                return "/".join(parts[:i + 1]), "/".join(p for p in parts[i + 1:] if p)
        return path, None

    # -- opened indexes --------------------------------------------------------------------

    @staticmethod
    def _signature(location: str) -> tuple[int, int, int] | None:
        """What identifies a local index file's version (None for remote locations)."""
        if "://" in location:
            return None
        try:
            st = os.stat(location or ".")
        except (FileNotFoundError, NotADirectoryError):
            _not_found(location)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not an index", location)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _index(self, location: str) -> Index:
        """The index at ``location``, read again if the local file was replaced."""
        with self._lock:
            signature = self._signature(location)
            cached = self._indexes.get(location)
            if cached is not None and cached[0] == signature:
                return cached[1]
            if cached is not None:
                self._forget(location)
            index = self.ctx.read_index(location)
            self._indexes[location] = (signature, index)
            return index

    def _open_index(self, location: str) -> _Opened:
        with self._lock:
            index = self._index(location)
            opened = self._opened.get(location)
            if opened is None:
                source = self.ctx.open_source(self.stores, self.cache, index.digest,
                                              max_chunk_size=index.chunk_size_max)
                reader = RangeReader(index, source, cache_bytes=self.cache_bytes,
                                     concurrency=self.ctx.concurrency)
                opened = self._opened[location] = _Opened(index, source, reader)
            return opened

    def _tree(self, location: str) -> tuple[_Opened, TreeEntry]:
        """The opened archive index and its entry table (built on first use)."""
        with self._lock:
            opened = self._open_index(location)
            root = self._trees.get(location)
            if root is None:
                root = self._trees[location] = build_tree(opened.reader, name=location)
            return opened, root

    def _forget(self, location: str) -> None:
        """Drop what is cached for ``location``. Files open on it keep their reader,
        whose store chain :meth:`close` closes."""
        self._indexes.pop(location, None)
        self._trees.pop(location, None)
        opened = self._opened.pop(location, None)
        if opened is not None:
            self._retired.append(opened)

    def invalidate_cache(self, path: Any = None) -> None:
        """Forget the cached index and archive table of ``path`` (default: all).

        Local index files are re-read by themselves when replaced (inode, size and
        mtime are checked on every use); a remote index that changed needs this call.
        """
        with self._lock:
            if path is None:
                for location in list(self._indexes):
                    self._forget(location)
            else:
                self._forget(self.split(self._strip_protocol(path))[0])

    def reader(self, path: str) -> RangeReader:
        """The :class:`RangeReader` of the index at ``path`` (diagnostics: ``fetches``)."""
        location, _ = self.split(self._strip_protocol(path))
        return self._open_index(location).reader

    def close(self) -> None:
        """Close every store chain and fetch pool this instance opened; it stays usable
        (the next read opens them again)."""
        with self._lock:
            opened = [*self._opened.values(), *self._retired]
            self._opened, self._retired = {}, []
        for item in opened:
            item.reader.close()
            item.source.close()

    # -- metadata --------------------------------------------------------------------------

    @staticmethod
    def _entry_info(name: str, entry: TreeEntry) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": name, "size": entry.size, "type": entry.kind,
            "mode": entry.mode, "uid": entry.uid, "gid": entry.gid,
            "mtime": entry.mtime / 1e9, "mtime_ns": entry.mtime,
            "islink": entry.kind == "symlink",
        }
        if entry.kind == "symlink":
            info["destination"] = entry.target
        if entry.rdev:
            info["rdev"] = entry.rdev
        return info

    def _entry(self, path: str, *, follow: bool) -> tuple[_Opened, TreeEntry]:
        location, inner = self.split(path)
        assert inner is not None
        opened, root = self._tree(location)
        entry = lookup(root, inner, follow=follow)
        if entry is None:
            _not_found(path)
        return opened, entry

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        """``name``, ``size`` and ``type`` (``file``, ``directory``, ``symlink``,
        ``other``); archive entries add ``mode``, ``uid``, ``gid``, ``mtime`` (seconds),
        ``mtime_ns`` and, for symlinks, ``destination``.

        Raises:
            FileNotFoundError: no such index or archive entry.
        """
        path = self._strip_protocol(path)
        location, inner = self.split(path)
        if inner is not None:
            return self._entry_info(path, self._entry(path, follow=False)[1])
        if "://" not in location and os.path.isdir(location or "."):
            return {"name": path, "size": 0, "type": "directory"}
        index = self._index(location)
        return {"name": path, "size": index.length, "type": "file", "chunks": len(index)}

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of an archive directory (or of a local directory: its indexes and
        subdirectories); a file lists as itself.

        Raises:
            FileNotFoundError: no such index or archive entry.
        """
        path = self._strip_protocol(path)
        location, inner = self.split(path)
        if inner is not None:
            _, entry = self._entry(path, follow=True)
            if entry.children is None:
                out = [self._entry_info(path, entry)]
            else:
                base = path.rstrip("/")
                out = [self._entry_info(f"{base}/{name}", child)
                       for name, child in entry.children.items()]
        elif "://" not in location and os.path.isdir(location or "."):
            out = self._ls_local(location)
        else:
            out = [self.info(path)]
        return out if detail else [item["name"] for item in out]

    def _ls_local(self, directory: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with os.scandir(directory or ".") as it:
            names = sorted((e.name, e.is_dir()) for e in it)
        for name, is_dir in names:
            full = f"{directory.rstrip('/')}/{name}" if directory else name
            if is_dir or name.endswith(ARCHIVE_SUFFIX):
                out.append({"name": full, "size": 0, "type": "directory"})
            elif name.endswith(INDEX_SUFFIXES):
                try:
                    out.append(self.info(full))
                except Exception:  # an unreadable index is left out of the listing
                    continue
        return out

    def modified(self, path: Any) -> datetime.datetime:
        """An archive entry's mtime (UTC)."""
        info = self.info(path)
        if "mtime" not in info:
            raise NotImplementedError("only archive entries have a modification time")
        return datetime.datetime.fromtimestamp(info["mtime"], tz=datetime.UTC)

    # -- reading ---------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", block_size: Any = None,
              autocommit: bool = True, cache_options: Any = None,
              **kwargs: Any) -> DesyncFile:
        path = self._strip_protocol(path)
        if mode != "rb":
            _read_only(path)
        kwargs.pop("size", None)  # fsspec's reopen (unpickling) passes it; we know better
        location, inner = self.split(path)
        if inner is None:
            opened = self._open_index(location)  # a directory: IsADirectoryError
            return DesyncFile(self, path, opened.reader, 0, opened.index.length,
                              block_size=block_size, cache_options=cache_options, **kwargs)
        opened, entry = self._entry(path, follow=True)
        if entry.children is not None:
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if entry.kind != "file":
            raise OSError(errno.EINVAL, "not a regular file", path)
        return DesyncFile(self, path, opened.reader, entry.offset, entry.size,
                          block_size=block_size, cache_options=cache_options, **kwargs)

    # -- writing: refused ------------------------------------------------------------------

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(path)

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        """Refused: read-only."""
        _read_only(path)

    def rmdir(self, path: Any) -> None:
        """Refused: read-only."""
        _read_only(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Refused: read-only."""
        _read_only(path)

    def rm_file(self, path: Any) -> None:
        """Refused: read-only."""
        _read_only(path)

    def _rm(self, path: Any) -> None:
        _read_only(path)

    def touch(self, path: Any, truncate: bool = True, **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(path)

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(path2)

    def mv(self, path1: Any, path2: Any, recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(path1)

    def pipe_file(self, path: Any, value: Any, mode: str = "overwrite", **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(path)

    def put_file(self, lpath: Any, rpath: Any, callback: Any = None, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        """Refused: read-only."""
        _read_only(rpath)


class DesyncFile(AbstractBufferedFile):  # fsspec has no type information
    """A read-only, seekable file over a byte range of an index's blob (the whole blob,
    or one archive member's content): ``seek``/``tell``/``read``/``readinto``.

    Unbuffered by default (``cache_type="none"``): the range reader's chunk LRU already
    keeps what neighbouring reads need, and an fsspec readahead block would fetch chunks
    the caller never asked for.
    """

    def __init__(self, fs: DesyncFileSystem, path: str, reader: RangeReader, base: int,
                 size: int, *, block_size: Any = None, cache_type: str = "none",
                 cache_options: Any = None, **kwargs: Any) -> None:
        self.reader = reader
        self.base = base
        super().__init__(fs, path, mode="rb", block_size=block_size or "default",
                         cache_type=cache_type, cache_options=cache_options, size=size,
                         **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        return self.reader.read(self.base + start, end - start)


__all__ = ["DesyncFile", "DesyncFileSystem"]
