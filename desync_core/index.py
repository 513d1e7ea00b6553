"""Index files: ``.caibx`` (blob) and ``.caidx`` (archive), exactly as ``index.md``.

An :class:`Index` is the ordered chunk table of a byte stream. Reading validates like
casync and reports the first problem on one line naming the file; writing reproduces a
read file byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from desync_core import flags as ff
from desync_core.chunker.params import CHUNK_SIZE_LIMIT_MAX, ChunkerParams
from desync_core.digest import Digest, digest_for_flags
from desync_core.errors import IndexFormatError

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
        if size < HEADER_SIZE:
            raise bad(f"not an index file (only {size} bytes)" if size else "empty file")
        (hsize, htype, flags, cmin, cavg, cmax, tsize, ttype) = _HEADER.unpack_from(
            bytes(data[: HEADER_SIZE + TABLE_HEADER_SIZE].ljust(64, b"\0"))
        )
        if hsize != HEADER_SIZE or htype != CA_FORMAT_INDEX:
            raise bad("not an index file (bad header)")
        if size < MIN_FILE_SIZE:
            raise bad(f"truncated index file ({size} bytes)")
        problem = ff.normalization_problem(flags)
        if problem:
            raise bad(problem)
        for label, value in (("min", cmin), ("avg", cavg), ("max", cmax)):
            if not 1 <= value <= CHUNK_SIZE_LIMIT_MAX:
                raise bad(f"chunk size {label} {value} out of range")
        if not cmin <= cavg <= cmax:
            raise bad(f"inconsistent chunk sizes {cmin}:{cavg}:{cmax}")
        if tsize != _UNKNOWN_SIZE or ttype != CA_FORMAT_TABLE:
            raise bad("bad table header")
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


def blob_index_flags(digest: Digest) -> int:
    """The flags casync writes into a blob index made with ``digest``."""
    return ff.BLOB_INDEX_FLAGS | digest.flag


__all__ = ["Index", "IndexChunk", "blob_index_flags"]
