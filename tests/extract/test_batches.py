"""The fast assembly path: the 8-lane SHA-512/256 kernel, batches of store chunks, and
forked worker processes (results, statistics and errors identical to one thread)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
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

from desync_core import batchhash
from desync_core.errors import UsageError
from desync_core.testing.procfs import alive, children_of, wchan

# -- the kernel ---------------------------------------------------------------------


def _can_build() -> bool:
    try:
        import llvmlite  # noqa: F401
        import numba  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(tool) for tool in ("cc", "gcc", "clang", "ld"))


@pytest.fixture(scope="module")
def kernel() -> batchhash.KernelFn:
    if not _can_build():
        pytest.skip("numba, llvmlite and a linker are needed to build the hash kernel")
    fn = batchhash.native_kernel()
    assert fn is not None, "the hash kernel could not be built or loaded"
    return fn


def _expected(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> bytes:
    return b"".join(hashlib.new("sha512_256", buf[o : o + n].tobytes()).digest()
                    for o, n in zip(offsets.tolist(), lengths.tolist()))


def test_kernel_matches_hashlib_at_padding_boundaries(kernel) -> None:  # type: ignore[no-untyped-def]
    # Every length from 0 to 3 blocks: the 0x80 byte and the 128-bit length land in
    # every position of the last one or two blocks.
    lengths = np.arange(0, 3 * 128 + 1, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.frombuffer(rand(1, int(lengths.sum())), dtype=np.uint8)
    got = batchhash.BatchHasher(kernel).sums(buf, offsets, lengths)
    assert got == _expected(buf, offsets, lengths)


def test_kernel_matches_hashlib_on_random_batches(kernel) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    hasher = batchhash.BatchHasher(kernel)
    for _ in range(100):
        count = int(rng.integers(1, 70))
        lengths = rng.integers(0, 20000, count).astype(np.int64)
        lengths[rng.random(count) < 0.2] = 0
        gaps = rng.integers(0, 100, count)  # messages need not be adjacent
        offsets = (np.cumsum(lengths + gaps) - lengths).astype(np.int64)
        buf = rng.integers(0, 256, int(offsets[-1] + lengths[-1]) + 7, dtype=np.uint8)
        assert hasher.sums(buf, offsets, lengths) == _expected(buf, offsets, lengths)


def test_kernel_sees_every_byte(kernel) -> None:  # type: ignore[no-untyped-def]
    """Flipping any one byte of a message changes its digest and only its digest."""
    lengths = np.array([300, 129, 1000, 5, 256, 700, 128, 64, 1], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.frombuffer(bytearray(rand(2, int(lengths.sum()))), dtype=np.uint8)
    hasher = batchhash.BatchHasher(kernel)
    before = hasher.sums(buf, offsets, lengths)
    for pos in range(0, len(buf), 7):
        buf[pos] ^= 1
        after = hasher.sums(buf, offsets, lengths)
        buf[pos] ^= 1
        changed = [i for i in range(len(lengths)) if after[32 * i : 32 * i + 32]
                   != before[32 * i : 32 * i + 32]]
        owner = int(np.searchsorted(offsets + lengths, pos, side="right"))
        assert changed == [owner]


def test_hashlib_fallback_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = np.array([10, 200, 3000, 1, 0, 129], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.frombuffer(rand(3, int(lengths.sum())), dtype=np.uint8)
    assert batchhash.BatchHasher(None).sums(buf, offsets, lengths) == \
        _expected(buf, offsets, lengths)
    batchhash.kernel_name.cache_clear()
    try:
        monkeypatch.setenv("DESYNC_HASH_KERNEL", "hashlib")
        assert batchhash.native_kernel() is None
        monkeypatch.setenv("DESYNC_HASH_KERNEL", "fast")
        batchhash.kernel_name.cache_clear()
        with pytest.raises(UsageError, match="DESYNC_HASH_KERNEL"):
            batchhash.native_kernel()
    finally:
        batchhash.kernel_name.cache_clear()


def test_damaged_library_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "sha512x8-bad.so"
    bad.write_bytes(b"\x7fELF not really")
    with pytest.raises(OSError, match=r"sha512x8-bad\.so"):
        batchhash._open(bad)


# -- extract ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """~6 MB with repeated chunks and zero runs (null chunks), small chunk sizes."""
    directory = tmp_path_factory.mktemp("batches")
    parts = []
    for k in range(12):
        parts.append(rand(100 + k, 400_000))
        if k % 3 == 0:
            parts.append(bytes(100_000))
        if k % 4 == 1:
            parts.append(parts[0][:150_000])  # repeats of the first part
    data = b"".join(parts)
    store = directory / "store"
    _blob, index_path, _index = make_blob(directory, "blob", data, store)
    return index_path, store, data


@pytest.mark.parametrize("n", ["1", "2", "3"])
def test_same_output_and_stats_with_any_worker_count(big_blob, tmp_path: Path, ok,
                                                     n: str) -> None:  # type: ignore[no-untyped-def]
    index_path, store, data = big_blob
    out = tmp_path / "out"
    stats = ok("extract", "-n", n, "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    reference = ok("extract", "-n", "1", "--print-stats", "-s", store, index_path,
                   tmp_path / "ref").stats
    assert stats == reference
    assert stats["chunks-from-self-seed"] > 0
    assert stats["chunks-from-null-seed"] > 0
    assert stats["chunks-from-store"] + stats["chunks-from-self-seed"] + \
        stats["chunks-from-null-seed"] == stats["chunks-total"]


def test_seeds_with_worker_processes(big_blob, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index_path, store, data = big_blob
    old = bytearray(data)
    old[2_000_000:2_050_000] = rand(9, 50_000)  # the seed differs in one place
    _seed, seed_index, _ = make_blob(tmp_path, "old", bytes(old), None)
    out = tmp_path / "out"
    stats = ok("extract", "-n", "2", "--print-stats", "--seed", seed_index, "-s", store,
               index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-from-seeds"] > stats["chunks-from-null-seed"]
    assert 0 < stats["chunks-from-store"] < 20


def test_uncompressed_store(big_blob, tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    index_path, _store, data = big_blob
    plain = tmp_path / "plain"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {str(plain): {"uncompressed": True}}}))
    ok("--config", config, "chop", "-s", plain, index_path, index_path.with_suffix(""))
    out = tmp_path / "out"
    ok("--config", config, "extract", "-n", "2", "-s", plain, index_path, out)
    assert out.read_bytes() == data
    # An uncompressed chunk one byte too long is found (size check before the hash).
    victim = next(p for p in sorted(plain.rglob("*")) if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"x")
    result = cli("--config", config, "extract", "-n", "2", "-s", plain, index_path,
                 tmp_path / "out2")
    assert_error(result, 5, victim.name)


@pytest.mark.parametrize("damage", ["missing", "garbage", "other chunk"])
def test_bad_chunk_in_a_batch(big_blob, tmp_path: Path, cli, damage: str) -> None:  # type: ignore[no-untyped-def]
    """A problem in the middle of a batch is reported like without batches."""
    index_path, store, _data = big_blob
    from desync_core.index import Index

    index = Index.from_bytes(index_path.read_bytes(), str(index_path))
    store = copy_store(store, tmp_path / "store")
    k = len(index) * 2 // 3
    while index.chunk_id(k) == null_id(index):
        k += 1
    victim = chunk_path(store, index.chunk_id(k))
    if damage == "missing":
        victim.unlink()
    elif damage == "garbage":
        victim.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    else:
        victim.write_bytes(chunk_path(store, index.chunk_id(0)).read_bytes())
    out = tmp_path / "out"
    for n in ("1", "2"):
        result = cli("extract", "-n", n, "-s", store, index_path, out)
        assert_error(result, 4 if damage == "missing" else 5, index.chunk_id(k).hex())
        assert not out.exists()
        assert temp_leftovers(tmp_path) == []


def test_worker_processes_that_die_are_replaced(big_blob, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Killed workers' unfinished tasks are done by the main process."""
    index_path, store, data = big_blob
    from desync_core.index import Index

    index = Index.from_bytes(index_path.read_bytes(), str(index_path))
    store = copy_store(store, tmp_path / "store")
    k = len(index) // 2
    while index.chunk_id(k) == null_id(index):
        k += 1
    fifo = chunk_path(store, index.chunk_id(k))
    real = fifo.read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)  # reading it blocks until the test writes it
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "desync_core", "extract", "-n", "2", "-s",
                             str(store), str(index_path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        children: list[int] = []
        for _ in range(1200):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "")
            children = children_of(proc.pid)
            if len(children) == 2 and any(_opening(pid, fifo) for pid in children):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no worker reached the blocking chunk")
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        # Only once they are dead: a writer opening the FIFO earlier could pair with
        # a dying worker's pending open, and the data would be lost with it.
        for pid in children:
            while alive(pid):
                time.sleep(0.01)

        def feed() -> None:
            with open(fifo, "wb") as f:  # blocks until the main process reads it
                f.write(real)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        _out, err = proc.communicate(timeout=120)
        writer.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.read_bytes() == data


def _opening(pid: int, path: Path) -> bool:
    """Whether process ``pid`` is blocked opening a FIFO (``path``) that has no writer."""
    return wchan(pid) in ("wait_for_partner", "fifo_open")


@pytest.mark.parametrize("mode", ["fail", "skip", "regenerate", "in-place"])
def test_seed_with_one_wrong_byte(big_blob, tmp_path: Path, cli, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Seed data is checked a piece at a time; one changed byte in the middle of a piece
    is found wherever it is."""
    index_path, store, data = big_blob
    seed_data = bytearray(data)
    _seed, seed_index, _ = make_blob(tmp_path, "seed", bytes(seed_data), None)
    seed_data[3_000_001] ^= 0x40  # after indexing: the index no longer matches
    (tmp_path / "seed").write_bytes(bytes(seed_data))
    out = tmp_path / "out"
    flags = {"fail": [], "skip": ["--skip-invalid-seeds"],
             "regenerate": ["--regenerate-invalid-seeds"], "in-place": ["-k"]}[mode]
    result = cli("extract", "-n", "2", *flags, "--seed", seed_index, "-s", store,
                 index_path, out)
    if mode in ("fail", "in-place"):
        assert_error(result, 5, "doesn't match its data")
        if mode == "fail":
            assert not out.exists()
    else:
        assert result.code == 0, result.err
        assert out.read_bytes() == data
