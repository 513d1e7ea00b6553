"""Where extracted data comes from: file seeds, the null seed (holes), the self-seed.

Stores are made to lack exactly what a seed should provide, so a correct result proves
the data came from the seed and not from the store.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from extract_util import (
    MAX,
    assert_error,
    chunk_path,
    hole_bytes,
    holes,
    make_blob,
    null_id,
    rand,
    remove_chunks,
    temp_leftovers,
)

from desync_core.index import Index


@pytest.fixture
def versions(tmp_path: Path) -> dict[str, object]:
    """v1 and v2 of an "image": v2 changes a region in the middle and appends data.

    ``store`` has every chunk of v2 except the ones v1 also has.
    """
    a, b, c = rand(1, 300_000), rand(2, 200_000), rand(3, 300_000)
    full = tmp_path / "full"
    _, v1_index_path, v1 = make_blob(tmp_path, "v1", a + b + c, None)
    v2_data = a + rand(4, 150_000) + c + rand(5, 50_000)
    _, v2_index_path, v2 = make_blob(tmp_path, "v2", v2_data, full)
    shared = set(v1.chunk_ids()) & set(v2.chunk_ids())
    assert len(shared) > 20
    store = tmp_path / "store"
    os.rename(full, store)
    assert remove_chunks(store, shared) == len(shared)
    return {"v1": v1_index_path, "v2": v2_index_path, "v2_data": v2_data, "store": store,
            "shared": shared, "v2_index": v2}


def test_store_lacking_every_seed_chunk_still_extracts(versions, tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    assert_error(cli("extract", "-s", versions["store"], versions["v2"], out), 4, "missing")
    assert not out.exists()
    stats = ok("extract", "--print-stats", "-s", versions["store"], "--seed", versions["v1"],
               versions["v2"], out).stats
    assert out.read_bytes() == versions["v2_data"]
    v2: Index = versions["v2_index"]
    seeded = [c for c in v2 if c.id in versions["shared"]]
    assert stats["chunks-from-seeds"] == len(seeded)
    assert stats["bytes-copied-from-seeds"] == sum(c.size for c in seeded)
    assert stats["chunks-from-store"] == len(v2) - len(seeded)
    assert stats["bytes-from-store"] == v2.length - sum(c.size for c in seeded)
    assert stats["seeds"] == 2


def test_seed_dir_finds_seeds_and_skips_the_index_itself(versions, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    seeds = tmp_path / "seeds"
    (seeds / "nested").mkdir(parents=True)
    os.link(tmp_path / "v1", seeds / "nested" / "v1")
    os.link(versions["v1"], seeds / "nested" / "v1.caibx")
    os.link(versions["v2"], seeds / "orphan.caibx")  # no data next to it: not a seed
    os.link(versions["v2"], seeds / "v2.caibx")  # the index being extracted: skipped
    os.link(tmp_path / "v2", seeds / "v2")
    out = tmp_path / "out"
    stats = ok("extract", "--print-stats", "-s", versions["store"], "--seed-dir", seeds,
               seeds / "v2.caibx", out).stats
    assert stats["seeds"] == 2  # null seed + nested/v1
    assert out.read_bytes() == versions["v2_data"]


def test_zero_ranges_become_holes_and_are_never_fetched(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    zeros = 40 * MAX  # dozens of null chunks (max 16 KiB)
    data = rand(6, 100_000) + bytes(zeros) + rand(7, 100_000)
    store = tmp_path / "store"
    _, index_path, index = make_blob(tmp_path, "blob", data, store)
    nulls = [c for c in index if c.id == null_id(index)]
    assert len(nulls) >= 35
    # make stored the null chunk; remove it so that fetching it would fail.
    assert remove_chunks(store, {null_id(index)}) == 1
    out = tmp_path / "out"
    stats = ok("extract", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-from-null-seed"] == len(nulls)
    assert stats["bytes-from-null-seed"] == len(nulls) * MAX
    assert stats["chunks-from-store"] == len(index) - len(nulls)
    null_start, null_end = nulls[0].start, nulls[-1].end
    # The null chunks' range is a hole (up to the filesystem's block granularity).
    bs = os.stat(out).st_blksize
    assert any(a <= -(-null_start // bs) * bs and b >= null_end // bs * bs
               for a, b in holes(out)), holes(out)
    assert os.stat(out).st_blocks * 512 <= len(data) - len(nulls) * MAX + 2 * bs


def test_in_place_over_old_data_punches_holes(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    data = rand(8, 50_000) + bytes(30 * MAX) + rand(9, 50_000)
    store = tmp_path / "store"
    _, index_path, index = make_blob(tmp_path, "blob", data, store)
    out = tmp_path / "out"
    out.write_bytes(rand(10, len(data) + 12345))  # garbage everywhere, and too long
    assert hole_bytes(out) == 0
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert hole_bytes(out) >= 25 * MAX
    assert stats["chunks-from-null-seed"] == sum(c.id == null_id(index) for c in index)


def test_repeated_chunks_come_from_the_self_seed(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    block = rand(11, 120_000)
    data = rand(12, 30_000) + block + rand(13, 20_000) + block + block + rand(14, 10_000)
    store = tmp_path / "store"
    _, index_path, index = make_blob(tmp_path, "blob", data, store)
    unique = len(set(index.chunk_ids()))
    repeats = len(index) - unique
    assert repeats >= 10
    out = tmp_path / "out"
    # One worker: every first occurrence is complete before its repeats come up.
    stats = ok("extract", "-n", "1", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-from-self-seed"] == repeats
    assert stats["chunks-from-store"] == unique
    assert stats["bytes-from-self-seed"] == stats["bytes-copied-from-seeds"]
    # With several workers some repeats may be fetched again; the result is the same.
    stats = ok("extract", "-n", "4", "--print-stats", "-s", store, index_path,
               tmp_path / "out4").stats
    assert (tmp_path / "out4").read_bytes() == data
    assert stats["chunks-from-self-seed"] + stats["chunks-from-store"] == len(index)


def test_changed_seed_is_rejected_skipped_or_regenerated(versions, tmp_path: Path,
                                                         ok, cli) -> None:  # type: ignore[no-untyped-def]
    seed_data = tmp_path / "v1"
    raw = bytearray(seed_data.read_bytes())
    raw[100_000:100_010] = b"X" * 10  # the seed no longer matches its index
    seed_data.write_bytes(raw)
    out = tmp_path / "out"
    out.write_bytes(b"old")
    assert_error(cli("extract", "-s", versions["store"], "--seed", versions["v1"],
                     versions["v2"], out), 5, f"seed index for {seed_data} doesn't match")
    assert out.read_bytes() == b"old"
    assert temp_leftovers(tmp_path) == []
    # Skipping: the store lacks the shared chunks, so this fails for want of them...
    result = cli("extract", "--skip-invalid-seeds", "-s", versions["store"], "--seed",
                 versions["v1"], versions["v2"], out)
    assert_error(result, 4, "missing")
    assert "Warning: skipping invalid seed" in result.err
    # ...while regenerating the seed's index finds the chunks that are still intact.
    full = tmp_path / "full"
    make_blob(tmp_path, "v2again", versions["v2_data"], full)
    stats = ok("extract", "--regenerate-invalid-seeds", "--print-stats", "-s", full,
               "--seed", versions["v1"], versions["v2"], out).stats
    assert out.read_bytes() == versions["v2_data"]
    assert stats["chunks-from-seeds"] > 0


def test_seed_with_other_digest_is_refused(versions, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from desync_core import api

    ctx = api.context(digest="sha256")
    other = tmp_path / "v1-sha256.caibx"
    api.make(str(tmp_path / "v1"), str(other), chunk_size="1:4:16", ctx=ctx)
    assert_error(cli("extract", "-s", versions["store"], "--seed", f"{other}:{tmp_path / 'v1'}",
                     versions["v2"], tmp_path / "out"), 2, "sha256")


def test_seed_data_given_explicitly_and_file_prefix(versions, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    renamed = tmp_path / "seed-data.img"
    os.link(tmp_path / "v1", renamed)
    ok("extract", "-s", versions["store"], "--seed", f"file:{versions['v1']}:{renamed}",
       versions["v2"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == versions["v2_data"]


def test_output_used_as_its_own_seed(versions, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """The A/B update pattern: the old image is the seed for the new one."""
    image = tmp_path / "image"
    os.link(tmp_path / "v1", image)
    stats = ok("extract", "--print-stats", "-s", versions["store"], "--seed",
               f"{versions['v1']}:{image}", versions["v2"], image).stats
    assert image.read_bytes() == versions["v2_data"]
    assert stats["chunks-from-seeds"] > 0
    # In place (-k) the output cannot also be read as a seed; it is left out, and what
    # is already right at the same offsets is kept.
    os.unlink(image)
    os.link(tmp_path / "v1", image)
    full = tmp_path / "full"
    make_blob(tmp_path, "v2again", versions["v2_data"], full)
    result = ok("extract", "-k", "--print-stats", "-s", full, "--seed",
                f"{versions['v1']}:{image}", versions["v2"], image)
    assert "it is the output being written in place" in result.err
    assert image.read_bytes() == versions["v2_data"]
    assert result.stats["chunks-in-place"] > 0
    assert chunk_path(full, next(iter(versions["shared"]))).exists()
