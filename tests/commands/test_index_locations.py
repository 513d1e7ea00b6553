"""Index arguments given as remote locations: every command reads (and ``make`` writes)
them through the index-store plugin registered for the URL scheme.

The plugin here registers ``idxtest://`` through the ``desync_register_index_stores``
hook, served by the local index store (the URL's path is a directory), so the test
needs no server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error, chunk_files

from desync_core import hookimpl
from desync_core.plugins import make_plugin_manager, set_plugin_manager


class IndexSchemePlugin:
    """Registers ``idxtest://`` index locations."""

    @hookimpl
    def desync_register_index_stores(self, registry):  # type: ignore[no-untyped-def]
        registry.add("idxtest", "desync_core.stores.local:LocalIndexStore", "test index store")


@pytest.fixture
def remote(cmd_testdata: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(``idxtest:///…/indexes/`` URL, local directory behind it), plugin installed."""
    directory = tmp_path / "indexes"
    directory.mkdir()
    for name in ("blob1.caibx", "blob2.caibx"):
        shutil.copy(cmd_testdata / name, directory / name)
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(IndexSchemePlugin(), name="idxtest")
    set_plugin_manager(pm)
    try:
        yield f"idxtest://{directory}/", directory
    finally:
        set_plugin_manager(None)


def test_read_commands_take_remote_indexes(remote, cmd_testdata: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                           ok) -> None:
    url, _ = remote
    local = cmd_testdata / "blob1.caibx"
    assert ok("list-chunks", url + "blob1.caibx").out == ok("list-chunks", local).out
    assert ok("info", "-s", cmd_testdata / "blob1.store", url + "blob1.caibx").out == \
        ok("info", "-s", cmd_testdata / "blob1.store", local).out
    ok("extract", "-s", cmd_testdata / "blob1.store", url + "blob1.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (cmd_testdata / "blob1").read_bytes()
    assert ok("cat", "-s", cmd_testdata / "blob1.store", "-o", "10", "-l", "20",
              url + "blob1.caibx").out == (cmd_testdata / "blob1").read_bytes()[10:30]
    ok("verify-index", url + "blob1.caibx", cmd_testdata / "blob1")
    ok("chop", "-s", tmp_path / "chopped", "--ignore", url + "blob2.caibx", url + "blob1.caibx",
       cmd_testdata / "blob1")
    assert len(chunk_files(tmp_path / "chopped")) == 7
    ok("cache", "-s", cmd_testdata / "blob1.store", "-c", tmp_path / "cache", url + "blob1.caibx")
    assert len(chunk_files(tmp_path / "cache")) == 131
    shutil.copytree(cmd_testdata / "blob1.store", tmp_path / "store")
    ok("prune", "-y", "-s", tmp_path / "store", url + "blob2.caibx")
    assert len(chunk_files(tmp_path / "store")) == 124


def test_make_writes_a_remote_index(remote, cmd_testdata: Path, ok) -> None:  # type: ignore[no-untyped-def]
    url, directory = remote
    ok("make", "-m", "2:8:32", url + "new.caibx", cmd_testdata / "blob1")
    local = ok("make", "-m", "2:8:32", "-", cmd_testdata / "blob1").out
    assert (directory / "new.caibx").read_bytes() == local


def test_remote_index_errors(remote, cmd_testdata: Path, cli) -> None:  # type: ignore[no-untyped-def]
    url, _ = remote
    assert_one_line_error(cli("list-chunks", url + "missing.caibx"), 4, "missing.caibx")
    assert_one_line_error(cli("list-chunks", "nosuchscheme://host/x.caibx"), 3, "nosuchscheme")
