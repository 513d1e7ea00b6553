"""Index files: ``.caibx`` (blob) and ``.caidx`` (archive), exactly as ``index.md``.

An :class:`Index` is the ordered chunk table of a byte stream. Reading validates like
casync and reports the first problem on one line naming the file; writing reproduces a
read file byte for byte.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import numpy as np

from desync_core import flags as ff
from desync_core.chunker.params import CHUNK_SIZE_LIMIT_MAX, ChunkerParams
from desync_core.digest import Digest, digest_for_flags
from desync_core.errors import IndexFormatError, IndexNotFoundError, StoreError

CA_FORMAT_INDEX = 0x96824D9C7B129FF9
CA_FORMAT_TABLE = 0xE75B9E112F17417D
CA_FORMAT_TABLE_TAIL_MARKER = 0x4B4F050E5549ECD1
HEADER_SIZE = 48
TABLE_HEADER_SIZE = 16
ITEM_SIZE = 40
TAIL_SIZE = 40
MIN_FILE_SIZE = HEADER_SIZE + TABLE_HEADER_SIZE + TAIL_SIZE  # 104
_UNKNOWN_SIZE = 0xFFFFFFFFFFFFFFFF

_HEADER = struct.Struct("<QQQQQQQQ")  # index header + table header
_TAIL = struct.Struct("<QQQQQ")
_TAIL_MARKER_BYTES = struct.pack("<Q", CA_FORMAT_TABLE_TAIL_MARKER)


class IndexChunk(NamedTuple):
    """One chunk of an index: where it sits in the stream and its id."""

    start: int
    size: int
    id: bytes

    @property
    def end(self) -> int:
        """Offset just past the chunk."""
        return self.start + self.size


@dataclass(eq=False)
class Index:
    """The chunk table of a blob or archive stream.

    Attributes:
        feature_flags: the header's flags (digest bit, archive feature set).
        chunk_size_min, chunk_size_avg, chunk_size_max: the chunker parameters.
        ends: int64 array, the end offset of each chunk (strictly increasing).
        ids: the chunk ids, concatenated (32 bytes each).
    """

    feature_flags: int
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int
    ends: np.ndarray
    ids: bytes

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_chunks(cls, ends: np.ndarray | list[int], ids: bytes | list[bytes],
                    params: ChunkerParams, feature_flags: int) -> Index:
        """Build an index from chunk end offsets and ids."""
        joined = ids if isinstance(ids, bytes | bytearray) else b"".join(ids)
        arr = np.asarray(ends, dtype=np.int64)
        if len(joined) != 32 * len(arr):
            raise ValueError("one 32-byte id per chunk is required")
        return cls(feature_flags, params.min, params.avg, params.max, arr, bytes(joined))

    # -- access -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def length(self) -> int:
        """Length of the indexed stream in bytes."""
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def params(self) -> ChunkerParams:
        """The chunker parameters recorded in the header."""
        return ChunkerParams(self.chunk_size_min, self.chunk_size_avg, self.chunk_size_max)

    @property
    def digest(self) -> Digest:
        """The digest the chunk ids use, from the header's flags."""
        return digest_for_flags(self.feature_flags)

    def chunk_id(self, i: int) -> bytes:
        """Id of chunk ``i``."""
        return self.ids[32 * i : 32 * i + 32]

    def chunk(self, i: int) -> IndexChunk:
        """Chunk ``i``."""
        end = int(self.ends[i])
        start = int(self.ends[i - 1]) if i else 0
        return IndexChunk(start, end - start, self.chunk_id(i))

    def __iter__(self) -> Iterator[IndexChunk]:
        ids = self.ids
        start = 0
        for i, end in enumerate(self.ends.tolist()):
            yield IndexChunk(start, end - start, ids[32 * i : 32 * i + 32])
            start = end

    def chunk_ids(self) -> list[bytes]:
        """Every chunk id in order, duplicates included."""
        ids = self.ids
        return [ids[i : i + 32] for i in range(0, len(ids), 32)]

    def starts(self) -> np.ndarray:
        """int64 array of chunk start offsets."""
        out = np.zeros(len(self.ends), dtype=np.int64)
        out[1:] = self.ends[:-1]
        return out

    def sizes(self) -> np.ndarray:
        """int64 array of chunk sizes."""
        return np.diff(self.ends, prepend=0)

    def find(self, offset: int) -> int:
        """Index of the chunk containing stream ``offset`` (binary search)."""
        return int(np.searchsorted(self.ends, offset, side="right"))

    # -- (de)serialisation ----------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The index file's bytes."""
        n = len(self.ends)
        table = np.empty((n, ITEM_SIZE), dtype=np.uint8)
        table[:, :8] = self.ends.astype("<u8").view(np.uint8).reshape(n, 8)
        table[:, 8:] = np.frombuffer(self.ids, dtype=np.uint8).reshape(n, 32)
        head = _HEADER.pack(
            HEADER_SIZE, CA_FORMAT_INDEX, self.feature_flags, self.chunk_size_min,
            self.chunk_size_avg, self.chunk_size_max, _UNKNOWN_SIZE, CA_FORMAT_TABLE,
        )
        tail = _TAIL.pack(0, 0, HEADER_SIZE, TABLE_HEADER_SIZE + ITEM_SIZE * n + TAIL_SIZE,
                          CA_FORMAT_TABLE_TAIL_MARKER)
        return head + table.tobytes() + tail

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, name: str = "index") -> Index:
        """Parse and validate an index file (casync's rules, ``index.md`` §4).

        Raises:
            IndexFormatError: naming ``name`` and the first problem found.
        """

        def bad(problem: str) -> IndexFormatError:
            return IndexFormatError(f"{name}: {problem}")

        size = len(data)
        _check_magic(data, name)
        if size < MIN_FILE_SIZE:
            raise bad(f"truncated index file ({size} bytes)")
        flags, cmin, cavg, cmax = _check_header(data, name)
        body = size - MIN_FILE_SIZE
        if body % ITEM_SIZE:
            raise bad(f"truncated or padded index file ({size} bytes is not 104 + 40*n)")
        n = body // ITEM_SIZE
        raw = np.frombuffer(data, dtype=np.uint8, count=n * ITEM_SIZE, offset=64)
        raw = raw.reshape(n, ITEM_SIZE)
        ends = raw[:, :8].copy().view("<u8").reshape(n).astype(np.int64)
        # An item whose end offset is 0 can only be the table tail (index.md §1): a
        # complete tail before the end of the file means bytes were appended.
        zeros = np.flatnonzero(ends == 0)
        if len(zeros):
            tail_at = 64 + int(zeros[0]) * ITEM_SIZE
            if bytes(data[tail_at + 32 : tail_at + 40]) == _TAIL_MARKER_BYTES:
                extra = size - tail_at - TAIL_SIZE
                raise bad(f"{extra} bytes of unexpected data after the table tail")
        if n:
            if (ends[0] <= 0) or (n > 1 and np.any(np.diff(ends) <= 0)) or ends[-1] < 0:
                raise bad("chunk offsets are not strictly increasing")
            sizes = np.diff(ends, prepend=0)
            big = int(sizes.max())
            if big > cmax:
                raise bad(f"chunk size {big} is larger than maximum {cmax}")
        zero1, zero2, index_offset, table_size, marker = _TAIL.unpack_from(
            bytes(data[64 + n * ITEM_SIZE :])
        )
        if marker != CA_FORMAT_TABLE_TAIL_MARKER:
            raise bad("missing table tail marker (truncated?)")
        if zero1 or zero2 or index_offset != HEADER_SIZE or \
                table_size != TABLE_HEADER_SIZE + ITEM_SIZE * n + TAIL_SIZE:
            raise bad("bad table tail")
        ids = raw[:, 8:].tobytes()
        return cls(flags, cmin, cavg, cmax, ends, ids)


def _check_magic(data: bytes | bytearray | memoryview, name: str) -> None:
    """The first 16 bytes say "index file" (the first check: anything else is not one)."""
    size = len(data)
    if size < HEADER_SIZE:
        raise IndexFormatError(f"{name}: " + (f"not an index file (only {size} bytes)"
                                              if size else "empty file"))
    hsize, htype = struct.unpack_from("<QQ", data)
    if hsize != HEADER_SIZE or htype != CA_FORMAT_INDEX:
        raise IndexFormatError(f"{name}: not an index file (bad header)")


def _check_header(data: bytes | bytearray | memoryview, name: str) -> tuple[int, int, int, int]:
    """Validate the rest of the index and table headers (the first 64 bytes, present);
    returns ``(flags, min, avg, max)``.

    Raises:
        IndexFormatError: the first problem, naming ``name``.
    """
    (_, _, flags, cmin, cavg, cmax, tsize, ttype) = _HEADER.unpack_from(bytes(data[:64]))
    problem = ff.normalization_problem(flags)
    if problem:
        raise IndexFormatError(f"{name}: {problem}")
    for label, value in (("min", cmin), ("avg", cavg), ("max", cmax)):
        if not 1 <= value <= CHUNK_SIZE_LIMIT_MAX:
            raise IndexFormatError(f"{name}: chunk size {label} {value} out of range")
    if not cmin <= cavg <= cmax:
        raise IndexFormatError(f"{name}: inconsistent chunk sizes {cmin}:{cavg}:{cmax}")
    if tsize != _UNKNOWN_SIZE or ttype != CA_FORMAT_TABLE:
        raise IndexFormatError(f"{name}: bad table header")
    return flags, cmin, cavg, cmax


#: The largest index file read: 1 GiB, 26.8 million chunks (1.6 TiB of data at 64 KiB
#: chunks). Reading stops there, so a stream that never ends costs bounded memory.
MAX_INDEX_SIZE = 1 << 30
#: Bytes read at a time (whole table items after the 64-byte headers).
_READ_BLOCK = ITEM_SIZE * 26214


def read_index_stream(stream: BinaryIO, name: str, *, size: int | None = None,
                      limit: int = MAX_INDEX_SIZE) -> bytes:
    """Read an index file's bytes from ``stream``, checking them as they arrive.

    The headers are read and validated first, so a blob, ``/dev/zero`` or a FIFO of
    garbage fails after 64 bytes; then each block's table items are checked (offsets
    strictly increasing, no chunk larger than the header's maximum) and reading stops at
    the first bad one, at unexpected data after the table tail, or past ``limit``.
    :meth:`Index.from_bytes` then parses the result.

    Args:
        stream: a binary stream positioned at the start of the index.
        name: names the index in errors.
        size: the file's size if known (a regular file): a size that cannot be an
            index or exceeds ``limit`` fails before the table is read.
        limit: the largest index accepted.

    Raises:
        IndexFormatError: the first problem found, naming ``name``.
    """
    head = _read_up_to(stream, HEADER_SIZE + TABLE_HEADER_SIZE)
    _check_magic(head, name)
    if len(head) < HEADER_SIZE + TABLE_HEADER_SIZE:
        raise IndexFormatError(f"{name}: truncated index file ({len(head)} bytes)")
    _, _, cmax = _check_header(head, name)[1:]
    if size is not None:
        if size > limit:
            raise IndexFormatError(f"{name}: index file of {size} bytes is larger than the "
                                   f"{limit}-byte limit")
        if size < MIN_FILE_SIZE:
            raise IndexFormatError(f"{name}: truncated index file ({size} bytes)")
        if (size - MIN_FILE_SIZE) % ITEM_SIZE:
            raise IndexFormatError(f"{name}: truncated or padded index file ({size} bytes "
                                   "is not 104 + 40*n)")
    data = bytearray(head)
    checker = _ItemChecker(cmax, name)
    while True:
        block = stream.read(_READ_BLOCK)
        if not block:
            return bytes(data)
        data += block
        if len(data) > limit:
            raise IndexFormatError(f"{name}: index larger than the {limit}-byte limit")
        tail_at = checker.check(data)
        if tail_at is not None and size is None and len(data) > tail_at + TAIL_SIZE:
            # A stream may never end: do not read on just to count the extra bytes.
            raise IndexFormatError(f"{name}: unexpected data after the table tail")


class _ItemChecker:
    """Checks table items incrementally as a stream's bytes arrive."""

    def __init__(self, cmax: int, name: str) -> None:
        self.cmax = cmax
        self.name = name
        self.checked = HEADER_SIZE + TABLE_HEADER_SIZE  # the next unchecked item
        self.prev_end = 0
        self.tail_at: int | None = None

    def check(self, data: bytearray) -> int | None:
        """Check the complete items not yet checked; the table tail's offset once seen."""
        if self.tail_at is not None:
            return self.tail_at
        n = (len(data) - self.checked) // ITEM_SIZE
        if n <= 0:
            return None
        raw = np.frombuffer(data, dtype=np.uint8, count=n * ITEM_SIZE, offset=self.checked)
        ends = raw.reshape(n, ITEM_SIZE)[:, :8].copy().view("<u8").reshape(n)
        zeros = np.flatnonzero(ends == 0)
        items = int(zeros[0]) if len(zeros) else n  # an end offset of 0: the tail
        if items:
            ends = ends[:items].astype(np.int64)
            sizes = np.diff(ends, prepend=np.int64(self.prev_end))
            if int(ends[-1]) < 0 or np.any(sizes <= 0):
                raise IndexFormatError(f"{self.name}: chunk offsets are not strictly increasing")
            big = int(sizes.max())
            if big > self.cmax:
                raise IndexFormatError(f"{self.name}: chunk size {big} is larger than "
                                       f"maximum {self.cmax}")
            self.prev_end = int(ends[-1])
        self.checked += items * ITEM_SIZE
        if items < n:
            self.tail_at = self.checked
        return self.tail_at


def _read_up_to(stream: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes (fewer only at the end of the stream)."""
    parts: list[bytes] = []
    got = 0
    while got < count:
        part = stream.read(count - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class PieceReader:
    """``read(n)`` over an iterator of byte pieces (a streamed download), for
    :func:`read_index_stream`; reads no further than asked."""

    def __init__(self, pieces: Iterator[bytes | bytearray | memoryview]) -> None:
        self._pieces = pieces
        self._buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        while n != 0:
            if not self._buf:
                piece = next(self._pieces, None)
                if piece is None:
                    break
                self._buf = memoryview(piece).cast("B")
                continue
            take = self._buf if n < 0 else self._buf[:n]
            out.append(bytes(take))
            self._buf = self._buf[len(take):]
            if n > 0:
                n -= len(take)
        return b"".join(out)


def read_index_file(path: str, name: str | None = None, *, regular_only: bool = False) -> bytes:
    """Read a local index file with :func:`read_index_stream` (bounded by its header).

    Args:
        path: the file (a FIFO, device or ``/dev/fd/N`` is read as a stream).
        name: names the index in format errors (default ``path``).
        regular_only: refuse anything but a regular file, without blocking on a FIFO
            (servers: a FIFO in their directory must not hold a thread forever).

    Raises:
        IndexNotFoundError: no such file (or, with ``regular_only``, not a regular one).
        StoreError: it is a directory or cannot be read.
        IndexFormatError: it is not a valid index.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (os.O_NONBLOCK if regular_only else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise IndexNotFoundError(f"index {path} does not exist") from None
    except OSError as exc:
        raise StoreError(f"reading index {path}: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise StoreError(f"reading index {path}: is a directory")
        regular = stat.S_ISREG(st.st_mode)
        if regular_only and not regular:
            raise IndexNotFoundError(f"index {path} is not a regular file")
        try:
            return read_index_stream(f, name or path, size=st.st_size if regular else None)
        except OSError as exc:
            raise StoreError(f"reading index {path}: {exc.strerror or exc}") from None


def blob_index_flags(digest: Digest) -> int:
    """The flags casync writes into a blob index made with ``digest``."""
    return ff.BLOB_INDEX_FLAGS | digest.flag


__all__ = [
    "MAX_INDEX_SIZE",
    "Index",
    "IndexChunk",
    "blob_index_flags",
    "read_index_file",
    "read_index_stream",
]
