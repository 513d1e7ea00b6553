#!/usr/bin/env python3
"""``extract`` throughput: desync vs casync, in the same run, with and without seeds.

Builds a tarball of system files once (default ~400 MB of /usr/lib and /usr/share)
and a casync store of it, all on tmpfs (/dev/shm), then times, alternating the tools:

* ``extract``: a fresh output from the store (fetch, decompress, verify, write);
* ``extract --seed``: a second version of the tarball (a few regions changed, some data
  inserted) extracted with the first version as a seed: desync reads the seed's index,
  casync (``--seed=FILE``) chunks the seed file itself;
* ``extract -k`` onto a complete output (desync only: everything is verified in
  place; casync's closest mode re-uses the existing output as a seed).

Each case is repeated; the median wall time, CPU time (user + system), throughput (MB/s,
10^6 bytes of output per second) and peak RSS of each tool are reported, with the ratio
``casync time / desync time``. Every output is compared with the expected bytes.

Usage: ``python3 benchmarks/bench_extract_seeds.py [--size-mb 400] [--repeat 3]
[-n 10] [--keep]``. The machine should be otherwise idle: the two cores are shared.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import compile_bytecode

WORK = Path("/dev/shm/desync-bench-extract")
SOURCES = ("usr/lib", "usr/share")


@dataclass
class Run:
    """One timed process."""

    wall: float
    cpu: float
    maxrss_mb: float


@dataclass
class Case:
    """Repeated runs of one case."""

    name: str
    size: int
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, tool: str, attr: str) -> float:
        """Median of ``attr`` for ``tool`` (nan without runs)."""
        values = [getattr(r, attr) for r in self.runs.get(tool, [])]
        return statistics.median(values) if values else float("nan")


def log(msg: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(msg, file=sys.stderr, flush=True)


#: Run desync as installed software runs: with its modules' bytecode cached. (A
#: PYTHONDONTWRITEBYTECODE=1 environment would recompile every changed module on every
#: run, some 50 ms of start-up that users never see.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> Run:
    """Run ``cmd`` and measure it with ``wait4`` (wall, CPU, peak RSS)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def desync_cmd(*args: str) -> list[str]:
    """The desync CLI run by this interpreter (no shell wrappers)."""
    return [sys.executable, "-m", "desync_core", *args]


def make_inputs(size: int) -> tuple[Path, Path]:
    """(v1, v2): a tarball of system files and a modified copy of it."""
    WORK.mkdir(parents=True, exist_ok=True)
    v1 = WORK / "v1.tar"
    if not v1.exists() or v1.stat().st_size != size:
        log(f"building {size / 1e6:.0f} MB tarball of {', '.join(SOURCES)}")
        with open(v1, "wb") as out:
            tar = subprocess.Popen(["tar", "cf", "-", "-C", "/", *SOURCES],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert tar.stdout is not None
            left = size
            while left:
                block = tar.stdout.read(min(left, 1 << 20))
                if not block:
                    raise SystemExit("not enough data for the tarball")
                out.write(block)
                left -= len(block)
            tar.kill()
            tar.wait()
    v2 = WORK / "v2.tar"
    if not v2.exists():
        log("building v2: 10 changed regions and one insertion")
        # Streamed, so that this process stays small: a child's peak RSS as reported
        # by wait4 includes the memory it had before exec.
        rng = random.Random(1)
        with open(v1, "rb") as src, open(v2, "wb") as dst:
            insert_at = size // 3
            shutil.copyfileobj(_Limited(src, insert_at), dst, 1 << 20)
            dst.write(rng.randbytes(3_000_000))
            shutil.copyfileobj(src, dst, 1 << 20)
        with open(v2, "r+b") as f:
            for _ in range(10):
                f.seek(rng.randrange(size - 2_000_000))
                f.write(rng.randbytes(1_000_000))
    return v1, v2


class _Limited:
    """The first ``n`` bytes of a file object."""

    def __init__(self, f, n: int) -> None:  # type: ignore[no-untyped-def]
        self.f, self.left = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data  # type: ignore[no-any-return]


def make_stores(v1: Path, v2: Path) -> Path:
    """One casync store with the chunks of both versions (casync's default sizes)."""
    store = WORK / "store.castr"
    for blob in (v1, v2):
        index = blob.with_suffix(".caibx")
        if not index.exists():
            log(f"casync make {index.name}")
            subprocess.run(["casync", "make", f"--store={store}", str(index), str(blob)],
                           check=True, stdout=subprocess.DEVNULL)
    return store


def bench(cases: list[tuple[str, Path, dict[str, list[str]]]], expected: dict[str, Path],
          repeat: int) -> list[Case]:
    """Run every case ``repeat`` times, alternating tools; check every output."""
    results = []
    # Warm-up (bytecode caches, page cache of the store), not timed.
    subprocess.run([sys.executable, "-c", "import desync_core.cli.commands.extract, "
                    "desync_core.ops.extract, desync_core.seeds.file, desync_core.context"],
                   env=ENV, check=True)
    for name, blob, cmds in cases:
        case = Case(name, blob.stat().st_size)
        for r in range(repeat):
            for tool, cmd in cmds.items():
                out = Path(cmd[-1])
                if not name.startswith("extract -k") and out.exists():
                    out.unlink()
                log(f"{name} [{tool}] run {r + 1}/{repeat}")
                run = timed(cmd)
                case.runs.setdefault(tool, []).append(run)
                if not filecmp.cmp(out, expected[name], shallow=False):
                    raise SystemExit(f"{tool}: wrong output for {name}")
        results.append(case)
    return results


def report(results: list[Case], n: int) -> None:
    """Markdown table of medians and ratios."""
    print(f"\nextract benchmark ({os.cpu_count()} CPUs, desync -n {n}; medians; "
          f"MB/s = 10^6 bytes of output per second)\n")
    print("| case | tool | wall s | CPU s | MB/s | peak RSS MB | casync/desync |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in results:
        ca = case.median("casync", "wall")
        for tool in case.runs:
            wall = case.median(tool, "wall")
            ratio = f"{ca / wall:.2f}x" if tool == "desync" and ca == ca else ""
            print(f"| {case.name} | {tool} | {wall:.2f} | {case.median(tool, 'cpu'):.2f} | "
                  f"{case.size / wall / 1e6:.0f} | {case.median(tool, 'maxrss_mb'):.0f} | "
                  f"{ratio} |")


def main() -> None:
    """Parse arguments, prepare inputs, run, report."""
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case and tool")
    ap.add_argument("-n", type=int, default=10, help="desync -n (default 10, like desync)")
    ap.add_argument("--keep", action="store_true", help="keep /dev/shm files afterwards")
    args = ap.parse_args()
    if shutil.which("casync") is None:
        raise SystemExit("casync is not installed")
    v1, v2 = make_inputs(args.size_mb * 1_000_000)
    store = make_stores(v1, v2)
    out = WORK / "out"
    out.mkdir(exist_ok=True)
    n = str(args.n)
    i1, i2 = str(v1.with_suffix(".caibx")), str(v2.with_suffix(".caibx"))
    complete = out / "complete"
    shutil.copyfile(v1, complete)
    cases = [
        ("extract", v1, {
            "casync": ["casync", "extract", f"--store={store}", i1, str(out / "ca")],
            "desync": desync_cmd("extract", "-n", n, "-s", str(store), i1, str(out / "de")),
        }),
        ("extract --seed", v2, {
            "casync": ["casync", "extract", f"--store={store}", f"--seed={v1}", i2,
                       str(out / "ca-seed")],
            "desync": desync_cmd("extract", "-n", n, "-s", str(store), "--seed", f"{i1}:{v1}",
                                 i2, str(out / "de-seed")),
        }),
        ("extract -k (complete output)", v1, {
            "desync": desync_cmd("extract", "-k", "-n", n, "-s", str(store), i1, str(complete)),
        }),
    ]
    expected = {"extract": v1, "extract --seed": v2, "extract -k (complete output)": v1}
    try:
        results = bench(cases, expected, args.repeat)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    report(results, args.n)


if __name__ == "__main__":
    main()
