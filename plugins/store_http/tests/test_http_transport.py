"""The libcurl transport under the HTTP stores: pooled handles switching methods,
streamed bodies larger than the pause threshold, forked children, proxy bypass."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from store_http_support import ScriptedServer, SeenRequest, chunk_path, free_port

from desync_core.plugin_api import Chunk, StoreOptions, compress, parse_location
from desync_core.testing import open_chunk_store, open_index_store, sample_chunk
from desync_store_http.client import HTTPChunkStore

CHUNK_ID, CHUNK_DATA = sample_chunk(2)


def test_one_handle_switches_between_methods() -> None:
    """HEAD, GET, PUT, GET, HEAD on one pooled handle: each request is sent with its own
    method and body, on one keep-alive connection."""
    stored = compress(CHUNK_DATA)

    def respond(r: SeenRequest) -> tuple[int, bytes]:
        return (201, b"") if r.method == "PUT" else (200, stored)

    with ScriptedServer(respond) as srv:
        store = HTTPChunkStore(parse_location(srv.url), StoreOptions(n=1))
        assert store.has_chunk(CHUNK_ID)
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        store.store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        assert store.has_chunk(CHUNK_ID)
        assert [r.method for r in srv.seen] == ["HEAD", "GET", "PUT", "GET", "HEAD"]
        assert [r.body for r in srv.seen] == [b"", b"", stored, b"", b""]
        assert {r.path for r in srv.seen} == {chunk_path(CHUNK_ID)}
        assert len({r.client_port for r in srv.seen}) == 1


def test_uploads_alternating_with_heads() -> None:
    """``make -s`` asks, then uploads, chunk after chunk: HEAD and PUT alternate on one
    handle, each HEAD without a body and each PUT with its own."""
    ids = [sample_chunk(k) for k in range(3, 6)]

    def respond(r: SeenRequest) -> tuple[int, bytes]:
        return (201, b"") if r.method == "PUT" else (404, b"")

    with ScriptedServer(respond) as srv:
        store = HTTPChunkStore(parse_location(srv.url), StoreOptions(n=1))
        for chunk_id, data in ids:
            assert not store.has_chunk(chunk_id)
            store.store_chunk(Chunk(chunk_id, data))
        assert [r.method for r in srv.seen] == ["HEAD", "PUT"] * 3
        assert [r.body for r in srv.seen[1::2]] == [compress(d) for _i, d in ids]
        assert all(r.body == b"" for r in srv.seen[0::2])
        assert [r.path for r in srv.seen[1::2]] == [chunk_path(i) for i, _d in ids]


def test_streamed_body_larger_than_the_pause_threshold_arrives_whole() -> None:
    """An index body of 5 MiB (the transfer pauses at 1 MiB unread) comes out whole."""
    body = bytes(range(256)) * (5 * 4096)
    with ScriptedServer(lambda _r: (200, body)) as srv:
        store = open_index_store(srv.url + "/")
        pieces = list(store.iter_index("x.caibx"))  # type: ignore[attr-defined]
        assert b"".join(pieces) == body
        assert len(pieces) > 1


def _child_fetch(store: HTTPChunkStore, out: multiprocessing.Queue[bytes]) -> None:
    out.put(bytes(store.get_chunk(CHUNK_ID).data()))


def test_forked_child_opens_its_own_connection() -> None:
    """A child forked after the parent connected does not use the parent's connection;
    the parent's keeps working afterwards."""
    with ScriptedServer(lambda _r: (200, compress(CHUNK_DATA))) as srv:
        store = HTTPChunkStore(parse_location(srv.url), StoreOptions(n=2))
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        ctx = multiprocessing.get_context("fork")
        out: multiprocessing.Queue[bytes] = ctx.Queue()
        child = ctx.Process(target=_child_fetch, args=(store, out))
        child.start()
        assert out.get(timeout=30) == CHUNK_DATA
        child.join(30)
        assert child.exitcode == 0
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        ports = [r.client_port for r in srv.seen]
        assert len(ports) == 3
        assert ports[0] == ports[2] != ports[1]


def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``NO_PROXY`` names hosts reached directly, whatever ``HTTP_PROXY`` says."""
    with ScriptedServer(lambda _r: (200, compress(CHUNK_DATA))) as srv:
        for name in ("http_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nobody there
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        store = open_chunk_store(srv.url)
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        assert srv.paths() == [chunk_path(CHUNK_ID)]
