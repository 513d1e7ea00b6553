"""``untar --output-format=gnu-tar``: desync's bytes, and tars GNU tar and Python read."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest
from format_tar_util import make_tree

from desync_core.testing.trees import snapshot
from desync_format_tar.writer import go_file_mode, header, numeric

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")


def test_complex_catar_gives_desyncs_gnu_tar(ok, testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expected = (testdata / "testdata" / "complex.gnu-tar").read_bytes()
    ok("untar", "--output-format=gnu-tar", testdata / "testdata" / "complex.catar",
       tmp_path / "out.tar")
    assert (tmp_path / "out.tar").read_bytes() == expected
    out = ok("untar", "--output-format", "gnu-tar", testdata / "testdata" / "complex.catar",
             "-").out
    assert out == expected


def test_index_to_gnu_tar(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = ok("untar", "-i", "-s", cmd_testdata / "tree.store", "--output-format=gnu-tar",
             cmd_testdata / "tree.caidx", "-").out
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["subdir1/f1"].size == 16
        assert tar.extractfile("subdir1/f1").read() == b"file in subdir1\n"  # type: ignore[union-attr]
        assert members["symlink-file"].linkname == "subdir1/f1"
        assert members["."].isdir()
        assert members["subdir2"].mode & 0o7777 == 0o775  # Go FileMode: mask it
        assert members["subdir1/f1"].mtime == 1538248026


def test_numeric_fields() -> None:
    assert numeric(1000, 8) == b"0001750\0"
    assert numeric(0, 8) == b"0000000\0"
    assert numeric(go_file_mode(0o40775), 8) == bytes.fromhex("80000000800001fd")
    assert numeric(go_file_mode(0o120777), 8) == bytes.fromhex("80000000080001ff")
    assert numeric(-1, 12) == b"\xff" * 12
    assert numeric(8 ** 11, 12) == b"\x80" + (8 ** 11).to_bytes(11, "big")
    assert go_file_mode(0o20600) == (1 << 26) | (1 << 21) | 0o600
    assert go_file_mode(0o107755) == (1 << 23) | (1 << 22) | (1 << 20) | 0o7755


def test_header_checksum() -> None:
    h = header(b"x", mode=0o644, uid=0, gid=0, size=0, mtime=0, typeflag=b"0")
    stored = int(h[148:154], 8)
    assert stored == sum(h[:148]) + 8 * 32 + sum(h[156:])
    assert h[154:156] == b"\0 "


@needs_root
def test_gnu_tar_extracts_our_output_like_untar(ok, gnu_tar: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", whole_seconds=True)
    ok("tar", tmp_path / "a.catar", src)
    ok("untar", "--output-format=gnu-tar", tmp_path / "a.catar", tmp_path / "a.tar")
    (tmp_path / "by-tar").mkdir()
    subprocess.run([gnu_tar, "--xattrs", "--xattrs-include=*", "--acls", "-xpf",
                    str(tmp_path / "a.tar"), "-C", str(tmp_path / "by-tar")], check=True)
    ok("untar", tmp_path / "a.catar", tmp_path / "by-desync")
    assert snapshot(tmp_path / "by-tar") == snapshot(tmp_path / "by-desync")
    assert snapshot(tmp_path / "by-desync") == snapshot(src)


@needs_root
def test_device_and_fifo_typeflags(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src")
    ok("tar", tmp_path / "a.catar", src)
    out = ok("untar", "--output-format=gnu-tar", tmp_path / "a.catar", "-").out
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        types = {m.name: m.type for m in tar.getmembers()}
        long_name = next(m for m in tar.getmembers() if m.name.endswith("f" * 90))
        assert long_name.name == f"{'d' * 60}/{'e' * 60}/{'f' * 90}"
        assert tar.getmember("long-link").linkname == "t" * 150
        assert tar.getmember("big.bin").pax_headers["SCHILY.xattr.security.selinux"] \
            == "system_u:object_r:etc_t:s0\0"
    assert types["null"] == tarfile.CHRTYPE  # desync wrote BLKTYPE here
    assert types["loop"] == tarfile.BLKTYPE
    assert types["fifo"] == tarfile.FIFOTYPE


def test_sockets_are_skipped_with_a_warning(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    ok("tar", tmp_path / "a.catar", src)
    result = ok("untar", "--output-format=gnu-tar", tmp_path / "a.catar", tmp_path / "a.tar")
    assert "sock" in result.err
    assert "sockets cannot be stored in tar" in result.err
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == [".", "f"]


def test_negative_times_use_base256(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "old").write_text("1960s")
    os.utime(src / "old", ns=(-300_000_000_000_000_000, -300_000_000_000_000_000))
    ok("tar", tmp_path / "a.catar", src)
    out = ok("untar", "--output-format=gnu-tar", tmp_path / "a.catar", "-").out
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert tar.getmember("old").mtime == -300_000_000


def test_output_errors(cli, testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("untar", "--output-format=gnu-tar", testdata / "testdata" / "complex.catar",
                 tmp_path / "missing-dir" / "x.tar")
    assert result.code == 1
    assert "missing-dir" in result.err
    # tar input is not an output format
    result = cli("untar", "--output-format=tar", testdata / "testdata" / "complex.catar",
                 tmp_path / "x.tar")
    assert result.code == 2
    assert "invalid output format 'tar'" in result.err
