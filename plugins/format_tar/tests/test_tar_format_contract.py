"""The tar formats pass the shared archive-format contract: what ``gnu-tar`` writes,
``tar`` reads back (GNU tar keeps whole seconds)."""

from __future__ import annotations

from desync_core.testing import ArchiveFormatContract


class TestGnuTarThenTar(ArchiveFormatContract):
    writer_name = "gnu-tar"
    reader_name = "tar"
    mtime_granularity = 1_000_000_000
