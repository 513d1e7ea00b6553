"""Full and read-only disks, hostile metadata and odd store entries: one-line errors
with documented exit codes, never tracebacks (#19.6, #19.9)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.testing.fixtures import assert_one_line_error

pytestmark = pytest.mark.root


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        pytest.fail(f"mount {' '.join(args)}: {proc.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (ENOSPC after that)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=60, check=False)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(directory, read-only bind mount of it)``: root ignores chmod, not ro mounts."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    real = tmp_path / "real"
    view = tmp_path / "view"
    real.mkdir()
    view.mkdir()
    _mount("--bind", str(real), str(view))
    try:
        _mount("-o", "remount,ro,bind", str(view))
        yield real, view
    finally:
        subprocess.run(["umount", "-l", str(view)], timeout=60, check=False)


def test_tar_to_a_full_disk(tmp_path: Path, small_disk: Path, cli) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(2_000_000))
    assert_one_line_error(cli("tar", small_disk / "x.catar", src), 1,
                          "writing", "No space left on device")
    assert list(small_disk.iterdir()) == []  # no temp file left behind
    assert_one_line_error(cli("tar", "-i", "-s", small_disk / "store", small_disk / "x.caidx",
                              src), 4, "No space left on device")


def test_make_to_a_full_disk(tmp_path: Path, small_disk: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").write_bytes(os.urandom(2_000_000))
    assert_one_line_error(cli("make", "-s", small_disk / "store", tmp_path / "x.caibx",
                              tmp_path / "in"), 4, "No space left on device")


def test_prune_on_a_read_only_store(tmp_path: Path, read_only_view, cli, ok) -> None:  # type: ignore[no-untyped-def]
    real, view = read_only_view
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(os.urandom(200_000))
        ok("make", "-s", real, tmp_path / f"{name}.caibx", tmp_path / name)
    before = sorted(p.name for p in real.rglob("*.cacnk"))
    assert_one_line_error(cli("prune", "-s", view, "--yes", tmp_path / "a.caibx"), 4,
                          "Read-only file system")
    assert sorted(p.name for p in real.rglob("*.cacnk")) == before
    ok("verify", "-s", view)


@pytest.mark.parametrize("doc", ["[" * 1000 + "]" * 1000,
                                 '{"store-options":' + '{"a":' * 1000 + "1" + "}" * 1001])
def test_deeply_nested_config(tmp_path: Path, cli, doc: str) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.json"
    cfg.write_text(doc)
    assert_one_line_error(cli("--config", cfg, "config"), 2, "JSON nested too deeply")


def test_deeply_nested_store_file(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from desync_core.errors import ConfigError
    from desync_core.storefile import read_store_file

    path = tmp_path / "stores.json"
    path.write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_store_file(str(path))
    for doc, fragment in ((["," ], "empty store location"), ([""], "empty store location")):
        path.write_text(json.dumps({"stores": doc}))
        with pytest.raises(ConfigError, match=fragment):
            read_store_file(str(path))
    for cache in (False, 0, []):
        path.write_text(json.dumps({"stores": ["/tmp"], "cache": cache}))
        with pytest.raises(ConfigError, match='"cache" must be a store location'):
            read_store_file(str(path))
    path.write_text(json.dumps({"stores": ["/a|/b", "/c,/d"], "cache": None}))
    assert read_store_file(str(path)) == (["/a|/b", "/c", "/d"], "")


def test_untar_metadata_the_kernel_refuses(tmp_path: Path, cli, ok) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    os.setxattr(src / "f", "user.myattr", b"hello")
    ok("tar", tmp_path / "a.catar", src)
    data = (tmp_path / "a.catar").read_bytes()
    assert data.count(b"user.myattr") == 1
    # No such xattr namespace: setxattr fails with EOPNOTSUPP.
    (tmp_path / "b.catar").write_bytes(data.replace(b"user.myattr", b"uxer.myattr"))
    assert_one_line_error(cli("untar", tmp_path / "b.catar", tmp_path / "out"), 6,
                          "refused extended attribute 'uxer.myattr'")
    ok("untar", tmp_path / "a.catar", tmp_path / "good")
    assert os.getxattr(tmp_path / "good" / "f", "user.myattr") == b"hello"


def test_verify_reports_non_files_at_chunk_paths(tmp_path: Path, cli, ok) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").write_bytes(os.urandom(300_000))
    store = tmp_path / "store"
    ok("make", "-m", "16:32:64", "-s", store, tmp_path / "x.caibx", tmp_path / "in")
    chunks = sorted(store.rglob("*.cacnk"))
    chunks[0].unlink()
    chunks[0].mkdir()
    (tmp_path / "outside").write_bytes(chunks[1].read_bytes())
    chunks[1].unlink()
    chunks[1].symlink_to(tmp_path / "outside")
    chunks[2].unlink()
    chunks[2].symlink_to("/nonexistent")
    result = cli("verify", "-s", store)
    assert result.code == 5, result.err
    assert "Traceback" not in result.err
    assert f"{chunks[0]} is a directory, not a chunk file" in result.err
    assert f"{chunks[1]} is a symbolic link, not a chunk file" in result.err
    assert f"{chunks[2]} is a symbolic link, not a chunk file" in result.err
    assert "3 invalid chunks" in result.err.splitlines()[-1]
    result = cli("verify", "-r", "-s", store)
    assert result.code == 5
    assert not chunks[1].is_symlink()
    assert not chunks[2].is_symlink()
    assert (tmp_path / "outside").exists()  # the link's target is untouched
    assert chunks[0].is_dir()
    assert "1 invalid chunk " in result.err.splitlines()[-1]
