"""Hostile requests to the servers (#19.4 server side, #19.5, #19.9): protocol errors
always get a complete HTTP/1.1 reply (also with ``--log``), uploads are bounded in size,
memory, encoding and concurrency, and the index server never blocks on a FIFO."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from store_http_support import (
    PATIENCE,
    ServerProcess,
    chunk_path,
    raw_request,
    run_cli_in_process,
    serve_in_process,
)

from desync_core.plugin_api import SHA512_256, Context, compress
from desync_core.testing import sample_chunk
from desync_store_http.chunkserver import ChunkHandler, ChunkServer
from desync_store_http.indexserver import IndexHandler, IndexServer
from desync_store_http.settings import RequestLog, ServerSettings
from desync_store_http.uploads import UploadGate

MALFORMED_REQUESTS = [
    b"GET / HTTP/9.9\r\n\r\n",
    b"garbage\r\n\r\n",
    b"\x00\xff\xfe\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
    b"GET /\r\n",  # HTTP/0.9: the stdlib would answer without a status line
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    b"PUT /0000/" + b"0" * 64 + b".cacnk HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
]


def exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes; the whole reply (the server closes after an error)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@contextmanager
def chunk_server(tmp_path: Path, *, log: bool = False, gate: UploadGate | None = None,
                 **kwargs: object) -> Iterator[tuple[str, ServerSettings, Path]]:
    """An in-process ``-w`` chunk server on a fresh store; errors go to a buffer."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    settings = ServerSettings(errors=io.StringIO())
    if log:
        settings.log = RequestLog(str(tmp_path / "requests.log"))
    if gate is not None:
        settings.uploads = gate
    app = ChunkServer(Context(), stores=[str(store)], writable=True, settings=settings,
                      **kwargs)  # type: ignore[arg-type]
    try:
        with serve_in_process(ChunkHandler, app, settings) as url:
            yield url, settings, store
    finally:
        app.close()
        if settings.log is not None:
            settings.log.close()


@pytest.mark.parametrize("log", [False, True], ids=["plain", "log"])
def test_malformed_requests_get_http11_replies(tmp_path: Path, log: bool) -> None:
    with chunk_server(tmp_path, log=log) as (url, settings, _):
        for request in MALFORMED_REQUESTS:
            reply = exchange(url, request)
            status_line = reply.split(b"\r\n", 1)[0]
            assert status_line.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")), (request[:40], reply)
            assert b"Content-Length:" in reply
        # the server still serves, and nothing was printed as a traceback
        assert raw_request(url, "HEAD", chunk_path(bytes(32)))[0] == 404
        assert "Traceback" not in settings.errors.getvalue()  # type: ignore[attr-defined]
    if log:
        lines = (tmp_path / "requests.log").read_text().splitlines()
        assert len(lines) == len(MALFORMED_REQUESTS) + 1
        assert all(re.search(r"Response: [45]\d\d$", line) for line in lines), lines


def test_oversized_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    chunk_id, _ = sample_chunk(1)
    head = (f"PUT {chunk_path(chunk_id)} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {200 * 1024 * 1024}\r\n\r\n").encode()
    with chunk_server(tmp_path) as (url, _, store):
        reply = exchange(url, head)  # no body is sent: the reply comes anyway
        assert reply.startswith(b"HTTP/1.1 413"), reply
        assert list(store.rglob("*.cacnk")) == []


def test_foreign_encodings_are_refused(tmp_path: Path) -> None:
    chunk_id, data = sample_chunk(2)
    path = chunk_path(chunk_id)
    with chunk_server(tmp_path) as (url, _, store):
        assert raw_request(url, "PUT", path, body=compress(data),
                           headers={"Content-Encoding": "gzip"})[0] == 415
        assert raw_request(url, "PUT", path, body=gzip.compress(data))[0] == 415
        assert raw_request(url, "PUT", path, body=lzma.compress(data))[0] == 415
        assert list(store.rglob("*.cacnk")) == []
        assert raw_request(url, "PUT", path, body=compress(data))[0] == 200


def test_decompression_bomb_stops_at_the_chunk_size_limit(tmp_path: Path) -> None:
    bomb = compress(bytes(128 * 1024 * 1024 + 1))  # ~4 KB
    bogus_id = bytes(range(32))
    with chunk_server(tmp_path) as (url, _, store):
        status, body = raw_request(url, "PUT", chunk_path(bogus_id), body=bomb)
        assert status == 400
        assert b"more than 134217728 bytes" in body
        assert list(store.rglob("*.cacnk")) == []


def test_concurrent_large_uploads_stay_in_bounded_memory(tmp_path: Path) -> None:
    """Four chunks of 40 MiB (compressed to ~2 KB each) uploaded at once: the server
    hashes them as they decode (~45 MB peak); holding them whole took over 200 MB."""
    store = tmp_path / "store"
    store.mkdir()
    chunks = []
    for i in range(4):
        data = bytes([i]) * (40 * 1024 * 1024)
        chunks.append((SHA512_256.sum(data), compress(data)))
        del data
    server = ServerProcess(["chunk-server", "-w", "-s", str(store)])
    try:
        results: list[int] = []
        threads = [threading.Thread(target=lambda c=c: results.append(
            raw_request(server.url, "PUT", chunk_path(c[0]), body=c[1])[0])) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=PATIENCE)
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        peak_mb = int(next(line.split()[1] for line in status.splitlines()
                           if line.startswith("VmHWM:"))) / 1024
    finally:
        server.stop()
    assert results == [200] * 4
    assert len(list(store.rglob("*.cacnk"))) == 4
    assert peak_mb < 120, f"chunk-server peaked at {peak_mb:.0f} MB"


def test_upload_gate_bounds_bytes_and_slots() -> None:
    gate = UploadGate(budget=100, slots=2, wait=0.05)
    assert gate.acquire(60)
    assert not gate.acquire(60)  # does not fit in the budget
    assert gate.acquire(40)
    assert not gate.acquire(0)  # no slot left
    gate.release(60)
    gate.release(40)
    assert gate.acquire(10_000)  # larger than the budget: alone
    assert not gate.acquire(1)
    gate.release(10_000)
    assert (gate.in_use, gate.active) == (0, 0)


def test_full_upload_budget_answers_503(tmp_path: Path) -> None:
    chunk_id, data = sample_chunk(3)
    body = compress(data)
    gate = UploadGate(slots=1, wait=0.2)
    with chunk_server(tmp_path, gate=gate) as (url, _, _store):
        parts = urlsplit(url)
        # A slow upload holds the only slot (its body never completes in time).
        slow = socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE)
        slow.sendall(f"PUT {chunk_path(chunk_id)} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        deadline = time.monotonic() + PATIENCE
        while gate.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = exchange(url, f"PUT {chunk_path(chunk_id)} HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert reply.startswith(b"HTTP/1.1 503"), reply
        assert b"Retry-After: 1" in reply
        slow.sendall(body[10:])
        assert slow.makefile("rb").readline().startswith(b"HTTP/1.1 200")
        slow.close()


@pytest.mark.parametrize(("doc", "fragment"), [
    ('{"stores": [","]}', "empty store location"),
    ('{"stores": [""]}', "empty store location"),
    ('{"stores": ["a|"]}', "empty store location"),
    ('{"stores": ["/tmp"], "cache": false}', '"cache" must be a store location'),
    ('{"stores": ["/tmp"], "cache": 0}', '"cache" must be a store location'),
    ('{"stores": ["/tmp"], "cache": []}', '"cache" must be a store location'),
    ("[" * 1000 + "]" * 1000, "nested too deeply"),
    ('{"a":' * 1000 + "1" + "}" * 1000, "nested too deeply"),
])
def test_store_file_errors(tmp_path: Path, doc: str, fragment: str) -> None:
    path = tmp_path / "stores.json"
    path.write_text(doc)
    code, err = run_cli_in_process("chunk-server", "--store-file", str(path),
                                   "-l", "127.0.0.1:0")
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err


@contextmanager
def index_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    directory = tmp_path / "indexes"
    directory.mkdir()
    settings = ServerSettings(errors=io.StringIO())
    app = IndexServer(Context(), str(directory), writable=True)
    try:
        with serve_in_process(IndexHandler, app, settings) as url:
            yield url, directory
    finally:
        app.close()


def test_index_server_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    with index_server(tmp_path) as (url, directory):
        os.mkfifo(directory / "pipe.caibx")
        assert raw_request(url, "GET", "/pipe.caibx")[0] == 404
        assert raw_request(url, "HEAD", "/pipe.caibx")[0] == 404


def test_index_server_overlong_name_is_400(tmp_path: Path) -> None:
    name = "x" * 300 + ".caibx"
    with index_server(tmp_path) as (url, _):
        for method in ("GET", "HEAD", "PUT"):
            status, _body = raw_request(url, method, "/" + name, body=b"" if method == "PUT"
                                        else None)
            assert status == 400, method
