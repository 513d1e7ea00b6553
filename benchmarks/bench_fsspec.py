#!/usr/bin/env python3
"""The ``desync`` fsspec filesystem next to ``desync cat`` (the core's streaming reader).

One blob (``benchutil.make_blob``, 128 MiB by default) is chunked with the default chunk
size into a local store in a tmpfs, also served by a ``chunk-server`` on 127.0.0.1.
Cases, each repeated with a fresh filesystem / store chain (empty chunk cache),
alternating the two readers, medians reported:

* ``seq-local``/``seq-http``: the whole blob read in 1 MiB ``read`` calls through
  ``fs.open`` (chunks of one read fetched in parallel), next to ``ops.read.cat`` of the
  same index into a null sink (chunks fetched one after another).
* ``random-4k``: 2000 random 4 KiB reads through ``fs.open`` (seek + read), next to 2000
  ``cat(offset, 4096)`` calls on one opened store chain (what a program without a range
  reader does: each call fetches the chunks under its bytes again).

The bytes read sequentially are compared with the blob (SHA-256). The machine may be
shared: compare the ratios, which are measured in the same run.

    flock /work/bench.lock python3 benchmarks/bench_fsspec.py [--size-mb 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from benchutil import compile_bytecode, make_blob, start_server

from desync_core.config import load_config
from desync_core.context import Context
from desync_core.ops.read import cat


class NullSink:
    """A binary "file" that hashes what is written (to check the bytes, cheaply)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def fs_sequential(store: str, index: str) -> str:
    fs = fsspec.filesystem("desync", stores=[store], skip_instance_cache=True)
    digest = hashlib.sha256()
    with fs.open(index) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    fs.close()
    return digest.hexdigest()


def cat_sequential(store: str, index: str) -> str:
    ctx = Context(config=load_config(None))
    idx = ctx.read_index(index)
    source = ctx.open_source([store], None, idx.digest, max_chunk_size=idx.chunk_size_max)
    sink = NullSink()
    cat(idx, source, sink)  # type: ignore[arg-type]
    source.close()
    return sink.digest.hexdigest()


def offsets(length: int, count: int = 2000) -> list[int]:
    rng = random.Random(3)
    return [rng.randrange(length - 4096) for _ in range(count)]


def fs_random(store: str, index: str, length: int) -> None:
    fs = fsspec.filesystem("desync", stores=[store], skip_instance_cache=True)
    with fs.open(index) as f:
        for at in offsets(length):
            f.seek(at)
            f.read(4096)
    fs.close()


def cat_random(store: str, index: str, length: int) -> None:
    ctx = Context(config=load_config(None))
    idx = ctx.read_index(index)
    source = ctx.open_source([store], None, idx.digest, max_chunk_size=idx.chunk_size_max)
    for at in offsets(length):
        cat(idx, source, NullSink(), offset=at, length=4096)  # type: ignore[arg-type]
    source.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        work = Path(tmp)
        blob = work / "blob"
        want = make_blob(blob, args.size_mb << 20)
        store = work / "store"
        index = str(work / "blob.caibx")
        subprocess.run([sys.executable, "-m", "desync_core", "make", "-s", str(store),
                        index, str(blob)], check=True)
        blob.unlink()  # the tmpfs holds the store, not a second copy
        length = args.size_mb << 20
        proc, url = start_server(store)
        try:
            cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
                ("seq-local", lambda: fs_sequential(str(store), index),
                 lambda: cat_sequential(str(store), index)),
                ("seq-http", lambda: fs_sequential(url, index),
                 lambda: cat_sequential(url, index)),
                ("random-4k", lambda: fs_random(str(store), index, length),
                 lambda: cat_random(str(store), index, length)),
            ]
            print(f"blob {args.size_mb} MiB, median of {args.repeat}")
            print(f"{'case':<10} {'fsspec s':>9} {'cat s':>8} {'cat/fsspec':>11}")
            for name, ours, theirs in cases:
                a: list[float] = []
                b: list[float] = []
                for _ in range(args.repeat):
                    t, result = timed(ours)
                    if name.startswith("seq") and result != want:
                        raise SystemExit(f"{name}: fsspec read the wrong bytes")
                    a.append(t)
                    t, result = timed(theirs)
                    if name.startswith("seq") and result != want:
                        raise SystemExit(f"{name}: cat wrote the wrong bytes")
                    b.append(t)
                ma, mb = statistics.median(a), statistics.median(b)
                print(f"{name:<10} {ma:>9.2f} {mb:>8.2f} {mb / ma:>10.2f}x", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
