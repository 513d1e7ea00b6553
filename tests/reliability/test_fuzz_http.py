"""Fuzzing the HTTP servers' request parsing: any bytes a client sends get a complete
``HTTP/1.1`` reply (or none, if the client hung up before a complete request), the
server keeps serving and prints no traceback (#19.5)."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fuzz_util import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from desync_core.context import Context
from desync_store_http.chunkserver import ChunkHandler, ChunkServer
from desync_store_http.indexserver import IndexHandler, IndexServer
from desync_store_http.server import ServerGroup
from desync_store_http.settings import RequestLog, ServerSettings

STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5]\d\d [^\r\n]*\r\n")
CHUNK_PATH = "/abcd/abcd" + "0" * 60 + ".cacnk"

METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "get", "", "G\x00T",
                           "OPTIONS", "CONNECT"]) | st.text(max_size=8)
PATHS = st.sampled_from([CHUNK_PATH, "/", "/x.caibx", "//x", "/%00", "/../../etc/passwd",
                         "http://h/abcd/x", "*", "/" + "a" * 300]) | st.text(max_size=40)
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTTP/1", "HTTP/1.1.1",
                            "HTTP/01.1", "FOO", "", "HTTP/1.1 x"])
HEADERS = st.lists(st.sampled_from([
    "Content-Length: 5", "Content-Length: -1", "Content-Length: abc",
    "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip", "Content-Encoding: gzip", "Connection: close",
    "Authorization: x", "Expect: 100-continue", "Host:", " folded", "NoColon",
    "X: " + "y" * 2000]) | st.text(max_size=30), max_size=5)


@st.composite
def requests(draw) -> bytes:  # type: ignore[no-untyped-def]
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    line = f"{draw(METHODS)} {draw(PATHS)} {draw(VERSIONS)}"
    head = "\r\n".join([line, *draw(HEADERS)]) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + draw(st.binary(max_size=64))


def exchange(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # no more bytes: the server cannot wait for any
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


@pytest.fixture(params=["chunk", "index"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ServerSettings]]:
    settings = ServerSettings(errors=io.StringIO())
    settings.log = RequestLog(str(tmp_path / "log"))
    (tmp_path / "store").mkdir()
    if request.param == "chunk":
        app: object = ChunkServer(Context(), stores=[str(tmp_path / "store")], writable=True,
                                  settings=settings)
        handler: type = ChunkHandler
    else:
        app = IndexServer(Context(), str(tmp_path / "store"), writable=True)
        handler = IndexHandler
    group = ServerGroup(["127.0.0.1:0"], handler, app, settings, poll_interval=0.01)
    url = group.start()[0]
    try:
        yield url, settings
    finally:
        group.stop()
        app.close()  # type: ignore[attr-defined]
        settings.log.close()


def test_any_request_gets_a_complete_reply(server: tuple[str, ServerSettings]) -> None:
    url, settings = server
    answered: list[bool] = []

    @FUZZ
    @given(requests())
    def run(request: bytes) -> None:
        reply = exchange(url, request)
        answered.append(bool(reply))
        if reply:
            assert STATUS_LINE.match(reply), (request[:80], reply[:200])

    run()
    assert sum(answered) > len(answered) // 2  # most requests are complete: all answered
    assert exchange(url, b"HEAD / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert "Traceback" not in settings.errors.getvalue()  # type: ignore[attr-defined]
