"""desync's golden index and store vectors (``shared/testdata/desync``), through the CLI
and cross-checked with casync where casync can take part.

desync writes blob-index flags ``0xA0…`` where casync writes ``0xB0…`` (``index.md``
§2); we write casync's, so against desync's files the only allowed difference is the
flags byte at offset 0x17.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from compat_util import MiB

from desync_core.index import Index
from desync_core.stores.chunk import decompress

FLAGS_BYTE = 0x17


def same_but_flags(ours: bytes, desyncs: bytes) -> None:
    """``ours`` equals desync's index except for casync's flags (0xB0 vs 0xA0)."""
    assert len(ours) == len(desyncs)
    assert ours[FLAGS_BYTE] == 0xB0
    assert desyncs[FLAGS_BYTE] == 0xA0
    assert ours[:FLAGS_BYTE] + ours[FLAGS_BYTE + 1:] == \
        desyncs[:FLAGS_BYTE] + desyncs[FLAGS_BYTE + 1:]


def test_index_caibx_reads_and_writes_back_identically(testdata: Path) -> None:
    raw = (testdata / "testdata" / "index.caibx").read_bytes()
    index = Index.from_bytes(raw, "index.caibx")
    assert [(c.start, c.size, c.id.hex()[:8]) for c in index] == [
        (0, 242168, "437884da"), (242168, 75740, "985462e6"), (317908, 20012, "fadff4b3")]
    assert index.feature_flags == 0xA000000000000000
    assert (index.chunk_size_min, index.chunk_size_avg, index.chunk_size_max) == (
        16384, 65536, 262144)
    assert index.to_bytes() == raw


@pytest.mark.parametrize("name", ["testdata/index.caibx", "testdata/chunker.index",
                                  "cmd/desync/testdata/blob1.caibx",
                                  "cmd/desync/testdata/blob2.caibx",
                                  "cmd/desync/testdata/blob1_corrupted_index.caibx",
                                  "cmd/desync/testdata/tree.caidx"])
def test_every_golden_index_round_trips(testdata: Path, name: str) -> None:
    raw = (testdata / name).read_bytes()
    assert Index.from_bytes(raw, name).to_bytes() == raw


@pytest.mark.casync
def test_chunker_input_gives_chunker_index(testdata: Path, tmp_path: Path, casync_run,  # type: ignore[no-untyped-def]
                                           desync_inproc) -> None:
    """``chunking.md`` §9.1: 20 chunks; our index = casync's = desync's but for flags."""
    source = testdata / "testdata" / "chunker.input"
    desync_inproc("make", "-s", tmp_path / "store", tmp_path / "ours.caibx", source)
    ours = (tmp_path / "ours.caibx").read_bytes()
    same_but_flags(ours, (testdata / "testdata" / "chunker.index").read_bytes())
    assert ours == casync_run.make(tmp_path / "casync.caibx", source)
    index = Index.from_bytes(ours)
    assert len(index) == 20
    assert index.chunk(19) == (982644, 65932, bytes.fromhex(
        "a8bfdadaecbee1ed16ce23d8bf771d1b3fbca2e631fc71b5adb3846c1bb2d542"))
    stored = sorted(p.name.removesuffix(".cacnk") for p in (tmp_path / "store").rglob("*.cacnk"))
    assert stored == sorted(c.id.hex() for c in index)


@pytest.mark.casync
def test_discriminator_clamp_vector(testdata: Path, tmp_path: Path, casync_run,  # type: ignore[no-untyped-def]
                                    desync_inproc) -> None:
    """``chunking.md`` §9.4: ``-m 60:64:256`` on chunker.input gives casync's 8 chunks."""
    source = testdata / "testdata" / "chunker.input"
    desync_inproc("make", "-m", "60:64:256", tmp_path / "ours.caibx", source)
    ours = (tmp_path / "ours.caibx").read_bytes()
    assert ours == casync_run.make(tmp_path / "casync.caibx", source, chunk_size="60:64:256")
    assert [(c.start, c.size) for c in Index.from_bytes(ours)] == [
        (0, 63983), (63983, 101162), (165145, 76828), (241973, 216690), (458663, 147751),
        (606414, 173610), (780024, 103602), (883626, 164950)]


@pytest.mark.casync
@pytest.mark.parametrize("blob", ["blob1", "blob2"])
def test_blobs_with_small_chunks(cmd_testdata: Path, tmp_path: Path, blob: str,  # type: ignore[no-untyped-def]
                                 casync_run, desync_inproc) -> None:
    """``chunking.md`` §9.2: blob1/blob2 with 2:8:32 give the golden tables."""
    source = cmd_testdata / blob
    desync_inproc("make", "-m", "2:8:32", tmp_path / "ours.caibx", source)
    ours = (tmp_path / "ours.caibx").read_bytes()
    same_but_flags(ours, (cmd_testdata / f"{blob}.caibx").read_bytes())
    assert ours == casync_run.make(tmp_path / "casync.caibx", source, chunk_size="2:8:32")


@pytest.mark.casync
def test_desync_store_is_readable_by_both_tools(cmd_testdata: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                casync_run, desync_inproc) -> None:
    """blob1.store was written by desync (Go zstd frames): both tools extract blob1."""
    expected = (cmd_testdata / "blob1").read_bytes()
    desync_inproc("extract", "-s", cmd_testdata / "blob1.store", cmd_testdata / "blob1.caibx",
                  tmp_path / "ours")
    assert (tmp_path / "ours").read_bytes() == expected
    assert casync_run.extract(cmd_testdata / "blob1.caibx", tmp_path / "theirs",
                              cmd_testdata / "blob1.store") == expected


def test_golden_store_chunks_decompress_to_their_ids(cmd_testdata: Path) -> None:
    files = sorted((cmd_testdata / "blob1.store").rglob("*.cacnk"))
    assert len(files) == 131
    for path in files:
        chunk_id = bytes.fromhex(path.name.removesuffix(".cacnk"))
        assert hashlib.new("sha512_256", decompress(path.read_bytes(), chunk_id)).digest() \
            == chunk_id


def test_null_chunks_of_blob1(cmd_testdata: Path) -> None:
    """31 of blob1's chunks are null chunks of 32 KiB (``620797b6…``)."""
    index = Index.from_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    null = [c for c in index if c.id.hex().startswith("620797b6")]
    assert len(null) == 31
    assert {c.size for c in null} == {32768}
    assert (len(index), len(set(index.chunk_ids())), index.length) == (161, 131, 2097152)


def test_corrupted_index_vector_parses_but_does_not_match(cmd_testdata: Path, desync) -> None:  # type: ignore[no-untyped-def]
    name = cmd_testdata / "blob1_corrupted_index.caibx"
    index = Index.from_bytes(name.read_bytes())
    assert (len(index), index.length) == (160, 2_100_876)
    proc = desync("verify-index", str(name), str(cmd_testdata / "blob1"), check=False)
    assert proc.returncode == 5
    assert proc.stderr.decode().strip() == \
        "Error: index size (2100876) does not match file size (2097152)"


def test_archive_index_vector(cmd_testdata: Path, tmp_path: Path, desync_inproc,  # type: ignore[no-untyped-def]
                              capsys: pytest.CaptureFixture[str]) -> None:
    """tree.caidx: one chunk (the whole catar), flags ``0xA000000000001F22``."""
    index = Index.from_bytes((cmd_testdata / "tree.caidx").read_bytes())
    assert index.feature_flags == 0xA000000000001F22
    desync_inproc("list-chunks", cmd_testdata / "tree.caidx")
    assert capsys.readouterr().out.startswith("0589328f")
    desync_inproc("cat", "-s", cmd_testdata / "tree.store", cmd_testdata / "tree.caidx",
                  tmp_path / "tree.catar")
    assert (tmp_path / "tree.catar").read_bytes() == (cmd_testdata / "tree.catar").read_bytes()


@pytest.mark.casync
def test_small_synthetic_vectors(tmp_path: Path, casync_run, desync_inproc) -> None:  # type: ignore[no-untyped-def]
    """``chunking.md`` §9.5: 16 bytes -> one chunk; 1 MiB of zeros -> four null chunks."""
    small = tmp_path / "small"
    small.write_bytes(bytes(range(16)))
    desync_inproc("make", tmp_path / "small.caibx", small)
    assert [(c.start, c.size) for c in Index.from_bytes((tmp_path / "small.caibx").read_bytes())] \
        == [(0, 16)]
    zeros = tmp_path / "zeros"
    zeros.write_bytes(bytes(MiB))
    desync_inproc("make", tmp_path / "zeros.caibx", zeros)
    raw = (tmp_path / "zeros.caibx").read_bytes()
    assert raw == casync_run.make(tmp_path / "casync.caibx", zeros)
    assert [(c.start, c.size, c.id.hex()[:16]) for c in Index.from_bytes(raw)] == [
        (i * 262144, 262144, "1c8109946feed9f9") for i in range(4)]
