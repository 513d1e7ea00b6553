"""``.caidx``: chunking a casync catar stream with ``desync make`` gives casync's archive
index (the ENTRY's feature flags in the header) and store, and casync unpacks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from compat_util import random_bytes, store_files

from desync_core.index import Index

pytestmark = pytest.mark.casync


def test_caidx_of_a_casync_catar(tmp_path: Path, casync_run, desync_inproc) -> None:  # type: ignore[no-untyped-def]
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    for i in range(25):
        size = (i * 7919) % 150_000
        (tree / "sub" / f"f{i}").write_bytes(random_bytes(100 + i, size))
    (tree / "sub" / "deeper" / "zeros").write_bytes(bytes(300_000))
    (tree / "link").symlink_to("sub/f1")

    expected = casync_run.make(tmp_path / "casync.caidx", tree, tmp_path / "cstore")
    casync_run("make", tmp_path / "tree.catar", tree)
    desync_inproc("make", "-s", tmp_path / "dstore", tmp_path / "tree.caidx",
                  tmp_path / "tree.catar")

    ours = (tmp_path / "tree.caidx").read_bytes()
    assert ours == expected
    assert Index.from_bytes(ours).feature_flags & 0x1FFFFFFFF  # the archive's WITH_* flags
    assert store_files(tmp_path / "dstore") == store_files(tmp_path / "cstore")
    desync_inproc("cat", "-s", tmp_path / "dstore", tmp_path / "tree.caidx",
                  tmp_path / "stream")
    assert (tmp_path / "stream").read_bytes() == (tmp_path / "tree.catar").read_bytes()
    casync_run("extract", f"--store={tmp_path / 'dstore'}", tmp_path / "tree.caidx",
               tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked"
    names = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))
    assert sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")) == names
    for name in names:
        src, dst = tree / name, unpacked / name
        if src.is_symlink():
            assert dst.readlink() == src.readlink()
        elif src.is_file():
            assert dst.read_bytes() == src.read_bytes(), name
