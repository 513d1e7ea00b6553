"""``index-server``: desync's command-test expectations, traversal hardening, auth, TLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from store_http_support import (
    ServerProcess,
    index_server_in_process,
    raw_request,
    run_cli_in_process,
)

from desync_core.plugin_api import Index
from desync_core.testing import IndexStoreContract

StartServer = Callable[..., ServerProcess]
TRAVERSAL = "/..%5C..%5Cevil.caibx"


def test_read_only(cmd_testdata: Path) -> None:
    blob1_index = (cmd_testdata / "blob1.caibx").read_bytes()
    with index_server_in_process(str(cmd_testdata)) as (url, _):
        assert raw_request(url, "GET", "/blob1.caibx") == (200, blob1_index)
        # Directories in the path are ignored: the last component names the index.
        assert raw_request(url, "GET", "/some/dir/blob1.caibx") == (200, blob1_index)
        assert raw_request(url, "GET", "/blob1") == (400, b"failed to retrieve index\n")
        assert raw_request(url, "GET", "/nope.caibx") == (404, b"index not found\n")
        assert raw_request(url, "HEAD", "/blob1.caibx")[0] == 200
        assert raw_request(url, "HEAD", "/nope.caibx")[0] == 404
        assert raw_request(url, "PUT", "/new.caibx", body=blob1_index) == (
            400, b"writing to upstream index store is not enabled\n")
        assert raw_request(url, "DELETE", "/blob1.caibx")[0] == 405


@pytest.mark.parametrize("path", [TRAVERSAL, "/", "/..", "/a/..", "/%2e%2e",
                                  "/x%5Cevil.caibx", "/%00.caibx"])
def test_invalid_names(tmp_path: Path, path: str) -> None:
    """Names that are not plain file names get 400 for every method; nothing is written
    anywhere."""
    root = tmp_path / "root"
    store = root / "a" / "b"
    store.mkdir(parents=True)
    data = IndexStoreContract.sample_index()
    with index_server_in_process(str(store), writable=True) as (url, _):
        for method in ("GET", "HEAD", "PUT"):
            status, body = raw_request(url, method, path, body=data if method == "PUT" else None)
            assert status == 400, (method, body)
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_directories_in_path_stay_inside_the_store(tmp_path: Path) -> None:
    """Only the last path component counts, so ``/../../x.caibx`` is ``x.caibx`` in the
    store directory, never a file outside it."""
    root = tmp_path / "root"
    store = root / "a" / "b"
    store.mkdir(parents=True)
    data = IndexStoreContract.sample_index()
    with index_server_in_process(str(store), writable=True) as (url, _):
        assert raw_request(url, "PUT", "/..%2f..%2fevil.caibx", body=data)[0] == 200
        assert raw_request(url, "PUT", "/../../evil2.caibx", body=data)[0] == 200
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "a/b/evil.caibx", "a/b/evil2.caibx"]


def test_writable(tmp_path: Path) -> None:
    data = IndexStoreContract.sample_index()
    with index_server_in_process(str(tmp_path), writable=True) as (url, _):
        assert raw_request(url, "PUT", "/good.caibx", body=data)[0] == 200
        assert (tmp_path / "good.caibx").read_bytes() == data
        status, body = raw_request(url, "PUT", "/garbage.caibx", body=b"not an index")
        assert status == 415
        assert body.startswith(b"invalid index: ")
        status, _ = raw_request(url, "PUT", "/truncated.caibx", body=data[:-8])
        assert status == 415
        assert sorted(p.name for p in tmp_path.iterdir()) == ["good.caibx"]


def test_corrupt_index_is_not_served(tmp_path: Path) -> None:
    (tmp_path / "bad.caibx").write_bytes(b"\0" * 200)
    with index_server_in_process(str(tmp_path)) as (url, _):
        assert raw_request(url, "GET", "/bad.caibx")[0] == 400
        assert raw_request(url, "HEAD", "/bad.caibx")[0] == 200  # exists; content unchecked


def test_authorization(cmd_testdata: Path) -> None:
    with index_server_in_process(str(cmd_testdata), authorization="Basic abc") as (url, _):
        assert raw_request(url, "GET", "/blob1.caibx") == (401, b"Unauthorized\n")
        assert raw_request(url, "GET", "/blob1.caibx",
                           headers={"Authorization": "Basic abc"})[0] == 200


def test_cli_make_and_list(start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
                           desync: Callable[..., object]) -> None:
    """``make http://srv/x.caibx`` needs ``-w``; ``list-chunks`` reads through the server."""
    blob1 = Index.from_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    expected = "".join(f"{c.id.hex()}\n" for c in blob1).encode()
    read_only = start_server("index-server", "-s", str(cmd_testdata))
    assert desync("list-chunks", f"{read_only.url}/blob1.caibx").stdout == expected

    proc = desync("make", f"{read_only.url}/new.caibx", str(cmd_testdata / "blob1"),
                  check=False)
    assert proc.returncode != 0
    assert b"writing to upstream" in proc.stderr

    (tmp_path / "indexes").mkdir()
    writable = start_server("index-server", "-w", "-s", str(tmp_path / "indexes"))
    # blob1.caibx was made with 2:8:32: the same chunks must come out.
    desync("make", f"{writable.url}/new.caibx", str(cmd_testdata / "blob1"), "-m", "2:8:32")
    made = Index.from_bytes((tmp_path / "indexes" / "new.caibx").read_bytes())
    assert made.ids == blob1.ids
    assert list(made.ends) == list(blob1.ends)


def test_cli_tls(start_server: StartServer, cmd_testdata: Path, certs: dict[str, str],
                 desync: Callable[..., object]) -> None:
    srv = start_server("index-server", "-s", str(cmd_testdata), "--cert", certs["server.crt"],
                       "--key", certs["server.key"], "--mutual-tls", "--client-ca",
                       certs["ca.crt"])
    url = f"{srv.url}/blob1.caibx"
    proc = desync("list-chunks", "--ca-cert", certs["ca.crt"], url, check=False)
    assert proc.returncode != 0
    assert b"TLS error" in proc.stderr
    proc = desync("list-chunks", "--ca-cert", certs["ca.crt"], "--client-cert",
                  certs["client.crt"], "--client-key", certs["client.key"], url)
    assert len(proc.stdout.splitlines()) == 161


def test_cli_errors(tmp_path: Path) -> None:
    code, err = run_cli_in_process("index-server", "-l", "127.0.0.1:0")
    assert (code, err) == (2, "Error: no store provided\n")
    code, err = run_cli_in_process("index-server", "-s", str(tmp_path / "missing"),
                                   "-l", "127.0.0.1:0")
    assert code == 4
    assert "is not a directory" in err
    code, err = run_cli_in_process("index-server", "-s", str(tmp_path), "--mutual-tls")
    assert code == 2
    assert "--mutual-tls requires --cert and --key" in err
