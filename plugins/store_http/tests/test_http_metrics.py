"""``--metrics`` (#20.4): real servers scraped before and after known traffic; every
counter moves by exactly what the test did, also when several workers served it."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from store_http_support import (
    ScriptedServer,
    SeenRequest,
    ServerProcess,
    blob_chunk_ids,
    chunk_path,
    raw_request,
    wait_for,
)

from desync_core.plugin_api import compress
from desync_core.testing import sample_chunk

StartServer = Callable[..., ServerProcess]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``/metrics``, keyed by name and labels."""
    status, body = raw_request(url, "GET", "/metrics", headers=headers)
    assert status == 200, body
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def request_deltas(before: Samples, after: Samples, server: str,
                   keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """How many requests of each ``(method, status)`` in ``keys`` the server counted
    between two scrapes."""
    return {(method, status): delta(before, after, "desync_http_requests_total",
                                    method=method, status=status, server=server)
            for method, status in keys}


@pytest.mark.parametrize("workers", ["1", "3"])
def test_chunk_server_counters(start_server: StartServer, cmd_testdata: Path,
                               tmp_path: Path, workers: str) -> None:
    store = tmp_path / "store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    for directory in [store, *store.iterdir()]:
        directory.chmod(0o755)  # the test data is read-only
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")[:5]
    srv = start_server("chunk-server", "-s", str(store), "-w", "--metrics",
                       "--workers", workers)
    before = scrape(srv.url)
    sent = 0
    for chunk_id in ids:  # each on a new connection: several workers serve them
        status, body = raw_request(srv.url, "GET", chunk_path(chunk_id))
        assert status == 200
        sent += len(body)
    for missing in (bytes(32), b"\x01" * 32):
        status, body = raw_request(srv.url, "GET", chunk_path(missing))
        assert status == 404
        sent += len(body)
    assert raw_request(srv.url, "HEAD", chunk_path(ids[0]))[0] == 200
    assert raw_request(srv.url, "HEAD", chunk_path(bytes(32)))[0] == 404
    new_id, data = sample_chunk(seed=7)
    upload = compress(data)
    status, body = raw_request(srv.url, "PUT", chunk_path(new_id), body=upload)
    assert status == 200
    sent += len(body)
    status, body = raw_request(srv.url, "GET", "/nonsense")
    assert status == 400
    sent += len(body)
    after = scrape(srv.url)

    server = {"server": "chunk"}
    requests = "desync_http_requests_total"
    counted = {("GET", "200"): 5, ("GET", "404"): 2, ("GET", "400"): 1, ("HEAD", "200"): 1,
               ("HEAD", "404"): 1, ("PUT", "200"): 1}
    assert request_deltas(before, after, "chunk", counted) == counted
    assert sum(v for (name, _), v in after.items() if name == requests) \
        - sum(v for (name, _), v in before.items() if name == requests) == 11
    assert delta(before, after, "desync_http_response_body_bytes_total", **server) == sent
    assert delta(before, after, "desync_http_request_body_bytes_total", **server) \
        == len(upload)
    assert delta(before, after, "desync_stored_total", **server) == 1
    # (The last request's handler may still be finishing: in flight until it is.)
    assert wait_for(lambda: value(scrape(srv.url), "desync_http_requests_in_flight",
                                  **server) == 0)
    # Present local chunk files are answered from the file (sendfile): only the misses
    # and the PUT reach the store chain.
    hist = "desync_upstream_request_seconds_count"
    assert delta(before, after, hist, operation="get", **server) == 2
    assert delta(before, after, hist, operation="has", **server) == 1
    assert delta(before, after, hist, operation="store", **server) == 1
    assert (store / chunk_path(new_id).lstrip("/")).read_bytes() == upload
    assert srv.stop() == 0


def test_requests_in_flight(start_server: StartServer, cmd_testdata: Path) -> None:
    """Two GETs held by a slow upstream are in flight (one upstream read: coalesced)."""
    chunk_id = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0]
    stored = (cmd_testdata / "blob1.store" / chunk_path(chunk_id).lstrip("/")).read_bytes()
    release = threading.Event()

    def upstream(request: SeenRequest) -> tuple[int, bytes]:
        release.wait()
        return 200, stored

    results: list[tuple[int, bytes]] = []
    with ScriptedServer(upstream) as slow:
        srv = start_server("chunk-server", "-s", slow.url, "--metrics", "--workers", "1")
        before = scrape(srv.url)
        clients = [threading.Thread(target=lambda: results.append(
            raw_request(srv.url, "GET", chunk_path(chunk_id)))) for _ in range(2)]
        for c in clients:
            c.start()
        try:
            assert wait_for(lambda: value(scrape(srv.url), "desync_http_requests_in_flight",
                                          server="chunk") == 2)
        finally:
            release.set()
            for c in clients:
                c.join()
        assert results == [(200, stored)] * 2
        assert wait_for(lambda: value(scrape(srv.url), "desync_http_requests_in_flight",
                                      server="chunk") == 0)
        after = scrape(srv.url)
        assert len(slow.seen) == 1
    assert delta(before, after, "desync_coalesced_requests_total") == 1
    assert delta(before, after, "desync_upstream_request_seconds_count", server="chunk",
                 operation="get") == 1
    assert srv.stop() == 0


def test_cache_hits_and_misses(start_server: StartServer, cmd_testdata: Path,
                               tmp_path: Path) -> None:
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")[:3]
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "-c", str(tmp_path / "cache"), "--metrics", "--workers", "2")
    before = scrape(srv.url)
    for chunk_id in ids:
        assert raw_request(srv.url, "GET", chunk_path(chunk_id))[0] == 200
    # The cache is shared by the workers: the second round is all hits.
    for chunk_id in ids:
        assert raw_request(srv.url, "GET", chunk_path(chunk_id))[0] == 200
    after = scrape(srv.url)
    assert delta(before, after, "desync_cache_misses_total") == 3
    assert delta(before, after, "desync_cache_hits_total") == 3
    assert delta(before, after, "desync_upstream_request_seconds_count",
                 server="chunk", operation="get") == 6
    assert srv.stop() == 0


def test_index_server_counters(start_server: StartServer, cmd_testdata: Path,
                               tmp_path: Path) -> None:
    index = (cmd_testdata / "blob1.caibx").read_bytes()
    srv = start_server("index-server", "-s", str(tmp_path), "-w", "--metrics",
                       "--workers", "2")
    before = scrape(srv.url)
    assert raw_request(srv.url, "PUT", "/a.caibx", body=index)[0] == 200
    assert raw_request(srv.url, "GET", "/a.caibx") == (200, index)
    status, missing = raw_request(srv.url, "GET", "/b.caibx")
    assert status == 404
    after = scrape(srv.url)
    server = {"server": "index"}
    counted = {("PUT", "200"): 1, ("GET", "200"): 1, ("GET", "404"): 1}
    assert request_deltas(before, after, "index", counted) == counted
    assert delta(before, after, "desync_stored_total", **server) == 1
    assert delta(before, after, "desync_http_response_body_bytes_total", **server) \
        == len(index) + len(missing)
    assert delta(before, after, "desync_http_request_body_bytes_total", **server) \
        == len(index)
    assert delta(before, after, "desync_upstream_request_seconds_count",
                 operation="get", **server) == 2
    assert srv.stop() == 0


def test_metrics_need_authorization(start_server: StartServer, cmd_testdata: Path) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--metrics", "--authorization", "Bearer s3cret")
    assert raw_request(srv.url, "GET", "/metrics")[0] == 401
    samples = scrape(srv.url, {"Authorization": "Bearer s3cret"})
    assert value(samples, "desync_http_requests_total", server="chunk", method="GET",
                 status="401") == 1
    assert srv.stop() == 0


def test_no_metrics_without_the_flag(start_server: StartServer, cmd_testdata: Path) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"))
    assert raw_request(srv.url, "GET", "/metrics")[0] == 400  # not a chunk path
    assert srv.stop() == 0
