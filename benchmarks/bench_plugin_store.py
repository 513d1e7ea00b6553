#!/usr/bin/env python3
"""Extract through a third-party store next to the local store, same run.

The third-party store is the example plugin's ``flat://`` store
(``examples/desync-store-example``), written against ``desync_core.plugin_api`` only:
it declares the capabilities ``is_local``, ``fork_safe`` and ``local_chunk_file``, so
extract gives it the local store's fast paths. Target: within 10% of the local store.

    python3 benchmarks/bench_plugin_store.py [--size-mb 400] [--runs 5]

The input is the benchmark tar of ``bench.py`` (files from /usr). Outputs are compared
with the input after every run; the ratio is measured in one run (compare it, not the
absolute numbers, across machines).
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

from bench import build_tarball
from benchutil import compile_bytecode


def desync(*args: str) -> None:
    """Run the CLI, failing loudly."""
    subprocess.run([sys.executable, "-m", "desync_core", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    """Run the benchmark and print a markdown table."""
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per store (default 5)")
    ap.add_argument("--work", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="directory for stores and outputs (default /dev/shm)")
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "desync-bench"
    cache.mkdir(exist_ok=True)
    tar = cache / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    with tempfile.TemporaryDirectory(prefix="bench-plugin-", dir=args.work) as tmp:
        work = Path(tmp)
        index, out = work / "x.caibx", work / "out"
        sources = {"local store": str(work / "local"), "flat:// (plugin)": f"flat://{work}/flat"}
        for source in sources.values():
            desync("make", "-s", source, str(index), str(tar))
        desync("extract", "-s", sources["local store"], str(index), str(out))  # warm-up
        times: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.runs):
            for name, source in sources.items():
                out.unlink(missing_ok=True)
                start = time.perf_counter()
                desync("extract", "-s", source, str(index), str(out))
                times[name].append(time.perf_counter() - start)
                if subprocess.run(["cmp", "-s", str(tar), str(out)]).returncode:
                    raise SystemExit(f"{name}: output differs from the input")
    size = tar.stat().st_size
    local = statistics.median(times["local store"])
    print(f"Input: {tar.name}, {size / 1e6:.0f} MB; medians of {args.runs} runs\n")
    print("| store | extract (s) | MB/s | vs local |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"| {name} | {t:.2f} | {size / t / 1e6:.0f} | {local / t:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
