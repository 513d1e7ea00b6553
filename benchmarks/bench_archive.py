#!/usr/bin/env python3
"""``desync tar``/``untar`` vs ``casync make``/``extract`` on a tree of many files.

Builds (once, deterministically) a tree of tens of thousands of files — mostly small,
some up to a few hundred KiB, in a few hundred directories, with a few symlinks — and
times, alternating the two tools and repeating every case:

* ``tar``: ``desync tar T.catar TREE`` vs ``casync make T.catar TREE`` with the same
  feature set (``desync tar``'s default, given to casync as ``--with=`` options), so
  both write the same bytes — which is checked;
* ``untar``: ``desync untar T.catar OUT`` vs ``casync extract T.catar OUT`` into a
  fresh directory; the extracted trees are compared with the source;
* with ``--index`` also ``tar -i``/``untar -i`` vs ``casync make``/``extract`` of a
  ``.caidx`` with a chunk store (fresh store for every run).

Reports the median wall time, MB/s (10^6 bytes of file content per second), files/s,
CPU time and the ratio ``casync time / desync time`` (above 1: desync is faster).
The machine may be shared: compare the ratio, which is measured in the same run.

    python3 benchmarks/bench_archive.py [--files 30000] [--repeat 3] [--dir /var/tmp]
                                        [--index] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
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

#: casync options giving ``desync tar``'s default feature set (0x...f0001e22).
CASYNC_WITH = ["--with=32bit-uids", "--with=nsec-time", "--with=symlinks",
               "--with=device-nodes", "--with=fifos", "--with=sockets", "--with=xattrs",
               "--with=acl", "--with=selinux", "--with=fcaps", "--exclude-file=no"]
#: File sizes drawn for the tree (bytes) and their weights: a source-tree-like mix.
SIZES = [(0, 3), (100, 10), (1_000, 20), (4_000, 25), (16_000, 20), (64_000, 8),
         (250_000, 2)]


@dataclass
class Timing:
    """Wall and CPU seconds of one run."""

    wall: float
    cpu: float


@dataclass
class Case:
    """One comparison: desync's and casync's runs."""

    name: str
    desync: list[Timing] = field(default_factory=list)
    casync: list[Timing] = field(default_factory=list)


def run(cmd: list[str], *, cwd: Path | None = None) -> Timing:
    """Run a command, return its wall and CPU (user + system) time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return Timing(wall, usage.ru_utime + usage.ru_stime)


def build_tree(root: Path, files: int) -> tuple[int, int]:
    """A deterministic tree of ``files`` files; returns (files, bytes of content)."""
    marker = root / ".complete"
    rng = random.Random(2024)
    sizes = [s for s, w in SIZES for _ in range(w)]
    total = 0
    if marker.exists():
        count, total = map(int, marker.read_text().split())
        return count, total
    if root.exists():
        shutil.rmtree(root)
    per_dir = 120
    block = rng.randbytes(1 << 20)
    for i in range(files):
        d = root / f"pkg{i // (per_dir * 20):03d}" / f"mod{(i // per_dir) % 20:02d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.choice(sizes)
        off = rng.randrange(0, len(block) - size) if size else 0
        (d / f"file{i:06d}.dat").write_bytes(block[off:off + size])
        total += size
        if i % 1000 == 0:
            os.symlink(f"file{i:06d}.dat", d / f"link{i:06d}")
    marker.write_text(f"{files} {total}")
    return files, total


def tree_digest(root: Path) -> str:
    """A digest of names, types, modes, sizes and contents (mtimes included)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            path = Path(dirpath) / name
            if path.name == ".complete":
                continue
            st = path.lstat()
            h.update(f"{path.relative_to(root)} {st.st_mode} {st.st_mtime_ns}\n".encode())
            if path.is_file() and not path.is_symlink():
                h.update(path.read_bytes())
    return h.hexdigest()


def median(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in timings),
                  statistics.median(t.cpu for t in timings))


def main() -> None:
    compile_bytecode()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="where the tree and outputs go")
    parser.add_argument("--index", action="store_true", help="also compare caidx + store")
    parser.add_argument("--keep", action="store_true", help="keep the tree for next time")
    args = parser.parse_args()

    desync = [sys.executable, "-m", "desync_core"]
    casync = shutil.which("casync")
    if casync is None:
        sys.exit("casync is not installed (apt-get install casync)")
    work = Path(args.dir) / "desync-bench-archive"
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "tree"
    nfiles, nbytes = build_tree(tree, args.files)
    (tree / ".complete").rename(work / ".complete")
    try:
        source = tree_digest(tree)
        cases = [Case("tar (catar)"), Case("untar (catar)")]
        if args.index:
            cases += [Case("tar -i (caidx + store)"), Case("untar -i (caidx + store)")]
        d_catar, c_catar = work / "desync.catar", work / "casync.catar"
        for rep in range(args.repeat):
            tools = ("desync", "casync") if rep % 2 == 0 else ("casync", "desync")
            for tool in tools:
                out = work / f"{tool}-out"
                shutil.rmtree(out, ignore_errors=True)
                if tool == "desync":
                    cases[0].desync.append(run([*desync, "tar", str(d_catar), str(tree)]))
                    cases[1].desync.append(run([*desync, "untar", str(d_catar), str(out)]))
                else:
                    cases[0].casync.append(run([casync, "make", *CASYNC_WITH, str(c_catar),
                                                str(tree)]))
                    cases[1].casync.append(run([casync, "extract", str(c_catar), str(out)]))
                if rep == 0 and tree_digest(out) != source:
                    sys.exit(f"{tool}: the extracted tree differs from the source")
                shutil.rmtree(out, ignore_errors=True)
                if args.index:
                    store = work / f"{tool}.store"
                    shutil.rmtree(store, ignore_errors=True)
                    store.mkdir()
                    index = work / f"{tool}.caidx"
                    if tool == "desync":
                        cases[2].desync.append(run([*desync, "tar", "-i", "-s", str(store),
                                                    str(index), str(tree)]))
                        cases[3].desync.append(run([*desync, "untar", "-i", "-s", str(store),
                                                    str(index), str(out)]))
                    else:
                        cases[2].casync.append(run([casync, "make", *CASYNC_WITH,
                                                    f"--store={store}", str(index),
                                                    str(tree)]))
                        cases[3].casync.append(run([casync, "extract", f"--store={store}",
                                                    str(index), str(out)]))
                    shutil.rmtree(out, ignore_errors=True)
            if rep == 0 and d_catar.read_bytes() != c_catar.read_bytes():
                sys.exit("the two archives differ (they should be byte-identical)")
        print(f"tree: {nfiles} files, {nbytes / 1e6:.1f} MB of content, under {work}")
        print(f"{args.repeat} runs each, alternating; median wall time, MB/s of content; "
              "ratio = casync time / desync time (> 1: desync faster)\n")
        print(f"{'case':26} {'tool':7} {'wall s':>7} {'cpu s':>7} {'MB/s':>8} "
              f"{'files/s':>9} {'ratio':>6}")
        for case in cases:
            d, c = median(case.desync), median(case.casync)
            for tool, t in (("desync", d), ("casync", c)):
                ratio = f"{c.wall / d.wall:6.2f}" if tool == "desync" else ""
                print(f"{case.name:26} {tool:7} {t.wall:7.2f} {t.cpu:7.2f} "
                      f"{nbytes / 1e6 / t.wall:8.1f} {nfiles / t.wall:9.0f} {ratio:>6}")
        print("\narchives byte-identical: yes; extracted trees equal the source: yes")
    finally:
        (work / ".complete").rename(tree / ".complete")
        for name in ("desync.catar", "casync.catar", "desync.caidx", "casync.caidx",
                     "desync.store", "casync.store", "desync-out", "casync-out"):
            path = work / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
