"""``desync make`` against ``casync make``, and extraction across the two tools.

For every generated input and chunk-size setting: the index files are byte-identical,
the chunk stores hold the same files with the same bytes (each ``.cacnk`` decompresses
to the same chunk, and is even the same zstd frame), casync extracts the input from our
store and index, and we extract it from casync's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from compat_util import KiB, MiB, random_bytes, store_files, text_bytes

from desync_core.index import Index
from desync_core.stores.chunk import ZSTD_BACKEND, decompress

pytestmark = pytest.mark.casync


@dataclass(frozen=True)
class Case:
    """One input, the ``-m`` setting (KiB; None = both tools' defaults) and digest."""

    name: str
    make: Callable[[], bytes]
    chunk_size: str | None = None
    digest: str | None = None


DEFAULT_MIN, DEFAULT_MAX = 16 * KiB, 256 * KiB
SMALL_MIN, SMALL_MAX = 1 * KiB, 16 * KiB


def _data_cases() -> list[Case]:
    cases = [
        Case("empty", lambda: b""),
        Case("one-byte", lambda: b"x"),
        Case("47-bytes", lambda: random_bytes(47, 47)),
        Case("48-bytes", lambda: random_bytes(48, 48)),
        Case("49-bytes", lambda: random_bytes(49, 49)),
        Case("random-3MiB+17", lambda: random_bytes(1, 3 * MiB + 17)),
        Case("text-3MiB", lambda: text_bytes(2, 3 * MiB)),
        Case("zeros-1MiB", lambda: bytes(MiB)),
        Case("zeros-300000", lambda: bytes(300_000)),
        Case("random-zeros-random", lambda: random_bytes(3, 200_000) + bytes(700_000)
             + random_bytes(4, 300_001)),
        Case("repeated-100KiB-blocks",
             lambda: random_bytes(5, 100 * KiB) * 20 + random_bytes(6, 1234)),
        Case("period-40-shorter-than-window", lambda: bytes(range(40)) * 50_000),
        Case("period-7", lambda: b"abcdefg" * 300_000),
        Case("period-48-equal-to-window", lambda: bytes(range(48)) * 40_000),
    ]
    # Sizes around min and max (and exact multiples of max), random and zero-filled,
    # for the default sizes and for small ones.
    for setting, mn, mx in ((None, DEFAULT_MIN, DEFAULT_MAX), ("1:4:16", SMALL_MIN, SMALL_MAX)):
        for size in (mn - 1, mn, mn + 1, mx - 1, mx, mx + 1, 2 * mx - 1, 2 * mx, 2 * mx + 1,
                     3 * mx):
            label = setting or "default"
            cases.append(Case(f"random-{size}-{label}",
                              lambda size=size: random_bytes(size, size), setting))
            cases.append(Case(f"zeros-{size}-{label}", lambda size=size: bytes(size), setting))
    return cases


def _setting_cases() -> list[Case]:
    cases = []
    for setting in ("16:64:256", "1:4:16", "2:8:32", "4:4:64", "32:128:512", "1:64:1024",
                    "60:64:256",  # min > d(avg): casync's discriminator clamp
                    "64:64:64", "1:1:1",  # fixed size
                    "48:64:80"):
        cases.append(Case(f"random-2MB-m{setting}", lambda: random_bytes(7, 2_000_000),
                          setting))
        cases.append(Case(f"text-1MB-m{setting}", lambda: text_bytes(8, 1_000_000), setting))
    return cases


def _digest_cases() -> list[Case]:
    return [
        Case("sha256-random", lambda: random_bytes(9, 1_500_000), None, "sha256"),
        Case("sha256-text-small", lambda: text_bytes(10, 400_000), "2:8:32", "sha256"),
        Case("sha256-zeros", lambda: bytes(600_000), None, "sha256"),
        Case("sha256-empty", lambda: b"", None, "sha256"),
    ]


CASES = _data_cases() + _setting_cases() + _digest_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_make_and_extract_match_casync(case: Case, tmp_path: Path, casync_run,  # type: ignore[no-untyped-def]
                                       desync_inproc) -> None:
    data = case.make()
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    cstore, dstore = tmp_path / "casync.store", tmp_path / "desync.store"
    cindex, dindex = tmp_path / "casync.caibx", tmp_path / "desync.caibx"

    expected = casync_run.make(cindex, blob, cstore, case.chunk_size, case.digest)
    args = (["--digest", case.digest] if case.digest else []) + ["make", "-s", dstore]
    args += ["-m", case.chunk_size] if case.chunk_size else []
    desync_inproc(*args, dindex, blob)

    # 1. The index files are byte-identical (header, casync's flags, table, tail).
    assert dindex.read_bytes() == expected
    index = Index.from_bytes(expected)
    assert index.length == len(data)
    assert index.digest.name == (case.digest or "sha512-256")

    # 2. Same chunk files; each decompresses to the same chunk, and is the same frame.
    ours, theirs = store_files(dstore), store_files(cstore)
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == len(set(index.chunk_ids()))
    for name, stored in theirs.items():
        chunk_id = bytes.fromhex(name.split("/")[1].removesuffix(".cacnk"))
        assert decompress(ours[name], chunk_id) == decompress(stored, chunk_id), name
    differing = [name for name in theirs if ours[name] != theirs[name]]
    assert not differing, (
        f"{len(differing)} chunk files decompress equally but are not byte-identical to "
        f"casync's (zstd backend: {ZSTD_BACKEND})"
    )

    # 3. casync reads our store and index; we read casync's.
    assert casync_run.extract(dindex, tmp_path / "by-casync", dstore) == data
    desync_inproc("extract", "-s", cstore, cindex, tmp_path / "by-desync")
    assert (tmp_path / "by-desync").read_bytes() == data


def test_index_only_make_matches_casync(tmp_path: Path, casync_run, desync_inproc) -> None:  # type: ignore[no-untyped-def]
    """``make`` without ``-s`` writes the same index and no store."""
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(11, 1_200_000))
    (tmp_path / "casync").mkdir()
    (tmp_path / "desync").mkdir()
    # (casync then creates a default.castr store next to its index; we write nothing else)
    expected = casync_run.make(tmp_path / "casync" / "x.caibx", blob)
    desync_inproc("make", tmp_path / "desync" / "x.caibx", blob)
    assert (tmp_path / "desync" / "x.caibx").read_bytes() == expected
    assert [p.name for p in (tmp_path / "desync").iterdir()] == ["x.caibx"]


def test_exact_min_boundary_matches_casync(tmp_path: Path, casync_run, desync_inproc) -> None:  # type: ignore[no-untyped-def]
    """``chunking.md`` §9.3: a boundary at exactly ``min`` (where old desync differs)."""
    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(12345, 16 * MiB))
    expected = casync_run.make(tmp_path / "c.caibx", blob, chunk_size="1:4:16")
    desync_inproc("make", "-m", "1:4:16", tmp_path / "d.caibx", blob)
    assert (tmp_path / "d.caibx").read_bytes() == expected
    index = Index.from_bytes(expected)
    assert len(index) == 4129
    assert (11262974, 1024) in {(c.start, c.size) for c in index}


@pytest.mark.parametrize("sizes", ["16:64:256", "1:1:1", "100:100:100", "20000:20000:70000"])
def test_we_read_casync_indexes_with_sizes_in_bytes(sizes: str, tmp_path: Path, casync_run,  # type: ignore[no-untyped-def]
                                                     desync_inproc) -> None:
    """casync's ``--chunk-size`` is in bytes and allows ``min`` below the 48-byte window
    (our ``-m`` cannot produce these): we still extract, cat and verify such indexes."""
    data = random_bytes(13, 30_000) + text_bytes(14, 20_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    casync_run("make", f"--store={tmp_path / 'store'}", f"--chunk-size={sizes}",
               tmp_path / "c.caibx", blob)
    index = Index.from_bytes((tmp_path / "c.caibx").read_bytes())
    assert ":".join(map(str, (index.chunk_size_min, index.chunk_size_avg,
                              index.chunk_size_max))) == sizes
    desync_inproc("extract", "-s", tmp_path / "store", tmp_path / "c.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    desync_inproc("cat", "-s", tmp_path / "store", "-o", "17", "-l", "40000",
                  tmp_path / "c.caibx", tmp_path / "slice")
    assert (tmp_path / "slice").read_bytes() == data[17:40017]
    desync_inproc("verify-index", tmp_path / "c.caibx", blob)


def test_parallel_make_matches_casync(tmp_path: Path, casync_run, desync_inproc) -> None:  # type: ignore[no-untyped-def]
    """Inputs of 16 MiB and more are chunked, hashed and compressed in worker processes:
    the index and every chunk file must still be casync's."""
    text = text_bytes(15, 3 * MiB)
    data = b"".join(random_bytes(16 + i, 1000) + text for i in range(6))
    assert len(data) > 16 * MiB
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    expected = casync_run.make(tmp_path / "c.caibx", blob, tmp_path / "cstore")
    desync_inproc("make", "-n", "2", "-s", tmp_path / "dstore", tmp_path / "d.caibx", blob)
    assert (tmp_path / "d.caibx").read_bytes() == expected
    assert store_files(tmp_path / "dstore") == store_files(tmp_path / "cstore")
