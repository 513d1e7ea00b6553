"""``chunk-server`` in front of an S3 store: proxying with a local cache, ``-w`` writing
through to S3 (needs desync-store-http, which provides the command)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3_support import ChunkServerProcess, list_keys

from desync_core.plugin_api import Index, parse_chunk_key
from desync_core.testing.fixtures import CliResult
from desync_store_s3.seaweedfs import SeaweedFS

Cli = Callable[..., CliResult]

pytestmark = pytest.mark.usefixtures("s3_env")


def ids_of(index_file: Path) -> set[bytes]:
    return {c.id for c in Index.from_bytes(index_file.read_bytes(), str(index_file))}


def local_ids(store: Path) -> set[bytes]:
    return {bytes.fromhex(p.name[:64]) for p in store.glob("*/*.cacnk")}


def s3_ids(admin: Any, bucket: str, prefix: str) -> set[bytes]:
    found = (parse_chunk_key(k[len(prefix):], ".cacnk") for k in list_keys(admin, bucket, prefix))
    return {cid for cid in found if cid is not None}


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(random.Random(21).randbytes(600_000))
    return path


def test_chunk_server_proxies_s3_with_a_local_cache(ok: Cli, store_url: str, blob: Path,
                                                    tmp_path: Path,
                                                    seaweedfs: SeaweedFS) -> None:
    ok("make", "-s", store_url, tmp_path / "b.caibx", blob)
    cache = tmp_path / "cache"
    server = ChunkServerProcess(["-s", store_url, "-c", str(cache)], seaweedfs.env())
    try:
        ok("extract", "-s", server.url, tmp_path / "b.caibx", tmp_path / "out")
    finally:
        server.stop()
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    assert local_ids(cache) == ids_of(tmp_path / "b.caibx")


def test_writable_chunk_server_writes_through_to_s3(ok: Cli, admin: Any, store_url: str,
                                                    bucket: str, prefix: str, blob: Path,
                                                    tmp_path: Path,
                                                    seaweedfs: SeaweedFS) -> None:
    server = ChunkServerProcess(["-w", "-s", store_url], seaweedfs.env())
    try:
        ok("make", "-s", server.url, tmp_path / "b.caibx", blob)
    finally:
        server.stop()
    assert s3_ids(admin, bucket, prefix) == ids_of(tmp_path / "b.caibx")
    ok("extract", "-s", store_url, tmp_path / "b.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
