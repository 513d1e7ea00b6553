"""The ``tar``, ``untar`` and ``mtree`` commands: flags, errors, stdin/stdout, desync's tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

from archive_util import FLAGS, Dir, File, Link, build, elements

from desync_core.archive.mtree import escape

TREE_MTREE = """\
#mtree v1.0
. type=dir mode=0775 uid=1000 gid=1000 time=1538248132.474729927
nested1 type=dir mode=0775 uid=1000 gid=1000 time=1538248095.941683462
nested1/nested2 type=dir mode=0775 uid=1000 gid=1000 time=1538248106.934697445
nested1/nested2/f type=file mode=0664 uid=1000 gid=1000 size=0 time=1538248106.934697445 \
sha512256digest=c672b8d1ef56ed28ab87c3622c5114069bdd3ad7b8f9737498d0c01ecef0967a
subdir1 type=dir mode=0775 uid=1000 gid=1000 time=1538248026.571595224
subdir1/f1 type=file mode=0664 uid=1000 gid=1000 size=16 time=1538248026.569595222 \
sha512256digest={f1}
subdir2 type=dir mode=0775 uid=1000 gid=1000 time=1538248039.142611214
subdir2/f2 type=file mode=0664 uid=1000 gid=1000 size=16 time=1538248039.139611211 \
sha512256digest={f2}
subdir3 type=dir mode=0775 uid=1000 gid=1000 time=1538248049.675624610
subdir3/f3 type=file mode=0664 uid=1000 gid=1000 size=16 time=1538248049.673624608 \
sha512256digest={f3}
symlink-dir type=link mode=0777 target=subdir1 uid=1000 gid=1000 time=1538248119.829713848
symlink-file type=link mode=0777 target=subdir1/f1 uid=1000 gid=1000 \
time=1538248132.474729927
"""


def sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def one_error(result, code: int, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    assert result.err.startswith("Error: "), result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


# -- desync's command tests ---------------------------------------------------------------


def test_tar_command_archive_and_index(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("tar", tmp_path / "tree.catar", cmd_testdata / "tree")
    (tmp_path / "store").mkdir()
    ok("tar", "-i", "-s", tmp_path / "store", tmp_path / "tree.caidx", cmd_testdata / "tree")
    ok("untar", tmp_path / "tree.catar", tmp_path / "a")
    ok("untar", "-i", "-s", tmp_path / "store", tmp_path / "tree.caidx", tmp_path / "b")
    for out in ("a", "b"):
        assert (tmp_path / out / "subdir2" / "f2").read_text() == "file in subdir2\n"


def test_untar_command_archive(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("untar", "--no-same-owner", "--no-same-permissions", cmd_testdata / "tree.catar",
       tmp_path / "out")
    out = tmp_path / "out"
    for i in (1, 2, 3):
        assert (out / f"subdir{i}" / f"f{i}").read_text() == f"file in subdir{i}\n"
    assert (out / "nested1" / "nested2" / "f").read_bytes() == b""
    assert os.readlink(out / "symlink-dir") == "subdir1"
    assert os.readlink(out / "symlink-file") == "subdir1/f1"
    assert (out / "symlink-file").read_text() == "file in subdir1\n"


def test_untar_command_index(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("untar", "-i", "-s", cmd_testdata / "tree.store", "--no-same-owner",
       cmd_testdata / "tree.caidx", tmp_path / "out")
    assert (tmp_path / "out" / "subdir3" / "f3").read_text() == "file in subdir3\n"
    # the archive's owners are kept by default (we are root)
    ok("untar", "-i", "-s", cmd_testdata / "tree.store", cmd_testdata / "tree.caidx",
       tmp_path / "owned")
    st = (tmp_path / "owned" / "subdir1" / "f1").stat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o664)
        assert st.st_mtime_ns == 1538248026_569595222


def test_untar_command_repair(ok, cli, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    (cache / "0589").mkdir(parents=True)
    bad = cmd_testdata / "blob1.store" / "0b2a" / (
        "0b2a199263ffb2600b6f8be2e03b7439ffb0ad05a00b867f427a716e3e386c2d.cacnk")
    chunk = "0589328ff916d08f5fe59a9aa0731571448e91341f37ca5484a85b9f0af14de3"
    shutil.copy(bad, cache / "0589" / f"{chunk}.cacnk")
    args = ["-i", "-s", cmd_testdata / "tree.store", "-c", cache, "--no-same-owner",
            cmd_testdata / "tree.caidx"]
    result = cli("untar", "--cache-repair=false", *args, tmp_path / "out1")
    one_error(result, 5, f"chunk id {chunk} does not match its hash 0b2a1992")
    ok("untar", *args, tmp_path / "out2")
    assert (tmp_path / "out2" / "subdir1" / "f1").read_text() == "file in subdir1\n"
    # the cache was repaired
    ok("untar", "--cache-repair=false", *args, tmp_path / "out3")


# -- tar ------------------------------------------------------------------------------------


def test_tar_to_stdout_equals_tar_to_file(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = ok("tar", "-", cmd_testdata / "tree").out
    ok("tar", tmp_path / "a.catar", cmd_testdata / "tree")
    assert out == (tmp_path / "a.catar").read_bytes()
    assert struct.unpack_from("<Q", out, 16)[0] == FLAGS


def test_tar_index_to_stdout(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s").mkdir()
    out = ok("tar", "-i", "-s", tmp_path / "s", "-", cmd_testdata / "tree").out
    assert out[:8] == struct.pack("<Q", 48)
    assert struct.unpack_from("<Q", out, 16)[0] == FLAGS  # == the archive's ENTRY flags


def test_tar_usage_errors(cli, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = cmd_testdata / "tree"
    one_error(cli("tar", "-i", tmp_path / "a.caidx", tree), 2,
              "-i requires a store (-s <location>)")
    one_error(cli("tar", "--tar-add-root", tmp_path / "a.catar", tree), 2,
              "--tar-add-root works only with --input-format tar")
    one_error(cli("tar", "--input-format", "zip", tmp_path / "a.catar", tree), 2,
              "invalid input format 'zip'")
    one_error(cli("tar", tmp_path / "a.catar", tmp_path / "missing"), 1, "missing")
    one_error(cli("tar", tmp_path / "nodir" / "a.catar", tree), 1, "nodir")
    assert not (tmp_path / "a.catar").exists()


def test_tar_input_without_the_plugin_names_the_package(cmd_testdata: Path,
                                                         tmp_path: Path) -> None:
    env = dict(os.environ, DESYNC_DISABLE_PLUGINS="format_tar")
    for args in (["tar", "--input-format=tar", str(tmp_path / "a.catar"), "-"],
                 ["untar", "--output-format=gnu-tar", str(cmd_testdata / "tree.catar"), "-"]):
        proc = subprocess.run([sys.executable, "-m", "desync_core", *args], env=env,
                              capture_output=True, input=b"", timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode == 3, err
        assert "desync-format-tar" in err
        assert "pip install ./plugins/format_tar" in err


# -- untar ----------------------------------------------------------------------------------


def test_untar_from_stdin(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("untar", "--no-same-owner", "-", tmp_path / "out",
       input=(cmd_testdata / "tree.catar").read_bytes())
    assert (tmp_path / "out" / "subdir2" / "f2").read_text() == "file in subdir2\n"


def test_untar_index_from_stdin(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok("untar", "-i", "-s", cmd_testdata / "tree.store", "--no-same-owner", "-",
       tmp_path / "out", input=(cmd_testdata / "tree.caidx").read_bytes())
    assert (tmp_path / "out" / "subdir2" / "f2").read_text() == "file in subdir2\n"


def test_untar_usage_errors(cli, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_error(cli("untar", "-i", cmd_testdata / "tree.caidx", tmp_path / "o"), 2,
              "-i requires at least one store (-s <location>)")
    one_error(cli("untar", "--output-format", "zip", cmd_testdata / "tree.catar", tmp_path),
              2, "invalid output format 'zip'")
    one_error(cli("untar", tmp_path / "missing.catar", tmp_path / "o"), 1, "missing.catar")
    one_error(cli("untar", "-i", "-s", tmp_path, cmd_testdata / "tree.catar", tmp_path / "o"),
              6, "tree.catar")  # not an index
    result = cli("untar", "-i", "-s", tmp_path / "empty", cmd_testdata / "tree.caidx",
                 tmp_path / "o")
    assert result.code == 4, result.err  # the chunk is missing
    assert "0589328f" in result.err


def test_untar_index_with_many_chunks_in_order(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(os.urandom(3000 + i))
    (tmp_path / "s").mkdir()
    ok("tar", "-i", "-m", "1:2:4", "-s", tmp_path / "s", tmp_path / "a.caidx", src)
    ok("untar", "-i", "-n", "7", "-s", tmp_path / "s", tmp_path / "a.caidx", tmp_path / "out")
    for i in range(40):
        assert (tmp_path / "out" / f"f{i:02d}").read_bytes() == (src / f"f{i:02d}").read_bytes()


# -- mtree ----------------------------------------------------------------------------------


def _tree_mtree() -> str:
    return TREE_MTREE.format(**{f"f{i}": sha512_256(f"file in subdir{i}\n".encode())
                                for i in (1, 2, 3)})


def test_mtree_of_catar_caidx(ok, cmd_testdata: Path) -> None:  # type: ignore[no-untyped-def]
    assert ok("mtree", cmd_testdata / "tree.catar").out.decode() == _tree_mtree()
    out = ok("mtree", "-i", "-s", cmd_testdata / "tree.store", cmd_testdata / "tree.caidx").out
    assert out.decode() == _tree_mtree()


def test_mtree_of_a_directory_equals_its_archive(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a b#c\\d").write_text("x")
    (src / "caf\u00e9").write_text("y")
    os.mkfifo(src / "fifo")
    os.symlink("a b#c\\d", src / "link")
    ok("tar", tmp_path / "a.catar", src)
    from_dir = ok("mtree", src).out.decode()
    assert from_dir == ok("mtree", tmp_path / "a.catar").out.decode()
    lines = from_dir.splitlines()
    assert lines[1].startswith(". type=dir")
    assert lines[2].startswith("a\\040b\\043c\\134d type=file")
    assert lines[3].startswith("caf\\303\\251 type=file")
    assert lines[4].startswith("fifo type=fifo mode=0644")
    assert "target=a\\040b\\043c\\134d " in lines[5]


def test_mtree_sha256_and_device_types(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = build(Dir([(b"f", File(b"abc")), (b"l", Link(b"f"))]))
    (tmp_path / "a.catar").write_bytes(archive)
    out = ok("--digest", "sha256", "mtree", tmp_path / "a.catar").out.decode()
    assert f"sha256digest={hashlib.sha256(b'abc').hexdigest()}" in out
    if os.geteuid() == 0:
        src = tmp_path / "src"
        src.mkdir()
        os.mknod(src / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(src / "b", stat.S_IFBLK | 0o600, os.makedev(7, 0))
        lines = ok("mtree", src).out.decode().splitlines()
        assert lines[2].startswith("b type=block mode=0600")
        assert lines[3].startswith("c type=char mode=0600")


def test_mtree_usage_errors(cli, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_error(cli("mtree", "-i", "-s", tmp_path, cmd_testdata / "tree"), 2,
              "-i can't be used with input directory")
    one_error(cli("mtree", "-i", cmd_testdata / "tree.caidx"), 2,
              "-i requires at least one store")
    one_error(cli("mtree", tmp_path / "nope.catar"), 1, "nope.catar")


def test_mtree_escape() -> None:
    assert escape(b"a b#c\\d\n\x7f\xc3\xa9") == "a\\040b\\043c\\134d\\012\\177\\303\\251"


def test_archive_element_flags_follow_the_digest(ok, cmd_testdata: Path) -> None:  # type: ignore[no-untyped-def]
    out = ok("--digest", "sha256", "tar", "-", cmd_testdata / "tree").out
    flags = {struct.unpack_from("<Q", body)[0] for _, name, body in elements(out)
             if name == "ENTRY"}
    assert flags == {FLAGS & ~0x2000000000000000}


def test_tar_leaves_out_its_own_output(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a\n")
    result = ok("tar", src / "sub" / "self.catar", src)
    assert "is the archive being written" in result.err
    listing = ok("mtree", src / "sub" / "self.catar").out.decode()
    assert "self.catar" not in listing
    assert "\na type=file" in listing
    # the same when the archive goes to stdout redirected into the tree
    with open(src / "out.catar", "wb") as out:
        subprocess.run([sys.executable, "-m", "desync_core", "tar", "-", str(src)],
                       stdout=out, check=True, stderr=subprocess.DEVNULL, timeout=120)
    listing = ok("mtree", src / "out.catar").out.decode()
    assert "out.catar" not in listing


def test_catar_as_input_and_output_format(ok, cmd_testdata: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # re-encoded with tar's feature set: the same bytes as tar of the extracted tree
    ok("untar", "--output-format=catar", cmd_testdata / "tree.catar", tmp_path / "re.catar")
    ok("tar", "--input-format=catar", tmp_path / "again.catar", tmp_path / "re.catar")
    assert (tmp_path / "re.catar").read_bytes() == (tmp_path / "again.catar").read_bytes()
    assert struct.unpack_from("<Q", (tmp_path / "re.catar").read_bytes(), 16)[0] == FLAGS
    ok("untar", "--no-same-owner", tmp_path / "re.catar", tmp_path / "out")
    assert (tmp_path / "out" / "subdir1" / "f1").read_text() == "file in subdir1\n"
