#!/usr/bin/env python3
"""``desync mount-index`` (FUSE) next to ``desync extract`` and ``casync mount``.

Two cases, alternating the tools and repeating each run on a fresh mount (so nothing
is in the mount's page cache):

* ``blob``: a sequential read (1 MiB ``read`` calls) of the benchmark tarball
  (``bench.py``'s ``build_tarball``, 400 MB by default) through ``desync mount-index``,
  next to ``desync extract`` of the same index and store into a file. Target: the mount
  reads at least half as fast as extract writes. The bytes read are compared with the
  tarball.
* ``tree``: a walk of a mounted ``.caidx`` (``bench_archive.py``'s tree) that stats
  every entry and reads every file, through ``desync mount-index`` and through
  ``casync mount`` of the same index and store. The time until the mount appears is
  reported apart (desync reads the archive's metadata before mounting; casync reads it
  lazily).

Stores and outputs live in a tmpfs, so the store's reads come from memory for both.
The machine may be shared: compare the ratios, which are measured in the same run.

    python3 benchmarks/bench_fuse.py [--size-mb 400] [--files 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import build_tarball
from bench_archive import build_tree
from benchutil import compile_bytecode

PATIENCE = 120.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


class Mounted:
    """A mount process: started, waited for, unmounted and stopped by PID."""

    def __init__(self, cmd: list[str], mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        self.proc = subprocess.Popen([*cmd, str(mountpoint)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        while not is_mounted(mountpoint):
            if self.proc.poll() is not None or time.perf_counter() - start > PATIENCE:
                self.stop()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"{cmd[0]} did not mount: {err}")
            time.sleep(0.01)
        self.mount_seconds = time.perf_counter() - start

    def stop(self) -> None:
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", str(self.mountpoint)])
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)])


def read_sequentially(path: Path) -> int:
    """Read a file with 1 MiB reads; the byte count."""
    total = 0
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def walk_and_read(root: Path) -> tuple[int, int]:
    """Stat every entry and read every regular file: (entries, bytes)."""
    entries = total = 0
    buf = bytearray(1 << 20)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.lstat(os.path.join(dirpath, name))
            entries += 1
        for name in filenames:
            path = os.path.join(dirpath, name)
            entries += 1
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb", buffering=0) as f:
                    while n := f.readinto(buf):
                        total += n
    return entries, total


def timed(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> int:
    try:
        compile_bytecode()
    except subprocess.CalledProcessError:  # a module being edited; not what is measured
        log("warning: compileall failed; some modules may be compiled at start-up")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--files", type=int, default=10000, help="files of the tree (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case and tool")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tarball and tree are kept")
    ap.add_argument("--tmpfs", default="/dev/shm/desync-bench-fuse",
                    help="stores, indexes, outputs and mount points")
    ap.add_argument("--casync", default=shutil.which("casync") or "casync")
    ap.add_argument("-n", "--workers", type=int, default=0,
                    help="desync -n for extract (default: CPUs) and mount-index (2 x CPUs)")
    ap.add_argument("--cases", default="blob,tree", help="blob,tree or one of them")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    desync = [sys.executable, "-m", "desync_core"]
    work, tmp = Path(args.workdir), Path(args.tmpfs)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    extract_n = str(args.workers or cores)
    mount_n = str(args.workers or max(4, 2 * cores))
    rows: list[tuple[str, str, float, str, float]] = []
    try:
        if "blob" in args.cases:
            rows += blob_case(args, work, tmp, desync, extract_n, mount_n)
        if "tree" in args.cases:
            rows += tree_case(args, work, tmp, desync, mount_n)
    finally:
        for mnt in tmp.glob("mnt*"):
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{cores} CPUs, {args.repeat} runs per tool, medians\n")
    print("| case | desync | time | reference | time | desync / reference speed |")
    print("|---|---|---|---|---|---|")
    for case, ours, ours_s, ref, ref_s in rows:
        if ref_s != ref_s:  # NaN: nothing to compare with
            print(f"| {case} | {ours} | {ours_s:.2f} s | - | - | - |")
            continue
        print(f"| {case} | {ours} | {ours_s:.2f} s | {ref} | {ref_s:.2f} s | "
              f"{ref_s / ours_s:.2f} |")
    return 0


def blob_case(args: argparse.Namespace, work: Path, tmp: Path, desync: list[str],
              extract_n: str, mount_n: str) -> list[tuple[str, str, float, str, float]]:
    tar = work / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    store, index = tmp / "blob.store", tmp / f"{tar.stem}.caibx"
    log(f"make -s {store} ({size / 1e6:.0f} MB)")
    subprocess.run([*desync, "make", "-n", extract_n, "-s", str(store), str(index), str(tar)],
                   check=True, stdout=subprocess.DEVNULL)
    mount_runs, extract_runs, mount_up = [], [], []
    for rep in range(args.repeat):
        out = tmp / "extract.out"
        seconds, _ = timed(subprocess.run, [*desync, "extract", "-n", extract_n, "-s",
                                            str(store), str(index), str(out)])
        extract_runs.append(seconds)
        out.unlink()
        m = Mounted([*desync, "mount-index", "-n", mount_n, "-s", str(store), str(index)],
                    tmp / f"mnt-blob{rep}")
        try:
            mount_up.append(m.mount_seconds)
            path = m.mountpoint / tar.stem
            seconds, count = timed(read_sequentially, path)
            mount_runs.append(seconds)
            if count != size or subprocess.run(["cmp", "-s", str(path), str(tar)]).returncode:
                raise RuntimeError("the mounted file differs from the tarball")
        finally:
            m.stop()
        log(f"run {rep + 1}: extract {extract_runs[-1]:.2f} s, mount read {seconds:.2f} s "
            f"({size / seconds / 1e6:.0f} MB/s), mount up in {m.mount_seconds:.2f} s")
    ours, ref = statistics.median(mount_runs), statistics.median(extract_runs)
    log(f"blob: mount read {size / ours / 1e6:.0f} MB/s, extract {size / ref / 1e6:.0f} MB/s")
    return [(f"sequential read of {size / 1e6:.0f} MB", "read through mount-index", ours,
             "desync extract", ref),
            ("(mount-index ready)", "mount until mounted", statistics.median(mount_up),
             "-", float("nan"))]


def tree_case(args: argparse.Namespace, work: Path, tmp: Path, desync: list[str],
              mount_n: str) -> list[tuple[str, str, float, str, float]]:
    tree = work / f"fuse-tree-{args.files}"
    files, content = build_tree(tree, args.files)
    store, index = tmp / "tree.store", tmp / "tree.caidx"
    log(f"casync make {index} ({files} files, {content / 1e6:.0f} MB)")
    subprocess.run([args.casync, "make", f"--store={store}", str(index), str(tree)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    expected = walk_and_read(tree)
    walks: dict[str, list[float]] = {"desync": [], "casync": []}
    ups: dict[str, list[float]] = {"desync": [], "casync": []}
    commands = {
        "desync": [*desync, "mount-index", "-n", mount_n, "-s", str(store), str(index)],
        "casync": [args.casync, "mount", f"--store={store}", str(index)],
    }
    for rep in range(args.repeat):
        for tool in ("casync", "desync") if rep % 2 else ("desync", "casync"):
            m = Mounted(commands[tool], tmp / f"mnt-{tool}{rep}")
            try:
                seconds, seen = timed(walk_and_read, m.mountpoint)
            finally:
                m.stop()
            if seen != expected:
                raise RuntimeError(f"{tool}: walked {seen}, the source has {expected}")
            walks[tool].append(seconds)
            ups[tool].append(m.mount_seconds)
            log(f"run {rep + 1} {tool}: mounted in {m.mount_seconds:.2f} s, "
                f"walk + read {seconds:.2f} s")
    case = f"tree walk + read ({files} files, {content / 1e6:.0f} MB)"
    return [(case, "desync mount-index", statistics.median(walks["desync"]), "casync mount",
             statistics.median(walks["casync"])),
            ("(time until mounted)", "desync mount-index", statistics.median(ups["desync"]),
             "casync mount", statistics.median(ups["casync"])),
            ("(mounted + walk + read)", "desync mount-index",
             statistics.median(u + w for u, w in zip(ups["desync"], walks["desync"])),
             "casync mount",
             statistics.median(u + w for u, w in zip(ups["casync"], walks["casync"])))]


if __name__ == "__main__":
    sys.exit(main())
