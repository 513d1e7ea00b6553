"""Extract throughput through ``chunk-server`` compared with a local store, same run.

Makes a blob and its chunk store, starts ``desync chunk-server`` on 127.0.0.1 over that
store, then times ``desync extract`` from the local store and through the server
(alternating, several runs) and prints MB/s for both and their ratio. Every output is
checked against the blob.

    python3 benchmarks/bench_http.py [--size-mib 128] [--runs 3] [-n 10]

Needs desync-core and desync-store-http installed. The machine is shared: compare the
ratio, which is measured in one run, rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import compile_bytecode, make_blob, sha256, start_server


def desync(*args: str) -> None:
    """Run the CLI, failing loudly."""
    subprocess.run([sys.executable, "-m", "desync_core", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    """Run the benchmark and print the results."""
    compile_bytecode()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128, help="blob size (default 128)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per source (default 3)")
    parser.add_argument("-n", "--concurrency", type=int, default=10,
                        help="extract -n (default 10)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        blob, index, store, out = (work / "blob", work / "blob.caibx", work / "store",
                                   work / "out")
        size = args.size_mib << 20
        expected = make_blob(blob, size)
        desync("make", "-s", str(store), str(index), str(blob))
        chunks = sum(1 for p in store.rglob("*.cacnk"))
        server, url = start_server(store)
        try:
            sources = {"local": str(store), "chunk-server": url}
            timings: dict[str, list[float]] = {name: [] for name in sources}
            desync("extract", "-s", url, str(index), str(out))  # warm-up (numba cache, pages)
            for _ in range(args.runs):
                for name, source in sources.items():
                    if out.exists():
                        os.unlink(out)
                    start = time.perf_counter()
                    desync("extract", "-n", str(args.concurrency), "-s", source, str(index),
                           str(out))
                    timings[name].append(time.perf_counter() - start)
                    if sha256(out) != expected:
                        raise SystemExit(f"extract from {name} produced wrong data")
        finally:
            server.terminate()
            server.wait()

    mb = size / 1e6
    print(f"blob {args.size_mib} MiB, {chunks} chunks, extract -n {args.concurrency}, "
          f"{args.runs} runs (median; includes process start-up)")
    rates = {}
    for name, times in timings.items():
        median = statistics.median(times)
        rates[name] = mb / median
        print(f"  {name:13s} {rates[name]:8.1f} MB/s   ({median:.2f} s)")
    print(f"  ratio chunk-server/local: {rates['chunk-server'] / rates['local']:.2f}")


if __name__ == "__main__":
    main()
