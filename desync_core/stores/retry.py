"""Retrying transient store errors with desync's rule (``remote.md`` §1)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from desync_core.errors import (
    StoreConnectionError,
    StoreReadOnlyError,
)
from desync_core.stores.chunk import Chunk
from desync_core.stores.reader import StoreWrapper

T = TypeVar("T")


def call_with_retries(fn: Callable[..., T], *args: Any, attempts: int,
                      base_interval: float) -> T:
    """Call ``fn(*args)``, retrying transient errors (:class:`StoreConnectionError`).

    ``attempts`` is the total number of tries (0 or 1: one try); after failed attempt
    *k* it waits ``k * base_interval`` seconds (desync's rule, ``remote.md`` §1).
    """
    attempt = 1
    while True:
        try:
            return fn(*args)
        except StoreConnectionError:
            if attempt >= max(1, attempts):
                raise
            time.sleep(attempt * base_interval)
            attempt += 1


class RetryingStore(StoreWrapper):
    """Retries transient errors of a store with :func:`call_with_retries`."""

    def __init__(self, inner: Any, attempts: int, base_interval: float) -> None:
        self.inner = inner
        self.attempts = max(1, attempts)
        self.base_interval = base_interval

    def _retry(self, fn: Callable[..., T], *args: Any) -> T:
        return call_with_retries(fn, *args, attempts=self.attempts,
                                 base_interval=self.base_interval)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self._retry(self.inner.get_chunk, chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._retry(self.inner.has_chunk, chunk_id)

    def store_chunk(self, chunk: Chunk) -> None:
        if not hasattr(self.inner, "store_chunk"):
            raise StoreReadOnlyError(f"store '{self.inner}' does not support writing")
        self._retry(self.inner.store_chunk, chunk)


