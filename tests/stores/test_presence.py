"""Writers list a ``lookup_by_listing`` store once instead of looking up every chunk."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.chunker import ChunkerParams
from desync_core.digest import get_digest
from desync_core.index import Index
from desync_core.location import parse_location
from desync_core.ops.make import MakeStats, make_index
from desync_core.stores.base import chunk_key
from desync_core.stores.local import LocalChunkStore
from desync_core.stores.presence import ListedPresence, listing_budget, presence_for
from desync_core.stores.retry import RetryingStore

DIGEST = get_digest("sha512-256")
PARAMS = ChunkerParams.from_kib("16:64:256")


class ListingStore(LocalChunkStore):
    """A real directory store that declares the capability and counts its requests."""

    lookup_by_listing = True
    is_local = False  # as a remote store: make uses its I/O threads
    fail_listing = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lookups = 0
        self.listed = 0

    def _exists(self, key: str) -> bool:
        self.lookups += 1
        return super()._exists(key)

    def _list(self) -> Iterator[str]:
        if self.fail_listing:
            raise PermissionError(13, "listing not allowed")
        for key in super()._list():
            self.listed += 1
            yield key


def store_at(path: Path) -> ListingStore:
    path.mkdir(exist_ok=True)
    return ListingStore(parse_location(str(path)))


def put(store: LocalChunkStore, n: int) -> list[bytes]:
    from desync_core.stores.chunk import Chunk

    ids = []
    for k in range(n):
        data = f"chunk {k}".encode()
        chunk_id = DIGEST.sum(data)
        store.store_chunk(Chunk(chunk_id, data))
        ids.append(chunk_id)
    return ids


def test_lookups_come_from_the_listing_once_it_is_complete(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    present = put(store, 5)
    presence = presence_for(RetryingStore(store, 1, 0.0), expected_chunks=10)
    assert isinstance(presence, ListedPresence)
    assert presence.wait(30)
    absent = DIGEST.sum(b"not stored")
    assert all(presence.has_chunk(c) for c in present)
    assert not presence.has_chunk(absent)
    assert store.lookups == 0
    assert store.listed == 5


def test_a_store_bigger_than_the_budget_is_looked_up_chunk_by_chunk(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    present = put(store, 12)
    presence = ListedPresence(store, store, budget=10)
    assert not presence.wait(30)
    assert presence.has_chunk(present[0])
    assert not presence.has_chunk(DIGEST.sum(b"x"))
    assert store.lookups == 2


def test_a_failed_listing_falls_back_to_lookups(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    present = put(store, 3)
    store.fail_listing = True
    presence = presence_for(store, expected_chunks=10)
    assert not presence.wait(30)
    assert presence.has_chunk(present[1])
    assert store.lookups == 1


def test_stores_without_the_capability_are_asked_directly(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    local = LocalChunkStore(parse_location(str(tmp_path / "s")))
    wrapped = RetryingStore(local, 1, 0.0)
    assert presence_for(wrapped, 100) is wrapped


def test_make_through_a_listed_store_stores_exactly_the_missing_chunks(tmp_path: Path) -> None:
    rng = random.Random(7)
    part = rng.randbytes(600_000)
    blob = tmp_path / "blob"
    blob.write_bytes(part + rng.randbytes(900_000) + part)
    store = store_at(tmp_path / "s")

    def make() -> tuple[Index, MakeStats]:
        stats = MakeStats()
        index = make_index(str(blob), PARAMS, DIGEST, store=RetryingStore(store, 1, 0.0),
                           store_is_local=False, stats=stats)
        return index, stats

    index, stats = make()
    unique = {c.id for c in index}
    assert stats.chunks_stored == len(unique) < len(index)
    # A chunk lost between runs is stored again; the others are not.
    lost = sorted(unique)[0]
    (tmp_path / "s" / chunk_key(lost, ".cacnk")).unlink()
    index2, stats2 = make()
    assert [c.id for c in index2] == [c.id for c in index]
    assert stats2.chunks_stored == 1
    assert (tmp_path / "s" / chunk_key(lost, ".cacnk")).exists()
    for c in index:
        assert store.get_chunk(c.id).data() == blob.read_bytes()[c.start:c.start + c.size]


@pytest.mark.parametrize(("expected", "budget"), [(None, 250_000), (1, 10_000), (5000, 100_000),
                                              (10**7, 250_000)])
def test_the_listing_budget_follows_the_expected_chunks(expected: int | None,
                                                        budget: int) -> None:
    assert listing_budget(expected) == budget
