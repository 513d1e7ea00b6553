"""``chunk-server``: paths and statuses, verified uploads, auth, TLS, failover, cache,
request deduplication, SIGHUP reload under load and many concurrent clients."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from store_http_support import (
    PATIENCE,
    ScriptedServer,
    SeenRequest,
    ServerProcess,
    blob_chunk_ids,
    chunk_path,
    chunk_server_in_process,
    free_port,
    raw_exchange,
    raw_request,
    run_cli_in_process,
)

from desync_core.plugin_api import SHA256, SHA512_256, Context, compress, decompress
from desync_core.testing import sample_chunk

ZERO_ID = bytes(32)
StartServer = Callable[..., ServerProcess]


@pytest.fixture
def blob1_ids(cmd_testdata: Path) -> list[bytes]:
    """The 131 unique chunk ids of blob1."""
    return blob_chunk_ids(cmd_testdata / "blob1.caibx")


def stored_file(store: Path, chunk_id: bytes, ext: str = ".cacnk") -> Path:
    h = chunk_id.hex()
    return store / h[:4] / f"{h}{ext}"


# -- read-only server ------------------------------------------------------------------------


def test_read_only_statuses(cmd_testdata: Path, blob1_ids: list[bytes]) -> None:
    """desync's command-test expectations for a read-only server, plus HEAD and 405."""
    store = cmd_testdata / "blob1.store"
    with chunk_server_in_process(stores=[str(store)]) as (url, _):
        status, body = raw_request(url, "GET", chunk_path(blob1_ids[0]))
        assert status == 200
        assert body == stored_file(store, blob1_ids[0]).read_bytes()
        assert raw_request(url, "GET", "/somefile")[0] == 400
        assert raw_request(url, "GET", chunk_path(ZERO_ID)) == (
            404, f"chunk {ZERO_ID.hex()} not found\n".encode())
        assert raw_request(url, "HEAD", chunk_path(blob1_ids[0]))[0] == 200
        assert raw_request(url, "HEAD", chunk_path(ZERO_ID))[0] == 404
        for method in ("POST", "DELETE", "PATCH", "OPTIONS"):
            assert raw_request(url, method, chunk_path(blob1_ids[0])) == (
                405, b"only GET, PUT and HEAD are supported\n")
        status, body = raw_request(url, "PUT", chunk_path(blob1_ids[0]),
                                   body=stored_file(store, blob1_ids[0]).read_bytes())
        assert (status, body) == (400, b"writing to upstream chunk store is not enabled\n")


@pytest.mark.parametrize("path", [
    "/",
    "/somefile",
    "/etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/abcd/..%2f..%2fetc%2fpasswd",
    "/0000/" + "0" * 64,  # compressed server: the extension is required
    "/0000/" + "0" * 63 + ".cacnk",
    "/0000/" + "0" * 65 + ".cacnk",
    "/0000/" + "g" * 64 + ".cacnk",
    "/0000/" + "A" * 64 + ".cacnk",
    "/1111/" + "0" * 64 + ".cacnk",  # prefix must be the id's first 4 digits
    "/x/0000/" + "0" * 64 + ".cacnk",
    "/0000/" + "0" * 64 + ".cacnk/",
    "/0000/" + "0" * 64 + ".cacnk.tmp",
])
def test_malformed_paths_are_400(cmd_testdata: Path, path: str) -> None:
    """Nothing but ``/<4hex>/<id>.cacnk`` is served: no other file, no traversal."""
    with chunk_server_in_process(stores=[str(cmd_testdata / "blob1.store")]) as (url, _):
        for method in ("GET", "HEAD", "PUT"):
            status, body = raw_request(url, method, path, body=b"x" if method == "PUT" else None)
            assert status == 400, (method, path, body)


def test_uncompressed_server_paths(cmd_testdata: Path, blob1_ids: list[bytes]) -> None:
    """``-u`` serves ``/<4hex>/<id>`` (decompressed from a compressed upstream) and
    rejects the ``.cacnk`` form with a hint about the settings."""
    with chunk_server_in_process(stores=[str(cmd_testdata / "blob1.store")],
                                 uncompressed=True) as (url, _):
        status, body = raw_request(url, "GET", chunk_path(blob1_ids[0], ""))
        assert status == 200
        assert SHA512_256.sum(body) == blob1_ids[0]
        status, body = raw_request(url, "GET", chunk_path(blob1_ids[0]))
        assert status == 400
        assert b"invalid chunk extension" in body


def test_query_string_is_ignored(cmd_testdata: Path, blob1_ids: list[bytes]) -> None:
    with chunk_server_in_process(stores=[str(cmd_testdata / "blob1.store")]) as (url, _):
        assert raw_request(url, "GET", chunk_path(blob1_ids[0]) + "?x=1")[0] == 200


# -- writable server -------------------------------------------------------------------------


@pytest.fixture
def writable(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A writable chunk server over an empty directory: yields (url, directory)."""
    store = tmp_path / "w"
    store.mkdir()
    with chunk_server_in_process(stores=[str(store)], writable=True) as (url, _):
        yield url, store


def test_put_stores_verified_chunk(writable: tuple[str, Path]) -> None:
    url, store = writable
    chunk_id, data = sample_chunk(1)
    status, _ = raw_request(url, "PUT", chunk_path(chunk_id), body=compress(data))
    assert status == 200
    assert stored_file(store, chunk_id).read_bytes() == compress(data)
    assert raw_request(url, "GET", chunk_path(chunk_id)) == (200, compress(data))


def test_put_wrong_data_is_rejected_and_not_stored(writable: tuple[str, Path]) -> None:
    """Data that does not hash to the id gets a 400 naming both ids; nothing is written."""
    url, store = writable
    chunk_id, _ = sample_chunk(1)
    _, other = sample_chunk(2)
    status, body = raw_request(url, "PUT", chunk_path(chunk_id), body=compress(other))
    assert status == 400
    assert b"does not match its hash" in body
    assert chunk_id.hex().encode() in body
    assert raw_request(url, "HEAD", chunk_path(chunk_id))[0] == 404
    assert list(store.rglob("*")) == []


@pytest.mark.parametrize("payload", [b"", b"garbage", b"\x28\xb5\x2f\xfdgarbage"])
def test_put_undecodable_is_rejected(writable: tuple[str, Path], payload: bytes) -> None:
    url, store = writable
    chunk_id, _ = sample_chunk(3)
    status, body = raw_request(url, "PUT", chunk_path(chunk_id), body=payload)
    assert status == 400
    assert b"invalid chunk" in body
    assert list(store.rglob("*")) == []


def test_put_bad_path_and_malformed_bodies(writable: tuple[str, Path]) -> None:
    url, _ = writable
    assert raw_request(url, "PUT", "/somefile", body=b"data")[0] == 400
    chunk_id, _ = sample_chunk(4)
    head = f"PUT {chunk_path(chunk_id)} HTTP/1.1\r\nHost: x\r\n"
    # http.client always sends a valid length; these requests are written by hand.
    assert raw_exchange(url, f"{head}\r\n".encode()) == 411
    for length in ("-1", "1_0", "+5", "x"):
        assert raw_exchange(url, f"{head}Content-Length: {length}\r\n\r\n".encode()) == 400
    chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n"
    assert raw_exchange(url, f"{chunked}-5\r\nxx\r\n0\r\n\r\n".encode()) == 400
    assert raw_exchange(url, f"{chunked}zz\r\n".encode()) == 400
    assert raw_exchange(url, f"{head}Transfer-Encoding: gzip\r\n\r\n".encode()) == 501


def test_put_chunked_transfer_encoding(writable: tuple[str, Path]) -> None:
    """Bodies sent with ``Transfer-Encoding: chunked`` (no length) are accepted."""
    url, store = writable
    chunk_id, data = sample_chunk(5)
    payload = compress(data)
    resp = requests.put(url + chunk_path(chunk_id),
                        data=iter([payload[:100], payload[100:]]), timeout=PATIENCE)
    assert resp.status_code == 200
    assert stored_file(store, chunk_id).read_bytes() == payload


def test_put_uncompressed_server(tmp_path: Path) -> None:
    """``-w -u``: uploads are raw data, verified, and stored compressed upstream."""
    store = tmp_path / "w"
    store.mkdir()
    with chunk_server_in_process(stores=[str(store)], writable=True,
                                 uncompressed=True) as (url, _):
        chunk_id, data = sample_chunk(6)
        _, other = sample_chunk(7)
        assert raw_request(url, "PUT", chunk_path(chunk_id, ""), body=other)[0] == 400
        assert list(store.rglob("*")) == []
        assert raw_request(url, "PUT", chunk_path(chunk_id, ""), body=data)[0] == 200
        assert decompress(stored_file(store, chunk_id).read_bytes(), chunk_id) == data
        assert raw_request(url, "GET", chunk_path(chunk_id, "")) == (200, data)


def test_put_sha256_chunks(tmp_path: Path) -> None:
    """Without --digest, chunks of SHA-256 indexes are accepted too; with an explicit
    ``--digest sha512-256`` only that digest is."""
    data = b"sha256 chunk " * 500
    chunk_id = SHA256.sum(data)
    for explicit, expected in ((False, 200), (True, 400)):
        store = tmp_path / f"s{explicit}"
        store.mkdir()
        ctx = Context(digest=SHA512_256, digest_explicit=explicit)
        with chunk_server_in_process(ctx, stores=[str(store)], writable=True) as (url, _):
            assert raw_request(url, "PUT", chunk_path(chunk_id), body=compress(data))[0] \
                == expected


# -- authorization -----------------------------------------------------------------------------


def test_authorization(cmd_testdata: Path, blob1_ids: list[bytes]) -> None:
    path = chunk_path(blob1_ids[0])
    with chunk_server_in_process(stores=[str(cmd_testdata / "blob1.store")],
                                 authorization="Bearer t0ken") as (url, _):
        assert raw_request(url, "GET", path) == (401, b"Unauthorized\n")
        assert raw_request(url, "GET", path, headers={"Authorization": "Bearer wrong"}) == (
            401, b"Unauthorized\n")
        # Authorization is checked before anything else, even for bad paths.
        assert raw_request(url, "GET", "/somefile")[0] == 401
        assert raw_request(url, "GET", path, headers={"Authorization": "Bearer t0ken"})[0] == 200


def test_authorization_from_environment(start_server: StartServer, cmd_testdata: Path,
                                        blob1_ids: list[bytes], tmp_path: Path,
                                        desync: Callable[..., object]) -> None:
    """``DESYNC_HTTP_AUTH`` sets the expected header; clients send ``http-auth``."""
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       env={"DESYNC_HTTP_AUTH": "Bearer env"})
    assert raw_request(srv.url, "GET", chunk_path(blob1_ids[0]))[0] == 401
    assert raw_request(srv.url, "GET", chunk_path(blob1_ids[0]),
                       headers={"Authorization": "Bearer env"})[0] == 200
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": {srv.url: {"http-auth": "Bearer env"}}}))
    out = tmp_path / "blob1"
    desync("--config", str(cfg), "extract", "-s", srv.url, str(cmd_testdata / "blob1.caibx"),
           str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()


# -- TLS (CLI) -------------------------------------------------------------------------------


def test_tls_and_mutual_tls(start_server: StartServer, cmd_testdata: Path,
                            certs: dict[str, str], tmp_path: Path,
                            desync: Callable[..., object]) -> None:
    """``--cert/--key`` serve HTTPS; ``--mutual-tls --client-ca`` requires client certs."""
    store, index = str(cmd_testdata / "blob1.store"), str(cmd_testdata / "blob1.caibx")
    blob = (cmd_testdata / "blob1").read_bytes()
    tls = start_server("chunk-server", "-s", store, "--cert", certs["server.crt"],
                       "--key", certs["server.key"])
    mtls = start_server("chunk-server", "-s", store, "--cert", certs["server.crt"],
                        "--key", certs["server.key"], "--mutual-tls",
                        "--client-ca", certs["ca.crt"])
    assert tls.url.startswith("https://")
    out = tmp_path / "out"

    proc = desync("extract", "-s", tls.url, index, str(out), check=False)
    assert proc.returncode != 0
    assert b"certificate verify failed" in proc.stderr
    desync("extract", "-s", tls.url, "-t", index, str(out))
    assert out.read_bytes() == blob
    # (--ca-cert alone, and a missing client certificate, are covered in-process by
    # test_http_client.py.)
    desync("extract", "-s", mtls.url, "--ca-cert", certs["ca.crt"], "--client-cert",
           certs["client.crt"], "--client-key", certs["client.key"], index, str(out))
    assert out.read_bytes() == blob


@pytest.mark.parametrize(("flags", "message"), [
    (["--cert", "x.crt"], "--key and --cert options need to be provided together"),
    (["--key", "x.key"], "--key and --cert options need to be provided together"),
    (["--mutual-tls"], "--mutual-tls requires --cert and --key"),
    (["--client-ca", "ca.crt"], "--client-ca requires --cert and --key"),
    (["--cert", "CERT", "--key", "KEY", "--mutual-tls"], "--mutual-tls requires --client-ca"),
    (["--cert", "CERT", "--key", "KEY", "--client-ca", "CA"], "--client-ca requires --mutual-tls"),
    (["--cert", "/nonexistent.crt", "--key", "/nonexistent.key"], "loading --cert"),
    (["-w", "-s", "b"], "Only one upstream store supported for writing and no cache"),
    (["-w", "-c", "cache"], "Only one upstream store supported for writing and no cache"),
    (["--store-file", "f.json"], "--store and --store-file can't be used together"),
    (["--encryption"], "no encryption key configured"),
    (["-l", "127.0.0.1"], "missing port"),
    (["-l", "127.0.0.1:nosuchservice"], "unknown port"),
])
def test_startup_errors(cmd_testdata: Path, certs: dict[str, str], flags: list[str],
                        message: str) -> None:
    """Invalid flag combinations fail at once with desync's messages (exit status 2)."""
    flags = [certs["server.crt"] if f == "CERT" else certs["server.key"] if f == "KEY"
             else certs["ca.crt"] if f == "CA" else f for f in flags]
    code, err = run_cli_in_process("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                                   *flags)
    assert code == 2, err
    assert err.startswith("Error: ")
    assert message in err


def test_no_store() -> None:
    code, err = run_cli_in_process("chunk-server", "-l", "127.0.0.1:0")
    assert code == 2
    assert err == "Error: no store provided\n"


# -- listeners and request log ---------------------------------------------------------------


def test_several_listeners_and_log(start_server: StartServer, cmd_testdata: Path,
                                   blob1_ids: list[bytes], tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "--log", str(log))
    assert len(srv.urls) == 2
    for url in srv.urls:
        assert raw_request(url, "GET", chunk_path(blob1_ids[0]))[0] == 200
    assert raw_request(srv.urls[1], "GET", "/somefile")[0] == 400
    assert srv.stop() == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    pattern = (r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d Client: 127\.0\.0\.1:\d+, "
               r"Request: GET /\S+, Response: (200|400)$")
    for line in lines:
        assert re.match(pattern, line), line
    assert lines[-1].endswith("Request: GET /somefile, Response: 400")


# -- composition: failover, cache, dedup ----------------------------------------------------------


def test_failover_group_upstream(cmd_testdata: Path, blob1_ids: list[bytes]) -> None:
    """An upstream group whose first member is down still serves every chunk."""
    dead = f"http://127.0.0.1:{free_port()}"
    ctx = Context(overrides={"error_retry": 1})
    group = f"{dead}|{cmd_testdata / 'blob1.store'}"
    with chunk_server_in_process(ctx, stores=[group]) as (url, _):
        for chunk_id in blob1_ids[:5]:
            assert raw_request(url, "GET", chunk_path(chunk_id))[0] == 200


def test_router_and_cache(cmd_testdata: Path, tmp_path: Path) -> None:
    """Several ``-s`` stores are asked in order; ``-c`` keeps what was fetched."""
    blob2_only = set(blob_chunk_ids(cmd_testdata / "blob2.caibx")) - set(
        blob_chunk_ids(cmd_testdata / "blob1.caibx"))
    chunk_id = sorted(blob2_only)[0]
    cache = tmp_path / "cache"
    stores = [str(cmd_testdata / "blob1.store"), str(cmd_testdata / "blob2.store")]
    with chunk_server_in_process(stores=stores, cache=str(cache)) as (url, _):
        status, body = raw_request(url, "GET", chunk_path(chunk_id))
        assert status == 200
        assert stored_file(cache, chunk_id).read_bytes() == body


def test_concurrent_requests_share_one_upstream_read(cmd_testdata: Path,
                                                     blob1_ids: list[bytes]) -> None:
    """16 simultaneous GETs of one chunk make exactly one upstream request."""
    target = chunk_path(blob1_ids[0])
    release = threading.Event()
    store = cmd_testdata / "blob1.store"

    def upstream(request: SeenRequest) -> tuple[int, bytes]:
        release.wait()  # hold the first request until every client is waiting
        return 200, (store / request.path.lstrip("/")).read_bytes()

    results: list[tuple[int, bytes]] = []
    with ScriptedServer(upstream) as slow, \
            chunk_server_in_process(stores=[slow.url]) as (url, server):
        reader = server.holder.current

        def client() -> None:
            results.append(raw_request(url, "GET", target))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        # Wait (bounded) until one request is upstream and the other 15 wait for it.
        pause = threading.Event()
        for _ in range(int(PATIENCE / 0.01)):
            if len(slow.seen) == 1 and reader.waiters == 15:
                break
            pause.wait(0.01)
        assert (len(slow.seen), reader.waiters) == (1, 15)
        release.set()
        for t in threads:
            t.join()
        assert len(slow.seen) == 1
        assert reader.upstream_reads == 1
    assert [status for status, _ in results] == [200] * 16
    assert {body for _, body in results} == {(store / target.lstrip("/")).read_bytes()}


# -- store file and SIGHUP -----------------------------------------------------------------------


def test_sighup_reload_under_load(start_server: StartServer, cmd_testdata: Path,
                                  blob1_ids: list[bytes], tmp_path: Path) -> None:
    """Reloading ``--store-file`` while clients download drops no request; an invalid file
    is reported and the running setup is kept."""
    both = tmp_path / "both"
    shutil.copytree(cmd_testdata / "blob1.store", both)
    shutil.copytree(cmd_testdata / "blob2.store", both, dirs_exist_ok=True)
    only_blob2 = sorted(set(blob_chunk_ids(cmd_testdata / "blob2.caibx")) - set(blob1_ids))[0]
    store_file = tmp_path / "stores.json"

    def configure(stores: list[str]) -> None:
        tmp = store_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stores": stores}))
        tmp.replace(store_file)

    configure([str(cmd_testdata / "blob1.store")])
    srv = start_server("chunk-server", "--store-file", str(store_file))

    def status_of(chunk_id: bytes) -> int:
        return raw_request(srv.url, "GET", chunk_path(chunk_id))[0]

    def reload_until(expected: int) -> None:
        srv.send_signal(signal.SIGHUP)
        waiter = threading.Event()
        for _ in range(int(PATIENCE / 0.02)):
            if status_of(only_blob2) == expected:
                return
            waiter.wait(0.02)
        raise AssertionError(f"reload did not take effect:\n{srv.stderr()}")

    stop = threading.Event()
    errors: list[str] = []
    counts: list[int] = []

    def load() -> None:
        session = requests.Session()
        done = 0
        try:
            while not stop.is_set():
                for chunk_id in blob1_ids[:40]:
                    resp = session.get(srv.url + chunk_path(chunk_id), timeout=PATIENCE)
                    if resp.status_code != 200:
                        errors.append(f"{resp.status_code} {resp.text}")
                    elif SHA512_256.sum(decompress(resp.content, chunk_id)) != chunk_id:
                        errors.append(f"wrong data for {chunk_id.hex()}")
                    done += 1
        except Exception as exc:  # any failure is a dropped request
            errors.append(repr(exc))
        counts.append(done)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for w in workers:
        w.start()
    try:
        assert status_of(only_blob2) == 404
        configure([str(both)])
        reload_until(200)
        configure([str(cmd_testdata / "blob1.store")])
        reload_until(404)
        configure([str(both)])
        reload_until(200)
        store_file.write_text('{"stores": [')  # invalid JSON
        srv.send_signal(signal.SIGHUP)
        assert srv.wait_for_stderr("failed to reload configuration:")
        configure([])  # valid JSON, but no store
        srv.send_signal(signal.SIGHUP)
        assert srv.wait_for_stderr("no store provided")
        assert status_of(only_blob2) == 200  # the last good setup is still served
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert errors == []
    assert len(counts) == 6
    assert all(c > 0 for c in counts)
    assert srv.stop() == 0


def test_store_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    code, err = run_cli_in_process("chunk-server", "--store-file", str(bad),
                                   "-l", "127.0.0.1:0")
    assert code == 2
    assert f"failed to read store-file '{bad}'" in err
    code, err = run_cli_in_process("chunk-server", "--store-file",
                                   str(tmp_path / "missing.json"), "-l", "127.0.0.1:0")
    assert code == 2
    assert "No such file or directory" in err
    code, err = run_cli_in_process("chunk-server", "--store-file", str(bad), "-c", "x")
    assert "--cache and --store-file can't be used together" in err


# -- many clients ----------------------------------------------------------------------------------


def test_32_concurrent_clients(start_server: StartServer, cmd_testdata: Path,
                               blob1_ids: list[bytes]) -> None:
    """32 clients, each on its own keep-alive connection, all get correct chunks."""
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    errors: list[str] = []
    done: list[int] = []
    start = threading.Barrier(32)

    def client(n: int) -> None:
        session = requests.Session()
        count = 0
        try:
            start.wait(timeout=PATIENCE)
            for i in range(24):
                chunk_id = blob1_ids[(n * 7 + i) % len(blob1_ids)]
                resp = session.get(srv.url + chunk_path(chunk_id), timeout=PATIENCE)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code} {resp.text}")
                elif SHA512_256.sum(decompress(resp.content, chunk_id)) != chunk_id:
                    errors.append(f"wrong data for {chunk_id.hex()}")
                count += 1
        except Exception as exc:  # any failure counts
            errors.append(repr(exc))
        done.append(count)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert done == [24] * 32


def test_verify_read(tmp_path: Path) -> None:
    """By default chunks read upstream are passed on unhashed (clients verify);
    ``--skip-verify-read=false`` refuses a chunk whose data does not match its id."""
    store = tmp_path / "store"
    chunk_id, _ = sample_chunk(1)
    _, other = sample_chunk(2)
    stored_file(store, chunk_id).parent.mkdir(parents=True)
    stored_file(store, chunk_id).write_bytes(compress(other))
    with chunk_server_in_process(stores=[str(store)]) as (url, _):
        assert raw_request(url, "GET", chunk_path(chunk_id)) == (200, compress(other))
    with chunk_server_in_process(stores=[str(store)], verify_read=True) as (url, _):
        assert raw_request(url, "GET", chunk_path(chunk_id)) == (
            500, b"internal server error\n")


def test_address_in_use(desync: Callable[..., object], cmd_testdata: Path) -> None:
    """If one listener cannot be opened the server does not start."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = desync("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                      "-l", "127.0.0.1:0", "-l", f"127.0.0.1:{port}", check=False)
    assert proc.returncode == 2
    assert f"listen tcp 127.0.0.1:{port}: Address already in use".encode() in proc.stderr
