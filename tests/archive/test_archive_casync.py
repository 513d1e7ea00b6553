"""Interchangeability with casync: identical bytes, and identical trees both ways.

* For the same feature set, ``desync tar`` writes the same bytes as ``casync make``
  (catar and caidx, the chunk store too).
* Archives ``casync make`` writes with its *default* feature set extract with
  ``desync untar`` to the same tree ``casync extract`` produces (and the source's).
* Our archives and indexes extract with ``casync extract`` to the source tree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from archive_util import diff, make_tree, snapshot

from desync_core import flags as ff
from desync_core.archive.base import DEFAULT_FEATURE_FLAGS, ArchiveOptions
from desync_core.archive.catar import CatarEncoder, write_blocks
from desync_core.archive.disk import DiskReader

pytestmark = [pytest.mark.casync, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")]

#: Our default feature set, as casync options.
DEFAULT_WITH = ["--with=32bit-uids", "--with=nsec-time", "--with=symlinks",
                "--with=device-nodes", "--with=fifos", "--with=sockets", "--with=xattrs",
                "--with=acl", "--with=selinux", "--with=fcaps", "--exclude-file=no"]

#: Feature sets tested for byte identity: (our ENTRY flags, casync options).
FEATURE_SETS = {
    "default": (DEFAULT_FEATURE_FLAGS | ff.SHA512_256, DEFAULT_WITH),
    "unix": (0x1F09 | ff.EXCLUDE_NODUMP | ff.SHA512_256, ["--with=unix", "--exclude-file=no"]),
    "desync-like": (0x10001F22 | ff.EXCLUDE_NODUMP | ff.SHA512_256,
                    ["--with=32bit-uids", "--with=nsec-time", "--with=permissions",
                     "--with=symlinks", "--with=device-nodes", "--with=fifos",
                     "--with=sockets", "--with=xattrs", "--exclude-file=no"]),
    "names-chattr-quota": (
        ff.WITH_32BIT_UIDS | ff.WITH_USER_NAMES | ff.WITH_USEC_TIME | ff.WITH_PERMISSIONS
        | ff.WITH_SYMLINKS | ff.WITH_DEVICE_NODES | ff.WITH_FIFOS | ff.WITH_SOCKETS
        | (0x3FF0000 & ~ff.WITH_FLAG_NODUMP) | ff.WITH_XATTRS | ff.WITH_FCAPS
        | ff.WITH_QUOTA_PROJID | ff.EXCLUDE_NODUMP | ff.SHA512_256,
        ["--with=32bit-uids", "--with=user-names", "--with=usec-time", "--with=permissions",
         "--with=symlinks", "--with=device-nodes", "--with=fifos", "--with=sockets",
         "--with=chattr", "--with=xattrs", "--with=fcaps", "--with=quota-projid",
         "--exclude-file=no"]),
    "read-only-2sec": (ff.WITH_2SEC_TIME | ff.WITH_READ_ONLY | ff.WITH_SYMLINKS
                       | ff.EXCLUDE_NODUMP | ff.SHA512_256,
                       ["--with=2sec-time", "--with=read-only", "--with=symlinks",
                        "--exclude-file=no"]),
}


def run(*args: str | os.PathLike[str]) -> None:
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("casync") / "src")


def without_special_xattrs(root: Path) -> dict[str, dict[str, object]]:
    # casync reads xattrs through a file descriptor, which devices, FIFOs and sockets
    # do not get: it never archives theirs (nor do we, to write the same bytes).
    return snapshot(root, skip_xattr_on_special=True)


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_catar_bytes_equal_casync(casync: str, tree: Path, tmp_path: Path,
                                  feature_set: str) -> None:
    flags, with_options = FEATURE_SETS[feature_set]
    run(casync, "make", *with_options, tmp_path / "casync.catar", tree)
    options = ArchiveOptions(feature_flags=flags)
    write_blocks(CatarEncoder(flags).encode(DiskReader(str(tree), options).nodes()),
                 str(tmp_path / "ours.catar"))
    ours = (tmp_path / "ours.catar").read_bytes()
    theirs = (tmp_path / "casync.catar").read_bytes()
    assert len(ours) == len(theirs)
    assert ours == theirs


def test_default_cli_output_equals_casync(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    run(casync, "make", *DEFAULT_WITH, tmp_path / "casync.catar", tree)
    ok("tar", tmp_path / "ours.catar", tree)
    assert (tmp_path / "ours.catar").read_bytes() == (tmp_path / "casync.catar").read_bytes()


def test_caidx_and_store_equal_casync(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    run(casync, "make", *DEFAULT_WITH, "--chunk-size=2048:4096:8192",
        f"--store={tmp_path / 's1'}", tmp_path / "casync.caidx", tree)
    ok("tar", "-i", "-m", "2:4:8", "-s", tmp_path / "s2", tmp_path / "ours.caidx", tree)
    assert (tmp_path / "ours.caidx").read_bytes() == (tmp_path / "casync.caidx").read_bytes()

    def chunks(store: Path) -> set[str]:
        return {p.name for p in store.rglob("*.cacnk")}

    assert chunks(tmp_path / "s1") == chunks(tmp_path / "s2")


def test_casync_default_archives_extract_identically(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    run(casync, "make", tmp_path / "default.catar", tree)  # casync's default feature set
    run(casync, "extract", tmp_path / "default.catar", tmp_path / "by-casync")
    ok("untar", tmp_path / "default.catar", tmp_path / "by-desync")
    assert diff(snapshot(tmp_path / "by-casync"), snapshot(tmp_path / "by-desync")) == []
    assert diff(without_special_xattrs(tree), without_special_xattrs(tmp_path / "by-desync")) == []


def test_casync_default_indexes_extract_identically(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    run(casync, "make", f"--store={tmp_path / 'store'}", tmp_path / "default.caidx", tree)
    ok("untar", "-i", "-s", tmp_path / "store", tmp_path / "default.caidx", tmp_path / "out")
    assert diff(without_special_xattrs(tree), without_special_xattrs(tmp_path / "out")) == []


def test_casync_extracts_our_archives(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    ok("tar", tmp_path / "ours.catar", tree)
    run(casync, "extract", tmp_path / "ours.catar", tmp_path / "by-casync")
    assert diff(without_special_xattrs(tree), without_special_xattrs(tmp_path / "by-casync")) == []
    ok("untar", tmp_path / "ours.catar", tmp_path / "by-desync")
    assert diff(snapshot(tmp_path / "by-casync"), snapshot(tmp_path / "by-desync")) == []
    # casync's own readers accept it too
    run(casync, "list", tmp_path / "ours.catar")
    run(casync, "mtree", tmp_path / "ours.catar")


def test_casync_extracts_our_indexes(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                     tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    ok("tar", "-i", "-s", tmp_path / "store", tmp_path / "ours.caidx", tree)
    run(casync, "extract", f"--store={tmp_path / 'store'}", tmp_path / "ours.caidx",
        tmp_path / "out")
    assert diff(without_special_xattrs(tree), without_special_xattrs(tmp_path / "out")) == []


def test_casync_extracts_our_sha256_indexes(ok, casync: str, tree: Path,  # type: ignore[no-untyped-def]
                                            tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    ok("--digest", "sha256", "tar", "-i", "-s", tmp_path / "store", tmp_path / "a.caidx", tree)
    run(casync, "extract", "--digest=sha256", f"--store={tmp_path / 'store'}",
        tmp_path / "a.caidx", tmp_path / "out")
    assert diff(without_special_xattrs(tree), without_special_xattrs(tmp_path / "out")) == []


def test_casync_reads_desync_test_vectors(casync: str, testdata: Path, cmd_testdata: Path,
                                          tmp_path: Path) -> None:
    run(casync, "list", testdata / "testdata" / "complex.catar")
    run(casync, "mtree", f"--store={cmd_testdata / 'tree.store'}", cmd_testdata / "tree.caidx")
