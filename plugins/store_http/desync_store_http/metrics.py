"""Prometheus metrics of ``chunk-server --metrics`` and ``index-server --metrics`` (#20.4).

``GET /metrics`` on every listener (behind ``--authorization`` like every other path)
returns the text exposition format of prometheus-client. With several worker processes
(``--workers``) the metrics use prometheus-client's multiprocess mode: each process
writes its values to memory-mapped files in a private directory and a scrape, whichever
worker answers it, adds up every process's files. Counters of a worker that died stay
counted; its in-flight gauge is dropped (``mark_process_dead``).

Scrapes of ``/metrics`` are not counted in ``desync_http_requests_total``, so a test (or
a dashboard) sees exactly the traffic of the clients.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Methods counted under their own label; anything else is ``other`` (bounded labels).
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})
#: Upstream latency buckets (seconds): local files take microseconds, remote stores
#: milliseconds to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The metrics of one server (all its worker processes).

    Args:
        server: ``chunk`` or ``index`` (the ``server`` label of every metric).
        multiprocess: keep values in a private directory shared by forked workers
            (:meth:`process_dead`, :meth:`cleanup`). Without it the values live in this
            process only (one process, in-process servers in tests).
    """

    def __init__(self, server: str, *, multiprocess: bool = False) -> None:
        self.server = server
        self.directory: str | None = None
        if multiprocess:
            self.directory = tempfile.mkdtemp(prefix="desync-metrics-")
            # prometheus-client picks its value storage from this variable; set it
            # before the first metric exists (the module may be imported already).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
            from prometheus_client import values

            values.ValueClass = values.MultiProcessValue()
        else:
            from prometheus_client import values

            values.ValueClass = values.MutexValue
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("desync_http_requests", "HTTP requests answered, by method "
                                "and status", ["server", "method", "status"], registry=reg)
        self.bytes_sent = Counter("desync_http_response_body_bytes", "Response body bytes "
                                  "sent (chunks and indexes served)", ["server"], registry=reg)
        self.bytes_received = Counter("desync_http_request_body_bytes", "Request body bytes "
                                      "received (uploads)", ["server"], registry=reg)
        self.in_flight = Gauge("desync_http_requests_in_flight", "Requests being handled",
                               ["server"], registry=reg, multiprocess_mode="livesum")
        self.stored = Counter("desync_stored", "Chunks (chunk-server) or indexes "
                              "(index-server) stored by PUT", ["server"], registry=reg)
        self.cache_hits = Counter("desync_cache_hits", "Chunks read from the -c cache",
                                  registry=reg)
        self.cache_misses = Counter("desync_cache_misses", "Chunks not in the -c cache, "
                                    "fetched from the upstream stores", registry=reg)
        self.coalesced = Counter("desync_coalesced_requests", "GETs that waited for the "
                                 "upstream read of a concurrent GET of the same chunk "
                                 "(same worker process) instead of making their own",
                                 registry=reg)
        self.upstream = Histogram("desync_upstream_request_seconds", "Latency of requests "
                                  "to the upstream store chain, by operation",
                                  ["server", "operation"], buckets=LATENCY_BUCKETS,
                                  registry=reg)
        # Create the unlabelled-by-request series up front so that they are exported as 0.
        self.bytes_sent.labels(server)
        self.bytes_received.labels(server)
        self.in_flight.labels(server)
        self.stored.labels(server)

    def count_request(self, method: str, status: int) -> None:
        """Count one answered request."""
        label = method if method in KNOWN_METHODS else "other"
        self.requests.labels(self.server, label, str(status)).inc()

    def sent(self, nbytes: int) -> None:
        """Count response body bytes."""
        if nbytes:
            self.bytes_sent.labels(self.server).inc(nbytes)

    def received(self, nbytes: int) -> None:
        """Count request body bytes."""
        if nbytes:
            self.bytes_received.labels(self.server).inc(nbytes)

    def stored_one(self) -> None:
        """Count one chunk or index stored."""
        self.stored.labels(self.server).inc()

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Count a request as in flight while the block runs."""
        gauge = self.in_flight.labels(self.server)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        """Observe the block's duration as an upstream ``operation``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.upstream.labels(self.server, operation).observe(time.perf_counter() - start)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a ``/metrics`` reply (every worker's values)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def process_dead(self, pid: int) -> None:
        """Drop the live gauges of a worker process that exited."""
        if self.directory is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, self.directory)

    def cleanup(self) -> None:
        """Remove the multiprocess directory (the server is stopping)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


class CountingCache:
    """Wraps the cache of a core ``CacheStore`` to count hits and misses.

    A ``get_chunk`` that returns is a hit; one that raises ``ChunkMissingError`` or
    ``ChunkInvalidError`` (the chunk is then fetched upstream) a miss. Everything else
    passes through.
    """

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def get_chunk(self, chunk_id: bytes) -> Any:
        """Read from the cache, counting a hit or a miss."""
        from desync_core.plugin_api import ChunkInvalidError, ChunkMissingError

        try:
            chunk = self.inner.get_chunk(chunk_id)
        except (ChunkMissingError, ChunkInvalidError):
            self.metrics.cache_misses.inc()
            raise
        self.metrics.cache_hits.inc()
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __str__(self) -> str:
        return str(self.inner)


def count_cache(source: Any, metrics: Metrics) -> None:
    """Count the hits and misses of ``source``'s cache, if it is a core ``CacheStore``
    (found by its ``cache`` and ``router`` attributes, through wrappers)."""
    for _ in range(8):
        if hasattr(source, "cache") and hasattr(source, "router"):
            if not isinstance(source.cache, CountingCache):
                source.cache = CountingCache(source.cache, metrics)
            return
        source = getattr(source, "inner", None)
        if source is None:
            return


__all__ = ["KNOWN_METHODS", "LATENCY_BUCKETS", "CountingCache", "Metrics", "count_cache"]
