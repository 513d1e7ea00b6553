"""Helpers of the command tests (the CLI runner and error assertions are shared ones)."""

from __future__ import annotations

from pathlib import Path

from desync_core.testing.fixtures import CliResult as Result
from desync_core.testing.fixtures import assert_one_line_error

__all__ = ["HEX", "Result", "assert_one_line_error", "chunk_files", "is_chunk_id"]

HEX = frozenset("0123456789abcdef")


def is_chunk_id(line: str) -> bool:
    """64 lower-case hex digits."""
    return len(line) == 64 and set(line) <= HEX


def chunk_files(store: Path) -> dict[str, Path]:
    """``{hex id: path}`` of the compressed chunk files of a local store."""
    return {p.name.removesuffix(".cacnk"): p for p in store.rglob("*.cacnk")}
