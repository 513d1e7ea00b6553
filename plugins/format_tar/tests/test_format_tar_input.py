"""``tar --input-format=tar``: GNU/PAX/USTAR tar files and streams become catar archives."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from format_tar_util import make_tree

from desync_core.testing.trees import snapshot

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")


def gnu(gnu_tar: str, *args: str | os.PathLike[str]) -> None:
    subprocess.run([gnu_tar, *map(str, args)], check=True)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]],
              fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, **kwargs: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.mtime = 1_600_000_000
    for key, value in kwargs.items():
        setattr(ti, key, value)
    return ti


def one_error(result, code: int, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    assert result.err.startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


# -- GNU tar files --------------------------------------------------------------------------


@needs_root
def test_pax_tar_gives_the_same_archive_as_the_directory(ok, gnu_tar: str,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    gnu(gnu_tar, "--format=pax", "--xattrs", "--xattrs-include=*", "--acls", "-C", src,
        "-cf", tmp_path / "src.tar", ".")
    ok("tar", tmp_path / "from-dir.catar", src)
    ok("tar", "--input-format=tar", tmp_path / "from-tar.catar", tmp_path / "src.tar")
    assert (tmp_path / "from-tar.catar").read_bytes() == \
        (tmp_path / "from-dir.catar").read_bytes()


@needs_root
def test_tar_stream_on_stdin(ok, gnu_tar: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src")
    gnu(gnu_tar, "--format=pax", "--xattrs", "--xattrs-include=*", "--acls", "-C", src,
        "-cf", tmp_path / "src.tar", ".")
    ok("tar", "--input-format=tar", tmp_path / "file.catar", tmp_path / "src.tar")
    ok("tar", "--input-format", "tar", tmp_path / "stdin.catar", "-",
       input=(tmp_path / "src.tar").read_bytes())
    assert (tmp_path / "stdin.catar").read_bytes() == (tmp_path / "file.catar").read_bytes()
    # and gzip-compressed, from a file and from stdin
    (tmp_path / "src.tar.gz").write_bytes(gzip.compress((tmp_path / "src.tar").read_bytes()))
    ok("tar", "--input-format=tar", tmp_path / "gz.catar", tmp_path / "src.tar.gz")
    out = ok("tar", "--input-format=tar", "-", "-",
             input=(tmp_path / "src.tar.gz").read_bytes()).out
    assert (tmp_path / "gz.catar").read_bytes() == out == (tmp_path / "file.catar").read_bytes()


@needs_root
@pytest.mark.parametrize("fmt", ["gnu", "ustar", "v7"])
def test_other_tar_formats(ok, gnu_tar: str, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", whole_seconds=True)
    if fmt != "gnu":  # USTAR and v7 cannot hold these names / link targets
        doomed = [src / "long-link", *src.glob("d*")]
        if fmt == "v7":  # nor devices and FIFOs
            doomed += [src / "fifo", src / "null", src / "loop"]
        for p in doomed:
            subprocess.run(["rm", "-rf", str(p)], check=True)
        os.utime(src, ns=(1_700_000_000_000_000_000,) * 2)
    gnu(gnu_tar, f"--format={fmt}", "-C", src, "-cf", tmp_path / "src.tar", ".")
    ok("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "src.tar")
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert snapshot(tmp_path / "out", xattrs=False) == snapshot(src, xattrs=False)


def test_gnu_sparse_files_are_expanded(ok, gnu_tar: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(5_000_000)
        f.write(b"tail")
    gnu(gnu_tar, "--sparse", "--format=gnu", "-C", src, "-cf", tmp_path / "s.tar", ".")
    ok("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "s.tar")
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert (tmp_path / "out" / "sparse").read_bytes() == (src / "sparse").read_bytes()


# -- member rules -------------------------------------------------------------------------------


def test_hard_links_are_refused_with_a_hint(cli, ok, gnu_tar: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("shared\n")
    os.link(src / "a", src / "b")
    gnu(gnu_tar, "-C", src, "-cf", tmp_path / "links.tar", ".")
    result = cli("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "links.tar")
    one_error(result, 6, "hard link", "--hard-dereference")
    assert not (tmp_path / "a.catar").exists()
    gnu(gnu_tar, "--hard-dereference", "-C", src, "-cf", tmp_path / "copies.tar", ".")
    ok("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "copies.tar")
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert (tmp_path / "out" / "b").read_text() == "shared\n"


def test_tar_add_root(cli, ok, gnu_tar: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "file1").write_text("one\n")
    (tmp_path / "dir2").mkdir()
    (tmp_path / "dir2" / "x").write_text("x\n")
    gnu(gnu_tar, "-C", tmp_path, "-cf", tmp_path / "t.tar", "file1", "dir2")
    result = cli("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "t.tar")
    one_error(result, 6, "first tar member 'file1' is not a directory", "--tar-add-root")
    ok("tar", "--input-format=tar", "--tar-add-root", tmp_path / "a.catar", tmp_path / "t.tar")
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert (tmp_path / "out" / "file1").read_text() == "one\n"
    assert (tmp_path / "out" / "dir2" / "x").read_text() == "x\n"
    st = (tmp_path / "out").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755


def test_members_in_any_order_missing_directories_and_repeats(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tar_bytes([
        (info("./", tarfile.DIRTYPE), None),
        (info("./z/deep/file"), b"deep\n"),
        (info("./b"), b"first version\n"),
        (info("./a", tarfile.SYMTYPE, linkname="b"), None),
        (info("./b"), b"second version\n"),
        (info("./z", tarfile.DIRTYPE, mode=0o700), None),
    ])
    ok("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "b").read_text() == "second version\n"
    assert os.readlink(out / "a") == "b"
    assert (out / "z" / "deep" / "file").read_text() == "deep\n"
    assert stat.S_IMODE((out / "z").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "z" / "deep").stat().st_mode) == 0o755  # synthesised
    names = ok("mtree", tmp_path / "a.catar").out.decode().splitlines()
    assert [line.split()[0] for line in names[1:]] == [".", "a", "b", "z", "z/deep",
                                                       "z/deep/file"]


@pytest.mark.parametrize(("members", "message"), [
    ([("top/", tarfile.DIRTYPE), ("other/x", tarfile.REGTYPE)], "outside the archive root"),
    ([("./", tarfile.DIRTYPE), ("./a/../../x", tarfile.REGTYPE)], "contains '..'"),
    ([("./", tarfile.DIRTYPE), ("a", tarfile.REGTYPE), ("a/b", tarfile.REGTYPE)],
     "'a' is not a directory"),
])
def test_bad_member_names(cli, tmp_path: Path, members: list[tuple[str, bytes]],  # type: ignore[no-untyped-def]
                          message: str) -> None:
    data = tar_bytes([(info(n, k), b"" if k == tarfile.REGTYPE else None) for n, k in members])
    one_error(cli("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data), 6,
              message)
    assert not (tmp_path / "a.catar").exists()


def test_absolute_names_are_made_relative(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tar_bytes([(info("/", tarfile.DIRTYPE), None), (info("/etc/x"), b"x")])
    ok("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert (tmp_path / "out" / "etc" / "x").read_bytes() == b"x"


def test_pax_metadata(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = info("./f", uid=4321, gid=8765, mode=0o6751)
    f.pax_headers = {"mtime": "1600000000.123456789", "SCHILY.xattr.user.k": "v\udcff",
                     "LIBARCHIVE.xattr.user.b%20x": "AAEC",
                     "SCHILY.acl.access": "user::rw-\nuser:42:r--\ngroup::r--\nmask::r--\n"
                                          "other::---\n"}
    old = info("./old")
    old.pax_headers = {"mtime": "-1.5"}
    data = tar_bytes([(info("./", tarfile.DIRTYPE), None), (f, b"abc"), (old, b"")])
    ok("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data)
    from desync_core.plugin_api import CatarDecoder

    with open(tmp_path / "a.catar", "rb") as fh:
        nodes = [n for n in CatarDecoder(fh.read).nodes() if getattr(n, "name", None)]
    node = nodes[0]
    assert (node.uid, node.gid, node.mode) == (4321, 8765, 0o106751)
    assert node.mtime == 1_600_000_000_123_456_789
    assert node.xattrs == [(b"user.b x", b"\0\1\2"), (b"user.k", b"v\xff")]
    assert [(e.id, e.permissions) for e in node.acl.users] == [(42, 4)]
    assert nodes[1].mtime == -1_500_000_000


@needs_root
def test_devices_and_fifos_from_python_tarfile(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tar_bytes([
        (info("./", tarfile.DIRTYPE), None),
        (info("./c", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (info("./b", tarfile.BLKTYPE, devmajor=7, devminor=2), None),
        (info("./p", tarfile.FIFOTYPE), None),
    ], fmt=tarfile.USTAR_FORMAT)
    ok("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    out = tmp_path / "out"
    assert stat.S_ISCHR(os.lstat(out / "c").st_mode)
    assert os.lstat(out / "c").st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(os.lstat(out / "b").st_mode)
    assert stat.S_ISFIFO(os.lstat(out / "p").st_mode)


def test_not_a_tar_and_truncated_tars(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_error(cli("tar", "--input-format=tar", tmp_path / "a.catar", "-",
                  input=b"this is not a tar file" * 100), 6, "not a tar archive")
    data = tar_bytes([(info("./", tarfile.DIRTYPE), None), (info("./f"), b"x" * 5000)])
    (tmp_path / "cut.tar").write_bytes(data[:2000])
    result = cli("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "cut.tar")
    assert result.code == 6, result.err
    result = cli("tar", "--input-format=tar", tmp_path / "a.catar", "-", input=data[:2000])
    assert result.code == 6, result.err
    one_error(cli("tar", "--input-format=tar", tmp_path / "a.catar", tmp_path / "nope.tar"),
              1, "nope.tar")
    assert not (tmp_path / "a.catar").exists()


@needs_root
def test_round_trip_through_gnu_tar(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", whole_seconds=True)
    ok("tar", tmp_path / "a.catar", src)
    ok("untar", "--output-format=gnu-tar", tmp_path / "a.catar", tmp_path / "a.tar")
    ok("tar", "--input-format=tar", tmp_path / "b.catar", tmp_path / "a.tar")
    assert (tmp_path / "a.catar").read_bytes() == (tmp_path / "b.catar").read_bytes()


def test_index_from_a_tar_stream(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tar_bytes([(info("./", tarfile.DIRTYPE), None), (info("./f"), os.urandom(200_000))])
    (tmp_path / "s").mkdir()
    ok("tar", "--input-format=tar", "-i", "-s", tmp_path / "s", "-m", "4:8:16",
       tmp_path / "a.caidx", "-", input=data)
    ok("untar", "-i", "-s", tmp_path / "s", tmp_path / "a.caidx", tmp_path / "out")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert (tmp_path / "out" / "f").read_bytes() == tar.extractfile("./f").read()  # type: ignore[union-attr]


# -- the plugin ----------------------------------------------------------------------------------


def test_entry_point_module_is_light() -> None:
    code = ("import sys, desync_format_tar.plugin; "
            "print(sorted(m for m in ('tarfile', 'desync_format_tar.reader', "
            "'desync_format_tar.writer', 'desync_core.archive.catar') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_plugin_is_registered(ok) -> None:  # type: ignore[no-untyped-def]
    from importlib.metadata import entry_points

    assert "format_tar" in {ep.name for ep in entry_points(group="desync")}
    out = ok("plugins").out.decode()
    assert "format_tar" in out
    assert "gnu-tar, tar" in out
