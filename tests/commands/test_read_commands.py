"""Read-side commands on desync's vectors: ``cat``, ``list-chunks``, ``info``,
``inspect-chunks``, ``verify-index`` (desync's TestCatCommand, TestListCommand,
TestInfoCommand, TestInspectChunksCommand, TestVerifyIndexCommand and more)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, is_chunk_id

from desync_core.index import Index

# -- cat -------------------------------------------------------------------------------

SLICES = [([], 0, None), (["-o", "1024"], 1024, None), (["-o", "1024", "-l", "2048"], 1024, 3072),
          (["--offset", "2097151"], 2097151, None), (["-l", "5"], 0, 5),
          (["-o", "2097152"], 2097152, None), (["-o", "30000", "-l", "70000"], 30000, 100000)]


@pytest.mark.parametrize(("flags", "lo", "hi"), SLICES)
def test_cat_slices_to_stdout(cmd_testdata: Path, flags: list[str], lo: int, hi: int | None,  # type: ignore[no-untyped-def]
                              ok) -> None:
    expected = (cmd_testdata / "blob1").read_bytes()[lo:hi]
    result = ok("cat", "-s", cmd_testdata / "blob1.store", *flags, cmd_testdata / "blob1.caibx")
    assert result.out == expected


def test_cat_to_a_file_and_from_stdin(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    expected = (cmd_testdata / "blob1").read_bytes()
    out = tmp_path / "out"
    out.write_bytes(b"x" * 5_000_000)  # longer than the blob: must not survive
    ok("cat", "-s", cmd_testdata / "blob1.store", cmd_testdata / "blob1.caibx", out)
    assert out.read_bytes() == expected
    ok("cat", "-s", cmd_testdata / "blob1.store", "-o", "1024", "-l", "2048", "-",
       tmp_path / "slice", input=(cmd_testdata / "blob1.caibx").read_bytes())
    assert (tmp_path / "slice").read_bytes() == expected[1024:3072]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cat_with_cache(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    result = ok("cat", "-s", cmd_testdata / "blob1.store", "-c", tmp_path / "cache",
                cmd_testdata / "blob1.caibx")
    assert result.out == (cmd_testdata / "blob1").read_bytes()
    assert len(list((tmp_path / "cache").rglob("*.cacnk"))) == 130  # all but the null chunk


@pytest.mark.parametrize(("flags", "message"), [
    (["-o", "2097153"], "beyond the end"),
    (["-o", "2097100", "-l", "100"], "cannot read 100 bytes"),
    (["-l", "3000000"], "cannot read"),
    (["-o", "-1"], "negative"),
    (["-o", "abc"], "invalid integer"),
])
def test_cat_bad_ranges(cmd_testdata: Path, tmp_path: Path, flags: list[str], message: str,  # type: ignore[no-untyped-def]
                        cli) -> None:
    result = cli("cat", "-s", cmd_testdata / "blob1.store", *flags, cmd_testdata / "blob1.caibx",
                 tmp_path / "out")
    assert_one_line_error(result, 2, message)
    assert list(tmp_path.iterdir()) == []


def test_cat_needs_a_store(cmd_testdata: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("cat", cmd_testdata / "blob1.caibx"), 2, "no store provided")


# -- list-chunks -----------------------------------------------------------------------

def test_list_chunks(cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    lines = ok("list-chunks", cmd_testdata / "blob1.caibx").text.splitlines()
    assert len(lines) == 161  # duplicates included, in index order
    assert all(is_chunk_id(line) for line in lines)
    index = Index.from_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    assert lines == [c.id.hex() for c in index]
    assert ok("list-chunks", "-", input=(cmd_testdata / "blob1.caibx").read_bytes()).text \
        .splitlines() == lines


def test_list_chunks_of_an_empty_index(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").write_bytes(b"")
    ok("make", tmp_path / "e.caibx", tmp_path / "empty")
    assert ok("list-chunks", tmp_path / "e.caibx").out == b""


# -- info ------------------------------------------------------------------------------

BLOB1_INFO = {
    "total": 161, "unique": 131, "in-store": 131, "in-seed": 0, "in-cache": 0,
    "not-in-seed-nor-cache": 131, "size": 2097152, "dedup-size-not-in-seed": 1114112,
    "dedup-size-not-in-seed-nor-cache": 1114112,
    "dedup-size-not-in-seed-nor-cache-compressed": 0,
    "chunk-size-min": 2048, "chunk-size-avg": 8192, "chunk-size-max": 32768,
}


def test_info_blob1(cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    text = ok("info", "-s", cmd_testdata / "blob1.store", cmd_testdata / "blob1.caibx").text
    assert json.loads(text) == BLOB1_INFO
    assert list(json.loads(text)) == list(BLOB1_INFO)  # key order as desync prints it
    assert text == json.dumps(BLOB1_INFO, indent=2) + "\n"
    same = ok("info", "--format=json", "-s", cmd_testdata / "blob1.store",
              cmd_testdata / "blob1.caibx").text
    assert same == text


def test_info_store_presence(cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """in-store counts unique chunks present in any of the given stores."""
    info = json.loads(ok("info", "-s", cmd_testdata / "blob2.store",
                         cmd_testdata / "blob1.caibx").text)
    assert info["in-store"] == 124
    info = json.loads(ok("info", "-s", cmd_testdata / "blob2.store", "-s",
                         cmd_testdata / "blob1.store", cmd_testdata / "blob1.caibx").text)
    assert info["in-store"] == 131
    info = json.loads(ok("info", cmd_testdata / "blob1.caibx").text)
    assert info["in-store"] == 0


def test_info_with_seed(cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    info = json.loads(ok("info", "--seed", cmd_testdata / "blob2.caibx",
                         cmd_testdata / "blob1.caibx").text)
    assert (info["in-seed"], info["not-in-seed-nor-cache"], info["dedup-size-not-in-seed"],
            info["dedup-size-not-in-seed-nor-cache"]) == (124, 7, 80029, 80029)


@pytest.mark.parametrize(("seed", "chunks_info", "expected"), [
    (True, "blob2_chunks_info.json", (25, 7, 80029, 80029, 76000)),
    (False, "blob2_chunks_info.json", (25, 106, 1114112, 853943, 818145)),
    (False, "blob2_chunks_info_missing.json", (25, 106, 1114112, 853943, 0)),
])
def test_info_cache_and_chunks_info(cmd_testdata: Path, seed: bool, chunks_info: str,  # type: ignore[no-untyped-def]
                                    expected: tuple[int, ...], ok) -> None:
    args = ["info", "-s", cmd_testdata / "blob2.store", "--cache", cmd_testdata / "blob2.cache",
            "--chunks-info", cmd_testdata / chunks_info]
    if seed:
        args += ["--seed", cmd_testdata / "blob1.caibx"]
    info = json.loads(ok(*args, cmd_testdata / "blob2.caibx").text)
    assert (info["in-cache"], info["not-in-seed-nor-cache"], info["dedup-size-not-in-seed"],
            info["dedup-size-not-in-seed-nor-cache"],
            info["dedup-size-not-in-seed-nor-cache-compressed"]) == expected


def test_info_plain_format(cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    text = ok("info", "-f", "plain", "-s", cmd_testdata / "blob1.store",
              cmd_testdata / "blob1.caibx").text
    assert text.splitlines() == [
        "Blob size: 2097152",
        "Size of deduplicated chunks not in seed: 1114112",
        "Size of deduplicated chunks not in seed nor cache: 1114112",
        "Total chunks: 161",
        "Unique chunks: 131",
        "Chunks in store: 131",
        "Chunks in seed: 0",
        "Chunks in cache: 0",
        "Chunks not in seed nor cache: 131",
        "Compressed chunks not in seed nor cache: 0",
        "Chunk size min: 2048",
        "Chunk size avg: 8192",
        "Chunk size max: 32768",
    ]


def test_info_errors(cmd_testdata: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("info", "-f", "xml", cmd_testdata / "blob1.caibx"), 2,
                          'unsupported output format "xml"')
    assert_one_line_error(cli("info", "--chunks-info", tmp_path / "none.json",
                              cmd_testdata / "blob1.caibx"), 2, "none.json")


# -- inspect-chunks --------------------------------------------------------------------

@pytest.mark.parametrize(("store", "golden"), [
    ("blob2.store", "blob2_chunks_info.json"),
    ("blob2.cache", "blob2_chunks_info_missing.json"),
    (None, "blob2_chunks_info_no_store.json"),
])
def test_inspect_chunks_matches_desync(cmd_testdata: Path, tmp_path: Path, store: str | None,  # type: ignore[no-untyped-def]
                                       golden: str, ok) -> None:
    args = ["-s", cmd_testdata / store] if store else []
    expected = (cmd_testdata / golden).read_bytes()
    assert ok("inspect-chunks", *args, cmd_testdata / "blob2.caibx").out == expected
    ok("inspect-chunks", *args, cmd_testdata / "blob2.caibx", tmp_path / "out.json")
    assert (tmp_path / "out.json").read_bytes() == expected


def test_inspect_chunks_needs_a_local_store(cmd_testdata: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("inspect-chunks", "-s", "http://127.0.0.1:1/store",
                              cmd_testdata / "blob2.caibx"), 2, "is not a local store")


# -- verify-index ----------------------------------------------------------------------

def test_verify_index(cmd_testdata: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    result = ok("verify-index", cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    assert (result.out, result.err) == (b"", "")
    ok("verify-index", "-n", "1", "-", cmd_testdata / "blob1",
       input=(cmd_testdata / "blob1.caibx").read_bytes())
    assert_one_line_error(cli("verify-index", cmd_testdata / "blob2.caibx", cmd_testdata / "blob1"),
                          5, f"seed index for {cmd_testdata / 'blob1'} doesn't match its data")


def test_verify_index_errors(cmd_testdata: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    shorter = tmp_path / "shorter"
    shorter.write_bytes((cmd_testdata / "blob1").read_bytes()[:-1])
    assert_one_line_error(cli("verify-index", cmd_testdata / "blob1.caibx", shorter), 5,
                          "index size (2097152) does not match file size (2097151)")
    changed = tmp_path / "changed"
    data = bytearray((cmd_testdata / "blob1").read_bytes())
    data[-1] ^= 1
    changed.write_bytes(bytes(data))
    assert_one_line_error(cli("verify-index", cmd_testdata / "blob1.caibx", changed), 5,
                          "doesn't match its data")
    assert_one_line_error(cli("verify-index", cmd_testdata / "blob1.caibx", tmp_path / "none"),
                          2, "none")
    assert_one_line_error(cli("verify-index", cmd_testdata / "blob1.caibx", tmp_path), 2,
                          "is a directory")


def test_verify_index_of_a_copy_made_by_make(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(cmd_testdata / "blob2", tmp_path / "blob2")
    ok("make", "-m", "2:8:32", tmp_path / "b.caibx", tmp_path / "blob2")
    ok("verify-index", tmp_path / "b.caibx", tmp_path / "blob2")
    ok("verify-index", cmd_testdata / "blob2.caibx", tmp_path / "blob2")
