"""Planning rules (``extract.md`` §3) on synthetic indexes, and write-time verification
of seeds that change after validation (§1.2)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from extract_util import make_blob, rand

from desync_core.digest import SHA512_256
from desync_core.errors import SeedInvalidError
from desync_core.index import Index, blob_index_flags
from desync_core.ops.extract import extract
from desync_core.seeds.base import COPY_RUN_CAP, Seed
from desync_core.seeds.file import FileSeed
from desync_core.seeds.indexed import IndexedSeed
from desync_core.seeds.null import NullSeed, null_mask
from desync_core.seeds.planner import make_plan
from desync_core.seeds.selfseed import earlier_copies

MAX = 64


def cid(name: str) -> bytes:
    """A fake chunk id."""
    return hashlib.sha256(name.encode()).digest()


def index_of(names: list[str], sizes: list[int] | None = None) -> Index:
    """An index whose chunks are named (``"0"`` is the null chunk of max 64)."""
    sizes = sizes or [MAX if n == "0" else 10 for n in names]
    ids = [SHA512_256.null_chunk_id(MAX) if n == "0" else cid(n) for n in names]
    return Index(blob_index_flags(SHA512_256), 16, 32, MAX, np.cumsum(sizes), b"".join(ids))


class MemorySeed(IndexedSeed):
    """An indexed seed without data (planning only)."""

    kind = "memory"

    def read_into(self, view: memoryview, offset: int) -> bool:
        return False

    def write_segment(self, segment, target):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def plan(target: Index, *seeds: Seed) -> list[tuple[str, int, int, int]]:
    """(seed name, first, count, seed_first) of each planned segment."""
    segs = make_plan(target, [NullSeed(), *seeds], null_mask(target)).segments
    return [(s.seed.name, s.first, s.count, s.seed_first) for s in segs]


def test_longest_match_by_bytes_wins_and_ties_go_to_the_earlier_seed() -> None:
    target = index_of(list("abcdefg"))
    one = MemorySeed(index_of(list("abcx")), "one")  # a b c
    two = MemorySeed(index_of(list("xbcdef")), "two")  # b c d e f
    three = MemorySeed(index_of(list("bcdef")), "three")  # ties with two
    assert plan(target, one, two, three) == [("one", 0, 3, 0), ("two", 3, 3, 3)]
    assert plan(target, three, two) == [("three", 1, 5, 0)]
    assert plan(target, two, three) == [("two", 1, 5, 1)]


def test_bytes_not_chunk_counts_decide() -> None:
    target = index_of(list("abcd"), [10, 10, 10, 100])
    many_small = MemorySeed(index_of(list("abc"), [10, 10, 10]), "small")
    one_big = MemorySeed(index_of(list("d"), [100]), "big")
    assert plan(target, many_small, one_big) == [("small", 0, 3, 0), ("big", 3, 1, 0)]
    # At position 0 only "small" matches; the big chunk is still taken from "big".
    target = index_of(list("ad"), [10, 100])
    both = MemorySeed(index_of(list("ad"), [10, 100]), "both")
    assert plan(target, many_small, both) == [("both", 0, 2, 0)]


def test_first_occurrence_wins_within_a_seed_and_sizes_must_agree() -> None:
    target = index_of(list("abc"))
    seed = MemorySeed(index_of(list("abxabc")), "s")
    assert plan(target, seed) == [("s", 0, 3, 3)]  # the longer run at position 3
    liar = MemorySeed(index_of(list("abc"), [10, 11, 10]), "liar")  # wrong size for b
    assert plan(target, liar) == [("liar", 0, 1, 0), ("liar", 2, 1, 2)]


def test_runs_are_capped_without_reflinks_and_nulls_go_to_the_null_seed() -> None:
    names = [f"c{i}" for i in range(250)]
    target = index_of(names)
    seed = MemorySeed(index_of(names), "s")
    counts = [c for _n, _f, c, _p in plan(target, seed)]
    assert counts == [COPY_RUN_CAP, COPY_RUN_CAP, 50]
    target = index_of(["a", "0", "0", "b", "0"])
    seed = MemorySeed(index_of(["a", "0", "0", "b", "0"]), "s")
    assert plan(target, seed) == [("s", 0, 1, 0), ("null chunks", 1, 2, -1),
                                  ("s", 3, 1, 3), ("null chunks", 4, 1, -1)]


def test_invalid_seeds_are_left_out() -> None:
    target = index_of(list("ab"))
    seed = MemorySeed(index_of(list("ab")), "s")
    seed.valid = False
    assert plan(target, seed) == []


def test_earlier_copies() -> None:
    index = index_of(list("abacbba"))
    assert earlier_copies(index).tolist() == [-1, -1, 0, -1, 1, 1, 0]


def test_seed_changed_after_validation_is_caught_while_writing(tmp_path: Path) -> None:
    """A seed file modified between validation and copying: the chunks it now gets wrong
    fail the run (default) or are fetched from the store (regenerate mode)."""
    from desync_core.context import Context

    data = rand(50, 200_000)
    store = tmp_path / "store"
    _, seed_index_path, seed_index = make_blob(tmp_path, "seed", data, store)
    target = seed_index
    ctx = Context()
    source = ctx.open_source([str(store)], None, target.digest)

    class ChangingSeed(FileSeed):
        """Modifies its own file right after validation succeeded."""

        def verify_segments(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            ok = super().verify_segments(*args, **kwargs)
            with open(self.data, "r+b") as f:
                f.seek(50_000)
                f.write(b"changed!")
            return ok

    for mode in ("fail", "regenerate"):
        with open(tmp_path / "seed", "wb") as f:
            f.write(data)
        seed = ChangingSeed(seed_index, str(seed_index_path), str(tmp_path / "seed"))
        out = tmp_path / f"out-{mode}"
        try:
            if mode == "fail":
                # In place, seeds are validated before anything is written.
                with pytest.raises(SeedInvalidError, match="seed may have changed"):
                    extract(target, str(out), source, seeds=[seed], invalid_seeds=mode,
                            in_place=True)
                out.unlink()
            else:
                stats = extract(target, str(out), source, seeds=[seed], invalid_seeds=mode,
                                workers=2)
                assert out.read_bytes() == data
                assert stats.chunks_from_store >= 1
                assert stats.chunks_from_seeds == len(target) - stats.chunks_from_store
        finally:
            seed.close()
    source.close()
    assert sorted(os.listdir(tmp_path)) == ["out-regenerate", "seed", "seed.caibx", "store"]


def test_long_segments_are_executed_in_pieces() -> None:
    from desync_core.ops.extract import split_segment
    from desync_core.seeds.base import SeedSegment

    target = index_of([f"c{i}" for i in range(10)])  # 10 chunks of 10 bytes
    seed = MemorySeed(target, "s")
    seg = SeedSegment(seed, 2, 7, 20, 90, 5)
    pieces = [(p.first, p.count, p.start, p.end, p.seed_first)
              for p in split_segment(seg, target.ends, 25)]
    assert pieces == [(2, 2, 20, 40, 5), (4, 2, 40, 60, 7), (6, 2, 60, 80, 9), (8, 1, 80, 90, 11)]
    assert [p.count for p in split_segment(seg, target.ends, 5)] == [1] * 7
    assert list(split_segment(seg, target.ends, 70)) == [seg]
