"""File seeds: an index plus the blob it describes (``--seed``, ``--seed-dir``, §2.1).

``--seed X.caibx`` uses the data file ``X``; ``--seed INDEX:DATA`` names both. The data
is opened once; every segment taken from it is hash-checked before the assembly
(validation, §4) and again while it is written (the file may change meanwhile).
Segments are cloned (reflinked) when seed and target share a filesystem that can
clone, and copied otherwise.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from desync_core.errors import SeedInvalidError, UsageError
from desync_core.seeds.base import Seed, SeedSegment, SeedType, SegmentResult, Warn, WriteTarget
from desync_core.seeds.extents import Moved, clone_or_copy, pread_exact, pwrite_all
from desync_core.seeds.indexed import (
    IndexedSeed,
    bad_chunks,
    iter_segment_pieces,
    mismatched_chunks,
)

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.progress import Progress

INDEX_EXTENSION = ".caibx"


class FileSeed(IndexedSeed):
    """A seed index and its data file.

    Args:
        index: the seed index.
        index_location: where the index was read from (for messages).
        data: path of the data file (a regular file or a block device).

    If the data cannot be opened the seed is created anyway with :attr:`error` set:
    ``extract`` then fails, or skips it with ``--skip-invalid-seeds``.
    """

    kind = "file"
    fork_safe = True

    def __init__(self, index: Index, index_location: str, data: str) -> None:
        super().__init__(index, data)
        self.index_location = index_location
        self.data = data
        self.error: str | None = None
        self.fd = -1
        self.regenerated = False
        self._can_clone = False
        try:
            self.fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.error = f"cannot open seed data {data} for {index_location}: {exc.strerror}"

    @property
    def data_path(self) -> str | None:
        return self.data

    @property
    def can_clone(self) -> bool:
        return self._can_clone

    def prepare(self, target: WriteTarget) -> None:
        """Probe once whether this seed's directory can be cloned into the target's."""
        if self.fd < 0 or not stat.S_ISREG(os.fstat(self.fd).st_mode):
            self._can_clone = False  # devices cannot be cloned from
            return
        self._can_clone = target.can_clone_from(os.path.dirname(os.path.abspath(self.data)))

    def read_into(self, view: memoryview, offset: int) -> bool:
        if self.fd < 0:
            return False
        try:
            pread_exact(self.fd, view, offset)
        except EOFError:
            return False
        except OSError as exc:
            raise SeedInvalidError(f"reading seed {self.data}: {exc.strerror}") from exc
        return True

    def write_segment(self, segment: SeedSegment, target: WriteTarget) -> SegmentResult:
        """Clone or copy the segment; check every chunk written against its id."""
        offset, length = self.seed_range(segment)
        if length != segment.size:  # the matcher compares sizes; this is a safeguard
            return SegmentResult(bad=list(range(segment.first, segment.first + segment.count)))
        if not target.blank and not mismatched_chunks(target.fd, segment, target.index):
            return SegmentResult(in_place=True)
        bs = target.blocksize
        if self._can_clone and offset % bs == segment.start % bs:
            moved = clone_or_copy(self.fd, offset, length, target.fd, segment.start, bs, True)
            # The seed may have changed since validation: read back what was written.
            return SegmentResult(moved=moved,
                                 bad=mismatched_chunks(target.fd, segment, target.index))
        return self._copy_checked(segment, offset, target)

    def _copy_checked(self, segment: SeedSegment, offset: int,
                      target: WriteTarget) -> SegmentResult:
        """Copy through memory, hashing the chunks on the way (a piece at a time); bad
        chunks are not written."""
        index = target.index
        ends = index.ends
        result = SegmentResult(moved=Moved())
        for first, stop, pos, data in iter_segment_pieces(self.fd, offset, segment, index):
            if data is None:
                result.bad.extend(range(first, stop))
                continue
            bad = bad_chunks(data, first, stop, pos, index)
            if not bad:
                pwrite_all(target.fd, data, pos)
                result.moved.copied += len(data)
                continue
            result.bad.extend(bad)
            skip = set(bad)
            for k in range(first, stop):
                if k not in skip:
                    a = (int(ends[k - 1]) if k else 0) - pos
                    b = int(ends[k]) - pos
                    pwrite_all(target.fd, data[a:b], pos + a)
                    result.moved.copied += b - a
        return result

    def verify_segments(self, segments: list[SeedSegment], target: Index, *, workers: int,
                        progress: Progress, cancelled: Any) -> bool:
        if self.fd < 0:
            return False
        return super().verify_segments(segments, target, workers=workers, progress=progress,
                                       cancelled=cancelled)

    def regenerate(self, *, workers: int, progress: Progress) -> None:
        """Chunk the data again with the seed index's sizes and use the new index."""
        from desync_core.seeds.regenerate import index_file

        if self.fd < 0:
            raise SeedInvalidError(self.error or f"cannot read seed data {self.data}")
        self.set_index(index_file(self.data, self.index, workers=workers, progress=progress))
        self.regenerated = True
        self.valid = True

    def invalid_error(self) -> SeedInvalidError:
        """The error for a seed whose data does not match its index."""
        return SeedInvalidError(self.error or f"seed index for {self.data} doesn't match its data")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_seed_value(value: str, warn: Warn) -> tuple[str, str]:
    """``(index location, data path)`` of a ``--seed`` value (desync's rules).

    ``X.caibx`` → ``(X.caibx, X)``; otherwise ``INDEX:DATA[:options]``.
    """
    if value.endswith(INDEX_EXTENSION):
        return value, value[: -len(INDEX_EXTENSION)]
    fields = value.split(":")
    if len(fields) < 2 or not fields[0] or not fields[1]:
        raise UsageError(f'the provided seed argument "{value}" seems to be malformed')
    if len(fields) > 2:
        warn(f'Seed options are reserved for future use (ignored in "{value}")')
    return fields[0], fields[1]


def open_file_seed(ctx: Any, index_location: str, data: str, target: Index) -> FileSeed:
    """Read a seed index and open its data."""
    index = ctx.read_index(index_location)
    if index.digest != target.digest:
        raise UsageError(
            f"seed index {index_location} uses {index.digest.name} chunk ids, but the index "
            f"being extracted uses {target.digest.name}"
        )
    return FileSeed(index, index_location, data)


def find_dir_seeds(directory: str, exclude_index: str | None) -> list[tuple[str, str]]:
    """``(index, data)`` pairs of every ``*.caibx`` below ``directory`` with its data.

    Walks recursively in sorted order; the index being extracted (``exclude_index``,
    compared by absolute path) and indexes without a data file are skipped.
    """
    if not os.path.isdir(directory):
        raise UsageError(f"seed directory {directory} does not exist or is not a directory")
    skip = os.path.abspath(exclude_index) if exclude_index else None
    found: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(directory, onerror=_walk_error):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(INDEX_EXTENSION):
                continue
            path = os.path.join(root, name)
            if os.path.abspath(path) == skip:
                continue
            data = path[: -len(INDEX_EXTENSION)]
            if os.path.exists(data):
                found.append((path, data))
    return found


def _walk_error(exc: OSError) -> None:
    raise UsageError(f"reading seed directory: {exc.filename}: {exc.strerror}")


class FileSeedType(SeedType):
    """``--seed X.caibx`` / ``--seed INDEX:DATA`` (also ``--seed file:INDEX:DATA``)."""

    name = "file"

    def open(self, ctx: Any, spec: str, *, target: Index, warn: Warn) -> list[Seed]:
        index_location, data = parse_seed_value(spec, warn)
        return [open_file_seed(ctx, index_location, data, target)]


__all__ = [
    "INDEX_EXTENSION",
    "FileSeed",
    "FileSeedType",
    "find_dir_seeds",
    "open_file_seed",
    "parse_seed_value",
]
