"""make and extract with chunk encryption next to without (local store), same run.

Makes a blob, then times ``desync make`` into a fresh store and ``desync extract`` from
it for a plain store and for stores encrypted with xchacha20-poly1305 and aes-256-gcm
(interleaved, the order rotating from run to run, several runs), and prints a table
with each case's median wall-clock and CPU time (of all of desync's processes) and its
ratios to the plain store: the median of the ratios within each run (a case against the
plain store timed next to it), and their range (target: encryption at most 15% slower).
Every output is checked against the blob.

    python3 benchmarks/bench_encryption.py [--size-mib 256] [--runs 5] [-n 10]

The machine is shared: compare the ratios, which are measured in one run, rather than
absolute numbers across runs. ``make`` is dominated by creating thousands of files, whose
kernel cost drifts with the machine's state (measured here: 0.2 to 1.5 ms per file for
the same work within minutes); writeback is flushed before every timed command so that
no case pays for the previous one's dirty pages, and the ratios are paired per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import compile_bytecode, make_blob, sha256

KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
CASES: dict[str, dict[str, object]] = {
    "plain": {},
    "xchacha20-poly1305": {"encryption": True, "encryption-key": KEY},
    "aes-256-gcm": {"encryption": True, "encryption-key": KEY,
                    "encryption-algorithm": "aes-256-gcm"},
}


def desync(*args: str) -> tuple[float, float]:
    """Run the CLI, failing loudly; its (wall, CPU) seconds (CPU of all its processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "desync_core", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"desync {' '.join(args)} failed: {proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    """Run the benchmark and print the table."""
    compile_bytecode()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("-n", "--concurrency", type=int, default=10, help="-n (default 10)")
    args = parser.parse_args()
    n = str(args.concurrency)

    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        work = Path(tmp)
        blob, out = work / "blob", work / "out"
        size = args.size_mib << 20
        expected = make_blob(blob, size)
        stores = {name: work / f"store-{name}" for name in CASES}
        config = work / "config.json"
        config.write_text(json.dumps({"store-options": {
            str(stores[name]): entry for name, entry in CASES.items() if entry}}))
        cfg = ["--config", str(config)]
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        # (runs[op][i][name]: the times of run i, for ratios within one run)
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {"make": [], "extract": []}
        names = list(CASES)
        for run in range(args.runs + 1):  # run 0 warms up (numba cache, page cache)
            # (A rotating order: no case always runs right after another's make.)
            if run:
                runs["make"].append({})
                runs["extract"].append({})
            for name in names[run % len(names):] + names[:run % len(names)]:
                store = stores[name]
                index = work / f"{name}.caibx"
                shutil.rmtree(store, ignore_errors=True)
                os.sync()
                made = desync(*cfg, "make", "-n", n, "-s", str(store), str(index), str(blob))
                if out.exists():
                    os.unlink(out)
                os.sync()
                extracted = desync(*cfg, "extract", "-n", n, "-s", str(store), str(index),
                                   str(out))
                if sha256(out) != expected:
                    raise SystemExit(f"extract from the {name} store produced wrong data")
                if run:
                    times.setdefault(("make", name), []).append(made)
                    times.setdefault(("extract", name), []).append(extracted)
                    runs["make"][-1][name] = made
                    runs["extract"][-1][name] = extracted

    mb = size / 1e6
    from desync_core.stores.encryption import xchacha_implementation

    print(f"blob {args.size_mib} MiB, -n {n}, median of {args.runs} runs "
          "(includes process start-up)")
    print(f"xchacha20-poly1305: {xchacha_implementation()}\n")
    print("| operation | store | wall (s) | MB/s | wall vs plain | (range) | CPU (s) "
          "| CPU vs plain |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for op in ("make", "extract"):
        for name in CASES:
            wall = statistics.median(w for w, _ in times[(op, name)])
            cpu = statistics.median(c for _, c in times[(op, name)])
            wall_ratios = [r[name][0] / r["plain"][0] for r in runs[op]]
            cpu_ratios = [r[name][1] / r["plain"][1] for r in runs[op]]
            print(f"| {op} | {name} | {wall:.2f} | {mb / wall:.0f} "
                  f"| {statistics.median(wall_ratios):.2f}x "
                  f"| {min(wall_ratios):.2f}-{max(wall_ratios):.2f} | {cpu:.2f} "
                  f"| {statistics.median(cpu_ratios):.2f}x |")

if __name__ == "__main__":
    main()
