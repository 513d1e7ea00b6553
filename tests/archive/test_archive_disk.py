"""``tar`` and ``untar`` on real trees: round trips, existing targets, the untar flags.

These create device nodes, set owners, trusted xattrs, capabilities and labels, so
they need root (the test machines run as root).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from archive_util import (
    DESYNC_FLAGS,
    FLAGS,
    Dir,
    File,
    build,
    diff,
    element,
    elements,
    entry,
    make_tree,
    snapshot,
)

from desync_core import flags as ff
from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    ArchiveOptions,
)
from desync_core.archive.catar import USER, CatarEncoder, write_blocks
from desync_core.archive.disk import FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, DiskReader

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", negative_time=True)


def test_round_trip_keeps_everything(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", tmp_path / "a.catar", tree)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert diff(snapshot(tree), snapshot(tmp_path / "out")) == []


def test_round_trip_through_an_index(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    store.mkdir()
    ok("tar", "-i", "-s", store, "-m", "2:4:8", tmp_path / "a.caidx", tree)
    ok("untar", "-i", "-n", "3", "-s", store, tmp_path / "a.caidx", tmp_path / "out")
    assert diff(snapshot(tree), snapshot(tmp_path / "out")) == []
    assert len(list(store.rglob("*.cacnk"))) > 20


def test_sha256_index_round_trip(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    store.mkdir()
    ok("--digest", "sha256", "tar", "-i", "-s", store, tmp_path / "a.caidx", tree)
    data = (tmp_path / "a.caidx").read_bytes()
    flags = struct.unpack_from("<Q", data, 16)[0]
    assert flags == FLAGS & ~ff.SHA512_256  # digest bit clear, like casync --digest=sha256
    ok("untar", "-i", "-s", store, tmp_path / "a.caidx", tmp_path / "out")
    assert diff(snapshot(tree), snapshot(tmp_path / "out")) == []


def test_untar_into_an_existing_directory(ok, cli, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", tmp_path / "a.catar", tree)
    out = tmp_path / "out"
    (out / "file.txt").mkdir(parents=True)  # a directory where the archive has a file
    (out / "file.txt" / "inner").write_text("x")
    (out / "big.bin").write_text("old content")
    (out / "extra").write_text("not in the archive")
    (out / "dir" / "sub").mkdir(parents=True)
    (out / "fifo").write_text("a file where the archive has a FIFO")
    ok("untar", tmp_path / "a.catar", out)
    snap = snapshot(out)
    assert snap.pop("extra")["sha256"]  # kept
    assert diff(snapshot(tree), snap) == []


def test_untar_refuses_a_file_where_a_directory_goes(cli, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("tar", tmp_path / "a.catar", tree).code == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "dir").write_text("in the way")
    result = cli("untar", tmp_path / "a.catar", out)
    assert result.code == 1
    assert "dir exists and is not a directory" in result.err


def test_no_same_owner_and_permissions(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", tmp_path / "a.catar", tree)
    out = tmp_path / "out"
    umask = os.umask(0o022)
    try:
        ok("untar", "--no-same-owner", "--no-same-permissions", tmp_path / "a.catar", out)
    finally:
        os.umask(umask)
    snap = snapshot(out)
    for path, info in snap.items():
        assert info["owner"] == (0, 0), path  # the extracting user (root)
        if info["type"] != stat.S_IFLNK:
            assert info["xattrs"] == {}, path  # xattrs go with the owner (desync)
        if info["type"] == stat.S_IFDIR and path != ".":
            assert info["mode"] == 0o755, path
        elif info["type"] in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFCHR):
            assert info["mode"] == 0o644, path
    # contents and times are still restored
    orig = snapshot(tree)
    assert snap["big.bin"]["sha256"] == orig["big.bin"]["sha256"]
    assert snap["dir/owned"]["mtime"] == orig["dir/owned"]["mtime"]


def test_no_same_owner_keeps_permissions(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", tmp_path / "a.catar", tree)
    ok("untar", "--no-same-owner", tmp_path / "a.catar", tmp_path / "out")
    snap = snapshot(tmp_path / "out", owners=False, xattrs=False)
    assert diff(snapshot(tree, owners=False, xattrs=False), snap) == []


def test_no_time(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", "--no-time", tmp_path / "a.catar", tree)
    mtimes = {struct.unpack("<6Q", body)[5] for _, name, body in
              elements((tmp_path / "a.catar").read_bytes()) if name == "ENTRY"}
    assert mtimes == {0}
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    # a zero time is not applied: files keep their creation time
    assert (tmp_path / "out" / "file.txt").stat().st_mtime > 1_000_000_000


def test_nodump_files_are_left_out(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def set_nodump(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = bytearray(8)
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            attrs = struct.unpack_from("<i", buf)[0] | 0x40
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack("<i", attrs) + bytes(4)))
        finally:
            os.close(fd)

    try:
        set_nodump(tree / "big.bin")
        set_nodump(tree / "dir" / "sub")
    except OSError as exc:
        pytest.skip(f"filesystem without chattr support: {exc}")
    ok("tar", tmp_path / "a.catar", tree)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert not (tmp_path / "out" / "big.bin").exists()
    assert not (tmp_path / "out" / "dir" / "sub").exists()
    assert (tmp_path / "out" / "dir" / "owned").exists()


def test_one_file_system_leaves_out_mounts(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mnt = tree / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        (mnt / "inside").write_text("on another filesystem")
        ok("tar", tmp_path / "all.catar", tree)
        ok("tar", "-x", tmp_path / "one.catar", tree)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    names_all = {bytes(b) for _, n, b in elements((tmp_path / "all.catar").read_bytes())
                 if n == "FILENAME"}
    data = (tmp_path / "one.catar").read_bytes()
    names_one = {bytes(b) for _, n, b in elements(data) if n == "FILENAME"}
    assert names_all - names_one == {b"mnt\0", b"inside\0"}  # like casync: the mount is out
    assert struct.unpack_from("<Q", data, 16)[0] == FLAGS | ff.EXCLUDE_SUBMOUNTS


def _has_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_chattr_flags_and_user_names_through_the_api(tree: Path, tmp_path: Path) -> None:
    from desync_core.archive.catar import CatarDecoder
    from desync_core.archive.disk import DiskWriter

    fd = os.open(tree / "file.txt", os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        attrs = struct.unpack_from("<i", buf)[0] | 0x80  # noatime
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack("<i", attrs) + bytes(4)))
    finally:
        os.close(fd)
    flags = (DEFAULT_FEATURE_FLAGS | ff.SHA512_256 | ff.WITH_USER_NAMES | ff.WITH_FLAG_NOATIME
             | ff.WITH_FLAG_SYNC)
    options = ArchiveOptions(feature_flags=flags)
    write_blocks(CatarEncoder(flags).encode(DiskReader(str(tree), options).nodes()),
                 str(tmp_path / "a.catar"))
    users = {bytes(b) for _, n, b in elements((tmp_path / "a.catar").read_bytes())
             if n == "USER"}
    expected = {os.fsencode(pwd.getpwuid(uid).pw_name) + b"\0" for uid in (1000, 1234)
                if _has_user(uid)}
    assert users == expected  # no USER element for root or unknown ids (casync)
    with open(tmp_path / "a.catar", "rb") as f:
        DiskWriter(str(tmp_path / "out"), ArchiveOptions()).write(CatarDecoder(f.read).nodes())
    fd = os.open(tmp_path / "out" / "file.txt", os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        assert struct.unpack_from("<i", buf)[0] & 0x80
    finally:
        os.close(fd)
    assert diff(snapshot(tree), snapshot(tmp_path / "out")) == []


def test_user_names_win_over_ids_when_they_exist(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nobody = pwd.getpwnam("nobody")
    meta = element(USER, b"nobody\0")
    archive = build(Dir([(b"f", File(b"x", meta=meta))]), flags=FLAGS | ff.WITH_USER_NAMES)
    (tmp_path / "a.catar").write_bytes(archive)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert (tmp_path / "out" / "f").stat().st_uid == nobody.pw_uid


def test_desync_archives_with_security_xattrs(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # desync (Go) stores every xattr, labels and capabilities included, as XATTR
    # elements with a trailing NUL, under flags 0xb000000010001f22.
    meta = (element(0xB8157091F80BC486, b"security.capability\0" + bytes.fromhex(
        "0100000200200000000000000000000000000000") + b"\0")
        + element(0xB8157091F80BC486, b"user.k\0value\0"))
    archive = build(Dir([(b"f", File(b"x", meta=meta))]), flags=DESYNC_FLAGS)
    (tmp_path / "a.catar").write_bytes(archive)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    f = tmp_path / "out" / "f"
    assert os.getxattr(f, "user.k") == b"value"
    assert os.getxattr(f, "security.capability") == bytes.fromhex(
        "0100000200200000000000000000000000000000")


def test_archive_of_a_single_file(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.catar").write_bytes(entry(stat.S_IFREG | 0o640) + element(
        0x8B9E1D93D6DCFFC9, b"single"))
    ok("untar", tmp_path / "a.catar", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == b"single"
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o640


def test_tar_of_a_file_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_text("x")
    result = cli("tar", tmp_path / "a.catar", tmp_path / "f")
    assert result.code == 2
    assert "is not a directory" in result.err


def test_failed_tar_leaves_no_output(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("x")
    (src / "b").write_text("y")
    os.chown(src / "b", 65535, 0)  # casync cannot store uid 65535
    result = cli("tar", tmp_path / "a.catar", src)
    assert result.code == 6
    assert "65535" in result.err
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_untar_into_a_setgid_directory(ok, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # New objects in a setgid directory take its group (and directories its setgid
    # bit): owners and modes must still come out as archived.
    ok("tar", tmp_path / "a.catar", tree)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 0, 4242)
    os.chmod(out, 0o2775)
    ok("untar", tmp_path / "a.catar", out)
    assert diff(snapshot(tree), snapshot(out)) == []


def test_casync_2017_vector_with_labels_names_and_a_device(ok, testdata: Path,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    # flat.catar: user/group names that do not exist here (ids are used), SELinux labels
    # on everything, a character device 1:8.
    ok("untar", testdata / "testdata" / "flat.catar", tmp_path / "out")
    out = tmp_path / "out"
    st = os.lstat(out / "device")
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 8)
    assert (out / "file1.txt").read_bytes() == b"file1-content\n\n"
    assert (out / "file1.txt").stat().st_uid == 500
    assert stat.S_IMODE((out / "file2.txt").stat().st_mode) == 0o600
    assert os.readlink(out / "symlink") == "file1.txt"
    for name in ("file1.txt", "device", "symlink"):
        assert os.getxattr(out / name, "security.selinux", follow_symlinks=False) == \
            b"unconfined_u:object_r:user_home_t:s0\0"
    assert os.getxattr(out, "security.selinux") == b"unconfined_u:object_r:user_home_t:s0\0"
