"""The CLI on a real registry: make, extract, prune, verify, missing chunks, foreign
artifacts, index locations refused, an unreachable registry, paged tag lists."""

from __future__ import annotations

import http.server
import json
import random
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from oci_support import CERTS, RawRegistry, RegistryServer

from desync_core.plugin_api import (
    SHA512_256,
    Chunk,
    ChunkMissingError,
    Context,
    StoreConnectionError,
    StoreError,
)
from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_store_oci import store as store_module
from desync_store_oci.store import ARTIFACT_TYPE, OCIChunkStore, chunk_manifest

Cli = Callable[..., CliResult]


def _blob(path: Path, seed: int, size: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def _open(location: str) -> OCIChunkStore:
    store = Context().open_chunk_store(location)
    assert isinstance(store, OCIChunkStore)
    return store


def test_make_extract_prune_verify(tmp_path: Path, registry: RegistryServer,
                                   repository: Callable[[], str], ok: Cli, cli: Cli,
                                   no_credentials: pytest.MonkeyPatch) -> None:
    """make -s into the registry, extract from it, prune to one index, verify."""
    repo = repository()
    loc = registry.location(repo)
    a = _blob(tmp_path / "a.bin", 1, 1_500_000)
    b = _blob(tmp_path / "b.bin", 2, 700_000)
    ok("make", "-s", loc, "-n", "8", tmp_path / "a.caibx", tmp_path / "a.bin")
    ok("make", "-s", loc, "-n", "8", tmp_path / "b.caibx", tmp_path / "b.bin")
    ok("extract", "-s", loc, "-n", "8", tmp_path / "a.caibx", tmp_path / "a.out")
    assert (tmp_path / "a.out").read_bytes() == a
    ok("extract", "-s", loc, tmp_path / "b.caibx", tmp_path / "b.out")
    assert (tmp_path / "b.out").read_bytes() == b

    ids_a = set(ok("list-chunks", tmp_path / "a.caibx").text.split())
    ids_b = set(ok("list-chunks", tmp_path / "b.caibx").text.split())
    raw = RawRegistry(registry.http_url, repo)
    # Every chunk is one artifact, tagged <id>.cacnk, in desync's exact manifest form.
    assert set(raw.tags()) == {f"{i}.cacnk" for i in ids_a | ids_b}
    some = sorted(ids_a)[0]
    manifest = raw.manifest(f"{some}.cacnk")
    assert manifest is not None
    assert manifest["artifactType"] == ARTIFACT_TYPE
    layer = manifest["layers"][0]
    assert json.dumps(manifest, separators=(",", ":")).encode() == chunk_manifest(
        f"{some}.cacnk", layer["digest"], layer["size"])

    ok("verify", "-s", loc)
    ok("prune", "-s", loc, "--yes", tmp_path / "a.caibx")
    assert set(raw.tags()) == {f"{i}.cacnk" for i in ids_a}
    ok("extract", "-s", loc, tmp_path / "a.caibx", tmp_path / "a2.out")
    assert (tmp_path / "a2.out").read_bytes() == a
    result = cli("extract", "-s", loc, tmp_path / "b.caibx", tmp_path / "b2.out")
    assert_one_line_error(result, 4, "missing from store", loc)
    assert not (tmp_path / "b2.out").exists()


def test_missing_chunks(tmp_path: Path, registry: RegistryServer,
                        repository: Callable[[], str], ok: Cli, cli: Cli,
                        no_credentials: pytest.MonkeyPatch) -> None:
    """Chunks never stored: extract fails with one line naming chunk and store; has is
    false; remove says missing."""
    loc = registry.location(repository())
    _blob(tmp_path / "x.bin", 3, 300_000)
    ok("make", tmp_path / "x.caibx", tmp_path / "x.bin")
    result = cli("extract", "-s", loc, tmp_path / "x.caibx", tmp_path / "x.out")
    line = assert_one_line_error(result, 4, "missing from store", loc)
    ids = ok("list-chunks", tmp_path / "x.caibx").text.split()
    assert any(f"chunk {i} missing" in line for i in ids), line
    first = ids[0]
    store = _open(loc)
    assert store.has_chunk(bytes.fromhex(first)) is False
    with pytest.raises(ChunkMissingError):
        store.remove_chunk(bytes.fromhex(first))


def test_foreign_artifact_under_a_chunk_tag(registry: RegistryServer,
                                            repository: Callable[[], str],
                                            no_credentials: pytest.MonkeyPatch) -> None:
    """A manifest without desync's artifact type is not a chunk: missing, never
    listed as deleted, left alone by prune."""
    repo = repository()
    store = _open(registry.location(repo))
    data = b"not a desync chunk" * 100
    chunk_id = SHA512_256.sum(data)
    raw = RawRegistry(registry.http_url, repo)
    raw.put(store.tag(chunk_id), data, artifact_type="application/vnd.example.other")
    assert store.has_chunk(chunk_id) is False
    with pytest.raises(ChunkMissingError):
        store.get_chunk(chunk_id)
    assert store.prune(set()) == 0
    assert raw.manifest(store.tag(chunk_id)) is not None


def test_manifest_whose_blob_is_gone_is_missing(registry: RegistryServer,
                                                repository: Callable[[], str],
                                                no_credentials: pytest.MonkeyPatch) -> None:
    """A chunk manifest referencing a deleted blob reads as a missing chunk."""
    repo = repository()
    store = _open(registry.location(repo))
    data = b"chunk data " * 500
    chunk_id = SHA512_256.sum(data)
    store.store_chunk(Chunk(chunk_id, data))
    raw = RawRegistry(registry.http_url, repo)
    manifest = raw.manifest(store.tag(chunk_id))
    assert manifest is not None
    resp = requests.delete(f"{raw.base}blobs/{manifest['layers'][0]['digest']}", timeout=30)
    assert resp.status_code == 202, resp.text
    with pytest.raises(ChunkMissingError):
        store.get_chunk(chunk_id)


def test_index_locations_are_refused(tmp_path: Path, registry: RegistryServer, cli: Cli,
                                     no_credentials: pytest.MonkeyPatch) -> None:
    """Index files cannot live in a registry: desync's words, usage error."""
    loc = registry.location("test/idx")
    _blob(tmp_path / "x.bin", 4, 10_000)
    for args in (("extract", "-s", loc, f"{loc}/x.caibx", tmp_path / "out"),
                 ("make", f"{loc}/x.caibx", tmp_path / "x.bin")):
        result = cli(*args)
        assert_one_line_error(result, 2, "Index storage is not supported by oci registry "
                                         "stores")


def test_invalid_repository_name(tmp_path: Path, registry: RegistryServer, ok: Cli,
                                 cli: Cli) -> None:
    """Upper-case repository names are invalid in the distribution spec."""
    _blob(tmp_path / "x.bin", 5, 10_000)
    ok("make", tmp_path / "x.caibx", tmp_path / "x.bin")
    result = cli("extract", "-s", f"oci+http://127.0.0.1:{registry.port}/Bad/Name",
                 tmp_path / "x.caibx", tmp_path / "out")
    assert_one_line_error(result, 2, "invalid repository name 'Bad/Name'")


def test_unreachable_registry_is_retried_then_reported(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ok: Cli, cli: Cli,
        no_credentials: pytest.MonkeyPatch) -> None:
    """A registry that went away: connection errors are retried (-e) and then reported
    on one line naming the store; no partial output."""
    server = RegistryServer(tmp_path_factory.mktemp("registry-gone"))
    loc = server.location("test/gone")
    _blob(tmp_path / "x.bin", 6, 200_000)
    ok("make", "-s", loc, tmp_path / "x.caibx", tmp_path / "x.bin")
    server.stop()
    result = cli("extract", "-s", loc, "-e", "2", "-b", "10ms", tmp_path / "x.caibx",
                 tmp_path / "x.out")
    assert_one_line_error(result, 4, loc, "Connection refused")
    assert not (tmp_path / "x.out").exists()


class _PagingProxy:
    """A reverse proxy in front of the registry that pages tag lists as newer
    registries do (``n``/``last`` and a ``Link: <…>; rel="next"`` header), and answers
    the next manifest requests with the statuses queued in :attr:`faults` (a busy or
    failing registry); every other request is passed through unchanged."""

    def __init__(self, upstream: str) -> None:
        self.pages = 0
        self.faults: list[int] = []
        self.faulted = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.faults and "/manifests/" in self.path:
                    proxy.faulted += 1
                    status = proxy.faults.pop(0)
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                parts = urllib.parse.urlsplit(self.path)
                resp = requests.request(self.command, upstream + self.path, data=body,
                                        headers=headers, allow_redirects=False, timeout=30)
                content, extra = resp.content, {}
                if parts.path.endswith("/tags/list") and resp.status_code == 200:
                    content, extra = proxy.page(parts, resp.json())
                self.send_response(resp.status_code)
                for key, value in resp.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _relay  # noqa: N815

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def page(self, parts: urllib.parse.SplitResult,
             doc: dict[str, object]) -> tuple[bytes, dict[str, str]]:
        query = urllib.parse.parse_qs(parts.query)
        size = int(query.get("n", ["100"])[0])
        last = query.get("last", [""])[0]
        tags = sorted(t for t in (doc.get("tags") or []) if isinstance(t, str))  # type: ignore[union-attr]
        rest = [t for t in tags if t > last]
        page, more = rest[:size], len(rest) > size
        self.pages += 1
        extra = {}
        if more:
            nxt = urllib.parse.urlencode({"n": size, "last": page[-1]})
            extra["Link"] = f'<{parts.path}?{nxt}>; rel="next"'
        return json.dumps({"name": doc.get("name"), "tags": page}).encode(), extra

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def paging_proxy(registry: RegistryServer) -> Iterator[_PagingProxy]:
    proxy = _PagingProxy(registry.http_url)
    yield proxy
    proxy.stop()


def test_tag_listing_follows_link_pages(paging_proxy: _PagingProxy,
                                        repository: Callable[[], str],
                                        monkeypatch: pytest.MonkeyPatch,
                                        no_credentials: pytest.MonkeyPatch) -> None:
    """Listing and pruning walk every page of a paged tag list."""
    monkeypatch.setattr(store_module, "TAG_PAGE_SIZE", 2)
    store = _open(f"oci+http://127.0.0.1:{paging_proxy.port}/{repository()}")
    ids = []
    for seed in range(7):
        data = random.Random(seed).randbytes(3000)
        ids.append(SHA512_256.sum(data))
        store.store_chunk(Chunk(ids[-1], data))
    assert sorted(store.iter_chunk_ids()) == sorted(ids)
    assert paging_proxy.pages == 4
    assert store.prune(set(ids[:3])) == 4
    assert sorted(store.iter_chunk_ids()) == sorted(ids[:3])


def test_transient_statuses_are_retried(tmp_path: Path, paging_proxy: _PagingProxy,
                                        repository: Callable[[], str], ok: Cli, cli: Cli,
                                        no_credentials: pytest.MonkeyPatch) -> None:
    """503, 429 and 408 are retried with -e/-b; when the attempts run out the status
    is reported on one line; 400 is never retried."""
    loc = f"oci+http://127.0.0.1:{paging_proxy.port}/{repository()}"
    data = _blob(tmp_path / "x.bin", 9, 100_000)
    ok("make", "-s", loc, tmp_path / "x.caibx", tmp_path / "x.bin")
    paging_proxy.faults = [503, 429, 408]
    ok("extract", "-s", loc, "-n", "1", "-e", "4", "-b", "10ms", tmp_path / "x.caibx",
       tmp_path / "x.out")
    assert (tmp_path / "x.out").read_bytes() == data
    assert paging_proxy.faulted == 3

    # Exactly -e attempts in all: the third 503 is never asked for.
    paging_proxy.faults = [503, 503, 503]
    ctx = Context(overrides={"error_retry": 2, "error_retry_base_interval": 0.01})
    reader = ctx.open_reader(loc)
    chunk_id = bytes.fromhex(ok("list-chunks", tmp_path / "x.caibx").text.split()[0])
    with pytest.raises(StoreConnectionError, match="503 Service Unavailable"):
        reader.get_chunk(chunk_id)
    assert paging_proxy.faults == [503]

    paging_proxy.faults = [503] * 20
    result = cli("extract", "-s", loc, "-n", "1", "-e", "2", "-b", "10ms",
                 tmp_path / "x.caibx", tmp_path / "y.out")
    assert_one_line_error(result, 4, loc, "503 Service Unavailable")
    paging_proxy.faults = []

    paging_proxy.faults = [400, 400]
    with pytest.raises(StoreError, match="400 Bad Request") as caught:
        reader.get_chunk(chunk_id)
    assert not isinstance(caught.value, StoreConnectionError)
    assert paging_proxy.faults == [400]
    paging_proxy.faults = [400] * 20
    result = cli("extract", "-s", loc, "-n", "1", "-e", "3", "-b", "10ms",
                 tmp_path / "x.caibx", tmp_path / "y.out")
    assert_one_line_error(result, 4, loc, "400 Bad Request")
    paging_proxy.faults = []


def test_https_registry(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                        repository: Callable[[], str], ok: Cli, cli: Cli,
                        no_credentials: pytest.MonkeyPatch) -> None:
    """oci+https:// with --ca-cert (or -t); an untrusted certificate is one line, not
    retried."""
    server = RegistryServer(tmp_path_factory.mktemp("registry-tls"), tls=True)
    try:
        loc = server.location(repository())
        assert loc.startswith("oci+https://")
        data = _blob(tmp_path / "x.bin", 10, 200_000)
        ca = str(CERTS / "ca.crt")
        ok("make", "-s", loc, "--ca-cert", ca, tmp_path / "x.caibx", tmp_path / "x.bin")
        ok("extract", "-s", loc, "--ca-cert", ca, tmp_path / "x.caibx", tmp_path / "a.out")
        assert (tmp_path / "a.out").read_bytes() == data
        ok("extract", "-s", loc, "-t", tmp_path / "x.caibx", tmp_path / "b.out")
        assert (tmp_path / "b.out").read_bytes() == data
        result = cli("extract", "-s", loc, tmp_path / "x.caibx", tmp_path / "c.out")
        assert_one_line_error(result, 4, loc, "TLS error", "certificate verify failed")
    finally:
        server.stop()


def test_verify_repair_removes_invalid_chunks(tmp_path: Path, registry: RegistryServer,
                                              repository: Callable[[], str], ok: Cli,
                                              cli: Cli, no_credentials: pytest.MonkeyPatch
                                              ) -> None:
    """verify reports a chunk whose blob is another chunk's data; -r deletes its
    manifest and leaves the valid chunks."""
    repo = repository()
    loc = registry.location(repo)
    _blob(tmp_path / "x.bin", 11, 300_000)
    ok("make", "-s", loc, tmp_path / "x.caibx", tmp_path / "x.bin")
    ids = ok("list-chunks", tmp_path / "x.caibx").text.split()
    bad = SHA512_256.sum(b"the chunk the data claims to be").hex()
    raw = RawRegistry(registry.http_url, repo)
    raw.put(f"{bad}.cacnk", raw.get(f"{ids[0]}.cacnk") or b"")
    result = cli("verify", "-s", loc)
    assert result.code == 5, result.err
    assert bad in result.err
    assert "1 invalid chunk in store" in result.err
    ok("verify", "-s", loc, "-r")
    assert sorted(raw.tags()) == sorted(f"{i}.cacnk" for i in ids)
    ok("verify", "-s", loc)
