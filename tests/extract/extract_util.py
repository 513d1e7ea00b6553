"""Helpers of the extract tests: error checks, blobs, stores, seed trees."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from desync_core.index import Index
from desync_core.testing.fixtures import CliResult

#: Small chunks keep the test blobs small: min 1 KiB, avg 4 KiB, max 16 KiB.
SMALL = "1:4:16"
MAX = 16 * 1024


def assert_error(result: CliResult, code: int, *fragments: str) -> str:
    """The run failed with ``code`` and one ``Error:`` line containing the fragments."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    lines = [line for line in result.err.splitlines() if not line.startswith("Warning:")]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err
    return lines[0]


def rand(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def make_blob(directory: Path, name: str, data: bytes, store: Path | None,
              chunk_size: str = SMALL) -> tuple[Path, Path, Index]:
    """Write ``data`` to ``directory/name``, index it (``name.caibx``), store its chunks."""
    from desync_core import api

    blob = directory / name
    blob.write_bytes(data)
    index_path = directory / f"{name}.caibx"
    index = api.make(str(blob), str(index_path), store=str(store) if store else None,
                     chunk_size=chunk_size, workers=1)
    return blob, index_path, index


def chunk_path(store: Path, chunk_id: bytes) -> Path:
    """Where a local store keeps a chunk."""
    h = chunk_id.hex()
    return store / h[:4] / f"{h}.cacnk"


def copy_store(src: Path, dst: Path) -> Path:
    """A private copy of a store (tests modify stores)."""
    shutil.copytree(src, dst)
    return dst


def remove_chunks(store: Path, ids: set[bytes]) -> int:
    """Delete these chunks from a store; returns how many were there."""
    removed = 0
    for cid in ids:
        p = chunk_path(store, cid)
        if p.exists():
            p.unlink()
            removed += 1
    return removed


def null_id(index: Index) -> bytes:
    """The null chunk id of an index."""
    return index.digest.null_chunk_id(index.chunk_size_max)


def temp_leftovers(directory: Path) -> list[str]:
    """Hidden files extract may have left (temporary outputs, clone probes)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def holes(path: Path) -> list[tuple[int, int]]:
    """The holes of a file as ``(start, end)`` ranges (SEEK_HOLE/SEEK_DATA)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                break
            if hole >= size:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # ENXIO: a hole up to the end
                data = size
            out.append((hole, data))
            pos = data
    finally:
        os.close(fd)
    return out


def hole_bytes(path: Path) -> int:
    """Total bytes in holes."""
    return sum(b - a for a, b in holes(path))


def pseudo_symlink_tree(source: Path, target: Path) -> Path:
    """Mirror desync's test data directory with real symlinks.

    The shared copy stores git symlinks as small text files naming their target
    (``blob2_corrupted.caibx`` holds ``blob2.caibx``); desync's tests rely on them being
    links, so each entry becomes a symlink to the real file.
    """
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        real = entry
        if entry.is_file() and entry.stat().st_size < 64:
            named = entry.read_bytes().strip()
            try:
                candidate = source / named.decode()
            except UnicodeDecodeError:
                candidate = None
            if candidate is not None and named and candidate.exists() and candidate != entry:
                real = candidate
        (target / entry.name).symlink_to(real)
    return target


def run(*cmd: str | os.PathLike[str], check: bool = True,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a system command (mount, losetup...) and return its result."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.strip()}")
    return proc
