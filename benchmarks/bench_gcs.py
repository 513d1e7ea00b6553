#!/usr/bin/env python3
"""desync make/extract against a gs:// store next to a raw google-cloud-storage loop.

Builds (or reuses) the benchmark tarball of ``bench.py`` (~400 MB of system files),
starts ``gcp-storage-emulator`` on 127.0.0.1 (in memory, the test suite's launcher),
then, per run:

* ``desync make -n N -s gs://<bucket>/store gs://<bucket>/x.caibx TAR`` (chunk, hash,
  compress, look up, upload) against a plain loop uploading **the same objects** (the
  chunk files of the same tar, compressed beforehand, held in memory) with
  ``N`` threads, and the same loop doing the lookup (``exists``) desync's protocol makes
  before each upload;
* ``desync extract -n N`` of that index (download, decompress, verify, write) against a
  loop downloading the same objects with ``N`` threads.

Both sides use the same client library with its retries off and an ``N``-connection
pool. The ratio is raw time / desync time (1.0 = as fast as the bare loop; the target
is ≥ 0.8). Outputs are checked (extracted bytes equal the tar).

    python3 benchmarks/bench_gcs.py [--size-mb 400] [-n 10] [--runs 1]

Needs desync-store-gcs with its ``testing`` extra (the emulator). The emulator is a
single-threaded Python server, so it is the bottleneck for both sides; numbers are
for comparing the two sides of one run, not for predicting GCS throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import build_tarball
from benchutil import compile_bytecode, sha256

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins" / "store_gcs" / "tests"))

from gcs_support import Emulator  # noqa: E402 - found through the path set above


def desync(*args: str) -> float:
    """Run the CLI, failing loudly; returns the wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "desync_core", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"desync {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return elapsed



def load_objects(store: Path) -> dict[str, bytes]:
    """Every chunk file of a local store as ``{"<4hex>/<id>.cacnk": bytes}``."""
    out = {}
    for path in sorted(store.rglob("*.cacnk")):
        out[f"{path.parent.name}/{path.name}"] = path.read_bytes()
    return out


def raw_client(n: int):  # type: ignore[no-untyped-def]
    """A google-cloud-storage client of the emulator with an ``n``-connection pool."""
    import requests.adapters
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage

    credentials = AnonymousCredentials()
    session = AuthorizedSession(credentials)
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=n, max_retries=0)
    session.mount("http://", adapter)
    return storage.Client(project="bench", credentials=credentials, _http=session)


def timed_pool(n: int, fn: Callable[[str], object], names: list[str]) -> float:
    """Wall time of ``fn`` over ``names`` with ``n`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        for _ in pool.map(fn, names):
            pass
    return time.perf_counter() - start


def one_run(run: int, client: Any, objects: dict[str, bytes], tar: Path, n: int,
            expected: str, scratch: Path) -> dict[str, float]:
    """Time every case once, in fresh buckets; returns seconds by case."""
    names = list(objects)
    ours, raw, raw2, api = (client.create_bucket(f"bench-{kind}-{run}")
                            for kind in ("desync", "raw", "rawx", "api"))
    store, index, out = f"gs://{ours.name}/store", f"gs://{ours.name}/x.caibx", scratch / "out"

    def run_make() -> float:
        return desync("make", "-n", str(n), "-s", store, index, str(tar))

    def run_extract() -> float:
        seconds = desync("extract", "-n", str(n), "-s", store, index, str(out))
        if sha256(out) != expected:
            sys.exit("extract produced different bytes")
        out.unlink()
        return seconds

    def upload(name: str, bucket: Any = raw) -> None:
        bucket.blob(f"store/{name}").upload_from_string(
            objects[name], content_type="application/zstd", retry=None, checksum=None)

    def check_and_upload(name: str) -> None:
        if not raw2.blob(f"store/{name}").exists(retry=None):
            upload(name, raw2)

    def download(name: str) -> None:
        raw.blob(f"store/{name}").download_as_bytes(retry=None, checksum=None)

    # The plugin's store API alone (no chunking, no process start): what make and
    # extract ask of the transport, the lookup + write and the verified read.
    from desync_core.plugin_api import Chunk, Context

    ctx = Context(concurrency=n)
    transport = ctx.open_chunk_store(f"gs://{api.name}/store")
    reader = ctx.open_reader(f"gs://{api.name}/store")

    def api_write(name: str) -> None:
        chunk_id = bytes.fromhex(name.split("/")[1][:64])
        if not transport.has_chunk(chunk_id):
            transport.store_chunk(Chunk(chunk_id, encoded=objects[name],  # type: ignore[attr-defined]
                                        codec=transport.codec))

    def api_read(name: str) -> None:
        reader.get_chunk(bytes.fromhex(name.split("/")[1][:64])).data()

    steps: list[tuple[str, Callable[[], float]]] = [
        ("store has+write", lambda: timed_pool(n, api_write, names)),
        ("store read+verify", lambda: timed_pool(n, api_read, names)),
        ("make", run_make),
        ("upload", lambda: timed_pool(n, upload, names)),
        ("exists+upload", lambda: timed_pool(n, check_and_upload, names)),
        ("extract", run_extract),
        ("download", lambda: timed_pool(n, download, names)),
    ]
    if run % 2:  # the machine is shared: alternate which side goes first
        steps = [steps[i] for i in (3, 4, 0, 2, 1, 6, 5)]
    return {key: step() for key, step in steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("-n", type=int, default=10, help="requests in flight (default 10)")
    ap.add_argument("--runs", type=int, default=1, help="runs per case (median reported)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tarball is kept (default /var/tmp/desync-bench)")
    args = ap.parse_args()
    compile_bytecode()
    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    expected = sha256(tar)
    n = str(args.n)

    scratch = Path(tempfile.mkdtemp(prefix="bench-gcs-", dir="/dev/shm"
                                    if os.path.isdir("/dev/shm") else None))
    emulator = Emulator.start()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    results: dict[str, list[float]] = {k: [] for k in (
        "make", "upload", "exists+upload", "extract", "download", "store has+write",
        "store read+verify")}
    try:
        # The same objects for the raw loops: the chunk files of the same tar.
        local = scratch / "local.store"
        desync("make", "-n", n, "-s", str(local), str(scratch / "local.caibx"), str(tar))
        objects = load_objects(local)
        names = list(objects)
        shutil.rmtree(local)
        client = raw_client(args.n)
        print(f"{tar.name}: {size / 1e6:.0f} MB, {len(names)} chunks, "
              f"{sum(map(len, objects.values())) / 1e6:.0f} MB compressed; -n {args.n}",
              file=sys.stderr)

        for run in range(args.runs):
            times = one_run(run, client, objects, tar, args.n, expected, scratch)
            for key, seconds in times.items():
                results[key].append(seconds)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s"
                                                 for k, v in results.items()),
                  file=sys.stderr)
    finally:
        emulator.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}

    def mbps(seconds: float) -> str:
        return f"{size / 1e6 / seconds:.1f}"

    print(f"\n{size / 1e6:.0f} MB tar, {len(names)} chunks, -n {args.n}, "
          f"{args.runs} run(s), median wall time\n")
    print("| case | desync | raw google-cloud-storage loop | desync / raw |")
    print("|---|---|---|---|")
    print(f"| make (fresh store) | {med['make']:.1f} s ({mbps(med['make'])} MB/s) | "
          f"upload only {med['upload']:.1f} s ({mbps(med['upload'])} MB/s) | "
          f"{med['upload'] / med['make']:.2f} |")
    print(f"| make (fresh store) | same | exists + upload {med['exists+upload']:.1f} s "
          f"({mbps(med['exists+upload'])} MB/s) | "
          f"{med['exists+upload'] / med['make']:.2f} |")
    print(f"| desync-store-gcs API: has + write, {args.n} threads | "
          f"{med['store has+write']:.1f} s ({mbps(med['store has+write'])} MB/s) | "
          f"exists + upload {med['exists+upload']:.1f} s | "
          f"{med['exists+upload'] / med['store has+write']:.2f} |")
    print(f"| desync-store-gcs API: verified read, {args.n} threads | "
          f"{med['store read+verify']:.1f} s ({mbps(med['store read+verify'])} MB/s) | "
          f"download {med['download']:.1f} s | "
          f"{med['download'] / med['store read+verify']:.2f} |")
    print(f"| extract | {med['extract']:.1f} s ({mbps(med['extract'])} MB/s) | "
          f"download {med['download']:.1f} s ({mbps(med['download'])} MB/s) | "
          f"{med['download'] / med['extract']:.2f} |")


if __name__ == "__main__":
    main()
