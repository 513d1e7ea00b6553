"""``desync make``: index only or into a store, ``-m``, ``--print-stats``, ``--digest``."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, chunk_files

from desync_core.index import Index
from desync_core.stores.chunk import decompress


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    rng = random.Random(5)
    path.write_bytes(rng.randbytes(600_000) + bytes(300_000) + rng.randbytes(123_457))
    return path


def test_index_only(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    result = ok("make", tmp_path / "x.caibx", blob)
    assert (result.out, result.err) == (b"", "")
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    assert index.length == blob.stat().st_size
    assert index.feature_flags == 0xB000000000000000  # casync's blob flags
    assert index.params.as_kib() == "16:64:256"
    data = blob.read_bytes()
    for chunk in index:
        assert hashlib.new("sha512_256", data[chunk.start:chunk.end]).digest() == chunk.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "x.caibx"]


def test_into_a_store(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "new" / "store"  # created like casync does
    ok("make", "-s", store, tmp_path / "x.caibx", blob)
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    files = chunk_files(store)
    assert sorted(files) == sorted({c.id.hex() for c in index})
    for hex_id, path in files.items():
        chunk_id = bytes.fromhex(hex_id)
        assert hashlib.new("sha512_256", decompress(path.read_bytes(), chunk_id)).digest() \
            == chunk_id
    # Again: nothing changes, nothing is rewritten.
    before = {h: (p.stat().st_mtime_ns, p.read_bytes()) for h, p in files.items()}
    ok("make", "-s", store, tmp_path / "y.caibx", blob)
    assert {h: (p.stat().st_mtime_ns, p.read_bytes()) for h, p in chunk_files(store).items()} \
        == before
    assert (tmp_path / "y.caibx").read_bytes() == (tmp_path / "x.caibx").read_bytes()
    assert not [p for p in store.rglob("*") if p.name.startswith(".")]  # no temp files


def test_chunk_size_option(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    ok("make", "-m", "2:8:32", tmp_path / "x.caibx", blob)
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    assert (index.chunk_size_min, index.chunk_size_avg, index.chunk_size_max) == (
        2048, 8192, 32768)
    sizes = index.sizes()
    assert sizes.max() <= 32768
    assert sizes[:-1].min() >= 2048
    ok("make", "--chunk-size", "4:4:4", tmp_path / "fixed.caibx", blob)
    fixed = Index.from_bytes((tmp_path / "fixed.caibx").read_bytes())
    assert set(fixed.sizes()[:-1].tolist()) == {4096}


@pytest.mark.parametrize(("spec", "message"), [
    ("0:64:256", "min chunk size too small"),
    ("16:8:256", "larger than the average"),
    ("16:64:32", "larger than the maximum"),
    ("16:64", "expected MIN:AVG:MAX"),
    ("16:64:256:512", "expected MIN:AVG:MAX"),
    ("a:b:c", "expected MIN:AVG:MAX"),
    ("16:-64:256", ""),
    ("16:9216:20000", "too large"),  # the discriminator formula breaks down
    ("16:64:200000", "exceeds the limit"),  # casync's 128 MiB maximum
])
def test_impossible_chunk_sizes(spec: str, message: str, blob: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                cli) -> None:
    result = cli("make", "-m", spec, "-s", tmp_path / "store", tmp_path / "x.caibx", blob)
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "x.caibx").exists()
    assert not (tmp_path / "store").exists()


def test_print_stats(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    result = ok("make", "--print-stats", "-m", "2:8:32", tmp_path / "x.caibx", blob)
    assert result.out == b""
    stats = json.loads(result.err)
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    assert stats["ChunksAccepted"] == len(index)
    assert stats["ChunksProduced"] >= len(index)


def test_index_to_stdout_and_input_from_stdin(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    ok("make", tmp_path / "x.caibx", blob)
    expected = (tmp_path / "x.caibx").read_bytes()
    assert ok("make", "-", blob).out == expected
    assert ok("make", "-", "-", input=blob.read_bytes()).out == expected


def test_empty_and_tiny_inputs(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").write_bytes(b"")
    ok("make", "-s", tmp_path / "store", tmp_path / "empty.caibx", tmp_path / "empty")
    raw = (tmp_path / "empty.caibx").read_bytes()
    assert len(raw) == 104
    assert len(Index.from_bytes(raw)) == 0
    (tmp_path / "one").write_bytes(b"\x01")
    ok("make", "-s", tmp_path / "store", tmp_path / "one.caibx", tmp_path / "one")
    index = Index.from_bytes((tmp_path / "one.caibx").read_bytes())
    assert [(c.start, c.size) for c in index] == [(0, 1)]
    assert list(chunk_files(tmp_path / "store")) == [index.chunk_id(0).hex()]


def test_sha256_digest(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    ok("--digest", "sha256", "make", "-s", store, tmp_path / "x.caibx", blob)
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    assert index.feature_flags == 0x9000000000000000  # casync --digest=sha256
    data = blob.read_bytes()
    assert [c.id for c in index] == [hashlib.sha256(data[c.start:c.end]).digest() for c in index]
    assert sorted(chunk_files(store)) == sorted({c.id.hex() for c in index})
    # The digest is taken from the index when reading: no --digest needed.
    assert ok("list-chunks", tmp_path / "x.caibx").text.split() == [c.id.hex() for c in index]
    ok("extract", "-s", store, tmp_path / "x.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    ok("verify-index", tmp_path / "x.caibx", blob)
    # --digest after the command works as well (global flag).
    ok("make", "--digest", "sha256", tmp_path / "y.caibx", blob)
    assert (tmp_path / "y.caibx").read_bytes() == (tmp_path / "x.caibx").read_bytes()


def test_contradicting_digest_warns_and_uses_the_index(blob: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    ok("make", "-s", tmp_path / "store", tmp_path / "x.caibx", blob)
    result = ok("--digest", "sha256", "extract", "-s", tmp_path / "store", tmp_path / "x.caibx",
                tmp_path / "out")
    assert "Warning:" in result.err
    assert "sha512-256" in result.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_invalid_digest(blob: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("--digest", "md5", "make", tmp_path / "x.caibx", blob), 2,
                          "invalid digest algorithm 'md5'")
    assert not (tmp_path / "x.caibx").exists()


def test_bad_input_paths(blob: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("make", tmp_path / "x.caibx", tmp_path / "missing"), 2, "missing")
    assert_one_line_error(cli("make", tmp_path / "x.caibx", tmp_path), 2, "is a directory")
    assert_one_line_error(cli("make", tmp_path / "nodir" / "x.caibx", blob), 4, "nodir")
    assert_one_line_error(cli("make", tmp_path / "x.caibx"), 2, "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]
