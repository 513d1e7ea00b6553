"""The core's ``desync`` fsspec filesystem over HTTP: indexes from an ``index-server``,
chunks from a ``chunk-server`` (both real CLI servers on 127.0.0.1).

Only what a read touches crosses the network: the chunk-server's request log counts
the chunk GETs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_http_support import ServerProcess

from desync_core.plugin_api import Index

fsspec = pytest.importorskip("fsspec")

StartServer = Callable[..., ServerProcess]


def chunk_gets(log: Path) -> list[str]:
    """The chunk paths GET requested, in order (from ``--log``)."""
    return [line.split("Request: GET ", 1)[1].split(",")[0]
            for line in log.read_text().splitlines()
            if "Request: GET " in line and ".cacnk" in line]


def test_blob_and_archive_over_http(start_server: StartServer, tmp_path: Path,
                                    desync: Callable[..., Any]) -> None:
    rng = random.Random(11)
    data = rng.randbytes(600_000)
    (tmp_path / "blob").write_bytes(data)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data.bin").write_bytes(rng.randbytes(300_000))
    (tree / "readme").write_bytes(b"over http\n")
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    store = tmp_path / "store"
    desync("make", "-s", str(store), "-m", "2:8:32", str(indexes / "blob.caibx"),
           str(tmp_path / "blob"))
    desync("tar", "-i", "-s", str(store), "-m", "2:8:32", str(indexes / "tree.caidx"),
           str(tree))
    log = tmp_path / "chunks.log"
    chunks = start_server("chunk-server", "-s", str(store), "--log", str(log))
    index_server = start_server("index-server", "-s", str(indexes))

    fs = fsspec.filesystem("desync", stores=[chunks.url], skip_instance_cache=True)
    blob_url = f"{index_server.url.rstrip('/')}/blob.caibx"
    index = Index.from_bytes((indexes / "blob.caibx").read_bytes())
    offset, size = 250_000, 20_000
    touched = {index.chunk_id(i) for i in range(index.find(offset),
                                                index.find(offset + size - 1) + 1)}
    with fs.open(blob_url) as f:
        assert f.size == len(data)
        f.seek(offset)
        assert f.read(size) == data[offset:offset + size]
    assert fs.reader(blob_url).fetches == len(touched)

    # the same through a desync:// URL, the remote index location inside it
    with fsspec.open(f"desync://{blob_url}", stores=[chunks.url]) as f:
        for _ in range(20):
            at = rng.randrange(len(data))
            f.seek(at)
            assert f.read(5000) == data[at:at + 5000]

    tree_url = f"{index_server.url.rstrip('/')}/tree.caidx"
    assert fs.ls(tree_url, detail=False) == [f"{tree_url}/readme", f"{tree_url}/sub"]
    assert fs.info(f"{tree_url}/sub/data.bin")["size"] == 300_000
    assert fs.cat_file(f"{tree_url}/readme") == b"over http\n"
    assert fs.cat_file(f"{tree_url}/sub/data.bin") == (tree / "sub" / "data.bin").read_bytes()
    with pytest.raises(FileNotFoundError):
        fs.open(f"{index_server.url.rstrip('/')}/missing.caibx")
    fs.close()

    assert chunks.stop() == 0
    gets = chunk_gets(log)
    first_reads = gets[:len(touched)]
    assert {Path(p).name.split(".")[0] for p in first_reads} == {c.hex() for c in touched}
