"""Helpers of the command tests: an in-process CLI runner and error assertions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEX = frozenset("0123456789abcdef")


@dataclass
class Result:
    """What one CLI run produced."""

    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        """stdout as text."""
        return self.out.decode()


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """The run failed with ``code`` and printed exactly one ``Error:`` line (no traceback)
    containing every fragment; returns the line."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err
    return lines[0]


def is_chunk_id(line: str) -> bool:
    """64 lower-case hex digits."""
    return len(line) == 64 and set(line) <= HEX


def chunk_files(store: Path) -> dict[str, Path]:
    """``{hex id: path}`` of the compressed chunk files of a local store."""
    return {p.name.removesuffix(".cacnk"): p for p in store.rglob("*.cacnk")}
