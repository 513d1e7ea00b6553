"""``desync extract`` (issue-3 scope): stores, cache, ``-n``, verification, temp + rename.

Seeds, in-place extraction and reflinks are tested with the seed features.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, chunk_files

from desync_core.index import Index


@pytest.fixture
def blob1(cmd_testdata: Path, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """(index, store copy, expected bytes) of desync's blob1 vector."""
    store = tmp_path / "blob1.store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    return cmd_testdata / "blob1.caibx", store, (cmd_testdata / "blob1").read_bytes()


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("workers", ["1", "3", "10"])
def test_extract_from_one_store(blob1, tmp_path: Path, workers: str, ok) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    result = ok("extract", "-n", workers, "-s", store, index, tmp_path / "out")
    assert result.out == b""
    assert (tmp_path / "out").read_bytes() == expected
    assert temp_files(tmp_path) == []


def test_several_stores_are_asked_in_order(blob1, tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    # Split the chunks over two stores: neither alone can do it.
    other = tmp_path / "other"
    files = sorted(chunk_files(store).items())
    for hex_id, path in files[::2]:
        (other / hex_id[:4]).mkdir(parents=True, exist_ok=True)
        shutil.move(path, other / hex_id[:4] / path.name)
    assert_one_line_error(cli("extract", "-s", store, index, tmp_path / "a"), 4, "missing")
    ok("extract", "-s", store, "-s", other, index, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == expected
    ok("extract", "-s", f"{other},{store}", index, tmp_path / "out2")  # comma-separated too
    assert (tmp_path / "out2").read_bytes() == expected


def test_cache_is_filled_and_used(blob1, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    cache = tmp_path / "cache"
    ok("extract", "-s", store, "-c", cache, index, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == expected
    ids = {c.id.hex() for c in Index.from_bytes(index.read_bytes())}
    null_id = "620797b6a249553166433873ead3ab6aadd24e1750b3e71edd642a91c006d1d0"
    # Every fetched chunk lands in the cache (null chunks are never fetched).
    assert set(chunk_files(cache)) == ids - {null_id}
    # The cache alone now suffices.
    empty = tmp_path / "empty"
    empty.mkdir()
    ok("extract", "-s", empty, "-c", cache, index, tmp_path / "out2")
    assert (tmp_path / "out2").read_bytes() == expected


def test_invalid_chunk_in_cache_is_repaired_by_default(blob1, tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    cache = tmp_path / "cache"
    ok("extract", "-s", store, "-c", cache, index, tmp_path / "out")
    victim = sorted(chunk_files(cache).values())[0]
    victim.write_bytes(b"garbage")
    result = cli("extract", "--cache-repair=false", "-s", store, "-c", cache, index,
                 tmp_path / "out2")
    assert_one_line_error(result, 5, victim.name.removesuffix(".cacnk"))
    assert not (tmp_path / "out2").exists()
    ok("extract", "-s", store, "-c", cache, index, tmp_path / "out3")
    assert (tmp_path / "out3").read_bytes() == expected
    assert victim.read_bytes() != b"garbage"  # replaced with the good chunk


def test_output_is_replaced_atomically(blob1, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    out = tmp_path / "out"
    out.write_bytes(b"old content, longer than nothing" * 100_000)
    inode = out.stat().st_ino
    ok("extract", "-s", store, index, out)
    assert out.read_bytes() == expected
    assert out.stat().st_ino != inode  # a new file was renamed onto the old one
    assert temp_files(tmp_path) == []


def test_failed_extract_leaves_the_output_untouched(blob1, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    index, store, _ = blob1
    sorted(chunk_files(store).values())[-1].unlink()
    out = tmp_path / "out"
    out.write_bytes(b"precious")
    assert_one_line_error(cli("extract", "-s", store, index, out), 4, "missing from store")
    assert out.read_bytes() == b"precious"
    assert temp_files(tmp_path) == []


def test_index_from_stdin(blob1, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index, store, expected = blob1
    ok("extract", "-s", store, "-", tmp_path / "out", input=index.read_bytes())
    assert (tmp_path / "out").read_bytes() == expected


def test_null_chunks_become_holes(blob1, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """blob1's 31 null chunks (about 1 MiB) are not written: the output is sparse."""
    index, store, expected = blob1
    ok("extract", "-s", store, index, tmp_path / "out")
    st = (tmp_path / "out").stat()
    assert st.st_size == len(expected)
    assert st.st_blocks * 512 < len(expected) - 900_000


def test_print_stats(blob1, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index, store, _ = blob1
    stats = json.loads(ok("extract", "--print-stats", "-s", store, index, tmp_path / "out").out)
    assert stats["chunks-total"] == 161
    assert stats["bytes-total"] == 2097152
    assert stats["chunks-from-store"] == 161 - 31
    assert stats["seeds"] == 1


def test_usage_errors(blob1, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    index, store, _ = blob1
    copy = tmp_path / "x.caibx"
    shutil.copy(index, copy)
    assert_one_line_error(cli("extract", "-s", store, copy, copy), 2,
                          "input and output filenames match")
    assert_one_line_error(cli("extract", index, tmp_path / "out"), 2, "no store provided")
    assert_one_line_error(cli("extract", "-s", store, index), 2, "output")
    assert_one_line_error(cli("extract", "-s", store, index, tmp_path / "nodir" / "out"), 2,
                          "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["blob1.store", "x.caibx"]
