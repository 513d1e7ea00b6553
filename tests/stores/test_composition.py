"""Store composition in the core: router, cache, failover, retries, verification.

``faulty://`` is a real local store with fault injection (like borg's failing chunker):
it fails the first N operations with a given error, then behaves normally.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core import hookimpl
from desync_core.config import load_config
from desync_core.context import Context
from desync_core.digest import SHA512_256
from desync_core.errors import (
    ChunkInvalidError,
    ChunkMissingError,
    StoreConnectionError,
    StoreError,
    StoreReadOnlyError,
)
from desync_core.location import StoreLocation
from desync_core.plugins import make_plugin_manager, set_plugin_manager
from desync_core.stores.base import ChunkStore
from desync_core.stores.chunk import Chunk, compress
from desync_core.stores.local import LocalChunkStore, LocalIndexStore
from desync_core.stores.options import StoreOptions
from desync_core.testing import sample_chunk

FAULTS: dict[str, list[BaseException]] = {}
CALLS: dict[str, int] = {}


class FaultyStore(LocalChunkStore):
    """``faulty:///dir?name=x``: pops an exception from FAULTS[x] on each read first."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        url = location.url
        super().__init__(StoreLocation(url.path, ""), options)
        self.location = location
        self.name = dict(p.split("=") for p in url.query.split("&") if p)["name"]

    def _fault(self) -> None:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        queue = FAULTS.get(self.name)
        if queue:
            raise queue.pop(0)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        self._fault()
        return super().get_chunk(chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        self._fault()
        return super().has_chunk(chunk_id)


class ReadOnlyStore(ChunkStore):
    """``ro:///dir``: a read-only store."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.local = LocalChunkStore(StoreLocation(location.url.path, ""), options)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        return self.local.get_chunk(chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.local.has_chunk(chunk_id)


class FaultyIndexStore(LocalIndexStore):
    """``faultyidx://NAME/dir``: a local index store with injected faults (FAULTS[NAME])."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(StoreLocation(location.url.path, ""), options)
        self.name = location.url.hostname

    def get_index(self, name: str) -> bytes:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        if FAULTS.get(self.name):
            raise FAULTS[self.name].pop(0)
        return super().get_index(name)


class TestStores:
    @hookimpl
    def desync_register_chunk_stores(self, registry):  # type: ignore[no-untyped-def]
        registry.add("faulty", FaultyStore, "fault injection")
        registry.add("ro", ReadOnlyStore, "read-only")

    @hookimpl
    def desync_register_index_stores(self, registry):  # type: ignore[no-untyped-def]
        registry.add("faultyidx", FaultyIndexStore, "fault injection")


@pytest.fixture(autouse=True)
def plugin_manager() -> Iterator[None]:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(TestStores(), name="test_stores")
    set_plugin_manager(pm)
    FAULTS.clear()
    CALLS.clear()
    try:
        yield
    finally:
        set_plugin_manager(None)


def put(directory: Path, seed: int, data: bytes | None = None) -> tuple[bytes, bytes]:
    chunk_id, good = sample_chunk(seed)
    h = chunk_id.hex()
    path = directory / h[:4] / f"{h}.cacnk"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(good if data is None else data))
    return chunk_id, good


def ctx_with(tmp_path: Path, options: dict[str, dict[str, object]] | None = None,
             **kw: object) -> Context:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": options or {}}))
    return Context(config=load_config(str(cfg)), **kw)  # type: ignore[arg-type]


def test_router_tries_stores_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    only_b, data_b = put(b, 1)
    both, data_a = put(a, 2)
    put(b, 2, b"other data in b")  # b's copy of 'both' is invalid: a must win
    src = Context().open_source([str(a), str(b)])
    assert bytes(src.get_chunk(only_b).data()) == data_b
    assert bytes(src.get_chunk(both).data()) == data_a
    missing = sample_chunk(99)[0]
    with pytest.raises(ChunkMissingError):
        src.get_chunk(missing)
    assert src.has_chunk(only_b)
    assert not src.has_chunk(missing)


def test_router_stops_on_errors_other_than_missing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cid, _ = put(b, 3)
    put(a, 3, b"corrupt")
    src = Context().open_source([str(a), str(b)])
    with pytest.raises(ChunkInvalidError, match=f"chunk id {cid.hex()} does not match"):
        src.get_chunk(cid)


def test_cache_read_through_and_write_back(tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    cid, data = put(store, 4)
    src = Context().open_source([str(store)], str(cache))
    assert bytes(src.get_chunk(cid).data()) == data
    h = cid.hex()
    cached = cache / h[:4] / f"{h}.cacnk"
    assert cached.read_bytes() == (store / h[:4] / f"{h}.cacnk").read_bytes()
    # Now served from the cache even when the store loses it, and its mtime is refreshed.
    (store / h[:4] / f"{h}.cacnk").unlink()
    os.utime(cached, (1_000_000, 1_000_000))
    assert bytes(src.get_chunk(cid).data()) == data
    assert cached.stat().st_mtime > time.time() - 3600


def test_cache_repair(tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    cid, data = put(store, 5)
    put(cache, 5, b"bad cache content")
    with pytest.raises(ChunkInvalidError):
        Context(cache_repair=False).open_source([str(store)], str(cache)).get_chunk(cid)
    src = Context().open_source([str(store)], str(cache))  # --cache-repair is the default
    assert bytes(src.get_chunk(cid).data()) == data
    h = cid.hex()
    assert (cache / h[:4] / f"{h}.cacnk").read_bytes() == compress(data)


def test_cache_must_be_writable(tmp_path: Path) -> None:
    with pytest.raises(StoreReadOnlyError, match="does not support writing"):
        Context().open_source([str(tmp_path)], f"ro://{tmp_path}/cache")


def test_cache_in_its_own_format(tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    cid, data = put(store, 6)
    ctx = ctx_with(tmp_path, {str(cache): {"uncompressed": True}})
    ctx.open_source([str(store)], str(cache)).get_chunk(cid)
    h = cid.hex()
    assert (cache / h[:4] / h).read_bytes() == data


def test_failover_switches_on_error_not_on_missing(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    cid, data = put(first, 7)
    put(second, 7)
    FAULTS["first"] = [StoreError("first is down")]
    group = Context().open_reader(f"faulty://{first}?name=first|faulty://{second}?name=second")
    assert bytes(group.get_chunk(cid).data()) == data  # failed over to second
    assert CALLS == {"first": 1, "second": 1}
    missing = sample_chunk(98)[0]
    with pytest.raises(ChunkMissingError):
        group.get_chunk(missing)  # asked the active member (second) only: no failover
    assert CALLS == {"first": 1, "second": 2}


def test_failover_all_members_failing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cid, _ = put(a, 8)
    FAULTS["a"] = [StoreError("a down")]
    FAULTS["b"] = [StoreError("b down")]
    group = Context().open_reader(f"faulty://{a}?name=a|faulty://{b}?name=b")
    with pytest.raises(StoreError, match="b down"):
        group.get_chunk(cid)


def test_retries_transient_errors_only(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cid, data = put(d, 9)
    loc = f"faulty://{d}?name=r"
    ctx = ctx_with(tmp_path, {loc: {"error-retry": 3, "error-retry-base-interval": 1_000_000}})
    FAULTS["r"] = [StoreConnectionError("flaky"), StoreConnectionError("flaky")]
    assert bytes(ctx.open_reader(loc).get_chunk(cid).data()) == data
    assert CALLS["r"] == 3
    FAULTS["r"] = [StoreConnectionError("x")] * 3
    CALLS.clear()
    with pytest.raises(StoreConnectionError):
        ctx.open_reader(loc).get_chunk(cid)
    assert CALLS["r"] == 3  # error-retry is the total number of attempts
    FAULTS["r"] = [StoreError("permanent")]
    CALLS.clear()
    with pytest.raises(StoreError, match="permanent"):
        ctx.open_reader(loc).get_chunk(cid)
    assert CALLS["r"] == 1  # not retried


def test_retry_waits_linearly(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cid, _ = put(d, 10)
    loc = f"faulty://{d}?name=w"
    ctx = ctx_with(tmp_path, {loc: {"error-retry": 3, "error-retry-base-interval": 50_000_000}})
    FAULTS["w"] = [StoreConnectionError("x"), StoreConnectionError("x")]
    started = time.monotonic()
    ctx.open_reader(loc).get_chunk(cid)
    assert time.monotonic() - started >= 0.15  # waited 1 x 50 ms + 2 x 50 ms


def test_skip_verify(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cid, _ = put(d, 11, b"not the real content")
    with pytest.raises(ChunkInvalidError):
        Context().open_reader(str(d)).get_chunk(cid)
    ctx = ctx_with(tmp_path, {str(d): {"skip-verify": True}})
    assert bytes(ctx.open_reader(str(d)).get_chunk(cid).data()) == b"not the real content"


def test_truncated_and_bitflipped_chunks_are_invalid(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cid, _ = put(d, 12)
    h = cid.hex()
    path = d / h[:4] / f"{h}.cacnk"
    raw = bytearray(path.read_bytes())
    reader = Context().open_reader(str(d))
    path.write_bytes(raw[:-5])
    with pytest.raises(ChunkInvalidError, match=h):
        reader.get_chunk(cid)
    raw[-3] ^= 0x40
    path.write_bytes(raw)
    with pytest.raises(ChunkInvalidError, match=h):
        reader.get_chunk(cid)


def test_writable_checks(tmp_path: Path) -> None:
    with pytest.raises(StoreReadOnlyError, match=r"store 'ro://.*' does not support writing"):
        Context().open_writable(f"ro://{tmp_path}")
    w = Context().open_writable(str(tmp_path / "new-store"))
    cid, data = sample_chunk(13)
    w.store_chunk(Chunk(cid, data))
    assert Context().open_reader(str(tmp_path / "new-store"), SHA512_256).has_chunk(cid)


def test_index_reads_are_retried(tmp_path: Path, cmd_testdata: Path) -> None:
    (tmp_path / "x.caibx").write_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    base = f"faultyidx://i{tmp_path}"
    ctx = ctx_with(tmp_path, {base: {"error-retry-base-interval": 1_000_000}})
    FAULTS["i"] = [StoreConnectionError("flaky"), StoreConnectionError("flaky")]
    index = ctx.read_index(f"{base}/x.caibx")
    assert len(index) == 161
    assert CALLS["i"] == 3
