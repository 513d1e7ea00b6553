"""desync's own command tests on its vectors: extract with seeds, info, cat, cache, chop.

Mirrors ``TestExtractCommand``, ``TestExtractWithInvalidSeeds``, ``TestInfoCommand``,
``TestCatCommand`` and the ``--ignore`` behaviour of ``cache``/``chop``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from extract_util import assert_error, temp_leftovers

from desync_core.index import Index

# (name, arguments before the output, output kind); the output must equal blob1.
EXTRACT_OK = [
    ("to new file", ["--store", "blob1.store", "blob1.caibx"], "new"),
    ("to existing file with overwrite", ["--store", "blob1.store", "blob1.caibx"], "different"),
    ("to existing file without overwrite", ["--in-place", "--store", "@outdir", "blob1.caibx"],
     "complete"),
    ("with single seed", ["--store", "blob1.store", "--seed", "blob2.caibx", "blob1.caibx"],
     "new"),
    ("with multi seed", ["-s", "blob1.store", "--seed", "blob2.caibx", "--seed", "blob1.caibx",
                         "blob1.caibx"], "new"),
    ("with seed directory", ["-s", "blob1.store", "--seed-dir", ".", "--skip-invalid-seeds",
                             "blob1.caibx"], "new"),
    ("with single seed and explicit data", ["--store", "blob1.store", "--seed",
                                            "blob2_without_data.caibx:blob2", "blob1.caibx"],
     "new"),
    ("with unexpected seed options", ["--store", "blob1.store", "--seed",
                                      "blob2_without_data.caibx:blob2:reserved_options",
                                      "blob1.caibx"], "new"),
    ("with multi seed and explicit data", [
        "-s", "blob1.store", "--seed", "blob2_without_data.caibx:blob2", "--seed",
        "blob1_without_data.caibx:blob1", "blob1.caibx"], "new"),
    ("with multi seed and one explicit data", [
        "-s", "blob1.store", "--seed", "blob2_without_data.caibx:blob2", "--seed",
        "blob1.caibx", "blob1.caibx"], "new"),
    ("with cache", ["-s", "blob1.store", "-c", "@cache", "blob1.caibx"], "new"),
    ("with multiple stores", ["-s", "blob2.store", "-s", "blob1.store", "blob1.caibx"], "new"),
    ("with multiple stores and cache", ["-n", "1", "-s", "blob2.store", "-s", "blob1.store",
                                        "--cache", "@cache", "blob1.caibx"], "new"),
    ("with corrupted seed skipped", ["--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
                                     "--skip-invalid-seeds", "blob1.caibx"], "new"),
    ("with multiple corrupted seeds skipped", [
        "--store", "empty.store", "--seed", "blob2_corrupted.caibx", "--seed", "blob1.caibx",
        "--skip-invalid-seeds", "blob1.caibx"], "new"),
    # blob1 (a full match) always wins, so the corrupted seeds are never validated.
    ("with seed directory without skipping invalid seeds", [
        "-s", "blob1.store", "--seed-dir", ".", "--seed", "blob1.caibx", "blob1.caibx"], "new"),
    ("with multiple corrupted seeds, unused", [
        "--store", "empty.store", "--seed", "blob2_corrupted.caibx", "--seed", "blob1.caibx",
        "blob1.caibx"], "new"),
    ("with single seed that has all the chunks", [
        "--store", "empty.store", "--seed", "blob1.caibx", "blob1.caibx"], "new"),
    ("while regenerating the corrupted seed", [
        "--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
        "--regenerate-invalid-seeds", "blob1.caibx"], "new"),
    # The regenerated index equals blob1.caibx: the empty store suffices.
    ("with corrupted seed index and empty store", [
        "--store", "empty.store", "--seed", "blob1_corrupted_index.caibx",
        "--regenerate-invalid-seeds", "blob1.caibx"], "new"),
    ("seeds given comma-separated", ["--store", "empty.store", "--seed",
                                     "blob2.caibx,blob1.caibx", "blob1.caibx"], "new"),
]


@pytest.mark.parametrize(("name", "args", "kind"), EXTRACT_OK, ids=[c[0] for c in EXTRACT_OK])
def test_extract_command(vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         ok, name: str, args: list[str], kind: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(vectors)
    expected = (vectors / "blob1").read_bytes()
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    out = outdir / "out"
    if kind == "different":
        out.write_bytes(b"\0\1\2\3")
    elif kind == "complete":
        out.write_bytes(expected)
    subst = {"@outdir": str(outdir), "@cache": str(tmp_path / "cache")}
    ok("extract", *[subst.get(a, a) for a in args], out)
    assert out.read_bytes() == expected
    assert temp_leftovers(outdir) == []


EXTRACT_ERRORS = [
    ("corrupted seed", ["--store", "blob1.store", "--seed", "blob2_corrupted.caibx",
                        "blob1.caibx"], 5, "seed index for blob2_corrupted doesn't match"),
    ("missing seed", ["--store", "blob1.store", "--seed", "blob_missing", "blob1.caibx"], 2,
     'seed argument "blob_missing" seems to be malformed'),
    ("missing seed index", ["--store", "blob1.store", "--seed", "blob_missing.caibx",
                            "blob1.caibx"], 4, "blob_missing.caibx"),
    ("missing seed data", ["--store", "blob1.store", "--seed", "blob2_without_data.caibx",
                           "blob1.caibx"], 5, "blob2_without_data"),
    ("multiple corrupted seeds", ["--store", "empty.store", "--seed", "blob2_corrupted.caibx",
                                  "--seed", "blob1.caibx", "blob2.caibx"], 5,
     "blob2_corrupted doesn't match its data"),
    ("corrupted blob1 seed and a valid seed", [
        "--store", "blob2.store", "--seed", "blob1_corrupted_index.caibx", "--seed",
        "blob1.caibx", "blob2.caibx"], 5, "blob1_corrupted_index doesn't match its data"),
    ("corrupted blob1 seed", ["--store", "blob2.store", "--seed",
                              "blob1_corrupted_index.caibx", "blob2.caibx"], 5,
     "blob1_corrupted_index doesn't match its data"),
    ("both skip and regenerate", [
        "--store", "blob1.store", "--seed", "blob1_corrupted_index.caibx",
        "--regenerate-invalid-seeds", "--skip-invalid-seeds", "blob1.caibx"], 2,
     "mutually exclusive"),
    ("seed type that cannot be chosen", ["--store", "blob1.store", "--seed", "null:x",
                                         "blob1.caibx"], 2, "null"),
    ("missing seed directory", ["--store", "blob1.store", "--seed-dir", "no-such-dir",
                                "blob1.caibx"], 2, "no-such-dir"),
]


@pytest.mark.parametrize(("name", "args", "code", "message"), EXTRACT_ERRORS,
                         ids=[c[0] for c in EXTRACT_ERRORS])
def test_extract_with_invalid_seeds(vectors: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, cli, name: str,
                                    args: list[str], code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(vectors)
    old = tmp_path / "out"
    old.write_bytes(b"previous content")
    assert_error(cli("extract", *args, old), code, message)
    # Nothing written: the old output is untouched, no temporary file is left.
    assert old.read_bytes() == b"previous content"
    assert temp_leftovers(tmp_path) == []


def test_seed_stats_show_where_data_came_from(vectors: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    index = Index.from_bytes((vectors / "blob1.caibx").read_bytes())
    stats = ok("extract", "--print-stats", "-s", vectors / "empty.store", "--seed",
               vectors / "blob1.caibx", vectors / "blob1.caibx", tmp_path / "out").stats
    assert stats["seeds"] == 2
    assert stats["chunks-total"] == len(index) == 161
    assert stats["chunks-from-store"] == 0
    assert stats["chunks-from-seeds"] == 161
    assert stats["chunks-from-null-seed"] == 31
    assert stats["bytes-from-null-seed"] == 31 * 32768
    # Without reflinks (/tmp) everything non-null is copied from the seed.
    assert stats["bytes-copied-from-seeds"] == 2097152 - 31 * 32768
    assert stats["bytes-cloned-from-seeds"] == 0


def test_regenerated_seed_is_used(vectors: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    stats = ok("extract", "--print-stats", "-s", vectors / "empty.store", "--seed",
               vectors / "blob1_corrupted_index.caibx", "--regenerate-invalid-seeds",
               vectors / "blob1.caibx", tmp_path / "out").stats
    assert stats["chunks-from-store"] == 0
    assert stats["chunks-from-seeds"] == 161


INFO_CASES = [
    (["-s", "blob1.store", "blob1.caibx"],
     {"total": 161, "unique": 131, "in-store": 131, "in-seed": 0, "in-cache": 0,
      "not-in-seed-nor-cache": 131, "size": 2097152, "dedup-size-not-in-seed": 1114112,
      "dedup-size-not-in-seed-nor-cache": 1114112,
      "dedup-size-not-in-seed-nor-cache-compressed": 0, "chunk-size-min": 2048,
      "chunk-size-avg": 8192, "chunk-size-max": 32768}),
    (["--seed", "blob2.caibx", "blob1.caibx"],
     {"in-seed": 124, "not-in-seed-nor-cache": 7, "dedup-size-not-in-seed": 80029,
      "dedup-size-not-in-seed-nor-cache": 80029}),
    (["--seed", "blob2_without_data.caibx:blob2", "blob1.caibx"],  # extract's seed syntax
     {"in-seed": 124, "dedup-size-not-in-seed": 80029}),
    (["-s", "blob2.store", "--seed", "blob1.caibx", "--cache", "blob2.cache", "--chunks-info",
      "blob2_chunks_info.json", "blob2.caibx"],
     {"in-store": 131, "in-cache": 25, "not-in-seed-nor-cache": 7,
      "dedup-size-not-in-seed": 80029, "dedup-size-not-in-seed-nor-cache": 80029,
      "dedup-size-not-in-seed-nor-cache-compressed": 76000}),
    (["-s", "blob2.store", "--cache", "blob2.cache", "--chunks-info", "blob2_chunks_info.json",
      "blob2.caibx"],
     {"in-cache": 25, "not-in-seed-nor-cache": 106, "dedup-size-not-in-seed": 1114112,
      "dedup-size-not-in-seed-nor-cache": 853943,
      "dedup-size-not-in-seed-nor-cache-compressed": 818145}),
    (["-s", "blob2.store", "--cache", "blob2.cache", "--chunks-info",
      "blob2_chunks_info_missing.json", "blob2.caibx"],
     {"in-cache": 25, "dedup-size-not-in-seed-nor-cache-compressed": 0}),
]


@pytest.mark.parametrize(("args", "expected"), INFO_CASES)
def test_info_with_seeds(vectors: Path, monkeypatch: pytest.MonkeyPatch, ok,
                         args: list[str], expected: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(vectors)
    result = json.loads(ok("info", *args).out)
    assert {k: result[k] for k in expected} == expected
    if len(expected) == 13:
        assert list(result) == list(expected)  # desync's key order


def test_info_seed_dir(vectors: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "blob2.caibx").symlink_to(vectors / "blob2.caibx")
    (seeds / "blob2").symlink_to(vectors / "blob2")
    (seeds / "blob1.caibx").symlink_to(vectors / "blob1.caibx")  # the index itself: skipped
    (seeds / "blob1").symlink_to(vectors / "blob1")
    result = json.loads(ok("info", "--seed-dir", seeds, seeds / "blob1.caibx").out)
    assert result["in-seed"] == 124
    assert result["dedup-size-not-in-seed"] == 80029
    # An index without its blob next to it is not a seed.
    (seeds / "blob2").unlink()
    result = json.loads(ok("info", "--seed-dir", seeds, seeds / "blob1.caibx").out)
    assert result["in-seed"] == 0


def test_info_plain(vectors: Path, ok) -> None:  # type: ignore[no-untyped-def]
    text = ok("info", "-f", "plain", "--seed", vectors / "blob2.caibx",
              vectors / "blob1.caibx").out.decode()
    assert "Chunks in seed: 124\n" in text
    assert "Size of deduplicated chunks not in seed: 80029\n" in text


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (1024, 0), (1024, 2048)])
def test_cat_slices(vectors: Path, ok, offset: int, length: int) -> None:  # type: ignore[no-untyped-def]
    blob = (vectors / "blob1").read_bytes()
    out = ok("cat", "-s", vectors / "blob1.store", "-o", str(offset), "-l", str(length),
             vectors / "blob1.caibx").out
    assert out == blob[offset : offset + length if length else None]


def _store_ids(store: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store.rglob("*.cacnk")}


def test_cache_ignore_skips_seed_chunks(vectors: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    blob1 = Index.from_bytes((vectors / "blob1.caibx").read_bytes())
    blob2 = Index.from_bytes((vectors / "blob2.caibx").read_bytes())
    want = {c.hex() for c in blob1.chunk_ids()} - {c.hex() for c in blob2.chunk_ids()}
    ok("cache", "-s", vectors / "blob1.store", "-c", tmp_path / "cache", "--ignore",
       vectors / "blob2.caibx", vectors / "blob1.caibx")
    assert _store_ids(tmp_path / "cache") == want
    assert len(want) == 7


def test_chop_ignore_skips_seed_chunks(vectors: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    ok("chop", "-s", tmp_path / "store", "--ignore", vectors / "blob2.caibx",
       vectors / "blob1.caibx", vectors / "blob1")
    assert len(_store_ids(tmp_path / "store")) == 7
    # What the seed lacks plus the seed is enough to extract blob1.
    ok("extract", "-s", tmp_path / "store", "--seed", vectors / "blob2.caibx",
       vectors / "blob1.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (vectors / "blob1").read_bytes()


def test_in_place_invalid_seed_fails_before_writing(vectors: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """With -k, seeds are validated before the output is touched."""
    out = tmp_path / "out"
    old = b"previous content" * 1000
    out.write_bytes(old)
    result = cli("extract", "-k", "-s", vectors / "blob1.store", "--seed",
                 vectors / "blob2_corrupted.caibx", vectors / "blob1.caibx", out)
    assert_error(result, 5, "blob2_corrupted doesn't match its data")
    assert out.read_bytes() == old
