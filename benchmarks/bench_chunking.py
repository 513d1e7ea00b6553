#!/usr/bin/env python3
"""Chunking only: ``make`` without a store (chunk + hash, write the index), ours against
desync (Go), in the same run.

The input is ``bench.py``'s tarball (~400 MB of system files, kept under /var/tmp),
read from the page cache. Runs of the tools alternate; every case is repeated and the
median wall time is reported with throughput (MB/s, 10^6 bytes per second), CPU time
and the ratio ``desync Go time / our time`` (> 1: we are faster). Both tools must give
the same chunks and ids (desync's ``.caibx`` differs from ours in one header flag).

desync Go is found through ``--desync-go PATH`` or the ``DESYNC_GO`` environment
variable (build it with ``benchmarks/build_desync_go.sh``); without it its column is
skipped with a message. Run it under ``flock /work/bench.lock``.

Usage: ``python3 benchmarks/bench_chunking.py [--repeat 5] [--size-mb 400]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from bench import Run, build_tarball, log, machine, timed, warm
from benchutil import compile_bytecode


def chunks(index: Path) -> tuple[list[int], bytes]:
    """Chunk ends and ids of an index file."""
    from desync_core.index import Index

    parsed = Index.from_bytes(index.read_bytes())
    return parsed.ends.tolist(), parsed.ids


def main() -> int:
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per tool (default 5)")
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench")
    ap.add_argument("--tmpfs", default="/dev/shm/desync-bench-chunking")
    ap.add_argument("--desync-go", default=os.environ.get("DESYNC_GO"),
                    help="desync (Go) binary (default: $DESYNC_GO)")
    ap.add_argument("--desync", default=f"{sys.executable} -m desync_core",
                    help="our command line (default: this Python's desync_core)")
    args = ap.parse_args()

    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    tmp = Path(args.tmpfs)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tools: dict[str, list[str]] = {"desync (Python)": args.desync.split()}
    go = args.desync_go
    if go and not (Path(go).is_file() and os.access(go, os.X_OK)):
        log(f"desync Go not executable at {go}: its column is skipped")
        go = None
    if go:
        tools["desync Go"] = [go]
    else:
        log("desync Go not found (--desync-go or DESYNC_GO): its column is skipped")
    info = machine()

    runs: dict[str, list[Run]] = {name: [] for name in tools}
    results: dict[str, tuple[list[int], bytes]] = {}
    for name, cmd in tools.items():  # warm-up: compiles/caches our kernels
        out = tmp / f"warm-{len(results)}.caibx"
        timed([*cmd, "make", str(out), str(tar)])
        results[name] = chunks(out)
    if len({(tuple(e), i) for e, i in results.values()}) != 1:
        raise SystemExit("the tools' indexes have different chunks")
    for rep in range(args.repeat):
        for name, cmd in tools.items():
            warm(tar)
            run, _ = timed([*cmd, "make", str(tmp / "out.caibx"), str(tar)])
            runs[name].append(run)
            log(f"rep {rep + 1} {name}: {run.wall:.3f} s (cpu {run.cpu:.2f} s, "
                f"other load {run.other_load:.2f})")
    shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    print(f"## Chunking only (`make` without a store), {size / 1e6:.0f} MB tar, "
          f"medians of {args.repeat}\n")
    print(f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, "
          f"load at start {info.get('load (1 min) at start', '?')}.\n")
    print("| tool | wall | MB/s | CPU time | other load |\n|---|---:|---:|---:|---:|")
    walls = {}
    for name in tools:
        wall = med([r.wall for r in runs[name]])
        walls[name] = wall
        print(f"| {name} | {wall:.3f} s | {size / wall / 1e6:.0f} | "
              f"{med([r.cpu for r in runs[name]]):.2f} s | "
              f"{med([r.other_load for r in runs[name]]):.2f} |")
    if "desync Go" in walls:
        ratio = walls["desync Go"] / walls["desync (Python)"]
        print(f"\ndesync Go time / ours: **{ratio:.2f}x** "
              f"({'we are faster' if ratio > 1 else 'desync Go is faster'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
