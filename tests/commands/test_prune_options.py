"""``prune --ignore-chunks FILE`` (chunk ids to keep) and ``prune --dry-run``, against a
real local store: the chunk files left on disk, and their bytes, are checked."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, chunk_files

from desync_core.index import Index


def ids_of(index: Path) -> set[str]:
    return {c.id.hex() for c in Index.from_bytes(index.read_bytes())}


def snapshot(store: Path) -> dict[str, str]:
    """``{relative path: sha256 of the bytes}`` of every file in the store."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture
def store1(cmd_testdata: Path, tmp_path: Path) -> Path:
    """A writable copy of blob1.store (131 chunks)."""
    store = tmp_path / "store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    return store


def test_ignore_chunks_keeps_the_listed_ids(store1: Path, cmd_testdata: Path, tmp_path: Path,
                                            ok) -> None:  # type: ignore[no-untyped-def]
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    only_blob1 = sorted(blob1 - blob2)
    listed = only_blob1[:3]
    keep = tmp_path / "keep.txt"
    # the format cache/chop read: one id per line, blank lines skipped
    keep.write_text(f"{listed[0]}\n\n{listed[1]}\n{listed[2]}\n" + "ab" * 32 + "\n")
    before = snapshot(store1)
    ok("prune", "-y", "-s", store1, "--ignore-chunks", keep, cmd_testdata / "blob2.caibx")
    left = chunk_files(store1)
    assert set(left) == (blob1 & blob2) | set(listed)
    after = snapshot(store1)
    assert all(before[path] == digest for path, digest in after.items())  # kept bytes intact


def test_ignore_chunks_alone_and_repeated(store1: Path, cmd_testdata: Path, tmp_path: Path,
                                          ok) -> None:  # type: ignore[no-untyped-def]
    ids = sorted(ids_of(cmd_testdata / "blob1.caibx"))
    (tmp_path / "a.txt").write_text("\n".join(ids[:5]) + "\n")
    (tmp_path / "b.txt").write_text(ids[10] + "\n")
    ok("prune", "-y", "-s", store1, "--ignore-chunks", tmp_path / "a.txt",
       "--ignore-chunks", tmp_path / "b.txt")
    assert sorted(chunk_files(store1)) == [*ids[:5], ids[10]]


def test_dry_run_prints_the_doomed_ids_and_deletes_nothing(store1: Path, cmd_testdata: Path,
                                                           tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    before = snapshot(store1)
    result = ok("prune", "--dry-run", "-s", store1, cmd_testdata / "blob2.caibx")  # no -y
    assert result.out.decode().splitlines() == sorted(blob1 - blob2)
    assert result.err == ""
    assert snapshot(store1) == before
    # with a keep list the listed ids leave the list
    keep = sorted(blob1 - blob2)[:2]
    (tmp_path / "keep.txt").write_text("\n".join(keep) + "\n")
    result = ok("prune", "--dry-run", "-s", store1, "--ignore-chunks", tmp_path / "keep.txt",
                cmd_testdata / "blob2.caibx")
    assert result.out.decode().splitlines() == sorted(blob1 - blob2 - set(keep))
    assert snapshot(store1) == before
    # what the dry run listed is exactly what the real prune deletes
    ok("prune", "-y", "-s", store1, "--ignore-chunks", tmp_path / "keep.txt",
       cmd_testdata / "blob2.caibx")
    assert set(before) - set(snapshot(store1)) == {
        str(path.relative_to(store1)) for cid, path in chunk_files_of(before, store1).items()
        if cid in blob1 - blob2 - set(keep)}


def chunk_files_of(snap: dict[str, str], store: Path) -> dict[str, Path]:
    """``{hex id: path}`` of the chunk files named in a snapshot."""
    return {Path(p).name.removesuffix(".cacnk"): store / p for p in snap if p.endswith(".cacnk")}


def test_dry_run_of_a_store_with_nothing_to_delete(store1: Path, cmd_testdata: Path,
                                                   ok) -> None:  # type: ignore[no-untyped-def]
    result = ok("prune", "--dry-run", "-s", store1, cmd_testdata / "blob1.caibx")
    assert result.out == b""
    assert len(chunk_files(store1)) == 131


def test_bad_keep_lists_are_one_line_errors(store1: Path, cmd_testdata: Path, tmp_path: Path,
                                            cli) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(store1)
    bad = tmp_path / "bad.txt"
    bad.write_text("ab" * 32 + "\nnot-an-id\n")
    result = cli("prune", "-y", "-s", store1, "--ignore-chunks", bad, cmd_testdata / "blob2.caibx")
    assert_one_line_error(result, 2, f"{bad}:2: ")
    result = cli("prune", "-y", "-s", store1, "--ignore-chunks", tmp_path / "missing.txt")
    assert_one_line_error(result, 2, "missing.txt")
    assert_one_line_error(cli("prune", "-y", "-s", store1), 2,
                          "the following arguments are required: index")
    assert_one_line_error(cli("prune", "--dry-run", "-s", tmp_path / "none",
                              cmd_testdata / "blob2.caibx"), 4, "does not exist")
    assert snapshot(store1) == before


def test_dry_run_in_the_real_program(store1: Path, cmd_testdata: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob1, blob2 = ids_of(cmd_testdata / "blob1.caibx"), ids_of(cmd_testdata / "blob2.caibx")
    proc = desync("prune", "--dry-run", "-s", str(store1), str(cmd_testdata / "blob2.caibx"))
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines() == sorted(blob1 - blob2)
    assert len(chunk_files(store1)) == 131
