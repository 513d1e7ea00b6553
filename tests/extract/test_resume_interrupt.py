"""Failures and interruptions: without ``-k`` the target is the old file or nothing; with
``-k`` the partial file stays and a rerun fetches only what is missing or wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from extract_util import (
    assert_error,
    chunk_path,
    copy_store,
    make_blob,
    null_id,
    rand,
    temp_leftovers,
)

from desync_core.index import Index


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, Path, Index, bytes]:
    """(index path, store, index, data): 600 KB random with a zero run."""
    data = rand(20, 300_000) + bytes(200_000) + rand(21, 300_000)
    store = tmp_path / "store"
    _, index_path, index = make_blob(tmp_path, "blob", data, store)
    return index_path, store, index, data


def _last_fetched(index: Index) -> int:
    """Index of the last chunk that has to come from the store."""
    ids = index.chunk_ids()
    nid = null_id(index)
    return max(i for i, c in enumerate(ids) if c != nid and ids.index(c) == i)


def test_failed_run_leaves_old_file_untouched(blob, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    index_path, store, index, _data = blob
    chunk_path(store, index.chunk_id(_last_fetched(index))).unlink()
    out = tmp_path / "out"
    out.write_bytes(b"the old version")
    inode = out.stat().st_ino
    assert_error(cli("extract", "-s", store, index_path, out), 4, "missing")
    assert out.read_bytes() == b"the old version"
    assert out.stat().st_ino == inode
    assert temp_leftovers(tmp_path) == []
    os.unlink(out)
    assert_error(cli("extract", "-s", store, index_path, out), 4, "missing")
    assert not out.exists()
    assert temp_leftovers(tmp_path) == []


def test_in_place_resume_fetches_only_what_is_missing(blob, tmp_path: Path, cli, ok) -> None:  # type: ignore[no-untyped-def]
    index_path, store, index, data = blob
    last = _last_fetched(index)
    victim = chunk_path(store, index.chunk_id(last))
    hidden = tmp_path / "hidden.cacnk"
    os.rename(victim, hidden)
    out = tmp_path / "out"
    # One worker: everything before the missing chunk gets written, then the run fails.
    assert_error(cli("extract", "-k", "-n", "1", "-s", store, index_path, out), 4, "missing")
    assert out.stat().st_size == len(data)  # kept, partly written
    assert out.read_bytes() != data
    os.rename(hidden, victim)
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    nulls = sum(c == null_id(index) for c in index.chunk_ids())
    assert stats["chunks-from-null-seed"] == nulls
    # Everything written by the first run is reused; only the rest is fetched.
    assert stats["chunks-from-store"] == len(index) - nulls - stats["chunks-in-place"]
    assert stats["chunks-from-store"] == len(index) - last
    # A complete file needs no store at all.
    empty = tmp_path / "empty"
    empty.mkdir()
    stats = ok("extract", "-k", "--print-stats", "-s", empty, index_path, out).stats
    assert stats["chunks-in-place"] == len(index) - nulls
    assert stats["chunks-from-store"] == 0


def test_in_place_repairs_damaged_chunks_only(blob, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index_path, store, _index, data = blob
    out = tmp_path / "out"
    ok("extract", "-s", store, index_path, out)
    with open(out, "r+b") as f:
        f.seek(10)
        f.write(b"damage")
        f.seek(len(data) - 5)
        f.write(b"tail")
        f.write(b"and more bytes than the blob has")
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-from-store"] == 2


def test_device_output_needs_in_place(tmp_path: Path, blob, cli) -> None:  # type: ignore[no-untyped-def]
    index_path, store, _index, _data = blob
    assert_error(cli("extract", "-s", store, index_path, "/dev/null"), 2, "requires -k")


# -- interruption (real signals, so the real program in a subprocess) -------------------


def _start(*args: str | os.PathLike[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "desync_core", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until(condition, what: str, proc: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Poll for a state (not a time): fail if the process ends first or it never comes."""
    for _ in range(1200):  # 60 s
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"extract ended before {what}: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def blocking_store(blob, tmp_path: Path) -> tuple[Path, Path, Index, bytes, Path]:
    """A store whose chunk in the middle of the blob is a FIFO: reading it blocks until
    the test decides, so an extract is reliably caught half-way."""
    index_path, store, index, data = blob
    store = copy_store(store, tmp_path / "blocking")
    mid = next(i for i in range(len(index) // 2, len(index))
               if index.chunk_id(i) != null_id(index))
    fifo = chunk_path(store, index.chunk_id(mid))
    real = tmp_path / "real.cacnk"
    os.rename(fifo, real)
    os.mkfifo(fifo)
    return index_path, store, index, data, fifo


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_interrupt_leaves_old_file_or_nothing(blocking_store, tmp_path: Path, sig: int,
                                              existing: bool) -> None:  # type: ignore[no-untyped-def]
    index_path, store, _index, _data, _fifo = blocking_store
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    out = outdir / "image"
    if existing:
        out.write_bytes(b"old image")
    proc = _start("extract", "-n", "2", "-s", store, index_path, out)

    def partly_written() -> bool:
        temps = [p for p in outdir.iterdir() if p.name.startswith(".image.")]
        return bool(temps) and temps[0].stat().st_blocks > 0

    _wait_until(partly_written, "the temporary file had data", proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().endswith("Error: interrupted"), err.decode()
    if existing:
        assert out.read_bytes() == b"old image"
    else:
        assert not out.exists()
    assert temp_leftovers(outdir) == []


def test_interrupted_in_place_run_is_resumed(blocking_store, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index_path, store, index, data, fifo = blocking_store
    out = tmp_path / "image"
    proc = _start("extract", "-k", "-n", "2", "-s", store, index_path, out)
    _wait_until(lambda: out.exists() and out.stat().st_blocks > 0, "data was written", proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert out.stat().st_size == len(data)  # kept with -k
    os.unlink(fifo)
    os.rename(tmp_path / "real.cacnk", fifo)
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-in-place"] > 0
    assert stats["chunks-from-store"] < len(index) - stats["chunks-from-null-seed"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other chunk", "too long"])
def test_bad_chunk_in_store_fails_cleanly(blob, tmp_path: Path, cli, damage: str) -> None:  # type: ignore[no-untyped-def]
    """Decoding, size and hash are checked for every fetched chunk."""
    index_path, store, index, _data = blob
    victim = chunk_path(store, index.chunk_id(0))
    raw = victim.read_bytes()
    other = chunk_path(store, index.chunk_id(1)).read_bytes()
    import zstandard

    bad = {
        "garbage": b"\x28\xb5\x2f\xfd" + b"garbage" * 10,
        "truncated": raw[: len(raw) // 2],
        "other chunk": other,
        "too long": zstandard.ZstdCompressor().compress(
            zstandard.ZstdDecompressor().decompressobj().decompress(raw) + b"x"),
    }[damage]
    victim.write_bytes(bad)
    out = tmp_path / "out"
    assert_error(cli("extract", "-s", store, index_path, out), 5, index.chunk_id(0).hex())
    assert not out.exists()
    assert temp_leftovers(tmp_path) == []


def test_empty_index_gives_empty_output(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    store.mkdir()
    _, index_path, index = make_blob(tmp_path, "empty", b"", None)
    assert len(index) == 0
    out = tmp_path / "out"
    out.write_bytes(b"old content")
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == b""
    assert stats["chunks-total"] == 0
    ok("extract", "-s", store, index_path, tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == b""


def test_kill_9_leftover_is_removed_by_the_next_run(blocking_store, blob, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    ok) -> None:
    """Regression (#19.9): kill -9 during extract left a full-size temporary file that
    later runs never removed. A later run removes it (it is unlocked: its extract is
    dead) once it is old enough, and says so."""
    index_path, store, _index, data, _fifo = blocking_store
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    out = outdir / "image"
    proc = _start("extract", "-n", "2", "-s", store, index_path, out)

    def partly_written() -> bool:
        temps = [p for p in outdir.iterdir() if p.name.startswith(".image.")]
        return bool(temps) and temps[0].stat().st_blocks > 0

    _wait_until(partly_written, "the temporary file had data", proc)
    proc.kill()
    proc.wait(timeout=30)
    (leftover,) = [p for p in outdir.iterdir() if p.name.startswith(".image.")]
    # While it is recent it is left alone (it could be an extract just starting).
    good_store = blob[1]
    ok("extract", "-s", good_store, index_path, out)
    assert leftover.exists()
    old = time.time() - 60
    os.utime(leftover, (old, old))
    result = ok("extract", "-s", good_store, index_path, out)
    assert f"removed {leftover}" in result.err
    assert temp_leftovers(outdir) == []
    assert out.read_bytes() == data


def test_a_running_extracts_temporary_file_is_never_removed(blocking_store, blob,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path, ok) -> None:
    index_path, store, _index, _data, _fifo = blocking_store
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    out = outdir / "image"
    proc = _start("extract", "-n", "2", "-s", store, index_path, out)
    try:
        _wait_until(lambda: any(p.name.startswith(".image.") for p in outdir.iterdir()),
                    "the temporary file was created", proc)
        (temp,) = [p for p in outdir.iterdir() if p.name.startswith(".image.")]
        old = time.time() - 60
        os.utime(temp, (old, old))  # old, but locked by the running extract
        ok("extract", "-s", blob[1], index_path, outdir / "other")
        ok("extract", "-s", blob[1], index_path, out)
        assert temp.exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_unwritable_cache_is_skipped_with_a_warning(blob, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (#19.9): a full or read-only cache made extract fail; the cache is an
    optimisation, so the run goes on without it, with one warning."""
    index_path, store, _index, data = blob
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "not-a-dir").write_bytes(b"")
    # Every chunk's prefix directory is a file: no chunk can be stored in this cache.
    import shutil

    for prefix in {p.parent.name for p in store.rglob("*.cacnk")}:
        shutil.copy(cache / "not-a-dir", cache / prefix)
    proc = subprocess.run([sys.executable, "-m", "desync_core", "extract", "-s", str(store),
                           "-c", str(cache), str(index_path), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == data
    lines = proc.stderr.splitlines()
    # one warning per process that noticed (the forked workers each may)
    assert lines, proc.stderr
    assert all(line.startswith("Warning: failed to ") and
               line.endswith("; continuing without the cache") for line in lines), lines
