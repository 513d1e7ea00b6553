"""Store commands: ``verify``, ``chop``, ``cache``, ``prune`` (desync's TestVerifyCommand,
TestChopCommand, TestCacheCommand, TestPruneCommand and more)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, chunk_files

from desync_core.index import Index

BAD_ID = "1234567890" + "0" * 54


def ids_of(index: Path) -> set[str]:
    return {c.id.hex() for c in Index.from_bytes(index.read_bytes())}


@pytest.fixture
def store1(cmd_testdata: Path, tmp_path: Path) -> Path:
    """A writable copy of blob1.store."""
    store = tmp_path / "store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    return store


# -- verify ------------------------------------------------------------------------------

def test_verify_reports_and_repairs_an_invalid_chunk(store1: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    """desync's test: ``1234/12345678900…0.cacnk`` holding ``invalid``."""
    bad = store1 / "1234" / f"{BAD_ID}.cacnk"
    bad.parent.mkdir()
    bad.write_bytes(b"invalid")
    result = cli("verify", "-s", store1)
    assert result.code == 5
    assert result.out == b""
    assert result.err.splitlines() == [
        f"invalid chunk {BAD_ID}: unknown compression format",
        f"Error: 1 invalid chunk in store {store1} (use -r to remove them)"]
    assert bad.exists()  # only reported
    result = ok("verify", "-r", "-s", store1)
    assert result.err.splitlines() == [
        f"invalid chunk {BAD_ID}: unknown compression format: removed"]
    assert not bad.exists()
    assert len(chunk_files(store1)) == 131
    assert ok("verify", "--repair", "-n", "1", "-s", store1).err == ""


def test_verify_finds_a_chunk_with_wrong_content(store1: Path, cmd_testdata: Path, cli) -> None:  # type: ignore[no-untyped-def]
    files = sorted(chunk_files(store1).items())
    (wrong_id, wrong), (other_id, other) = files[0], files[1]
    shutil.copy(other, wrong)
    result = cli("verify", "-s", store1)
    assert result.code == 5
    assert result.err.splitlines()[0] == f"chunk id {wrong_id} does not match its hash {other_id}"


def test_verify_ignores_other_files(store1: Path, ok) -> None:  # type: ignore[no-untyped-def]
    prefix = next(p for p in store1.iterdir() if p.is_dir())
    (prefix / ".tmp-cacnk.123").write_bytes(b"partial")  # a writer's temp file
    (prefix / ("ab" * 32)).write_bytes(b"uncompressed-format file")  # other format
    (store1 / "README").write_text("not a chunk")
    assert ok("verify", "-s", store1).err == ""


def test_verify_errors(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("verify"), 2, "no store provided")
    assert_one_line_error(cli("verify", "-s", tmp_path / "none"), 4, "does not exist")
    assert_one_line_error(cli("verify", "-s", "http://127.0.0.1:1/store"), 2,
                          "not a local store")


# -- chop -----------------------------------------------------------------------------

def test_chop(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    ok("chop", "-s", store, cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    assert set(chunk_files(store)) == ids_of(cmd_testdata / "blob1.caibx")
    ok("extract", "-s", store, cmd_testdata / "blob1.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_chop_ignore(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    ok("chop", "-s", tmp_path / "a", "--ignore", cmd_testdata / "blob2.caibx",
       cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    assert set(chunk_files(tmp_path / "a")) == blob1 - blob2
    assert len(blob1 - blob2) == 7
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(f"  {h.upper()}  " for h in sorted(blob2)) + "\n\n")
    ok("chop", "-s", tmp_path / "b", "--ignore-chunks", listed, cmd_testdata / "blob1.caibx",
       cmd_testdata / "blob1")
    assert set(chunk_files(tmp_path / "b")) == blob1 - blob2


def test_chop_errors(cmd_testdata: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("chop", cmd_testdata / "blob1.caibx", cmd_testdata / "blob1"), 2,
                          "no target store provided")
    result = cli("chop", "-s", tmp_path / "s", cmd_testdata / "blob2.caibx", cmd_testdata / "blob1")
    assert_one_line_error(result, 5, "does not match its hash")
    assert_one_line_error(cli("chop", "-s", tmp_path / "s", cmd_testdata / "blob1.caibx",
                              tmp_path / "none"), 2, "none")
    (tmp_path / "bad.txt").write_text("not-an-id\n")
    assert_one_line_error(cli("chop", "-s", tmp_path / "s", "--ignore-chunks", tmp_path / "bad.txt",
                              cmd_testdata / "blob1.caibx", cmd_testdata / "blob1"), 2,
                          "bad.txt:1")


# -- cache ------------------------------------------------------------------------------

def test_cache(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "cache"
    result = ok("cache", "-s", cmd_testdata / "blob1.store", "-c", target,
                cmd_testdata / "blob1.caibx")
    assert result.out == b""
    files = chunk_files(target)
    assert set(files) == ids_of(cmd_testdata / "blob1.caibx")
    # Same bytes as the source (no recompression between stores of one format).
    for hex_id, path in files.items():
        assert path.read_bytes() == (cmd_testdata / "blob1.store" / hex_id[:4] /
                                     path.name).read_bytes()
    before = {h: p.stat().st_mtime_ns for h, p in files.items()}
    ok("cache", "-s", cmd_testdata / "blob1.store", "-c", target, cmd_testdata / "blob1.caibx")
    assert {h: p.stat().st_mtime_ns for h, p in chunk_files(target).items()} == before


def test_cache_several_indexes_and_ignore(cmd_testdata: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    ok("cache", "-s", cmd_testdata / "blob1.store", "-s", cmd_testdata / "blob2.store",
       "-c", tmp_path / "both", cmd_testdata / "blob1.caibx", cmd_testdata / "blob2.caibx")
    assert set(chunk_files(tmp_path / "both")) == blob1 | blob2
    ok("cache", "-s", cmd_testdata / "blob1.store", "-c", tmp_path / "some",
       "--ignore", cmd_testdata / "blob2.caibx", cmd_testdata / "blob1.caibx")
    assert set(chunk_files(tmp_path / "some")) == blob1 - blob2


def test_cache_errors(cmd_testdata: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    index = cmd_testdata / "blob1.caibx"
    assert_one_line_error(cli("cache", "-c", tmp_path / "c", index), 2, "no source store")
    assert_one_line_error(cli("cache", "-s", cmd_testdata / "blob1.store", index), 2,
                          "no target cache store")
    assert_one_line_error(cli("cache", "-s", cmd_testdata / "blob2.store", "-c", tmp_path / "c",
                              index), 4, "missing from store")


# -- prune ------------------------------------------------------------------------------

def test_prune_keeps_what_the_indexes_reference(store1: Path, cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """desync's TestPruneCommand: prune blob1's store keeping blob2's chunks."""
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    result = ok("prune", "-y", "-s", store1, cmd_testdata / "blob2.caibx")
    assert result.out == b""
    assert set(chunk_files(store1)) == blob1 & blob2
    assert len(blob1 & blob2) == 124


def test_prune_asks_first(store1: Path, cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index = cmd_testdata / "blob2.caibx"
    prompt = ("Warning: The provided index files reference 131 unique chunks. Are you sure\n"
              f"you want to delete all other chunks from '{store1}'?\n[y/N]: ")
    for answer in (b"n\n", b"N\n", b"\n", b""):
        assert ok("prune", "-s", store1, index, input=answer).text == prompt
        assert len(chunk_files(store1)) == 131
    result = ok("prune", "-s", store1, index, input=b"maybe\nY\n")
    assert result.text == prompt + "[y/N]: "  # asked again after a word it does not know
    assert len(chunk_files(store1)) == 124


def test_prune_several_indexes_and_leftovers(store1: Path, cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    prefix = next(p for p in store1.iterdir() if p.is_dir())
    (prefix / ".tmp-cacnk.42").write_bytes(b"stale temp file")
    (store1 / "notes.txt").write_text("kept")
    ok("prune", "-y", "-s", store1, cmd_testdata / "blob1.caibx", cmd_testdata / "blob2.caibx")
    assert len(chunk_files(store1)) == 131
    assert not (prefix / ".tmp-cacnk.42").exists()
    assert (store1 / "notes.txt").read_text() == "kept"
    ok("prune", "-y", "-s", store1, "-", input=(cmd_testdata / "blob2.caibx").read_bytes())
    assert len(chunk_files(store1)) == 124


def test_prune_errors(store1: Path, cmd_testdata: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    index = cmd_testdata / "blob2.caibx"
    assert_one_line_error(cli("prune", "-y", index), 2, "no store provided")
    result = cli("prune", "-s", tmp_path / "none", index, input=b"y\n")
    assert_one_line_error(result, 4, "does not exist")
    assert result.out == b""  # failed before asking
    assert_one_line_error(cli("prune", "-y", "-s", store1, tmp_path / "missing.caibx"), 4,
                          "missing.caibx")
    assert len(chunk_files(store1)) == 131


def test_chunks_of_whole_mebibytes_are_valid(tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    """Regression (data loss): chunks of exactly 1 MiB were reported as truncated by
    verify and cat, and ``verify -r`` deleted them."""
    data = os.urandom(3 << 20)
    (tmp_path / "in.bin").write_bytes(data)
    store, index = tmp_path / "st", tmp_path / "x.caibx"
    ok("make", "-m", "1024:1024:1024", "-s", store, index, tmp_path / "in.bin")
    before = sorted(p.name for p in store.rglob("*.cacnk"))
    assert len(before) == 3
    ok("verify", "-r", "-s", store)
    assert sorted(p.name for p in store.rglob("*.cacnk")) == before
    assert ok("cat", "-s", store, index).out == data


@pytest.mark.parametrize("how", ["same name", "dot path", "hard link", "symlink"])
def test_no_command_writes_its_output_over_an_input(tmp_path: Path, cmd_testdata: Path,
                                                    how: str, cli, ok) -> None:  # type: ignore[no-untyped-def]
    """Regression (data loss): ``desync make disk.img disk.img`` replaced the input with
    its index. Every command refuses an output that is one of its inputs, under any name."""
    blob = tmp_path / "disk.img"
    original = (cmd_testdata / "blob1").read_bytes()
    blob.write_bytes(original)
    index = tmp_path / "blob1.caibx"
    shutil.copy(cmd_testdata / "blob1.caibx", index)
    index_bytes = index.read_bytes()

    def alias(path: Path) -> str:
        if how == "same name":
            return str(path)
        if how == "dot path":
            return str(path.parent / "." / path.name)
        other = tmp_path / f"alias-{path.name}"
        other.unlink(missing_ok=True)
        if how == "hard link":
            os.link(path, other)
        else:
            other.symlink_to(path)
        return str(other)

    store = cmd_testdata / "blob1.store"
    runs = [
        ("make", alias(blob), blob),
        ("make", "-s", tmp_path / "st", alias(blob), blob),
        ("extract", "-s", store, index, alias(index)),
        ("cat", "-s", store, index, alias(index)),
        ("inspect-chunks", index, alias(index)),
        ("tar", "--input-format", "disk", alias(blob), blob),
    ]
    for args in runs:
        assert_one_line_error(cli(*args), 2, "input and output filenames match")
        assert blob.read_bytes() == original, args
        assert index.read_bytes() == index_bytes, args
