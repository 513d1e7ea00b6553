"""End to end through the CLI: extract, make, chop, list-chunks, prune and failover with
real chunk and index servers on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from store_http_support import ServerProcess, blob_chunk_ids, free_port

from desync_core.plugin_api import SHA512_256, decompress

StartServer = Callable[..., ServerProcess]


def test_extract_through_chunk_and_index_servers(start_server: StartServer,
                                                 cmd_testdata: Path, tmp_path: Path,
                                                 desync: Callable[..., object]) -> None:
    """``extract -s http://… http://…/blob1.caibx`` reproduces blob1 byte for byte."""
    chunks = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    indexes = start_server("index-server", "-s", str(cmd_testdata))
    out = tmp_path / "blob1"
    desync("extract", "-s", chunks.url + "/", f"{indexes.url}/blob1.caibx", str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_make_and_chop_into_writable_server(start_server: StartServer, cmd_testdata: Path,
                                            tmp_path: Path,
                                            desync: Callable[..., object]) -> None:
    """``make -s http://…`` and ``chop -s http://…`` fill a writable server's store with
    valid chunks; a read-only server refuses (``writing to upstream``)."""
    read_only = start_server("chunk-server", "-s", str(cmd_testdata / "empty.store"))
    proc = desync("chop", "-s", read_only.url, str(cmd_testdata / "blob1.caibx"),
                  str(cmd_testdata / "blob1"), check=False)
    assert proc.returncode != 0
    assert b"writing to upstream" in proc.stderr

    made, chopped = tmp_path / "made", tmp_path / "chopped"
    made.mkdir()
    chopped.mkdir()
    srv_made = start_server("chunk-server", "-w", "-s", str(made))
    srv_chopped = start_server("chunk-server", "--writeable", "-s", str(chopped))
    index = tmp_path / "blob2.caibx"
    desync("make", "-s", srv_made.url, "-m", "2:8:32", str(index), str(cmd_testdata / "blob2"))
    desync("chop", "-s", srv_chopped.url, str(cmd_testdata / "blob1.caibx"),
           str(cmd_testdata / "blob1"))

    for store, index_path in ((made, index), (chopped, cmd_testdata / "blob1.caibx")):
        ids = blob_chunk_ids(index_path)
        files = sorted(p for p in store.rglob("*") if p.is_file())
        assert sorted(p.name for p in files) == sorted(i.hex() + ".cacnk" for i in ids)
        for path in files:
            chunk_id = bytes.fromhex(path.name.removesuffix(".cacnk"))
            assert SHA512_256.sum(decompress(path.read_bytes(), chunk_id)) == chunk_id

    out = tmp_path / "out"
    desync("extract", "-s", srv_made.url, str(index), str(out))
    assert out.read_bytes() == (cmd_testdata / "blob2").read_bytes()


def test_failover_with_dead_first_member(start_server: StartServer, cmd_testdata: Path,
                                         tmp_path: Path, desync: Callable[..., object]) -> None:
    """``-s "http://<down>|http://<up>"`` and ``"http://<down>|<local>"`` both extract."""
    live = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    dead = f"http://127.0.0.1:{free_port()}"
    blob = (cmd_testdata / "blob1").read_bytes()
    for group in (f"{dead}|{live.url}", f"{dead}|{cmd_testdata / 'blob1.store'}"):
        out = tmp_path / "out"
        desync("extract", "-b", "10ms", "-s", group, str(cmd_testdata / "blob1.caibx"),
               str(out))
        assert out.read_bytes() == blob
    proc = desync("extract", "-e", "1", "-s", dead, str(cmd_testdata / "blob1.caibx"),
                  str(tmp_path / "out2"), check=False)
    assert proc.returncode == 4
    assert b"Connection refused" in proc.stderr


def test_uncompressed_server_with_client_option(start_server: StartServer, cmd_testdata: Path,
                                                tmp_path: Path,
                                                desync: Callable[..., object]) -> None:
    """``chunk-server -u`` is read by clients whose config says ``uncompressed``."""
    srv = start_server("chunk-server", "-u", "-s", str(cmd_testdata / "blob1.store"))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": {srv.url: {"uncompressed": True}}}))
    out = tmp_path / "out"
    desync("--config", str(cfg), "extract", "-s", srv.url, str(cmd_testdata / "blob1.caibx"),
           str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_prune_is_refused(start_server: StartServer, cmd_testdata: Path,
                                      desync: Callable[..., object]) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    proc = desync("prune", "-y", "-s", srv.url, str(cmd_testdata / "blob1.caibx"), check=False)
    assert proc.returncode != 0
    assert f"store '{srv.url}' does not support pruning".encode() in proc.stderr


def test_plugins_listing(desync: Callable[..., object]) -> None:
    out = desync("plugins").stdout.decode()
    assert "desync-store-http" in out
    assert "chunk-server, index-server" in out
    help_text = desync("chunk-server", "--help").stdout.decode()
    for flag in ("--store-file", "--writable", "--skip-verify-read", "--uncompressed", "--log",
                 "--cert", "--key", "--mutual-tls", "--client-ca", "--authorization",
                 "--listen", "--cache", "--concurrency"):
        assert flag in help_text


@pytest.mark.casync
def test_casync_reads_from_the_servers(start_server: StartServer, cmd_testdata: Path,
                                       tmp_path: Path) -> None:
    """casync's own HTTP client extracts through chunk-server and index-server."""
    casync = shutil.which("casync")
    if casync is None:
        pytest.fail("casync is not installed; run the README's test command (.ci/run)")
    chunks = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    indexes = start_server("index-server", "-s", str(cmd_testdata))
    out = tmp_path / "blob1"
    subprocess.run([casync, "extract", f"--store={chunks.url}/", f"{indexes.url}/blob1.caibx",
                    str(out)], check=True, capture_output=True, timeout=300)
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()
