"""The chunk-server's fast lane (``fastlane.py``): pipelined requests on one connection
answered in order, requests it does not answer handed over mid-connection with the bytes
already read, a client that reads slowly, HTTP/1.0 and ``Connection: close``."""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

from store_http_support import PATIENCE, blob_chunk_ids, chunk_path, serve_in_process

from desync_core.plugin_api import Context
from desync_store_http.chunkserver import ChunkHandler, ChunkServer
from desync_store_http.settings import RequestLog, ServerSettings


def read_replies(sock: socket.socket, count: int,
                 heads: frozenset[int] = frozenset()) -> list[tuple[int, bytes]]:
    """Read ``count`` HTTP replies (status, body) from a connection; the replies
    numbered in ``heads`` answer HEAD requests (no body)."""
    f = sock.makefile("rb")
    replies = []
    for n in range(count):
        status = int(f.readline().split()[1])
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        replies.append((status, b"" if n in heads else f.read(length)))
    return replies


def test_pipelined_requests_and_hand_over(cmd_testdata: Path, tmp_path: Path) -> None:
    store = cmd_testdata / "blob1.store"
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")[:3]
    files = [(store / chunk_path(i).lstrip("/")).read_bytes() for i in ids]
    settings = ServerSettings(errors=io.StringIO())
    settings.log = RequestLog(str(tmp_path / "requests.log"))
    app = ChunkServer(Context(), stores=[str(store)], settings=settings)
    try:
        with serve_in_process(ChunkHandler, app, settings) as url:
            port = int(url.rsplit(":", 1)[1])
            requests = [
                f"GET {chunk_path(ids[0])} HTTP/1.1\r\nHost: x\r\n\r\n",
                f"HEAD {chunk_path(ids[1])} HTTP/1.1\r\nHost: x\r\n\r\n",
                f"GET {chunk_path(ids[1])} HTTP/1.1\r\nHost: x\r\n\r\n",
                # not in the fast lane: a missing chunk, then the thread handler
                # serves the rest of the connection
                f"GET {chunk_path(bytes(32))} HTTP/1.1\r\nHost: x\r\n\r\n",
                f"GET {chunk_path(ids[2])} HTTP/1.1\r\nHost: x\r\n\r\n",
                "GET /nonsense HTTP/1.1\r\nHost: x\r\n\r\n",
                f"GET {chunk_path(ids[0])} HTTP/1.1\r\nConnection: close\r\n\r\n",
            ]
            with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
                sock.sendall("".join(requests).encode())
                replies = read_replies(sock, len(requests), frozenset({1}))
                assert sock.recv(1) == b""  # closed after "Connection: close"
    finally:
        app.close()
        settings.log.close()
    assert [s for s, _ in replies] == [200, 200, 200, 404, 200, 400, 200]
    assert replies[0][1] == files[0]
    assert replies[1][1] == b""
    assert replies[2][1] == files[1]
    assert replies[4][1] == files[2]
    assert replies[6][1] == files[0]
    lines = (tmp_path / "requests.log").read_text().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["200", "200", "200", "404", "200",
                                                          "400", "200"]


def test_slow_reader_gets_whole_files(cmd_testdata: Path, tmp_path: Path) -> None:
    """A client with a tiny receive buffer that reads late: every byte arrives."""
    store = tmp_path / "store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")
    largest = sorted(ids, key=lambda i: (store / chunk_path(i).lstrip("/")).stat().st_size)
    wanted = largest[-4:]
    settings = ServerSettings(errors=io.StringIO())
    app = ChunkServer(Context(), stores=[str(store)], settings=settings)
    try:
        with serve_in_process(ChunkHandler, app, settings) as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(PATIENCE)
                sock.connect(("127.0.0.1", port))
                sock.sendall("".join(f"GET {chunk_path(i)} HTTP/1.1\r\nHost: x\r\n\r\n"
                                     for i in wanted).encode())
                replies = read_replies(sock, len(wanted))
    finally:
        app.close()
    assert replies == [(200, (store / chunk_path(i).lstrip("/")).read_bytes())
                       for i in wanted]


def test_http10_keep_alive(cmd_testdata: Path) -> None:
    store = cmd_testdata / "blob1.store"
    chunk_id = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0]
    settings = ServerSettings(errors=io.StringIO())
    app = ChunkServer(Context(), stores=[str(store)], settings=settings)
    try:
        with serve_in_process(ChunkHandler, app, settings) as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
                request = f"GET {chunk_path(chunk_id)} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                sock.sendall(request.encode() * 2)
                replies = read_replies(sock, 2)
    finally:
        app.close()
    body = (store / chunk_path(chunk_id).lstrip("/")).read_bytes()
    assert replies == [(200, body), (200, body)]


def test_authorization_in_the_fast_lane(cmd_testdata: Path) -> None:
    """The right header is served (by the lane), a wrong, missing or second-only right
    header gets the thread handler's 401."""
    store = cmd_testdata / "blob1.store"
    chunk_id = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0]
    body = (store / chunk_path(chunk_id).lstrip("/")).read_bytes()
    settings = ServerSettings(authorization="Bearer s3cret", errors=io.StringIO())
    app = ChunkServer(Context(), stores=[str(store)], settings=settings)
    target = chunk_path(chunk_id)
    requests = [
        f"GET {target} HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
        f"GET {target} HTTP/1.1\r\nAuthorization: Bearer s3cret \r\n\r\n",  # OWS
        f"GET {target} HTTP/1.1\r\nAuthorization: Bearer wrong\r\n"
        "Authorization: Bearer s3cret\r\n\r\n",
        f"GET {target} HTTP/1.1\r\n\r\n",
    ]
    try:
        with serve_in_process(ChunkHandler, app, settings) as url:
            port = int(url.rsplit(":", 1)[1])
            results = []
            for request in requests:
                with socket.create_connection(("127.0.0.1", port),
                                              timeout=PATIENCE) as sock:
                    sock.sendall(request.encode())
                    results.append(read_replies(sock, 1)[0])
    finally:
        app.close()
    assert results[0] == (200, body)
    assert results[1] == (200, body)
    assert [status for status, _ in results[2:]] == [401, 401]
