"""gs:// chunk and index stores through the CLI: make, extract, info, prune, verify,
cache, index files at gs:// locations, a missing bucket and missing chunks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from gcs_support import Bucket

from desync_core.plugin_api import SHA512_256, Index, compress
from desync_core.testing.fixtures import CliResult, assert_one_line_error

Cli = Callable[..., CliResult]
CHUNK_NAME = re.compile(r"([0-9a-f]{4})/([0-9a-f]{64})\.cacnk")


def is_chunk_name(name: str) -> bool:
    """``<4hex>/<id>.cacnk`` with the directory equal to the id's first four digits."""
    m = CHUNK_NAME.fullmatch(name)
    return m is not None and m.group(1) == m.group(2)[:4]


def index_ids(data: bytes) -> set[bytes]:
    """The chunk ids an index references."""
    return {c.id for c in Index.from_bytes(data, "index")}


def test_make_extract_info_with_gs_index(ok: Cli, bucket: Bucket, cmd_testdata: Path,
                                         tmp_path: Path) -> None:
    """``make -s gs://b/chunks gs://b/idx/x.caibx file`` writes every chunk as
    ``chunks/<4hex>/<id>.cacnk`` (application/zstd) and the index as ``idx/x.caibx``
    (application/octet-stream); extract and info read both back from the bucket."""
    blob = cmd_testdata / "blob1"
    store, index = bucket.url("chunks"), bucket.url("idx/blob1.caibx")
    ok("make", "-s", store, index, blob)

    index_bytes = bucket.get("idx/blob1.caibx")
    assert index_bytes is not None
    assert bucket.content_type("idx/blob1.caibx") == "application/octet-stream"
    ids = index_ids(index_bytes)
    names = bucket.names("chunks/")
    assert sorted(names) == sorted(f"chunks/{i.hex()[:4]}/{i.hex()}.cacnk" for i in ids)
    assert {bucket.content_type(n) for n in names[:5]} == {"application/zstd"}
    assert all(is_chunk_name(n.removeprefix("chunks/")) for n in names)

    out = tmp_path / "out"
    ok("extract", "-s", store, index, out)
    assert out.read_bytes() == blob.read_bytes()

    info = ok("info", "-s", store, index).stats
    assert info["size"] == blob.stat().st_size
    assert info["unique"] == len(ids)
    assert info["in-store"] == len(ids)


def test_index_read_and_write_between_locations(ok: Cli, bucket: Bucket, cmd_testdata: Path,
                                                tmp_path: Path) -> None:
    """An index read from a gs:// location is the file that was written there, and a
    local index extracts from chunks chopped into the bucket."""
    ok("chop", "-s", bucket.url("c/"), cmd_testdata / "blob2.caibx", cmd_testdata / "blob2")
    bucket.put("i/blob2.caibx", (cmd_testdata / "blob2.caibx").read_bytes())
    out = tmp_path / "blob2"
    ok("extract", "-s", bucket.url("c"), bucket.url("i/blob2.caibx"), out)
    assert out.read_bytes() == (cmd_testdata / "blob2").read_bytes()
    # an index written to the bucket root is the file make writes locally
    ok("make", "-s", bucket.url("c"), bucket.url("root.caibx"), cmd_testdata / "blob2")
    ok("make", tmp_path / "local.caibx", cmd_testdata / "blob2")
    assert bucket.get("root.caibx") == (tmp_path / "local.caibx").read_bytes()


def test_prune_keeps_referenced_chunks_and_foreign_objects(ok: Cli, bucket: Bucket,
                                                            cmd_testdata: Path,
                                                            tmp_path: Path) -> None:
    """``prune -y`` deletes exactly the chunks no given index references; objects that
    are not chunks of the store's shape stay, and so does everything outside the prefix."""
    store = bucket.url("s")
    ok("chop", "-s", store, cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    ok("chop", "-s", store, cmd_testdata / "blob2.caibx", cmd_testdata / "blob2")
    foreign = ["s/README", "s/abcd/not-a-chunk", "other/abcd/" + "ab" * 32 + ".cacnk",
               f"s/0000/{'ab' * 32}.cacnk"]  # prefix directory does not match the id
    for name in foreign:
        bucket.put(name, b"x")
    ok("prune", "-y", "-s", store, cmd_testdata / "blob1.caibx")
    keep = index_ids((cmd_testdata / "blob1.caibx").read_bytes())
    chunks = {n for n in bucket.names("s/") if is_chunk_name(n.removeprefix("s/"))}
    assert chunks == {f"s/{i.hex()[:4]}/{i.hex()}.cacnk" for i in keep}
    assert set(foreign) <= set(bucket.names())
    out = tmp_path / "out"
    ok("extract", "-s", store, cmd_testdata / "blob1.caibx", out)
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_verify_and_repair(ok: Cli, cli: Cli, bucket: Bucket, cmd_testdata: Path) -> None:
    """``verify`` reports a damaged chunk object (exit 5), ``verify -r`` deletes it and a
    second ``verify`` is clean."""
    store = bucket.url("v")
    ok("chop", "-s", store, cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    assert ok("verify", "-s", store).err == ""
    victim = bucket.names("v/")[3]
    chunk_id = victim.rsplit("/", 1)[1].removesuffix(".cacnk")
    bucket.put(victim, compress(b"something else entirely"))
    bad = cli("verify", "-s", store)
    assert bad.code == 5
    assert f"chunk id {chunk_id} does not match its hash" in bad.err
    repaired = ok("verify", "-r", "-s", store)
    assert f"{chunk_id} does not match its hash" in repaired.err
    assert ": removed" in repaired.err
    assert bucket.get(victim) is None
    assert ok("verify", "-s", store).err == ""


def test_cache_into_gs_and_extract_through_gs_cache(ok: Cli, bucket: Bucket,
                                                    cmd_testdata: Path,
                                                    tmp_path: Path) -> None:
    """``cache -c gs://…`` copies every referenced chunk into the bucket; ``extract -c
    gs://…`` fills a gs:// cache and a later extract is served from the cache alone."""
    ok("cache", "-s", cmd_testdata / "blob1.store", "-c", bucket.url("cache1"),
       cmd_testdata / "blob1.caibx")
    ids = index_ids((cmd_testdata / "blob1.caibx").read_bytes())
    assert len(bucket.names("cache1/")) == len(ids)

    out = tmp_path / "out"
    ok("extract", "-s", cmd_testdata / "blob2.store", "-c", bucket.url("cache2"),
       cmd_testdata / "blob2.caibx", out)
    assert out.read_bytes() == (cmd_testdata / "blob2").read_bytes()
    # served by the cache only: the source store is an empty directory
    empty = tmp_path / "empty"
    empty.mkdir()
    out2 = tmp_path / "out2"
    ok("extract", "-s", empty, "-c", bucket.url("cache2"), cmd_testdata / "blob2.caibx", out2)
    assert out2.read_bytes() == (cmd_testdata / "blob2").read_bytes()


def test_uncompressed_store_option(ok: Cli, bucket: Bucket, cmd_testdata: Path,
                                   tmp_path: Path) -> None:
    """``uncompressed: true`` in store-options writes raw chunks without extension."""
    store = bucket.url("raw")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {store: {"uncompressed": True}}}))
    ok("--config", config, "chop", "-s", store, cmd_testdata / "blob1.caibx",
       cmd_testdata / "blob1")
    names = bucket.names("raw/")
    assert names
    assert all(not n.endswith(".cacnk") for n in names)
    data = bucket.get(names[0])
    assert data is not None
    assert SHA512_256.sum(data).hex() == names[0].rsplit("/", 1)[1]
    out = tmp_path / "out"
    ok("--config", config, "extract", "-s", store, cmd_testdata / "blob1.caibx", out)
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_missing_bucket_is_one_line_naming_it(cli: Cli, cmd_testdata: Path,
                                              tmp_path: Path) -> None:
    """Reading from, writing to, pruning and reading an index from a bucket that does not
    exist: one ``Error:`` line naming the bucket, exit 4."""
    blob1 = cmd_testdata / "blob1"
    idx = cmd_testdata / "blob1.caibx"
    for args in (("extract", "-s", "gs://no-such-bucket/x", idx, tmp_path / "o"),
                 ("make", "-s", "gs://no-such-bucket", tmp_path / "i.caibx", blob1),
                 ("prune", "-y", "-s", "gs://no-such-bucket", idx),
                 ("verify", "-s", "gs://no-such-bucket"),
                 ("info", "gs://no-such-bucket/x.caibx"),
                 ("make", "gs://no-such-bucket/dir/x.caibx", blob1)):
        assert_one_line_error(cli(*args), 4, "bucket 'no-such-bucket' does not exist")


def test_missing_chunks_and_index(cli: Cli, ok: Cli, bucket: Bucket, cmd_testdata: Path,
                                  tmp_path: Path) -> None:
    """A chunk object deleted from the bucket is a missing chunk (exit 4, naming the
    chunk and the store); a missing index object names the index."""
    store = bucket.url("m")
    ok("chop", "-s", store, cmd_testdata / "blob1.caibx", cmd_testdata / "blob1")
    gone = bucket.names("m/")[0]
    bucket.delete(gone)
    chunk_id = gone.rsplit("/", 1)[1].removesuffix(".cacnk")
    result = cli("extract", "-s", store, cmd_testdata / "blob1.caibx", tmp_path / "out")
    assert_one_line_error(result, 4, f"chunk {chunk_id} missing from store {store}")
    assert not (tmp_path / "out").exists()
    assert_one_line_error(cli("info", bucket.url("nothing/here.caibx")), 4,
                          "here.caibx not found")


def test_bad_locations(cli: Cli, cmd_testdata: Path, tmp_path: Path) -> None:
    """No bucket, or an invalid bucket name: a usage error (exit 2)."""
    idx = cmd_testdata / "blob1.caibx"
    assert_one_line_error(cli("extract", "-s", "gs:///prefix", idx, tmp_path / "o"), 2,
                          "expected bucket name")
    assert_one_line_error(cli("extract", "-s", "gs://Upper_Case", idx, tmp_path / "o"), 2,
                          "invalid bucket name")
