"""The GCS connection: pool size, retry counts, error translation and credentials.

Failures come from real HTTP servers on 127.0.0.1 that answer every request with one
status (a stand-in for an unhealthy or refusing GCS front end) and count the requests;
credentials come from a service-account file whose token endpoint is a local server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gcs_support import Bucket, Emulator

from desync_core.plugin_api import (
    ChunkMissingError,
    Context,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from desync_core.testing import open_chunk_store, sample_chunk
from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_core.testing.servers import free_port

Cli = Callable[..., CliResult]


class CountingServer:
    """An HTTP server answering every request with ``status`` (and a JSON reply like
    the JSON API's), or with ``reply`` when given; it records the request paths."""

    def __init__(self, status: int, reply: dict[str, object] | None = None,
                 delay: float = 0.0) -> None:
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(self.rfile.read(length) if length else b"")
                outer.paths.append(self.path)
                if delay:
                    time.sleep(delay)
                body = json.dumps(reply if reply is not None else {
                    "error": {"code": status, "message": f"status {status} for test"}}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server names

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def failing_server() -> Iterator[Callable[..., CountingServer]]:
    """``failing_server(503)`` starts a CountingServer; all are stopped afterwards."""
    servers: list[CountingServer] = []

    def start(status: int, reply: dict[str, object] | None = None,
              delay: float = 0.0) -> CountingServer:
        server = CountingServer(status, reply, delay)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_pool_holds_n_connections(bucket: Bucket) -> None:
    """``-n`` sizes the HTTP connection pool of the store's session."""
    for n in (3, 24):
        store = open_chunk_store(bucket.url("p"), Context(concurrency=n))
        store.has_chunk(sample_chunk(1)[0])  # connects
        session = store.client._session  # type: ignore[attr-defined]
        for scheme in ("http://", "https://"):
            adapter = session.get_adapter(scheme)
            assert adapter._pool_maxsize == n
            assert adapter.max_retries.total == 0
        store.close()


@pytest.mark.parametrize("attempts", [1, 3])
def test_transient_errors_retried_error_retry_times(
        failing_server: Callable[..., CountingServer], monkeypatch: pytest.MonkeyPatch,
        attempts: int) -> None:
    """A 503 is retried by the core only: ``error-retry`` attempts in all, for chunk
    reads, writes and index reads (the library's own retry is off)."""
    server = failing_server(503)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    ctx = Context(overrides={"error_retry": attempts, "error_retry_base_interval": 0.001})
    chunk_id, data = sample_chunk(2)
    with pytest.raises(StoreConnectionError, match="bucket 'bkt'"):
        ctx.open_reader("gs://bkt/x").get_chunk(chunk_id)
    assert len(server.paths) == attempts
    assert all(f"/b/bkt/o/x%2F{chunk_id.hex()[:4]}" in p for p in server.paths)

    server.paths.clear()
    from desync_core.plugin_api import Chunk

    with pytest.raises(StoreConnectionError):
        ctx.open_writable("gs://bkt/x").store_chunk(Chunk(chunk_id, data))
    assert len(server.paths) == attempts

    server.paths.clear()
    with pytest.raises(StoreConnectionError):
        ctx.read_index_bytes("gs://bkt/dir/x.caibx")
    assert len(server.paths) == attempts


def test_permission_denied_names_the_bucket(failing_server: Callable[..., CountingServer],
                                            monkeypatch: pytest.MonkeyPatch,
                                            cli: Cli, tmp_path: Path) -> None:
    """A 403 is a permission error naming the bucket, tried once, exit 4 on the CLI."""
    server = failing_server(403)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    store = open_chunk_store("gs://locked/x")
    with pytest.raises(StorePermissionError, match="permission denied by bucket 'locked'"):
        store.get_chunk(sample_chunk(3)[0])
    assert len(server.paths) == 1
    result = cli("info", "gs://locked/dir/x.caibx")
    assert_one_line_error(result, 4, "permission denied by bucket 'locked'")


def test_connection_refused_is_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                        cmd_testdata: Path, tmp_path: Path) -> None:
    """Nothing listening at the endpoint: one line, exit 4, after the retries."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    result = cli("extract", "-e", "2", "-b", "1ms", "-s", "gs://bkt/x",
                 cmd_testdata / "blob1.caibx", tmp_path / "out")
    assert_one_line_error(result, 4, "bucket 'bkt'", "onnection refused")


def test_timeout_option_bounds_requests(failing_server: Callable[..., CountingServer],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's ``timeout`` bounds each request; a timeout is retried."""
    server = failing_server(200, {}, delay=3.0)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    ctx = Context(overrides={"timeout": 0.3, "error_retry": 2,
                             "error_retry_base_interval": 0.001})
    with pytest.raises(StoreConnectionError, match=r"timeout after 0\.3s"):
        ctx.open_reader("gs://bkt").get_chunk(sample_chunk(6)[0])
    assert len(server.paths) == 2


def test_other_statuses_are_store_errors(failing_server: Callable[..., CountingServer],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400 is an error of the store (not retried, not a missing chunk)."""
    server = failing_server(400)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    ctx = Context(overrides={"error_retry": 3, "error_retry_base_interval": 0.001})
    with pytest.raises(StoreError, match="bucket 'bkt'") as info:
        ctx.open_reader("gs://bkt").get_chunk(sample_chunk(4)[0])
    assert not isinstance(info.value, StoreConnectionError | ChunkMissingError)
    assert len(server.paths) == 1


def test_missing_credentials_file(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    """Without an emulator, Application Default Credentials are used: a
    GOOGLE_APPLICATION_CREDENTIALS file that does not exist is one line, exit 4."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    result = cli("info", "gs://bkt/dir/x.caibx")
    assert_one_line_error(result, 4, "no Google credentials for bucket 'bkt'", str(missing))


def test_service_account_credentials_are_used(emulator: Emulator, bucket: Bucket,
                                              failing_server: Callable[..., CountingServer],
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming a service-account key: the store gets an
    OAuth token from the key's token endpoint (once) and then reads and writes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    tokens = failing_server(200, {"access_token": "test-token", "expires_in": 3600,
                                  "token_type": "Bearer"})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = tmp_path / "account.json"
    account.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project", "private_key_id": "k1",
        "private_key": pem, "client_email": "desync@test-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{tokens.url}/token"}))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account))
    # a custom endpoint: authenticated requests, unlike STORAGE_EMULATOR_HOST
    monkeypatch.setenv("API_ENDPOINT_OVERRIDE", emulator.url)
    from desync_core.plugin_api import Chunk

    store = open_chunk_store(bucket.url("sa"))
    chunk_id, data = sample_chunk(5)
    store.store_chunk(Chunk(chunk_id, data))  # type: ignore[attr-defined]
    assert bytes(store.get_chunk(chunk_id).data()) == data
    store.close()
    assert tokens.paths == ["/token"]
    assert b"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in tokens.bodies[0]
