"""Bad input: malformed indexes, damaged chunk files, missing chunks, unreadable stores,
missing output directories.

Every case must give a one-line ``Error: …`` on stderr, a non-zero exit status (never a
traceback, exit 70) and leave no output file behind. These run the real CLI in
subprocesses. Where casync can be given the same bad input it must reject it too.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from compat_util import random_bytes, text_bytes

from desync_core.index import Index

USAGE, STORE, INTEGRITY, FORMAT = 2, 4, 5, 6


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: int,
                          *fragments: str) -> str:
    """The process failed with ``code`` and one ``Error:`` line containing ``fragments``."""
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert proc.returncode == code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def listing(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` (recursively) with its content."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A store and index of a 1.2 MB blob (2:8:32 KiB chunks); returns (dir, blob)."""
    from desync_core.cli import run

    base = tmp_path_factory.mktemp("bad")
    data = random_bytes(41, 700_000) + text_bytes(42, 500_000)
    (base / "blob").write_bytes(data)
    assert run(["make", "-m", "2:8:32", "-s", str(base / "store"), str(base / "blob.caibx"),
                str(base / "blob")]) == 0
    return base, data


@pytest.fixture
def work(setup: tuple[Path, bytes], tmp_path: Path) -> Path:
    """A fresh copy of the store and index in the test's directory."""
    base, _ = setup
    shutil.copytree(base / "store", tmp_path / "store")
    shutil.copy(base / "blob.caibx", tmp_path / "blob.caibx")
    shutil.copy(base / "blob", tmp_path / "blob")
    return tmp_path


def chunk_file(work: Path, k: int) -> tuple[str, Path]:
    """The id (hex) and store file of the index's chunk ``k``."""
    index = Index.from_bytes((work / "blob.caibx").read_bytes())
    hex_id = index.chunk_id(k).hex()
    return hex_id, work / "store" / hex_id[:4] / f"{hex_id}.cacnk"


# -- malformed and truncated indexes --------------------------------------------------

def _put(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<Q", value) + data[offset + 8:]


MUTATIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda b: b"", "empty file"),
    "truncated-header": (lambda b: b[:30], "not an index file"),
    "truncated-mid-item": (lambda b: b[:500], "truncated"),
    "truncated-tail": (lambda b: b[:-1], "truncated"),
    "tail-cut-off": (lambda b: b[:-40], "table tail"),
    "bad-magic": (lambda b: _put(b, 8, 0x1234), "not an index file"),
    "flags-all-ones": (lambda b: _put(b, 16, 0xFFFFFFFFFFFFFFFF), "feature flags"),
    "flags-unknown-bit": (lambda b: _put(b, 16, 0xB000000400000000), "unknown feature flag"),
    "flags-not-normalised": (lambda b: _put(b, 16, 0xB000000000000003), "not normalised"),
    "min-above-avg": (lambda b: _put(b, 24, 1 << 20), "chunk sizes"),
    "max-zero": (lambda b: _put(b, 40, 0), "chunk size max 0"),
    "bad-table-header": (lambda b: _put(b, 48, 0), "table header"),
    "offsets-not-increasing": (lambda b: _put(b, 64 + 40, 1), "not strictly increasing"),
    "chunk-larger-than-max": (lambda b: _put(_put(b, 32, 4096), 40, 4096), "larger than maximum"),
    "bad-tail-marker": (lambda b: b[:-8] + b"\0" * 8, "table tail"),
    "bad-table-size": (lambda b: _put(b, len(b) - 16, 7), "table tail"),
    "trailing-garbage": (lambda b: b + b"\0" * 40, "after the table tail"),
}


@pytest.mark.casync
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_malformed_index_is_rejected(mutation: str, work: Path, desync, desync_captured,  # type: ignore[no-untyped-def]
                                     casync_run) -> None:
    mutate, problem = MUTATIONS[mutation]
    bad = work / "bad.caibx"
    bad.write_bytes(mutate((work / "blob.caibx").read_bytes()))
    before = listing(work)
    assert_one_line_error(desync("list-chunks", str(bad), check=False), FORMAT,
                          f"Error: {bad}: ", problem)
    assert_one_line_error(desync_captured("extract", "-s", work / "store", bad, work / "out"),
                          FORMAT, str(bad), problem)
    assert listing(work) == before
    # casync refuses the same file.
    proc = casync_run("extract", f"--store={work / 'store'}", bad, work / "casync-out",
                      check=False)
    assert proc.returncode != 0
    assert not (work / "casync-out").exists()


@pytest.mark.parametrize("command", [
    ["cat", "-s", "{store}", "{index}", "{out}"],
    ["info", "-s", "{store}", "{index}"],
    ["verify-index", "{index}", "{blob}"],
    ["chop", "-s", "{store}", "{index}", "{blob}"],
    ["cache", "-s", "{store}", "-c", "{dir}/cache", "{index}"],
    ["prune", "-y", "-s", "{store}", "{index}"],
    ["inspect-chunks", "{index}", "{out}"],
    ["extract", "-s", "{store}", "{index}", "{out}"],
    ["list-chunks", "{index}"],
], ids=lambda c: c[0])
def test_truncated_index_fails_every_command(command: list[str], work: Path,  # type: ignore[no-untyped-def]
                                             desync_captured) -> None:
    bad = work / "truncated.caibx"
    bad.write_bytes((work / "blob.caibx").read_bytes()[:333])
    before = listing(work)
    args = [a.format(store=work / "store", index=bad, out=work / "out", blob=work / "blob",
                     dir=work) for a in command]
    assert_one_line_error(desync_captured(*args), FORMAT, str(bad), "truncated")
    assert listing(work) == before  # nothing pruned, cached, chopped or written


def test_index_from_stdin_names_stdin(desync) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(desync("list-chunks", "-", input=b"\0" * 99, check=False), FORMAT,
                          "Error: stdin: ")


def test_missing_index_file(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(desync("extract", "-s", str(work / "store"), str(work / "nope.caibx"),
                                 str(work / "out"), check=False), STORE, "nope.caibx")
    assert not (work / "out").exists()


# -- damaged chunk files ----------------------------------------------------------------

def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _not_zstd(path: Path) -> None:
    path.write_bytes(b"invalid")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGES: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "bit-flipped": (_flip_bit, INTEGRITY, ""),
    "truncated": (_truncate, INTEGRITY, "invalid chunk"),
    "not-zstd": (_not_zstd, INTEGRITY, "invalid chunk"),
    "empty-file": (_empty, INTEGRITY, "invalid chunk"),
}


@pytest.mark.parametrize("command", ["extract", "cat"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_chunk_file(damage: str, command: str, work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    damage_fn, code, text = DAMAGES[damage]
    hex_id, path = chunk_file(work, 7)
    damage_fn(path)
    (work / "out").write_bytes(b"previous content")
    before = listing(work)
    line = assert_one_line_error(
        desync(command, "-s", str(work / "store"), str(work / "blob.caibx"), str(work / "out"),
               check=False), code, hex_id, text)
    if damage == "bit-flipped":  # may still be a valid zstd frame, or not
        assert "does not match its hash" in line or "invalid chunk" in line
    assert listing(work) == before  # the old output is untouched, no temp files left


@pytest.mark.parametrize("command", ["extract", "cat"])
def test_chunk_file_holding_another_chunks_data(command: str, work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    hex_id, path = chunk_file(work, 3)
    _, other = chunk_file(work, 4)
    shutil.copy(other, path)
    line = assert_one_line_error(
        desync(command, "-s", str(work / "store"), str(work / "blob.caibx"), str(work / "out"),
               check=False), INTEGRITY, hex_id)
    # Either the hash is checked first (naming the id the data really has) or the size
    # recorded in the index (the two chunks differ in size).
    assert f"does not match its hash {other.name.removesuffix('.cacnk')}" in line or \
        "unexpected size" in line, line
    assert not (work / "out").exists()
    assert [p.name for p in work.iterdir() if p.name.startswith(".out")] == []


def zstd_bomb(blocks: int) -> bytes:
    """A valid zstd frame of ``blocks`` RLE blocks, each inflating 4 bytes to 128 KiB."""
    frame = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")  # magic, no size/checksum, 128 KiB window
    for i in range(blocks):
        last = int(i == blocks - 1)
        frame += ((131072 << 3) | (1 << 1) | last).to_bytes(3, "little") + b"\0"
    return bytes(frame)


def test_chunk_file_inflating_beyond_any_chunk_size(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    """A 4.4 KB chunk file that would inflate to 144 MB is rejected without being
    inflated: by the store layer's 128 MiB limit, or earlier by a reader that knows the
    chunk's size from the index."""
    hex_id, path = chunk_file(work, 6)
    path.write_bytes(zstd_bomb(1100))
    for command in ("extract", "cat"):
        line = assert_one_line_error(
            desync(command, "-s", str(work / "store"), str(work / "blob.caibx"),
                   str(work / "out"), check=False), INTEGRITY, hex_id)
        # Readers stop at the chunk's size from the index (6577), or at the index's
        # largest chunk (32768, the verified read of the store chain); never at 128 MiB.
        assert re.search(r"decompresses to more than (6577|32768) bytes", line), line
    proc = desync("verify", "-s", str(work / "store"), check=False)
    assert proc.returncode == INTEGRITY
    assert proc.stderr.decode().splitlines()[0] == (
        f"invalid chunk {hex_id}: decompresses to more than 134217728 bytes")
    assert not (work / "out").exists()


@pytest.mark.parametrize("command", ["extract", "cat"])
@pytest.mark.parametrize("workers", ["1", "10"])
def test_missing_chunk(command: str, workers: str, work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    hex_id, path = chunk_file(work, 5)
    path.unlink()
    assert_one_line_error(
        desync(command, "-n", workers, "-s", str(work / "store"), str(work / "blob.caibx"),
               str(work / "out"), check=False), STORE, f"chunk {hex_id} missing from store")
    assert not (work / "out").exists()
    assert [p.name for p in work.iterdir() if p.name.startswith(".out")] == []


def test_verify_reports_every_damaged_chunk(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    """``verify`` lists the bad chunks on stderr (then a summary, exit 5) and -r removes
    them (exit 0)."""
    bad = {}
    for k, damage in enumerate(sorted(DAMAGES)):
        hex_id, path = chunk_file(work, 10 + k)
        DAMAGES[damage][0](path)
        bad[hex_id] = path
    proc = desync("verify", "-s", str(work / "store"), check=False)
    assert proc.returncode == INTEGRITY
    *reported, summary = proc.stderr.decode().splitlines()
    assert summary == f"Error: {len(bad)} invalid chunks in store {work / 'store'} " \
        "(use -r to remove them)"
    assert sorted(line.split()[2] if line.startswith("chunk id") else line.split()[2][:-1]
                  for line in reported) == sorted(bad)
    assert all(p.exists() for p in bad.values())
    proc = desync("verify", "-r", "-s", str(work / "store"))
    assert all(line.endswith(": removed") for line in proc.stderr.decode().splitlines())
    assert not any(p.exists() for p in bad.values())
    assert desync("verify", "-s", str(work / "store")).stderr == b""


# -- unreadable stores ------------------------------------------------------------------

def test_store_is_a_regular_file(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    (work / "file-store").write_bytes(b"not a directory")
    index, out = str(work / "blob.caibx"), str(work / "out")
    for args in (["extract", "-s", "file-store", index, out],
                 ["cat", "-s", "file-store", index, out],
                 ["make", "-s", "file-store", str(work / "new.caibx"), str(work / "blob")],
                 ["chop", "-s", "file-store", index, str(work / "blob")],
                 ["cache", "-s", str(work / "store"), "-c", "file-store", index],
                 ["verify", "-s", "file-store"],
                 ["prune", "-y", "-s", "file-store", index]):
        args = [str(work / a) if a == "file-store" else a for a in args]
        assert_one_line_error(desync(*args, check=False), STORE, "file-store")
    assert not (work / "out").exists()
    assert not (work / "new.caibx").exists()


def test_chunk_path_is_a_directory(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    hex_id, path = chunk_file(work, 2)
    path.unlink()
    path.mkdir()
    assert_one_line_error(desync("extract", "-s", str(work / "store"), str(work / "blob.caibx"),
                                 str(work / "out"), check=False), STORE, hex_id)
    assert not (work / "out").exists()


@pytest.mark.root
def test_store_without_read_permission(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    """A store the process may not read. Root ignores permissions, so the commands run
    as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (``setpriv``)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test needs root and setpriv (util-linux) to drop DAC capabilities")
    import sys

    def unprivileged(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable,
             "-m", "desync_core", *args], capture_output=True, timeout=300)

    store = work / "store"
    hex_id, _ = chunk_file(work, 0)
    os.chmod(store / hex_id[:4], 0)
    try:
        assert_one_line_error(unprivileged("extract", "-s", str(store), str(work / "blob.caibx"),
                                           str(work / "out")), STORE, "Permission denied")
        assert_one_line_error(unprivileged("verify", "-s", str(store)), STORE,
                              "Permission denied")
        assert not (work / "out").exists()
        os.chmod(store, 0)
        assert_one_line_error(unprivileged("cat", "-s", str(store), str(work / "blob.caibx"),
                                           str(work / "out")), STORE, "Permission denied")
        assert not (work / "out").exists()
    finally:
        os.chmod(store, 0o755)
        os.chmod(store / hex_id[:4], 0o755)


# -- output problems --------------------------------------------------------------------

def test_output_directory_missing(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    missing = work / "no" / "such" / "dir"
    store, index, blob = str(work / "store"), str(work / "blob.caibx"), str(work / "blob")
    for args, code in ((["extract", "-s", store, index, str(missing / "out")], USAGE),
                       (["cat", "-s", store, index, str(missing / "out")], USAGE),
                       (["make", str(missing / "x.caibx"), blob], STORE),
                       (["inspect-chunks", index, str(missing / "x.json")], USAGE)):
        assert_one_line_error(desync(*args, check=False), code, str(work / "no"))
    assert not (work / "no").exists()


def test_output_is_a_directory(work: Path, desync) -> None:  # type: ignore[no-untyped-def]
    (work / "outdir").mkdir()
    for command in ("extract", "cat"):
        assert_one_line_error(desync(command, "-s", str(work / "store"), str(work / "blob.caibx"),
                                     str(work / "outdir"), check=False), USAGE, "outdir")
    assert list((work / "outdir").iterdir()) == []
