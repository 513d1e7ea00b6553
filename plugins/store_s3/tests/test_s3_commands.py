"""Every command desync allows on S3, end to end through the CLI against SeaweedFS."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3_support import get_raw, list_keys

from desync_core.plugin_api import Context, Index, load_config, parse_chunk_key
from desync_core.testing import open_chunk_store
from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_core.testing.trees import diff, snapshot
from desync_store_s3.store import S3ChunkStore

Cli = Callable[..., CliResult]

pytestmark = pytest.mark.usefixtures("s3_env")


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """1 MB of random data with a repeated part (so chunks repeat)."""
    part = random_bytes(300_000, 1)
    path = tmp_path / "blob"
    path.write_bytes(part + random_bytes(400_000, 2) + part)
    return path


def chunk_ids(index_file: Path) -> set[bytes]:
    index = Index.from_bytes(index_file.read_bytes(), str(index_file))
    return {c.id for c in index}


def stored_ids(admin: Any, bucket: str, prefix: str, ext: str = ".cacnk") -> set[bytes]:
    ids = set()
    for key in list_keys(admin, bucket, prefix):
        chunk_id = parse_chunk_key(key[len(prefix):], ext)
        if chunk_id is not None:
            ids.add(chunk_id)
    return ids


def test_make_extract_cat_info_with_the_index_in_s3(ok: Cli, admin: Any, store_url: str,
                                                    bucket: str, prefix: str, blob: Path,
                                                    tmp_path: Path) -> None:
    index_url = f"{store_url}/indexes/blob.caibx"
    ok("make", "-s", store_url, index_url, blob)
    index_bytes = get_raw(admin, bucket, f"{prefix}indexes/blob.caibx")
    assert index_bytes is not None
    (tmp_path / "local.caibx").write_bytes(index_bytes)
    assert stored_ids(admin, bucket, prefix) == chunk_ids(tmp_path / "local.caibx")

    ok("extract", "-s", store_url, index_url, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    assert ok("cat", "-s", store_url, index_url).out == blob.read_bytes()
    info = ok("info", "-s", store_url, index_url).stats
    assert info["size"] == blob.stat().st_size
    assert info["in-store"] == info["unique"] == len(chunk_ids(tmp_path / "local.caibx"))
    ok("verify-index", index_url, blob)


def test_content_types(ok: Cli, admin: Any, store_url: str, bucket: str, prefix: str,
                       blob: Path) -> None:
    ok("make", "-s", store_url, f"{store_url}/blob.caibx", blob)
    index_head = admin.head_object(Bucket=bucket, Key=f"{prefix}blob.caibx")
    assert index_head["ContentType"] == "application/octet-stream"
    chunk_keys = [k for k in list_keys(admin, bucket, prefix) if k.endswith(".cacnk")]
    assert chunk_keys
    for key in chunk_keys[:3]:
        assert admin.head_object(Bucket=bucket, Key=key)["ContentType"] == "application/zstd"


def test_uncompressed_store(ok: Cli, admin: Any, store_url: str, bucket: str, prefix: str,
                            blob: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {store_url: {"uncompressed": True}}}))
    ok("--config", config, "make", "-s", store_url, tmp_path / "b.caibx", blob)
    keys = list_keys(admin, bucket, prefix)
    ids = chunk_ids(tmp_path / "b.caibx")
    assert len(keys) == len(ids)
    assert all(not k.endswith(".cacnk") for k in keys)
    assert stored_ids(admin, bucket, prefix, "") == ids
    # the objects are the plain chunk data
    index = Index.from_bytes((tmp_path / "b.caibx").read_bytes(), "b")
    first = next(iter(index))
    raw = get_raw(admin, bucket, f"{prefix}{first.id.hex()[:4]}/{first.id.hex()}")
    assert raw == blob.read_bytes()[first.start:first.start + first.size]
    ok("--config", config, "extract", "-s", store_url, tmp_path / "b.caibx", tmp_path / "o")
    assert (tmp_path / "o").read_bytes() == blob.read_bytes()


def test_chop_into_s3(ok: Cli, admin: Any, store_url: str, bucket: str, prefix: str,
                      blob: Path, tmp_path: Path) -> None:
    ok("make", tmp_path / "b.caibx", blob)  # index only
    ok("chop", "-s", store_url, tmp_path / "b.caibx", blob)
    assert stored_ids(admin, bucket, prefix) == chunk_ids(tmp_path / "b.caibx")
    ok("extract", "-s", store_url, tmp_path / "b.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_tar_and_untar(ok: Cli, store_url: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(random_bytes(150_000, 3))
    (tree / "sub" / "b.txt").write_text("hello\n")
    os.symlink("a.bin", tree / "link")
    index_url = f"{store_url}/tree.caidx"
    ok("tar", "-i", "-s", store_url, index_url, tree)
    ok("untar", "-i", "-s", store_url, index_url, tmp_path / "out")
    assert diff(snapshot(tree), snapshot(tmp_path / "out")) == []


def test_cache_command_fills_s3(ok: Cli, admin: Any, store_url: str, bucket: str,
                                prefix: str, blob: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.store"
    ok("make", "-s", local, tmp_path / "b.caibx", blob)
    ok("cache", "-s", local, "-c", store_url, tmp_path / "b.caibx")
    assert stored_ids(admin, bucket, prefix) == chunk_ids(tmp_path / "b.caibx")


def test_s3_as_cache_of_extract(ok: Cli, admin: Any, store_url: str, bucket: str,
                                prefix: str, blob: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.store"
    ok("make", "-s", local, tmp_path / "b.caibx", blob)
    ok("extract", "-s", local, "-c", store_url, tmp_path / "b.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    assert stored_ids(admin, bucket, prefix) == chunk_ids(tmp_path / "b.caibx")


def test_prune(ok: Cli, admin: Any, store_url: str, bucket: str, prefix: str,
               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A page size of 5 makes the listing go over several ListObjectsV2 pages.
    monkeypatch.setattr(S3ChunkStore, "list_page_size", 5)
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(random_bytes(600_000, 4))
    two.write_bytes(random_bytes(600_000, 5))
    ok("make", "-s", store_url, "-m", "16:32:64", tmp_path / "one.caibx", one)
    ok("make", "-s", store_url, "-m", "16:32:64", tmp_path / "two.caibx", two)
    keep = chunk_ids(tmp_path / "one.caibx")
    assert len(keep) > 5
    # objects that are not chunks of this store's layout stay
    others = [f"{prefix}notes.txt", f"{prefix}abcd/not-a-chunk",
              f"{prefix}0000/{'ab' * 32}.cacnk"]  # directory does not match the id
    for key in others:
        admin.put_object(Bucket=bucket, Key=key, Body=b"x")
    ok("prune", "-s", store_url, "-y", tmp_path / "one.caibx")
    assert stored_ids(admin, bucket, prefix) == keep
    assert set(others) <= set(list_keys(admin, bucket, prefix))
    ok("extract", "-s", store_url, tmp_path / "one.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == one.read_bytes()


def test_prune_asks_first(cli: Cli, admin: Any, store_url: str, bucket: str, prefix: str,
                          blob: Path, tmp_path: Path) -> None:
    cli("make", "-s", store_url, tmp_path / "b.caibx", blob)
    before = list_keys(admin, bucket, prefix)
    result = cli("prune", "-s", store_url, tmp_path / "b.caibx", input=b"n\n")
    assert result.code == 0
    assert "Are you sure" in result.text
    assert list_keys(admin, bucket, prefix) == before


def test_prune_at_the_bucket_root(ok: Cli, admin: Any, s3_url: str, fresh_bucket: str,
                                  tmp_path: Path) -> None:
    store = f"{s3_url}/{fresh_bucket}"
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(random_bytes(300_000, 6))
    two.write_bytes(random_bytes(300_000, 7))
    ok("make", "-s", store, tmp_path / "one.caibx", one)
    ok("make", "-s", store, tmp_path / "two.caibx", two)
    ok("prune", "-s", store, "-y", tmp_path / "two.caibx")
    assert stored_ids(admin, fresh_bucket, "") == chunk_ids(tmp_path / "two.caibx")


def test_verify_and_repair(cli: Cli, ok: Cli, admin: Any, store_url: str, bucket: str,
                           prefix: str, blob: Path, tmp_path: Path) -> None:
    ok("make", "-s", store_url, tmp_path / "b.caibx", blob)
    ok("verify", "-s", store_url)
    bad = sorted(chunk_ids(tmp_path / "b.caibx"))[0]
    key = f"{prefix}{bad.hex()[:4]}/{bad.hex()}.cacnk"
    good = get_raw(admin, bucket, sorted(k for k in list_keys(admin, bucket, prefix)
                                         if k != key)[0])
    admin.put_object(Bucket=bucket, Key=key, Body=good)  # another chunk's data
    result = cli("verify", "-s", store_url)
    assert result.code == 5
    assert bad.hex() in result.err
    assert get_raw(admin, bucket, key) is not None  # reported, not removed
    repaired = cli("verify", "-s", store_url, "-r")
    assert repaired.code == 0, repaired.err
    assert f"{bad.hex()}" in repaired.err
    assert ": removed" in repaired.err
    assert get_raw(admin, bucket, key) is None
    ok("verify", "-s", store_url)


def test_missing_chunk(cli: Cli, ok: Cli, admin: Any, store_url: str, bucket: str,
                       prefix: str, blob: Path, tmp_path: Path) -> None:
    ok("make", "-s", store_url, tmp_path / "b.caibx", blob)
    gone = sorted(chunk_ids(tmp_path / "b.caibx"))[0]
    admin.delete_object(Bucket=bucket, Key=f"{prefix}{gone.hex()[:4]}/{gone.hex()}.cacnk")
    result = cli("extract", "-s", store_url, tmp_path / "b.caibx", tmp_path / "out")
    assert_one_line_error(result, 4, gone.hex(), "missing", store_url)
    assert not (tmp_path / "out").exists()
    # a second store behind the first one serves it
    local = tmp_path / "local.store"
    ok("make", "-s", local, tmp_path / "b.caibx", blob)
    ok("extract", "-s", store_url, "-s", local, tmp_path / "b.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_missing_bucket(cli: Cli, s3_url: str, blob: Path, tmp_path: Path) -> None:
    store = f"{s3_url}/no-such-bucket-here/prefix"
    result = cli("make", "-s", store, tmp_path / "b.caibx", blob)
    assert_one_line_error(result, 4, "bucket 'no-such-bucket-here' does not exist")
    cli("make", tmp_path / "b.caibx", blob)
    result = cli("extract", "-s", store, tmp_path / "b.caibx", tmp_path / "out")
    assert_one_line_error(result, 4, "bucket 'no-such-bucket-here' does not exist")
    result = cli("prune", "-s", store, "-y", tmp_path / "b.caibx")
    assert_one_line_error(result, 4, "bucket 'no-such-bucket-here' does not exist")
    result = cli("cat", "-s", store, f"{store}/x.caibx")
    assert_one_line_error(result, 4, "bucket 'no-such-bucket-here' does not exist")


def test_missing_index(cli: Cli, store_url: str, tmp_path: Path) -> None:
    result = cli("extract", "-s", store_url, f"{store_url}/none.caibx", tmp_path / "out")
    assert_one_line_error(result, 4, "none.caibx", "does not exist")


@pytest.mark.parametrize(("location", "message"), [
    ("s3+http://127.0.0.1:1/", "expected bucket name in path"),
    ("s3+http://127.0.0.1:1/b?lookup=xyz", 'unknown S3 bucket lookup type: "xyz"'),
])
def test_bad_locations(cli: Cli, blob: Path, tmp_path: Path, location: str,
                       message: str) -> None:
    result = cli("make", "-s", location, tmp_path / "b.caibx", blob)
    assert_one_line_error(result, 2, message)


@pytest.mark.parametrize("lookup", ["", "?lookup=auto", "?lookup=path"])
def test_lookup_styles_reach_the_server(ok: Cli, store_url: str, blob: Path, tmp_path: Path,
                                        lookup: str) -> None:
    ok("make", "-s", store_url + lookup, tmp_path / "b.caibx", blob)
    ok("extract", "-s", store_url + lookup, tmp_path / "b.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_one_client_per_settings_sized_to_n(store_url: str, s3_url: str, bucket: str) -> None:
    ctx = Context(config=load_config(None), concurrency=7)
    a: Any = ctx.open_chunk_store(store_url)
    b: Any = ctx.open_chunk_store(f"{s3_url}/{bucket}/elsewhere")
    index_store: Any = ctx.open_index_store(store_url + "/")
    assert a.conn.client() is b.conn.client() is index_store.conn.client()
    assert a.conn.client().meta.config.max_pool_connections == 7
    assert a.conn.client().meta.config.retries["total_max_attempts"] == 1
    other: Any = Context(concurrency=3).open_chunk_store(store_url)
    assert other.conn.client() is not a.conn.client()
    assert other.conn.client().meta.config.max_pool_connections == 3


def test_store_opened_without_a_command_uses_the_environment(store_url: str) -> None:
    from desync_core.plugin_api import SHA512_256, Chunk

    store = S3ChunkStore.from_location(open_chunk_store(store_url).location,
                                       open_chunk_store(store_url).options)
    data = b"direct" * 1000
    store.store_chunk(Chunk(SHA512_256.sum(data), data))
    assert bytes(store.get_chunk(SHA512_256.sum(data)).data()) == data


def test_make_lists_the_store_and_uploads_only_what_is_missing(
        ok: Cli, admin: Any, s3_url: str, fresh_bucket: str, blob: Path, tmp_path: Path) -> None:
    """make lists the bucket instead of a HEAD per chunk (``lookup_by_listing``): a chunk
    deleted between two runs is uploaded again, the others are left as they are."""
    import time

    store = f"{s3_url}/{fresh_bucket}"
    ok("make", "-s", store, tmp_path / "b.caibx", blob)
    ids = chunk_ids(tmp_path / "b.caibx")
    assert stored_ids(admin, fresh_bucket, "") == ids
    lost = sorted(ids)[0]
    lost_key = f"{lost.hex()[:4]}/{lost.hex()}.cacnk"
    admin.delete_object(Bucket=fresh_bucket, Key=lost_key)
    modified = {k: admin.head_object(Bucket=fresh_bucket, Key=k)["LastModified"]
                for k in list_keys(admin, fresh_bucket, "")}
    time.sleep(1.1)  # LastModified has a resolution of one second
    ok("make", "-s", store, tmp_path / "b2.caibx", blob)
    assert stored_ids(admin, fresh_bucket, "") == ids
    for key, when in modified.items():
        assert admin.head_object(Bucket=fresh_bucket, Key=key)["LastModified"] == when, key
    ok("extract", "-s", store, tmp_path / "b2.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
