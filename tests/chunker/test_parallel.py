"""Parallel chunking and ``make`` give the one-worker (casync) result for every input."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from desync_core.chunker import ChunkerParams, chunk_file, find_cuts
from desync_core.chunker.parallel import part_size
from desync_core.digest import SHA512_256
from desync_core.index import Index, blob_index_flags
from desync_core.ops.make import MakeStats, make_index

SMALL = ChunkerParams(64, 256, 1024)


def inputs() -> dict[str, bytes]:
    """Inputs that synchronise immediately, slowly, or never."""
    rnd = random.Random(2024)
    n = 200_000
    return {
        "random": rnd.randbytes(n),
        "zeros": bytes(n),
        "period3": (b"abc" * n)[:n],
        "period7": (bytes(range(7)) * n)[:n],
        "period61": (rnd.randbytes(61) * (n // 61 + 1))[:n],
        "mixed": rnd.randbytes(30_000) + bytes(50_000) + b"xy" * 20_000 +
        rnd.randbytes(40_000) + b"\xff" * 30_000 + rnd.randbytes(10_000),
        "tiny": b"12345",
        "empty": b"",
    }


PARAMS = [
    SMALL,
    ChunkerParams(48, 64, 100),
    ChunkerParams(1, 4, 16),  # casync's min < 48
    ChunkerParams(200, 200, 200),  # fixed size
    ChunkerParams(300, 1000, 4000),
    ChunkerParams(1000, 5251, 20000),  # zero windows are boundaries (d = 3943)
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    out = {}
    for name, data in inputs().items():
        (d / name).write_bytes(data)
        out[name] = d / name
    return out


@pytest.mark.parametrize("params", PARAMS, ids=str)
@pytest.mark.parametrize("name", list(inputs()))
def test_chunk_file_identical_for_1_to_8_workers(files: dict[str, Path], name: str,
                                                 params: ChunkerParams) -> None:
    data = files[name].read_bytes()
    expected = find_cuts(data, params).tolist()
    # Part sizes from one ``max`` up: many parts, boundaries in every phase (at most
    # ~60 parts, which keeps the test fast with tiny chunk sizes).
    for target in (1, 3 * params.max + 17, 10_000):
        part_bytes = max(target, len(data) // 60)
        for workers in range(1, 9):
            stats: dict[str, int] = {}
            got = chunk_file(str(files[name]), params, workers=workers, stats=stats,
                             part_bytes=part_bytes).tolist()
            assert got == expected, (workers, part_bytes)
            assert stats["ChunksProduced"] >= len(expected)


@pytest.mark.parametrize("extra", [-1, 0, 1, 47, 48, 1023, 1024, 1025])
def test_sizes_around_part_boundaries(tmp_path: Path, extra: int) -> None:
    part = part_size(SMALL, 4096)
    rnd = random.Random(extra)
    for length in (part + extra, 2 * part + extra, 5 * part + extra):
        data = rnd.randbytes(length // 2) + b"q" * (length - length // 2)
        path = tmp_path / f"in{length}"
        path.write_bytes(data)
        expected = find_cuts(data, SMALL).tolist()
        for workers in (1, 2, 3, 8):
            assert chunk_file(str(path), SMALL, workers=workers,
                              part_bytes=4096).tolist() == expected


def test_parts_that_never_synchronise(tmp_path: Path) -> None:
    """Period-3 data with small parts: every part must re-chunk from its true entry."""
    data = b"abc" * 300_000
    path = tmp_path / "p3"
    path.write_bytes(data)
    params = ChunkerParams(100, 101, 1000)
    expected = find_cuts(data, params).tolist()
    for workers in (1, 2, 5):
        assert chunk_file(str(path), params, workers=workers,
                          part_bytes=7000).tolist() == expected


@pytest.mark.parametrize("name", ["random", "zeros", "period7", "mixed", "tiny", "empty"])
def test_make_index_identical_for_1_to_8_workers(files: dict[str, Path], name: str) -> None:
    data = files[name].read_bytes()
    for params in (SMALL, ChunkerParams(2048, 8192, 32768)):
        ends = find_cuts(data, params).tolist()
        ids = b"".join(SHA512_256.sum(data[a:b]) for a, b in zip([0, *ends], ends))
        expected = Index.from_chunks(np.array(ends, dtype=np.int64), ids, params,
                                     blob_index_flags(SHA512_256)).to_bytes()
        for workers in range(1, 9):
            # Small parts: many of them even for these small inputs.
            got = make_index(str(files[name]), params, SHA512_256, workers=workers,
                             part_bytes=5000)
            assert got.to_bytes() == expected, workers


def test_make_stores_each_missing_chunk_once(tmp_path: Path, files: dict[str, Path]) -> None:
    from desync_core.api import context

    ctx = context()
    store = ctx.open_writable(str(tmp_path / "store"))
    stats = MakeStats()
    index = make_index(str(files["mixed"]), SMALL, SHA512_256, store=store, workers=3,
                       stats=stats)
    unique = set(index.chunk_ids())
    assert stats.chunks_stored == len(unique)
    stored = {p.name for p in (tmp_path / "store").rglob("*.cacnk")}
    assert stored == {i.hex() + ".cacnk" for i in unique}
    # Everything present: nothing is stored (or compressed) again.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.cacnk")}
    again = MakeStats()
    assert make_index(str(files["mixed"]), SMALL, SHA512_256, store=store, workers=3,
                      stats=again).to_bytes() == index.to_bytes()
    assert again.chunks_stored == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_make_via_stdin_equals_make_via_file(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(11).randbytes(3_000_000) + bytes(700_000) + b"xyz" * 100_000
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    for args in ([], ["-m", "2:8:32"]):
        desync("make", *args, "-s", str(tmp_path / "s1"), str(tmp_path / "f.caibx"), str(blob))
        desync("make", *args, "-s", str(tmp_path / "s2"), str(tmp_path / "p.caibx"), "-",
               input=data)
        assert (tmp_path / "f.caibx").read_bytes() == (tmp_path / "p.caibx").read_bytes()
        s1 = sorted(p.name for p in (tmp_path / "s1").rglob("*.cacnk"))
        s2 = sorted(p.name for p in (tmp_path / "s2").rglob("*.cacnk"))
        assert s1 == s2


@pytest.mark.casync
def test_make_matches_casync_for_worker_counts(tmp_path: Path, desync, casync: str) -> None:  # type: ignore[no-untyped-def]
    rnd = random.Random(5)
    data = rnd.randbytes(5_000_000) + bytes(1_000_000) + (b"ab" * 500_000) + rnd.randbytes(9)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    subprocess.run([casync, "make", f"--store={tmp_path / 'cs'}",
                    "--chunk-size=2048:8192:32768", str(tmp_path / "c.caibx"), str(blob)],
                   check=True, capture_output=True)
    want = (tmp_path / "c.caibx").read_bytes()
    for n in (1, 2, 3, 8):
        desync("make", "-n", str(n), "-m", "2:8:32", str(tmp_path / "d.caibx"), str(blob))
        assert (tmp_path / "d.caibx").read_bytes() == want, n


@pytest.mark.parametrize("kernel", ["python", "numba"])
def test_kernel_can_be_chosen(tmp_path: Path, desync, kernel: str) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(1).randbytes(100_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    desync("make", "-m", "1:4:16", str(tmp_path / "k.caibx"), str(blob),
           env={"DESYNC_CHUNKER_KERNEL": kernel})
    index = Index.from_bytes((tmp_path / "k.caibx").read_bytes())
    assert index.ends.tolist() == find_cuts(data, ChunkerParams(1024, 4096, 16384)).tolist()


def test_invalid_kernel_is_a_clear_error(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 1000)
    proc = desync("make", str(tmp_path / "k.caibx"), str(blob), check=False,
                  env={"DESYNC_CHUNKER_KERNEL": "fortran"})
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == \
        "Error: DESYNC_CHUNKER_KERNEL must be 'numba', 'vector' or 'python', not 'fortran'"


# The peak is read from VmHWM (this process's own address space): ru_maxrss would include
# the parent's (pytest's) resident size, which Linux carries into the child across
# vfork + exec.
PEAK_RSS = """
import sys
from desync_core.api import context
from desync_core.chunker import DEFAULT_PARAMS
from desync_core.digest import SHA512_256
from desync_core.ops.make import make_index
store = context().open_writable(sys.argv[3])
index = make_index(sys.argv[1], DEFAULT_PARAMS, SHA512_256, workers=int(sys.argv[2]),
                   store=store)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(len(index), peak_kb)
"""


def test_memory_stays_bounded_for_large_inputs(tmp_path: Path) -> None:
    """A 512 MiB input (more than the limit): the process holds a few part buffers only."""
    blob = tmp_path / "big"
    with open(blob, "wb") as f:
        f.truncate(512 << 20)  # sparse zeros: no disk use, still to be read and hashed
        f.seek(123_456_789)
        f.write(os.urandom(5_000_000))
    # The first make on a machine compiles the chunking and hashing kernels with numba (a
    # one-time cost of a few hundred MB); make sure they are cached so the steady state is
    # measured (enough chunks per part that the batch hash kernel is used).
    small = tmp_path / "small"
    small.write_bytes(os.urandom(2_000_000))
    subprocess.run([sys.executable, "-c", PEAK_RSS, str(small), "1", str(tmp_path / "s0")],
                   capture_output=True, check=True)
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(blob), "4",
                           str(tmp_path / "store")], capture_output=True, text=True, check=True)
    chunks, peak_kb = map(int, proc.stdout.split())
    assert chunks > 2048
    assert peak_kb < 300 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
