"""Errors raised in forked workers, seen through the real CLI: the exit code and the
one-line message are those of the error, as if the work had run in the command."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from desync_core.index import Index


def desync(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "desync_core", *map(str, args)],
                          capture_output=True, text=True, check=check)


def big_blob(tmp_path: Path, size: int) -> tuple[Path, Path, Index]:
    """A blob large enough for the commands' worker processes, and its index."""
    blob = tmp_path / "blob"
    blob.write_bytes(random.Random(5).randbytes(size))
    desync("make", tmp_path / "blob.caibx", blob)
    index_path = tmp_path / "blob.caibx"
    return blob, index_path, Index.from_bytes(index_path.read_bytes(), str(index_path))


def damage(blob: Path, offset: int) -> None:
    with open(blob, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_chop_of_a_changed_file_fails_in_a_worker_with_exit_5(tmp_path: Path) -> None:
    blob, index_path, index = big_blob(tmp_path, 40 << 20)
    k = len(index) * 3 // 4
    damage(blob, int(index.ends[k - 1]) + 1)  # chunk k, in the second half: a worker's
    store = tmp_path / "store"
    store.mkdir()
    result = desync("chop", "-n", "2", "-s", store, index_path, blob, check=False)
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert index.chunk_id(k).hex() in lines[0]


def test_verify_index_of_a_changed_file_fails_in_a_worker_with_exit_5(tmp_path: Path) -> None:
    blob, index_path, index = big_blob(tmp_path, 72 << 20)
    damage(blob, int(index.ends[len(index) // 2]) + 3)
    result = desync("verify-index", "-n", "2", index_path, blob, check=False)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip() == f"Error: seed index for {blob} doesn't match its data"
