"""The built-in archive formats pass the shared archive-format contract."""

from __future__ import annotations

from desync_core.testing import ArchiveFormatContract


class TestCatarFormat(ArchiveFormatContract):
    writer_name = reader_name = "catar"


class TestDiskFormat(ArchiveFormatContract):
    writer_name = reader_name = "disk"
    target_is_dir = True


class TestDiskToCatar(ArchiveFormatContract):
    """What ``untar`` writes, ``tar`` reads back identically (catar written by disk's
    reader is checked by TestCatarFormat)."""

    writer_name = "disk"
    reader_name = "disk"
    target_is_dir = True
