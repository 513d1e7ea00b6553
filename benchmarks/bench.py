#!/usr/bin/env python3
"""desync vs casync on the same machine, in the same run.

Builds a tarball of system files once (default ~400 MB, under /var/tmp), puts the
stores and extracted files on tmpfs (/dev/shm), and times, for both tools:

* ``make`` into a fresh store (chunk, hash, compress, write);
* ``make`` with every chunk already present (chunk, hash, look up);
* ``extract`` from the store (fetch, decompress, verify, write);
* chunking alone (desync only: casync has no chunk-only mode).

Runs of the two tools alternate, every case is repeated and the median is reported,
with throughput in MB/s (10^6 bytes per second of input) and the ratio
``casync time / desync time``. CPU time (user + system) and peak RSS of each tool are
shown too. Results are checked: both tools must write byte-identical indexes and
extract the original bytes.

Usage: ``python3 benchmarks/bench.py [--repeat 3] [--size-mb 400] [--markdown]``.
The page cache is dropped before every run with ``--cold`` when the kernel allows
it (root outside a container); by default the input is in the page cache for both
tools, which the report states.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import compile_bytecode

REPO = Path(__file__).resolve().parent.parent
#: Directories whose files make up the tarball, in this order (sorted walk).
SOURCE_DIRS = ("/usr/bin", "/usr/include", "/usr/share", "/usr/lib")

# Targets from the project's performance issue, shown next to the results.
TARGETS = {
    "make (fresh store)": 2.2,
    "make (chunks present)": 3.0,
    "extract": 2.2,
}
CHUNK_TARGET_GBPS_PER_CORE = 1.3


@dataclass
class Run:
    """One timed process."""

    wall: float
    cpu: float
    maxrss_kb: int
    other_load: float = 0.0
    """CPUs kept busy by everything else on the machine during the run (busy CPU time
    from /proc/stat minus the tool's own CPU time, divided by the wall time). Near 0
    on a quiet machine; 1.0 means one of the cores was taken by other work."""


def busy_cpu_seconds() -> float | None:
    """CPU time all CPUs spent busy since boot (/proc/stat), None if unavailable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # Fields 8+ (guest time) are already included in user time.
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Case:
    """Repeated runs of one case for both tools."""

    name: str
    runs: dict[str, list[Run]] = field(default_factory=lambda: {"casync": [], "desync": []})

    def median(self, tool: str, attr: str = "wall") -> float:
        """Median of ``attr`` over the tool's runs (nan without runs)."""
        values = [getattr(r, attr) for r in self.runs[tool]]
        return statistics.median(values) if values else float("nan")


def log(msg: str) -> None:
    """Progress messages go to stderr; the report goes to stdout."""
    print(msg, file=sys.stderr, flush=True)


def timed(cmd: list[str], *, env: dict[str, str] | None = None,
          stdout: int | None = subprocess.DEVNULL) -> tuple[Run, bytes]:
    """Run ``cmd``; its wall time, CPU time and peak RSS (from wait4)."""
    busy0 = busy_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out = b""
    if stdout == subprocess.PIPE:
        assert proc.stdout is not None
        out = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    busy1 = busy_cpu_seconds()
    cpu = usage.ru_utime + usage.ru_stime
    other = max(0.0, (busy1 - busy0 - cpu) / wall) if busy0 is not None and busy1 is not None \
        else float("nan")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{err.decode(errors='replace')}")
    return Run(wall, cpu, usage.ru_maxrss, other), out


def build_tarball(path: Path, size_mb: int) -> None:
    """A tar of regular files from SOURCE_DIRS (sorted walk) totalling ~size_mb MB."""
    stamp = path.with_suffix(".files")
    if path.exists() and stamp.exists() and \
            stamp.read_text().startswith(f"# {size_mb} MB\n"):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = size_mb * 1_000_000
    total = 0
    files: list[str] = []
    for root in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if not os.path.isfile(full) or os.path.islink(full) or \
                        not os.access(full, os.R_OK):
                    continue
                files.append(full)
                total += st.st_size
                if total >= limit:
                    break
            if total >= limit:
                break
        if total >= limit:
            break
    listing = path.with_suffix(".list")
    listing.write_text("\n".join(files) + "\n")
    log(f"building {path} from {len(files)} files ({total / 1e6:.0f} MB)")
    subprocess.run(["tar", "-cf", str(path), "--no-recursion", "-T", str(listing)],
                   check=True, stderr=subprocess.DEVNULL)
    stamp.write_text(f"# {size_mb} MB\n" + "\n".join(files[:20]) + "\n...\n")


def drop_caches() -> bool:
    """Drop the page cache; False when not allowed (e.g. in a container)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(path: Path) -> None:
    """Read a file so it is in the page cache."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def machine() -> dict[str, str]:
    """CPU, cores, RAM, kernel and tool versions."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or "?"
    info["cores"] = str(len(os.sched_getaffinity(0)))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    info["kernel"] = platform.release()
    try:
        info["casync"] = subprocess.run(["casync", "--version"], capture_output=True,
                                        text=True).stdout.strip().replace("\n", " ")
    except OSError:
        info["casync"] = "not installed"
    info["python"] = f"{platform.python_version()} ({sys.executable})"
    # Versions from package metadata: importing numba here would inflate this process's
    # RSS, which wait4 reports as part of every child's peak RSS.
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("numba", "llvmlite", "numpy", "zstandard"):
        try:
            info[mod] = version(mod)
        except PackageNotFoundError:
            info[mod] = "-"
    try:
        libzstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True)
        info["zstd"] = libzstd.stdout.strip().split(",")[0].replace("*** ", "")
    except OSError:
        pass
    try:
        info["desync commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
            text=True).stdout.strip() or "-"
    except OSError:
        info["desync commit"] = "-"
    try:
        info["load (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    scaling = parallel_scaling(int(info["cores"]))
    if scaling:
        info["parallel scaling (openssl sha512, all cores / one)"] = f"{scaling:.2f}x"
    return info


def parallel_scaling(cores: int) -> float | None:
    """Throughput of ``cores`` processes over one, for a CPU-bound reference workload.

    Virtual machines often give less than ``cores``x (shared physical cores, noisy
    neighbours); no program can scale better than this on the machine.
    """
    def speed(extra: list[str]) -> float:
        out = subprocess.run(["openssl", "speed", "-seconds", "2", *extra, "-evp", "sha512",
                              "-bytes", "65536"], capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1].split()[1].rstrip("k"))

    if cores < 2 or not shutil.which("openssl"):
        return None
    try:
        return speed(["-multi", str(cores)]) / speed([])
    except (OSError, ValueError, IndexError):
        return None


CHUNK_ONLY = """
import sys, time
from desync_core.chunker import chunk_file, warm_up, DEFAULT_PARAMS
warm_up()
t = time.perf_counter()
ends = chunk_file(sys.argv[1], DEFAULT_PARAMS, workers=int(sys.argv[2]))
print(time.perf_counter() - t, len(ends))
"""

KERNEL_ONLY = """
import sys, time, numpy as np
from desync_core.chunker import find_cuts, warm_up, DEFAULT_PARAMS
warm_up()
data = np.fromfile(sys.argv[1], dtype=np.uint8)
t = time.perf_counter()
find_cuts(data, DEFAULT_PARAMS)
print(time.perf_counter() - t)
"""


def main() -> int:
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case and tool")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tarball is kept (default /var/tmp/desync-bench)")
    ap.add_argument("--tmpfs", default="/dev/shm/desync-bench",
                    help="stores and outputs (default /dev/shm/desync-bench)")
    ap.add_argument("--casync", default=shutil.which("casync") or "casync")
    ap.add_argument("--desync", default=f"{sys.executable} -m desync_core",
                    help="desync command line (default: this Python's desync_core)")
    ap.add_argument("--workers", type=int, default=0,
                    help="desync -n (default: all CPUs)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before every run (needs privileges)")
    ap.add_argument("--cases", default="chunk,fresh,present,extract",
                    help="comma-separated subset of chunk,fresh,present,extract")
    ap.add_argument("--json", metavar="FILE", help="also write raw results as JSON")
    args = ap.parse_args()

    cases_wanted = set(args.cases.split(","))
    work = Path(args.workdir)
    tmp = Path(args.tmpfs)
    tar = work / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    info = machine()
    cores = int(info["cores"])
    workers = args.workers or cores
    desync = args.desync.split()
    casync = [args.casync]
    n_flag = ["-n", str(workers)]

    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cs_store, ds_store = tmp / "casync.castr", tmp / "desync.store"
    cs_index, ds_index = tmp / "casync.caibx", tmp / "desync.caibx"
    cs_out, ds_out = tmp / "casync.out", tmp / "desync.out"

    cold = args.cold and drop_caches()
    if args.cold and not cold:
        log("cannot drop the page cache here: running warm (input in page cache)")

    def prepare() -> None:
        if cold:
            drop_caches()
        else:
            warm(tar)

    # Compile/cache the kernel outside the timed runs (first run ever: numba JIT).
    subprocess.run([*desync, "make", str(tmp / "warmup.caibx"), str(tar)], check=True,
                   stdout=subprocess.DEVNULL)

    results: list[Case] = []

    def alternate(case: Case, cs_cmd: list[str], ds_cmd: list[str],
                  before: dict[str, object] | None = None) -> None:
        for rep in range(args.repeat):
            order = [("casync", cs_cmd), ("desync", ds_cmd)]
            if rep % 2:
                order.reverse()
            for tool, cmd in order:
                if before:
                    before[tool]()  # type: ignore[operator]
                prepare()
                run, _ = timed(cmd)
                case.runs[tool].append(run)
                log(f"  {case.name:24} {tool}  {run.wall:6.2f} s  cpu {run.cpu:6.2f} s  "
                    f"rss {run.maxrss_kb / 1024:5.0f} MB  other load {run.other_load:4.2f} CPUs")

    if "fresh" in cases_wanted or "present" in cases_wanted or "extract" in cases_wanted:
        case = Case("make (fresh store)")

        def reset(store: Path) -> object:
            return lambda: shutil.rmtree(store, ignore_errors=True)

        log("make into a fresh store")
        alternate(case,
                  [*casync, "make", f"--store={cs_store}", str(cs_index), str(tar)],
                  [*desync, "make", *n_flag, "-s", str(ds_store), str(ds_index), str(tar)],
                  {"casync": reset(cs_store), "desync": reset(ds_store)})
        if "fresh" in cases_wanted:
            results.append(case)
        if cs_index.read_bytes() != ds_index.read_bytes():
            raise SystemExit("FAIL: desync's index differs from casync's")
        cs_files = sorted(p.relative_to(cs_store).as_posix() for p in cs_store.rglob("*.cacnk"))
        ds_files = sorted(p.relative_to(ds_store).as_posix() for p in ds_store.rglob("*.cacnk"))
        if cs_files != ds_files:
            raise SystemExit("FAIL: the stores hold different chunks")

    if "present" in cases_wanted:
        case = Case("make (chunks present)")
        log("make with all chunks present")
        alternate(case,
                  [*casync, "make", f"--store={cs_store}", str(cs_index), str(tar)],
                  [*desync, "make", *n_flag, "-s", str(ds_store), str(ds_index), str(tar)])
        results.append(case)

    if "extract" in cases_wanted:
        case = Case("extract")
        log("extract")

        def rm(path: Path) -> object:
            return lambda: path.unlink(missing_ok=True)

        alternate(case,
                  [*casync, "extract", f"--store={cs_store}", "--seed-output=no",
                   str(cs_index), str(cs_out)],
                  [*desync, "extract", *n_flag, "-s", str(ds_store), str(ds_index),
                   str(ds_out)],
                  {"casync": rm(cs_out), "desync": rm(ds_out)})
        results.append(case)
        for out in (cs_out, ds_out):
            if subprocess.run(["cmp", "-s", str(tar), str(out)]).returncode != 0:
                raise SystemExit(f"FAIL: {out} differs from the input")
            out.unlink()

    chunk_rows: list[tuple[int, float, float, float]] = []
    kernel_gbps = kernel_other = float("nan")
    if "chunk" in cases_wanted:
        log("chunking kernel alone, data in memory (one core)")
        times, others = [], []
        for _ in range(args.repeat):
            run, out = timed([sys.executable, "-c", KERNEL_ONLY, str(tar)],
                             stdout=subprocess.PIPE)
            times.append(float(out.split()[0]))
            others.append(run.other_load)
        kernel_gbps = size / statistics.median(times) / 1e9
        kernel_other = statistics.median(others)
        log(f"  {kernel_gbps:.2f} GB/s")
        log("chunking a file alone (desync chunk_file, in-process time, kernel loaded)")
        for n in sorted({1, workers}):
            times, others = [], []
            for _ in range(args.repeat):
                prepare()
                run, out = timed([sys.executable, "-c", CHUNK_ONLY, str(tar), str(n)],
                                 stdout=subprocess.PIPE)
                times.append(float(out.split()[0]))
                others.append(run.other_load)
            t = statistics.median(times)
            chunk_rows.append((n, size / t / 1e9, size / t / 1e9 / n, statistics.median(others)))
            log(f"  workers {n}: {size / t / 1e9:.2f} GB/s")

    shutil.rmtree(tmp, ignore_errors=True)

    # -- report ---------------------------------------------------------------------
    lines = []
    lines.append(f"Input: {tar.name}, {size / 1e6:.0f} MB (tar of files from "
                 f"{', '.join(SOURCE_DIRS)}); stores and outputs on tmpfs; "
                 f"median of {args.repeat} alternating runs; desync -n {workers}.")
    lines.append("Page cache: " + ("dropped before every run." if cold else
                 "input in page cache for both tools (cache not dropped)."))
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    for k, v in info.items():
        lines.append(f"| {k} | {v} |")
    lines.append("")
    lines.append("| case | casync MB/s | desync MB/s | ratio | target | casync cpu s | "
                 "desync cpu s | desync max RSS MB | other load |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in results:
        cs, ds = case.median("casync"), case.median("desync")
        target = TARGETS.get(case.name)
        other = statistics.median(r.other_load for rs in case.runs.values() for r in rs)
        lines.append(
            f"| {case.name} | {size / cs / 1e6:.0f} | {size / ds / 1e6:.0f} | "
            f"{cs / ds:.2f}x | {f'>= {target}x' if target else ''} | "
            f"{case.median('casync', 'cpu'):.2f} | {case.median('desync', 'cpu'):.2f} | "
            f"{max(r.maxrss_kb for r in case.runs['desync']) / 1024:.0f} | {other:.2f} |")
    if chunk_rows:
        lines.append(f"| chunking kernel, data in memory, 1 core | n/a | "
                     f"{kernel_gbps * 1000:.0f} | | {kernel_gbps:.2f} GB/s/core "
                     f"(target >= {CHUNK_TARGET_GBPS_PER_CORE}) | | | | {kernel_other:.2f} |")
    for n, gbps, per_core, other in chunk_rows:
        lines.append(f"| chunking a file (incl. reads), {n} worker{'s' if n > 1 else ''} | n/a | "
                     f"{gbps * 1000:.0f} | | {per_core:.2f} GB/s/core "
                     f"(target >= {CHUNK_TARGET_GBPS_PER_CORE}) | | | | {other:.2f} |")
    lines.append("")
    lines.append("other load: median number of CPUs kept busy by other processes during "
                 "the runs (/proc/stat busy time minus the tool's own CPU time, per second "
                 "of wall time). Well above 0 means other work competed for the cores: "
                 "the figures then understate both tools, desync more (it needs every "
                 "core, casync one).")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "size": size, "cold": cold, "workers": workers,
            "cases": {c.name: {t: [r.__dict__ for r in rs] for t, rs in c.runs.items()}
                      for c in results},
            "chunking": [{"workers": n, "gbps": g} for n, g, _, _ in chunk_rows],
            "kernel_gbps": kernel_gbps,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
