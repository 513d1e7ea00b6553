"""The HTTP client stores: URLs, headers, TLS, pooling and the mapping of outcomes onto
the core's errors (which decides what the core retries)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_http_support import (
    ScriptedServer,
    SeenRequest,
    chunk_path,
    chunk_server_in_process,
    free_port,
    run_cli_in_process,
)

from desync_core.plugin_api import (
    Chunk,
    ChunkMissingError,
    ConfigError,
    Context,
    IndexNotFoundError,
    StoreConnectionError,
    StoreError,
    StoreOptions,
    StorePermissionError,
    StoreTimeoutError,
    UsageError,
    compress,
    load_config,
    parse_location,
)
from desync_core.testing import open_chunk_store, open_index_store, sample_chunk
from desync_store_http.client import HTTPChunkStore, HTTPIndexStore, base_url

CHUNK_ID, CHUNK_DATA = sample_chunk(1)


def ctx_with(tmp_path: Path, pattern: str, **options: object) -> Context:
    """A context whose config gives ``options`` to locations matching ``pattern``."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": {pattern: options}}))
    return Context(config=load_config(str(cfg)))


def fixed(status: int, body: bytes = b"") -> ScriptedServer:
    """A server answering every request with one status."""
    return ScriptedServer(lambda _r: (status, body))


@pytest.mark.parametrize(("location", "expected"), [
    ("http://h/store", "http://h/store/"),
    ("http://h/store/", "http://h/store/"),
    ("https://h:8443", "https://h:8443/"),
    ("http://h/a/b?x=1#frag", "http://h/a/b/"),
])
def test_base_url(location: str, expected: str) -> None:
    assert base_url(location) == expected


def test_chunk_url_resolves_against_base_without_query() -> None:
    """``http://h/store?x`` serves chunks at ``/store/<4hex>/<id>.cacnk``."""
    with ScriptedServer(lambda _r: (200, compress(CHUNK_DATA))) as srv:
        store = open_chunk_store(f"{srv.url}/store?token=1")
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        assert srv.paths() == [f"/store{chunk_path(CHUNK_ID)}"]


def test_headers_sent(tmp_path: Path) -> None:
    """``http-auth`` and ``http-cookie`` become headers; no transport compression."""
    with ScriptedServer(lambda _r: (404, b"")) as srv:
        ctx = ctx_with(tmp_path, srv.url, **{"http-auth": "Bearer s3cr3t",
                                             "http-cookie": "session=abc"})
        store = open_chunk_store(srv.url, ctx)
        assert store.has_chunk(CHUNK_ID) is False
        headers = {k.lower(): v for k, v in srv.seen[0].headers.items()}
        assert headers["authorization"] == "Bearer s3cr3t"
        assert headers["cookie"] == "session=abc"
        assert headers.get("accept-encoding", "identity") == "identity"
        assert headers["user-agent"].startswith("desync-store-http/")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_permission_errors(status: int) -> None:
    with fixed(status, b"Unauthorized\n") as srv:
        store = open_chunk_store(srv.url)
        with pytest.raises(StorePermissionError, match=f"{status}"):
            store.get_chunk(CHUNK_ID)
        with pytest.raises(StorePermissionError):
            store.has_chunk(CHUNK_ID)
        with pytest.raises(StorePermissionError):
            store.store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))


def test_not_found_is_missing() -> None:
    with fixed(404, b"chunk not found") as srv:
        store = open_chunk_store(srv.url)
        with pytest.raises(ChunkMissingError):
            store.get_chunk(CHUNK_ID)
        assert store.has_chunk(CHUNK_ID) is False


def test_server_errors_are_transient_and_retried_by_the_core() -> None:
    """503 twice, then the chunk: the core's retries (3 attempts) get it."""
    replies = iter([(503, b"busy"), (503, b"busy"), (200, compress(CHUNK_DATA))])
    with ScriptedServer(lambda _r: next(replies)) as srv:
        store = open_chunk_store(srv.url)
        with pytest.raises(StoreConnectionError, match="unexpected status code 503"):
            store.get_chunk(CHUNK_ID)  # the transport itself never retries
        assert len(srv.seen) == 1
        ctx = Context(overrides={"error_retry": 3, "error_retry_base_interval": 0.0})
        reader = ctx.open_reader(srv.url)
        assert bytes(reader.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        assert len(srv.seen) == 3


def test_server_error_reported_after_last_attempt() -> None:
    with fixed(500, b"internal server error\n") as srv:
        ctx = Context(overrides={"error_retry": 2, "error_retry_base_interval": 0.0})
        with pytest.raises(StoreConnectionError, match=r"500.*internal server error"):
            ctx.open_reader(srv.url).get_chunk(CHUNK_ID)
        assert len(srv.seen) == 2


def test_refused_upload_carries_the_reply_and_is_not_retried() -> None:
    with fixed(400, b"writing to upstream chunk store is not enabled\n") as srv:
        ctx = Context(overrides={"error_retry": 3, "error_retry_base_interval": 0.0})
        store = ctx.open_writable(srv.url)
        with pytest.raises(StoreError, match=r"^writing to upstream chunk store is not enabled"):
            store.store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))
        assert len(srv.seen) == 1


def test_upload_sends_storage_bytes() -> None:
    with fixed(201) as srv:
        open_chunk_store(srv.url).store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))
        assert srv.seen[0].method == "PUT"
        assert srv.seen[0].path == chunk_path(CHUNK_ID)
        assert srv.seen[0].body == compress(CHUNK_DATA)


def test_connection_refused_is_transient() -> None:
    store = open_chunk_store(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(StoreConnectionError, match="refused") as info:
        store.get_chunk(CHUNK_ID)
    assert not isinstance(info.value, StoreTimeoutError)


@pytest.fixture
def stalled() -> Iterator[ScriptedServer]:
    """A server that answers only when the test is over."""
    release = threading.Event()

    def respond(_r: SeenRequest) -> tuple[int, bytes]:
        release.wait()
        return 200, b""

    with ScriptedServer(respond) as srv:
        yield srv
        release.set()


def test_timeout(tmp_path: Path, stalled: ScriptedServer) -> None:
    """The store's ``timeout`` bounds a request; a timeout is a (retried) transient error."""
    ctx = ctx_with(tmp_path, stalled.url, timeout=200_000_000)  # 0.2 s in nanoseconds
    store = open_chunk_store(stalled.url, ctx)
    with pytest.raises(StoreTimeoutError, match="timeout"):
        store.get_chunk(CHUNK_ID)
    assert issubclass(StoreTimeoutError, StoreConnectionError)


def test_connections_are_reused() -> None:
    """Sequential requests of one store share one keep-alive connection."""
    with ScriptedServer(lambda _r: (200, compress(CHUNK_DATA))) as srv:
        store = open_chunk_store(srv.url)
        for _ in range(10):
            store.get_chunk(CHUNK_ID)
            store.has_chunk(CHUNK_ID)
        assert len({r.client_port for r in srv.seen}) == 1


def test_pool_sized_by_concurrency() -> None:
    """``-n`` sizes the connection pool: six threads requesting at once through a store
    with ``n=3`` use at most three connections, and every request is answered."""
    gate = threading.Barrier(3, timeout=10)

    def respond(_r: SeenRequest) -> tuple[int, bytes]:
        try:
            gate.wait()  # three requests in flight at once, then the next three
        except threading.BrokenBarrierError:
            pass
        return 200, compress(CHUNK_DATA)

    with ScriptedServer(respond) as srv:
        store = HTTPChunkStore(parse_location(srv.url), StoreOptions(n=3))
        assert store.client.pool_size == 3
        got: list[bytes] = []
        threads = [threading.Thread(target=lambda: got.append(
            bytes(store.get_chunk(CHUNK_ID).data()))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == [CHUNK_DATA] * 6
        assert len({r.client_port for r in srv.seen}) == 3


def test_missing_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    ctx = ctx_with(tmp_path, "https://127.0.0.1:1", **{"ca-cert": str(tmp_path / "nope.crt")})
    with pytest.raises(ConfigError, match="ca-cert file"):
        open_chunk_store("https://127.0.0.1:1", ctx).get_chunk(CHUNK_ID)


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path, certs: dict[str, str]) -> Iterator[str]:
    """An HTTPS chunk server (server.crt for 127.0.0.1 and localhost) with one chunk."""
    (tmp_path / "store").mkdir()
    Context().open_writable(str(tmp_path / "store")).store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))
    tls = {"cert": certs["server.crt"], "key": certs["server.key"]}
    with chunk_server_in_process(stores=[str(tmp_path / "store")], tls=tls) as (url, _):
        yield url


def test_tls_untrusted_certificate_is_a_clear_error(tls_server: str) -> None:
    """Verification failure: a plain StoreError (never retried), saying why."""
    store = open_chunk_store(tls_server)
    with pytest.raises(StoreError, match="certificate verify failed") as info:
        store.get_chunk(CHUNK_ID)
    assert not isinstance(info.value, StoreConnectionError)


def test_tls_with_ca_cert(tls_server: str, certs: dict[str, str]) -> None:
    ctx = Context(overrides={"ca_cert": certs["ca.crt"]})
    assert bytes(open_chunk_store(tls_server, ctx).get_chunk(CHUNK_ID).data()) == CHUNK_DATA
    by_name = tls_server.replace("127.0.0.1", "localhost")
    assert open_chunk_store(by_name, ctx).has_chunk(CHUNK_ID)


def test_tls_trust_insecure(tls_server: str) -> None:
    ctx = Context(overrides={"trust_insecure": True})
    assert bytes(open_chunk_store(tls_server, ctx).get_chunk(CHUNK_ID).data()) == CHUNK_DATA


def test_mutual_tls(tmp_path: Path, certs: dict[str, str]) -> None:
    """A server requiring client certificates refuses clients without one (not retried)
    and serves clients presenting client.crt."""
    (tmp_path / "store").mkdir()
    Context().open_writable(str(tmp_path / "store")).store_chunk(Chunk(CHUNK_ID, CHUNK_DATA))
    tls = {"cert": certs["server.crt"], "key": certs["server.key"],
           "client_ca": certs["ca.crt"]}
    with chunk_server_in_process(stores=[str(tmp_path / "store")], tls=tls) as (url, _):
        anonymous = open_chunk_store(url, Context(overrides={"ca_cert": certs["ca.crt"]}))
        with pytest.raises(StoreError, match="TLS") as info:
            anonymous.get_chunk(CHUNK_ID)
        assert not isinstance(info.value, StoreConnectionError)
        ctx = Context(overrides={"ca_cert": certs["ca.crt"], "client_cert": certs["client.crt"],
                                 "client_key": certs["client.key"]})
        assert bytes(open_chunk_store(url, ctx).get_chunk(CHUNK_ID).data()) == CHUNK_DATA


# -- index store ------------------------------------------------------------------------------


def test_index_store_errors() -> None:
    with fixed(404) as srv:
        store = open_index_store(srv.url + "/dir/")
        assert isinstance(store, HTTPIndexStore)
        with pytest.raises(IndexNotFoundError, match=r"x\.caibx missing from store"):
            store.get_index("x.caibx")
        assert srv.paths() == ["/dir/x.caibx"]
        with pytest.raises(UsageError):
            store.get_index("../x.caibx")
    with fixed(403) as srv, pytest.raises(StorePermissionError):
        open_index_store(srv.url + "/").get_index("x.caibx")
    with fixed(400, b"writing to upstream index store is not enabled") as srv, \
            pytest.raises(StoreError, match=r"^writing to upstream index store is not enabled"):
        open_index_store(srv.url + "/").store_index("x.caibx", b"data")  # type: ignore[attr-defined]


def test_read_index_from_url(tmp_path: Path) -> None:
    """Context.read_index splits ``http://host/dir/x.caibx`` into store and name."""
    from desync_core.testing import IndexStoreContract

    data = IndexStoreContract.sample_index()
    with ScriptedServer(lambda r: (200, data) if r.path == "/dir/x.caibx" else (404, b"")) \
            as srv:
        assert Context().read_index(f"{srv.url}/dir/x.caibx").to_bytes() == data


def test_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` is honoured: requests go to the proxy in absolute form."""
    with ScriptedServer(lambda _r: (200, compress(CHUNK_DATA))) as proxy:
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                     "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        store = open_chunk_store("http://desync.example.invalid/store")
        assert bytes(store.get_chunk(CHUNK_ID).data()) == CHUNK_DATA
        assert proxy.paths() == [f"http://desync.example.invalid/store{chunk_path(CHUNK_ID)}"]



def test_extract_tries_a_failing_chunk_error_retry_times(tmp_path: Path) -> None:
    """A chunk the server keeps failing (503) is requested exactly ``error-retry`` times
    by extract: the batched fast path does not fetch it again on the careful path."""
    (tmp_path / "blob").write_bytes(CHUNK_DATA)  # smaller than a chunk: one chunk
    assert run_cli_in_process("make", str(tmp_path / "x.caibx"), str(tmp_path / "blob"))[0] == 0
    with fixed(503, b"busy") as srv:
        code, err = run_cli_in_process("extract", "-e", "3", "-b", "0s", "-s", srv.url,
                                       str(tmp_path / "x.caibx"), str(tmp_path / "out"))
        assert code == 4, err
        assert "unexpected status code 503" in err
        assert len(srv.paths("GET")) == 3
    assert not (tmp_path / "out").exists()


def test_a_blob_given_as_a_remote_index_is_abandoned_after_its_header() -> None:
    """Regression (#19.3): an index location over HTTP is read header first, so a 64 MB
    blob given as the index fails at once, without downloading or holding it."""
    import tracemalloc

    from desync_core.plugin_api import IndexFormatError

    blob = bytes(range(256)) * (256 * 1024)  # 64 MiB, not an index
    with ScriptedServer(lambda _r: (200, blob)) as srv:
        tracemalloc.start()
        try:
            with pytest.raises(IndexFormatError, match="not an index file"):
                Context().read_index(f"{srv.url}/dir/blob.caibx")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"reading the header held {peak >> 20} MiB"
