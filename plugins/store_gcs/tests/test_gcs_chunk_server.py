"""``chunk-server`` (desync-store-http) in front of a gs:// store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gcs_support import Bucket

from desync_core.testing.fixtures import CliResult
from desync_core.testing.servers import free_port, stop_process, wait_for_port

Cli = Callable[..., CliResult]


@pytest.fixture
def chunk_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``chunk_server(*flags)`` runs ``desync chunk-server FLAGS -l 127.0.0.1:PORT`` and
    returns its URL; every server is stopped by PID afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        port = free_port()
        log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "desync_core", "chunk-server", *flags,
                                 "-l", f"127.0.0.1:{port}"], stdout=log, stderr=log)
        log.close()
        procs.append(proc)
        wait_for_port(port, proc=proc, what="chunk-server")
        return f"http://127.0.0.1:{port}/"

    yield start
    for proc in procs:
        stop_process(proc)


def test_chunk_server_proxies_gs_store(chunk_server: Callable[..., str], ok: Cli,
                                       cli: Cli, bucket: Bucket, cmd_testdata: Path,
                                       tmp_path: Path) -> None:
    """A read-only chunk-server serves a bucket's chunks (extract over HTTP is byte
    equal); a writable one stores uploaded chunks in the bucket."""
    ok("chop", "-s", bucket.url("c"), cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    url = chunk_server("-s", bucket.url("c"))
    out = tmp_path / "out"
    ok("extract", "-s", url, cmd_testdata / "blob1.caibx", out)
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()
    # a chunk the bucket lacks is a 404, i.e. a missing chunk for the client
    result = cli("extract", "-s", url, cmd_testdata / "blob2.caibx", tmp_path / "o2")
    assert result.code == 4
    assert "missing from store" in result.err

    writable = chunk_server("-w", "-s", bucket.url("w"))
    ok("chop", "-s", writable, cmd_testdata / "blob2.caibx", cmd_testdata / "blob2")
    out2 = tmp_path / "blob2"
    ok("extract", "-s", bucket.url("w"), cmd_testdata / "blob2.caibx", out2)
    assert out2.read_bytes() == (cmd_testdata / "blob2").read_bytes()
