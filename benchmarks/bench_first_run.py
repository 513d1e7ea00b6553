#!/usr/bin/env python3
"""The first ``desync make`` after a fresh installation, and large inputs afterwards.

A fresh installation is a copy of ``desync_core`` without any kernel cache (its
``__pycache__`` holds only the bytecode that pip would write), an empty HOME and no
``NUMBA_CACHE_DIR``. Times, medians of ``--repeat`` runs, each on a new copy:

* first ``make -s`` of a small file (default 1 MB), as shipped (``DESYNC_KERNEL_BUILD``
  unset: numpy chunker, hashlib, kernels built in the background afterwards);
* the same with ``DESYNC_KERNEL_BUILD=foreground`` (compile first: the old behaviour);
* the second run, once the background build has finished (it is not timed);

and, on the checkout's own cached kernels, ``make`` without a store of the benchmark
tarball (``bench.py``'s, ~400 MB) as shipped and with ``DESYNC_CHUNKER_KERNEL=numba``
(the compiled kernel demanded, as every run did before), plus the numpy chunker
(``vector``) for scale. Run it under ``flock /work/bench.lock``.

Usage: ``python3 benchmarks/bench_first_run.py [--repeat 5] [--small-kb 1000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import build_tarball, log, timed, warm
from benchutil import compile_bytecode

from desync_core.testing.fresh import FreshInstall

REPO = Path(__file__).resolve().parent.parent


def fresh_install(root: Path) -> FreshInstall:
    """A fresh installation in ``root``, with the bytecode pip would write."""
    fresh = FreshInstall(root)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(fresh.site)], check=True,
                   stdout=subprocess.DEVNULL)
    return fresh


def main() -> int:
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--small-kb", type=int, default=1000, help="small file size (kB)")
    ap.add_argument("--size-mb", type=int, default=400, help="large input (bench.py tarball)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench")
    ap.add_argument("--tmp", default="/dev/shm", help="where fresh installs go")
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()

    desync = [sys.executable, "-m", "desync_core"]
    first: list[float] = []
    foreground: list[float] = []
    second: list[float] = []
    built: list[float] = []
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="desync-fresh-") as tmp:
            root = Path(tmp)
            # ``python -m`` puts the working directory first on sys.path: it must not be
            # the checkout, whose desync_core would shadow the fresh copy.
            os.chdir(root)
            small = root / "small.bin"
            small.write_bytes(os.urandom(args.small_kb * 1000))
            fresh = fresh_install(root / "a")
            env = fresh.env
            run, _ = timed([*desync, "make", "-s", str(root / "s1"), str(root / "a1.caibx"),
                            str(small)], env=env)
            first.append(run.wall)
            built.append(fresh.wait_for_builder(2))
            run, _ = timed([*desync, "make", "-s", str(root / "s2"), str(root / "a2.caibx"),
                            str(small)], env=env)
            second.append(run.wall)
            fg_env = {**fresh_install(root / "b").env, "DESYNC_KERNEL_BUILD": "foreground"}
            run, _ = timed([*desync, "make", "-s", str(root / "s3"), str(root / "b.caibx"),
                            str(small)], env=fg_env)
            foreground.append(run.wall)
            same = {(root / n).read_bytes() for n in ("a1.caibx", "a2.caibx", "b.caibx")}
            if len(same) != 1:
                raise SystemExit("indexes differ between the runs")
            log(f"rep {rep + 1}: first {first[-1]:.2f} s, background build "
                f"{built[-1]:.1f} s, second {second[-1]:.2f} s, "
                f"foreground-compile first {foreground[-1]:.2f} s")
            os.chdir(REPO)

    med = statistics.median
    print(f"## First `make -s` of a {args.small_kb} kB file on a fresh install "
          f"(medians of {args.repeat})\n")
    print("| run | wall time |\n|---|---:|")
    print(f"| first, as shipped (numpy chunker, hashlib) | **{med(first):.2f} s** |")
    print(f"| first, `DESYNC_KERNEL_BUILD=foreground` (compile first, the old behaviour) "
          f"| {med(foreground):.2f} s |")
    print(f"| second, after the background build | {med(second):.2f} s |")
    print(f"| background build (after the first run, not waited for) | {med(built):.1f} s |")

    if not args.skip_large:
        tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
        build_tarball(tar, args.size_mb)
        out = Path(args.tmp) / "desync-first-run-large.caibx"
        base = dict(os.environ)
        base.pop("DESYNC_KERNEL_BUILD", None)
        variants = [("as shipped", {}),
                    ("`DESYNC_CHUNKER_KERNEL=numba`", {"DESYNC_CHUNKER_KERNEL": "numba"}),
                    ("`DESYNC_CHUNKER_KERNEL=vector` (numpy)",
                     {"DESYNC_CHUNKER_KERNEL": "vector"})]
        subprocess.run([*desync, "make", str(out), str(tar)], check=True, env=base)  # warm-up
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        indexes = set()
        for _ in range(args.repeat):
            for name, extra in variants:
                warm(tar)
                run, _ = timed([*desync, "make", str(out), str(tar)], env={**base, **extra})
                times[name].append(run.wall)
                indexes.add(out.read_bytes())
        out.unlink()
        if len(indexes) != 1:
            raise SystemExit("large-input indexes differ between kernels")
        size = tar.stat().st_size
        print(f"\n## `make` without a store of {size / 1e6:.0f} MB, cached kernels "
              f"(medians of {args.repeat})\n")
        print("| chunker | wall time | MB/s |\n|---|---:|---:|")
        for name, _ in variants:
            t = med(times[name])
            print(f"| {name} | {t:.2f} s | {size / t / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
